"""directorctl against a live admin server (unix socket) on a node built on the real tables."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from director.admin import cli
from tests.director.admin.admin_fake import WEB_YAML, ip
from tests.director.admin.conftest import Env, cli_run


def test_list_is_laid_out_like_ipvsadm(env: Env) -> None:
    env.conns(3)
    code, out, _ = env.run("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[1:3] == ["Prot LocalAddress:Port Scheduler Flags",
                          "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]
    assert "TCP  198.18.0.10:80 wlc persistent 300" in lines
    d = env.node.svc(80).dests[0]
    want = f"  -> {'198.18.1.2:8080':<28} {'Masq':<7} {2:<6} {d.activeconns:<10} {d.inactconns}"
    assert want in lines and d.activeconns == 2 and d.inactconns == 1
    assert "UDP  198.18.0.10:53 rr" in lines


def test_list_stats_rate_json(env: Env) -> None:
    web = env.node.svc(80)
    env.lt.call(lambda: env.node.traffic(web, web.dests[1], 1234, 99_000, 2.0))
    code, out, _ = env.run("list", "--stats")
    header = out.splitlines()[0].split()
    assert code == 0 and header[-5:] == ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
    row = next(line for line in out.splitlines() if line.startswith("TCP  198.18.0.10:80"))
    assert row.split()[2:] == ["1", "1234", "0", "99000", "0"]
    dest_row = next(line for line in out.splitlines() if "198.18.1.3:8080" in line)
    assert dest_row.split()[2:4] == ["1", "1234"]
    code, out, _ = env.run("list", "--rate")
    assert code == 0 and out.splitlines()[0].split()[-5:] == ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
    code, out, _ = env.run("list", "--json", "-t", "tcp/198.18.0.10:80")
    data = json.loads(out)
    assert [s["name"] for s in data] == ["web"]
    assert [(d["address"], d["weight"]) for d in data[0]["dests"]] == [("198.18.1.2", 2), ("198.18.1.3", 1)]


def test_list_connections(env: Env) -> None:
    env.conns(4)
    code, out, _ = env.run("list", "-c")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "IPVS connection entries" and lines[1].split()[:3] == ["pro", "expire", "state"]
    rows = [line.split() for line in lines[2:]]
    assert sorted(r[3] for r in rows) == sorted(f"198.18.3.{i + 1}:{6000 + i}" for i in range(4))
    assert {r[2] for r in rows} == {"ESTABLISHED", "SYN_RECV"} and {r[5] for r in rows} == {"198.18.1.2:8080"}
    code, out, _ = env.run("list", "-c", "--state", "ESTABLISHED", "--json")
    data = json.loads(out)
    assert {c["cport"] for c in data["conns"]} == {6000, 6002}
    code, out, _ = env.run("list", "-c", "--limit", "3", "--json")
    data = json.loads(out)
    assert len(data["conns"]) == 3 and data["next_page_token"]


def test_status_text_and_json(env: Env) -> None:
    env.conns(2)
    code, out, _ = env.run("status")
    assert code == 0 and "role        master" in out and "conns       2" in out
    assert any(line.split()[:2] == ["n2", "streaming"] for line in out.splitlines())
    code, out, _ = env.run("status", "--json")
    assert json.loads(out)["role"] == "master" and json.loads(out)["conns"] == "2"


def test_apply_dry_run_diff_then_write(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "svc.yaml"
    f.write_text(WEB_YAML.replace("weight: 1}", "weight: 4}"))
    rev = env.node.revision
    code, out, _ = env.run("apply", "-f", str(f), "--dry-run")
    assert code == 0 and "~ change web" in out and "-  - address: 198.18.1.3" not in out
    assert any(line.strip() == "+  weight: 4" for line in out.splitlines()), out
    assert "dry run: nothing written" in out and env.node.revision == rev
    code, out, _ = env.run("apply", "-f", str(f))
    assert code == 0 and f"at revision {rev + 1}" in out
    assert [d.weight for d in env.node.svc(80).dests if d.addr == ip("198.18.1.3")] == [4]
    code, out, _ = env.run("apply", "-f", str(f))
    assert code == 0 and "no changes" in out and env.node.revision == rev + 1


def test_apply_invalid_file_says_what_to_fix(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(WEB_YAML.replace("scheduler: rr", "scheduler: nope"))
    code, _, err = env.run("apply", "-f", str(f))
    assert code == cli.EXIT["invalid"] and "services[1].scheduler" in err and "fix the named field" in err
    code, _, err = env.run("apply", "-f", str(tmp_path / "missing.yaml"))
    assert code == cli.EXIT["usage"] and "cannot read" in err


def test_get_prints_running_config(env: Env) -> None:
    code, out, _ = env.run("get")
    assert code == 0 and out.startswith(f"# revision {env.node.revision}") and "198.18.1.4" in out
    assert {s["name"] for s in yaml.safe_load(out)["services"]} == {"web", "dns"}
    code, out, _ = env.run("get", "dns")
    assert code == 0 and [s["name"] for s in yaml.safe_load(out)["services"]] == ["dns"]
    code, out, _ = env.run("get", "web", "--json")
    data = json.loads(out)
    assert data["revision"] == env.node.revision and data["config"]["services"][0]["port"] == 80
    code, _, err = env.run("get", "nope")
    assert code == cli.EXIT["not_found"] and "nope" in err


def test_edit_dest_and_timeouts(env: Env) -> None:
    code, out, _ = env.run("edit-dest", "tcp/198.18.0.10:80", "198.18.1.2:8080", "-w", "9", "-x", "50")
    d = env.node.svc(80).find_dest(ip("198.18.1.2"), 8080)
    assert d is not None and code == 0 and "updated at revision" in out
    assert (d.weight, d.u_threshold) == (9, 50)
    code, _, err = env.run("edit-dest", "tcp/198.18.0.10:80", "198.18.1.2:8080")
    assert code == cli.EXIT["usage"] and "--weight" in err
    code, _, err = env.run("edit-dest", "tcp/198.18.0.10:80", "198.18.9.9:8080", "-w", "1")
    assert code == cli.EXIT["not_found"] and "198.18.9.9" in err and "directorctl list" in err
    code, out, _ = env.run("timeouts", "--tcp", "600", "--set", "udp=30")
    assert code == 0 and (env.node.timeouts["tcp"], env.node.timeouts["udp"]) == (600, 30)
    code, _, err = env.run("timeouts", "--set", "udp")
    assert code == cli.EXIT["usage"] and "NAME=SECONDS" in err


def test_drain_wait_reports_progress(env: Env) -> None:
    env.conns(2, dest_index=1)
    code, out, _ = env.run("drain", "tcp/198.18.0.10:80", "198.18.1.3:8080", "--wait", "--max-wait", "0.3",
                           "--interval", "0.05")
    assert code == cli.EXIT["timeout"] and env.node.svc(80).dests[1].weight == 0
    progress = [line for line in out.splitlines() if "connection(s) left" in line]
    assert len(progress) >= 2 and all(line.split()[1] == "2" for line in progress)
    env.lt.call(env.node.flush)
    code, out, _ = env.run("drain", "tcp/198.18.0.10:80", "198.18.1.3:8080", "--wait", "--interval", "0.05")
    assert code == 0 and out.rstrip().endswith("drained")


def test_failover_then_not_master(env: Env) -> None:
    code, out, _ = env.run("failover")
    assert code == 0 and "asking n1" in out and "new master: n2" in out
    code, _, err = env.run("failover")
    assert code == cli.EXIT["precondition"] and "n2" in err and "run it against the master" in err


def test_flush_needs_yes_and_zero(env: Env) -> None:
    env.conns(3)
    code, _, err = env.run("flush")
    assert code == cli.EXIT["usage"] and "--yes" in err and env.node.table.count == 3
    code, out, _ = env.run("flush", "--yes")
    assert code == 0 and "flushed 3 connection entries" in out and env.node.table.count == 0
    env.lt.call(lambda: env.node.traffic(env.node.svc(80), env.node.svc(80).dests[0], 5, 500, 2.0))
    code, _, _ = env.run("zero", "tcp/198.18.0.10:80")
    assert code == 0 and env.node.svc(80).counters.inpkts == 0


def test_watch_prints_events(env: Env) -> None:
    result: dict[str, Any] = {}

    def watch() -> None:
        result["r"] = env.run("watch", "--count", "3", "--json")

    t = threading.Thread(target=watch)
    t.start()
    deadline = time.monotonic() + 10
    while env.lt.call(lambda: env.node.hub.watchers) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    env.conns(1)
    env.run("drain", "tcp/198.18.0.10:80", "198.18.1.2:8080")
    t.join(20)
    code, out, _ = result["r"]
    events = [json.loads(line) for line in out.splitlines()]
    # add_conn creates the entry (NEW) then moves it to ESTABLISHED (UPDATE); drain writes config
    assert code == 0 and [(e["kind"], e["conn_event"]) for e in events] == [
        ("conn", "new"), ("conn", "update"), ("config", "")]
    assert events[0]["conn"]["caddr"] == "198.18.3.1" and events[2]["revision"] == str(env.node.revision)


def test_errors_name_the_fix(env: Env, tmp_path: Path) -> None:
    code, _, err = cli_run(["--addr", f"unix:{tmp_path}/nothing.sock", "--timeout", "2", "status"])
    assert code == cli.EXIT["unavailable"] and "is directord running" in err
    code, _, err = env.run("zero", "tcp/nohost:80")
    assert code == cli.EXIT["usage"] and "ADDRESS:PORT" in err
    port = env.server.port
    code, _, err = cli_run(["--addr", f"127.0.0.1:{port}", "--insecure", "status"])
    assert code == cli.EXIT["denied"] and "--token" in err
    code, out, _ = cli_run(["--addr", f"127.0.0.1:{port}", "--insecure", "--token", "t0k", "status"])
    assert code == 0 and "n1" in out


def test_drill_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("deploy.drill")
    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deploy.drill", fake)
    assert cli.main(["drill", "--report", "x.json"]) == 0
    assert seen == [["--report", "x.json"]]


def test_list_marks_down_and_quiesced_dests(env: Env) -> None:
    def quiesce() -> None:
        web = env.node.svc(80)
        dest = web.dests[1]
        web.edit_dest(dest, weight=0)  # what a down verdict with on_failure: quiesce does
        env.node.health[dest.key] = "down"
        env.node.health[web.dests[0].key] = "up"
    env.lt.call(quiesce)
    code, out, _ = env.run("list")
    line = next(x for x in out.splitlines() if "198.18.1.3:8080" in x)
    assert code == 0 and line.split()[3] == "0" and line.endswith("down cfg-weight 1")
    healthy = next(x for x in out.splitlines() if "198.18.1.2:8080" in x)
    assert healthy.split()[-1] != "down" and "cfg-weight" not in healthy
