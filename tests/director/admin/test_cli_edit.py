"""directorctl's ipvsadm-style edits, save/restore, import-keepalived, --version, options after the
command, and help text on every argument; against a live admin server on the real tables."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest
import yaml

from director import __version__
from director.admin import cli
from director.admin.cli_parser import build_parser
from director.config.node import node_config_from_dict
from director.config.services import config_from_dict
from tests.director.admin.admin_fake import ip
from tests.director.admin.conftest import Env, cli_run

WEB = "tcp/198.18.0.10:80"


def doc(env: Env, name: str) -> dict[str, object]:
    d = env.node.docs[name]
    assert isinstance(d, dict)
    return d


def test_add_edit_delete_service_like_ipvsadm(env: Env) -> None:
    code, out, err = env.run("add-service", "-t", "198.18.0.20:443", "-s", "sh", "-b", "sh-port",
                             "-p", "600", "-M", "255.255.255.0", "-g", "--name", "tls")
    assert code == 0 and "service tls (tcp/198.18.0.20:443) added at revision" in out, err
    tls = doc(env, "tls")
    assert (tls["scheduler"], tls["forward"], tls["scheduler_options"]) == ("sh", "dr", {"port": True})
    assert tls["persistence"] == {"timeout": 600, "netmask": "255.255.255.0"}
    code, _, err = env.run("add-service", "-t", "198.18.0.20:443", "--name", "tls")
    assert code == cli.EXIT["precondition"] and "exists" in err and "--replace" in err
    code, _, err = env.run("add-service", "-t", "198.18.0.20:443")  # another name, the same address
    assert code == cli.EXIT["invalid"] and "same protocol, vip and port" in err

    code, _, err = env.run("add-dest", "-t", "198.18.0.20:443", "-r", "198.18.1.7:443", "-w", "3")
    assert code == 0, err
    code, out, _ = env.run("edit-service", "tcp/198.18.0.20:443", "-s", "rr", "--no-persistent")
    tls = doc(env, "tls")
    assert code == 0 and "updated at revision" in out
    assert tls["scheduler"] == "rr" and "persistence" not in tls and "scheduler_options" not in tls
    assert [d["address"] for d in tls["dests"]] == ["198.18.1.7"]  # dests untouched by edit-service
    assert env.node.svc(443).scheduler.name == "rr"
    code, _, err = env.run("edit-service", "tcp/198.18.0.20:443")
    assert code == cli.EXIT["usage"] and "nothing to change" in err
    code, _, err = env.run("edit-service", "-t", "198.18.0.20:443", "-s", "rr", "--sched-option", "x=1")
    assert code == cli.EXIT["invalid"] and "scheduler_options.x" in err

    code, out, _ = env.run("delete-service", "-t", "198.18.0.20:443")
    assert code == 0 and "tls" not in env.node.docs and "deleted" in out
    code, _, err = env.run("delete-service", "-t", "198.18.0.20:443")
    assert code == cli.EXIT["not_found"]
    code, _, err = env.run("delete-service", WEB, "-u", "198.18.0.10:53")
    assert code == cli.EXIT["usage"] and "two services" in err


def test_fwmark_service_group_like_ipvsadm_f(env: Env) -> None:
    code, _, err = env.run("add-service", "-f", "7", "-s", "rr")
    assert code == cli.EXIT["usage"] and "--group" in err
    code, out, err = env.run("add-service", "-f", "7", "-s", "rr", "-p", "600",
                             "--group", "tcp/198.18.0.20:80", "--group", "tcp/198.18.0.20:443",
                             "--group", "udp/198.18.0.20:10000-10100")
    assert code == 0 and "service fwm-7 (fwm/7) added" in out, err
    group = doc(env, "fwm-7")["group"]
    assert group == [{"protocol": "tcp", "vip": "198.18.0.20", "port": 80},
                     {"protocol": "tcp", "vip": "198.18.0.20", "port": 443},
                     {"protocol": "udp", "vip": "198.18.0.20", "ports": "10000-10100"}]
    code, _, err = env.run("add-dest", "-f", "7", "-r", "198.18.1.8:0", "-w", "2")
    assert code == 0, err
    code, _, err = env.run("edit-service", "fwm/7", "--group", "tcp/198.18.0.20:8443")
    fwm = doc(env, "fwm-7")
    assert code == 0 and [x["port"] for x in fwm["group"]] == [8443]  # type: ignore[index]
    assert fwm["scheduler"] == "rr" and [d["weight"] for d in fwm["dests"]] == [2]  # type: ignore[index]
    code, out, _ = env.run("save", "--format", "ipvsadm")
    assert "-A -f 7 -s rr -p 600" in out and "-a -f 7 -r 198.18.1.8:0 -m -w 2" in out
    code, _, _ = env.run("delete-service", "-f", "7")
    assert code == 0 and "fwm-7" not in env.node.docs


def test_add_edit_delete_dest_like_ipvsadm(env: Env) -> None:
    code, out, _ = env.run("add-dest", "-t", "198.18.0.10:80", "-r", "198.18.1.9:8080", "-m", "-w", "4",
                           "-x", "100", "-y", "50")
    assert code == 0 and "dest 198.18.1.9:8080 added to tcp/198.18.0.10:80" in out
    d = env.node.svc(80).find_dest(ip("198.18.1.9"), 8080)
    assert d is not None and (d.weight, d.u_threshold, d.l_threshold) == (4, 100, 50)
    code, _, err = env.run("add-dest", WEB, "198.18.1.9:8080")
    assert code == cli.EXIT["precondition"] and "--replace" in err
    code, _, _ = env.run("add-dest", "-t", "198.18.0.10:80", "198.18.1.9:8080", "--replace", "-w", "6")
    dests = {x["address"]: x for x in doc(env, "web")["dests"]}  # type: ignore[attr-defined]
    assert code == 0 and dests["198.18.1.9"]["weight"] == 6 and dests["198.18.1.9"]["u_threshold"] == 0

    code, _, _ = env.run("edit-dest", WEB, "-r", "198.18.1.9:8080", "--health",
                         "{type: http, path: /healthz, interval: 5}")
    dests = {x["address"]: x for x in doc(env, "web")["dests"]}  # type: ignore[attr-defined]
    assert code == 0 and dests["198.18.1.9"]["healthcheck"]["path"] == "/healthz"
    assert dests["198.18.1.9"]["weight"] == 6  # only what was named changed
    code, _, _ = env.run("edit-dest", WEB, "198.18.1.9:8080", "--no-health")
    dests = {x["address"]: x for x in doc(env, "web")["dests"]}  # type: ignore[attr-defined]
    assert code == 0 and "healthcheck" not in dests["198.18.1.9"]
    code, _, err = env.run("edit-dest", WEB, "198.18.1.9:8080", "-g")
    assert code == cli.EXIT["invalid"] and "port" in err  # DR cannot map 80 -> 8080: refused by field

    code, out, _ = env.run("delete-dest", "-t", "198.18.0.10:80", "-r", "198.18.1.9:8080")
    assert code == 0 and env.node.svc(80).find_dest(ip("198.18.1.9"), 8080) is None
    code, _, err = env.run("delete-dest", WEB, "198.18.1.9:8080")
    assert code == cli.EXIT["not_found"] and "198.18.1.9" in err
    code, _, err = env.run("delete-dest", WEB)
    assert code == cli.EXIT["usage"] and "which dest" in err


def test_save_yaml_and_ipvsadm_rules(env: Env, tmp_path: Path) -> None:
    code, out, _ = env.run("save")
    assert code == 0 and out.startswith("# saved at revision")
    assert {s["name"] for s in yaml.safe_load(out)["services"]} == {"web", "dns"}
    code, out, err = env.run("save", "--format", "ipvsadm", "-n")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "--set 900 120 300",
        "-A -u 198.18.0.10:53 -s rr", "-a -u 198.18.0.10:53 -r 198.18.1.4:53 -m -w 1",
        "-A -t 198.18.0.10:80 -s wlc -p 300",
        "-a -t 198.18.0.10:80 -r 198.18.1.2:8080 -m -w 2", "-a -t 198.18.0.10:80 -r 198.18.1.3:8080 -m -w 1"]
    target = tmp_path / "rules"
    code, _, _ = env.run("save", "--format", "ipvsadm", "-o", str(target))
    assert code == 0 and target.read_text() == out


def restore(env: Env, text: str, *argv: str) -> tuple[int, str, str]:
    stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()))
    try:
        return env.run("restore", *argv)
    finally:
        sys.stdin = stdin


def test_restore_ipvsadm_rules_from_stdin(env: Env) -> None:
    rules = ("-C\n-A -t 198.18.0.10:80 -s rr -p 120\n"
             "-a -t 198.18.0.10:80 -r 198.18.1.2:8080 -m -w 5\n"
             "-A -t 198.18.0.30:25 -s wlc\n-a -t 198.18.0.30:25 -r 198.18.1.8:25 -g -w 1\n")
    code, out, _ = restore(env, rules, "--dry-run")
    assert code == 0 and "dry run: nothing written" in out and "- delete dns" in out
    assert doc(env, "web")["scheduler"] == "wlc"
    code, out, _ = restore(env, rules)
    # web changed, tcp-198.18.0.30-25 added, dns pruned (-C)
    assert code == 0 and "applied 3 change(s)" in out
    assert set(env.node.docs) == {"web", "tcp-198.18.0.30-25"}  # the running name is kept
    web = doc(env, "web")
    assert web["scheduler"] == "rr" and [d["weight"] for d in web["dests"]] == [5]  # type: ignore[index]


def test_restore_refuses_untranslated_rules_unless_partial(env: Env, tmp_path: Path) -> None:
    f = tmp_path / "rules"
    f.write_text("-A -t 198.18.0.40:80 -s rr\n-A -f 7 -s rr\n-a -t 198.18.0.40:80 -r 198.18.1.2:80 -g\n")
    rev = env.node.revision
    code, _, err = env.run("restore", "-f", str(f))
    assert code == cli.EXIT["usage"] and "line 2: fwmark 7: its selectors" in err and "nothing written" in err
    assert env.node.revision == rev
    code, out, err = env.run("restore", "-f", str(f), "--partial")
    assert code == 0 and "line 2" in err and "tcp-198.18.0.40-80" in env.node.docs
    assert set(env.node.docs) >= {"web", "dns"}  # no -C: nothing pruned


def test_restore_yaml_round_trip(env: Env, tmp_path: Path) -> None:
    _, saved, _ = env.run("save")
    env.run("delete-service", WEB)
    f = tmp_path / "saved.yaml"
    f.write_text(saved)
    code, out, _ = env.run("restore", "-f", str(f))
    assert code == 0 and "+ add web" in out and env.node.svc(80).dests[0].weight == 2


KEEPALIVED = """\
vrrp_instance VI_1 {
    state MASTER
    priority 150
    notify_master "/etc/keepalived/to-master.sh --page"
}
virtual_server 198.18.0.50 80 {
    delay_loop 3
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 198.18.1.2 8080 {
        weight 2
        TCP_CHECK {
            connect_timeout 2
        }
    }
    real_server 198.18.1.3 8080 {
        SMTP_CHECK {
            helo_name lb
        }
    }
}
"""


def test_import_keepalived_offline_and_apply(env: Env, tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED)
    report = tmp_path / "report.json"
    code, out, err = cli_run(["import-keepalived", str(conf), "--report", str(report)])
    assert code == 0
    data = yaml.safe_load(out)
    (svc,) = data["services"]
    assert (svc["scheduler"], svc["forward"]) == ("wrr", "nat")
    assert svc["dests"][0]["healthcheck"] == {"type": "tcp", "interval": 3, "timeout": 2,
                                              "on_failure": "remove"}
    assert "# notify:" in out and "#   master:" in out and "# priority: 150" in out
    assert f"{conf}: line 18: " in err and "SMTP_CHECK" in err
    lines = {u["line"] for u in json.loads(report.read_text())["untranslated"]}
    assert 18 in lines and 2 in lines  # state MASTER: VRRP is replaced by the election
    code, _, err = cli_run(["import-keepalived", str(conf), "--strict"])
    assert code == cli.EXIT["usage"] and "--strict" in err
    svc_file, node_file = tmp_path / "services.yaml", tmp_path / "node-fragment.yaml"
    code, out, _ = cli_run(["import-keepalived", str(conf), "-o", str(svc_file),
                            "--node-config", str(node_file)])
    assert code == 0 and out == "" and "# notify" not in svc_file.read_text()
    assert config_from_dict(yaml.safe_load(svc_file.read_text())).services[0].scheduler == "wrr"
    base = {"node_id": "d1", "etcd": {"endpoints": ["198.18.1.250:2379"]},
            "interfaces": {"external": "e0", "internal": "i0"}, "sync": {"listen": "198.18.1.1:7100"}}
    node = node_config_from_dict({**base, **yaml.safe_load(node_file.read_text())})
    assert node.notify.master == ("/etc/keepalived/to-master.sh", "--page") and node.priority == 150

    code, out, _ = env.run("import-keepalived", str(conf), "--apply")
    assert code == 0 and "+ add tcp-198.18.0.50-80" in out and "applied 1 change(s)" in out
    assert env.node.svc(80).dests  # the running services stay (no --prune)


def test_version_and_options_after_the_command(env: Env, tmp_path: Path) -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit) as ei:
        sys_stdout, sys.stdout = sys.stdout, out
        try:
            cli.main(["--version"])
        finally:
            sys.stdout = sys_stdout
    assert ei.value.code == 0 and out.getvalue().strip() == f"directorctl {__version__}"
    code, out2, _ = cli_run(["status", "--addr", env.addr, "--timeout", "5"])
    assert code == 0 and "role        master" in out2
    code, _, err = cli_run(["--addr", env.addr, "status", "--addr", f"unix:{tmp_path}/none.sock"])
    assert code == cli.EXIT["unavailable"] and "none.sock" in err  # the later one wins
    port = env.server.port
    code, out2, _ = cli_run(["list", "--addr", f"127.0.0.1:{port}", "--insecure", "--token", "t0k"])
    assert code == 0 and "TCP  198.18.0.10:80" in out2
    code, out2, _ = env.run("list", "-u", "198.18.0.10:53")  # ipvsadm -Ln -u VIP:PORT
    assert code == 0 and "UDP  198.18.0.10:53 rr" in out2 and "TCP" not in out2


def actions(parser: argparse.ArgumentParser, path: str = "directorctl") -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        found.append((path, action))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(actions(sub, f"{path} {name}"))
    return found


def test_every_argument_has_help() -> None:
    walked = actions(build_parser())
    missing = [f"{path}: {a.option_strings or a.dest}" for path, a in walked
               if not a.help and not path.endswith(" drill")]
    assert missing == []
    commands = {path.split(" ", 1)[1] for path, _ in walked if " " in path}
    assert {"add-service", "edit-service", "delete-service", "add-dest", "edit-dest", "delete-dest", "save",
            "restore", "import-keepalived", "check", "apply", "list"} <= commands
    assert len(walked) > 200


def test_writes_wait_until_their_node_runs_the_revision(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from director.admin import cli_base

    real = env.node.status
    calls = {"lag": False, "n": 0}

    def status() -> object:
        calls["n"] += 1
        st = real()
        return dataclasses.replace(st, config_revision=1) if calls["lag"] else st

    monkeypatch.setattr(env.node, "status", status)
    code, _, err = env.run("edit-dest", WEB, "198.18.1.2:8080", "-w", "4")
    assert code == 0 and err == "" and calls["n"] == 1  # the fake applies at once: one look
    calls.update(lag=True, n=0)
    monkeypatch.setattr(cli_base, "SETTLE_MAX", 0.2)
    code, out, err = env.run("edit-dest", WEB, "198.18.1.2:8080", "-w", "5")
    assert code == 0 and "updated at revision" in out and err == ""
    assert calls["n"] >= 2  # it kept looking until its bound, then returned
