"""Notify hooks: real commands run by the runner (environment and JSON stdin, ordering on a lane,
timeout kill, failure counting, backlog bound, events from another thread, dest hooks on the master
only) and the node YAML's `notify:` section."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from director.admin import notify as notify_mod
from director.admin.notify import NotifyRunner, environment
from director.config.node import NodeConfigError, NotifyConfig, node_config_from_dict

KEY = (6, 0xC612000A, 80, 0, 0xC6120210, 8080)
RECORD = ('{{ echo "$LBD_EVENT $LBD_SEQ $LBD_ROLE"; env | grep ^LBD_ | sort; cat; }} '
          '>> {out}.$LBD_SEQ\necho "$LBD_EVENT $LBD_SEQ" >> {out}\n')


def hook(tmp: Path, name: str, body: str) -> tuple[str, ...]:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return (str(path),)


def recorder(tmp: Path, delay: float = 0.0) -> tuple[tuple[str, ...], Path]:
    out = tmp / "log"
    sleep = f"sleep {delay}\n" if delay else ""
    return hook(tmp, f"rec{delay}", sleep + RECORD.format(out=out)), out


def run(runner_of: Any, script: Any) -> NotifyRunner:
    """Build the runner on a loop, run `script(runner)` there, then wait for the hooks."""
    async def main() -> NotifyRunner:
        runner: NotifyRunner = runner_of()
        await script(runner)
        await asyncio.wait_for(runner.stop(), 60)
        return runner
    return asyncio.run(main())


def test_environment_and_stdin(tmp_path: Path) -> None:
    argv, out = recorder(tmp_path)
    cfg = NotifyConfig(master=argv, dest_down=argv, timeout=10)

    async def script(r: NotifyRunner) -> None:
        r.role("MASTER", epoch=7, master="d1")
        r.dest(KEY, False, "exit 1: db down")
    run(lambda: NotifyRunner(cfg, "d1", "lab", wall=lambda: 1234.5), script)
    assert sorted(out.read_text().splitlines()) == ["dest_down 2", "master 1"]  # two lanes: concurrent
    first = Path(f"{out}.1").read_text().splitlines()
    assert first[0] == "master 1 master"
    assert {"LBD_EVENT=master", "LBD_NODE=d1", "LBD_CLUSTER=lab", "LBD_EPOCH=7", "LBD_MASTER=d1",
            "LBD_ROLE=master", "LBD_REASON=", "LBD_TIME=1234.5", "LBD_SEQ=1"} <= set(first)
    assert json.loads(first[-1]) == {"event": "master", "node": "d1", "cluster": "lab", "time": 1234.5,
                                     "seq": 1, "role": "master", "epoch": 7, "master": "d1", "reason": ""}
    second = Path(f"{out}.2").read_text().splitlines()
    assert {"LBD_SERVICE=tcp/198.18.0.10:80", "LBD_DEST=198.18.2.16:8080", "LBD_UP=0",
            "LBD_DETAIL=exit 1: db down", "LBD_ROLE=master"} <= set(second)
    assert json.loads(second[-1])["up"] is False


def test_one_at_a_time_in_order_and_only_on_a_new_hook(tmp_path: Path) -> None:
    slow, out = recorder(tmp_path, delay=0.3)  # the first command is slow: nothing may overtake it
    fast, _ = recorder(tmp_path)
    cfg = NotifyConfig(master=slow, backup=fast, fault=fast)

    async def script(r: NotifyRunner) -> None:
        r.role("master", epoch=1)
        r.role("master", epoch=2)  # same hook: nothing runs
        r.role("stepped_down", epoch=2)
        r.role("stopped", epoch=2)  # fault again: nothing
        r.role("candidate", epoch=2)  # no hook for campaigning
        r.role("backup", epoch=3)
        r.role("master", epoch=4)
    r = run(lambda: NotifyRunner(cfg, "d1"), script)
    assert out.read_text().splitlines() == ["master 1", "fault 2", "backup 3", "master 4"]
    assert (r.stats["master"].runs, r.stats["fault"].runs, r.stats["backup"].runs) == (2, 1, 1)


def test_timeout_kills_and_failures_are_counted_and_logged(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    argv, out = recorder(tmp_path)
    cfg = NotifyConfig(master=hook(tmp_path, "hang", "sleep 300"),
                       fault=hook(tmp_path, "bad", "echo no route; exit 3"),
                       backup=(str(tmp_path / "missing"),), dest_up=argv, timeout=0.3)

    async def script(r: NotifyRunner) -> None:
        r.role("master", epoch=1)
        r.dest(KEY, True, "")  # the dest lane does not wait for the stuck role hook
        r.role("fault")
        r.role("backup")
    with caplog.at_level(logging.INFO, logger="director.admin.notify"):
        r = run(lambda: NotifyRunner(cfg, "d1"), script)
    s = r.stats
    assert (s["master"].runs, s["master"].failed, s["master"].killed) == (1, 1, 1)
    assert (s["fault"].failed, s["fault"].killed, s["backup"].failed, s["dest_up"].failed) == (1, 0, 1, 0)
    assert out.read_text().splitlines() == ["dest_up 2"]
    text = caplog.text
    assert "notify master:" in text and "killed after 0.3s" in text
    assert "exited 3 (event 3): no route" in text and "cannot run" in text


def test_hooks_never_block_the_caller_and_accept_other_threads(tmp_path: Path) -> None:
    go, done = tmp_path / "go", tmp_path / "done"
    waits = hook(tmp_path, "wait", f"while [ ! -e {go} ]; do sleep 0.01; done; echo ok > {done}")
    cfg = NotifyConfig(master=waits, backup=waits, timeout=30)

    async def script(r: NotifyRunner) -> None:
        t = threading.Thread(target=r.role, args=("master",))  # e.g. the link tracker's thread
        t.start()
        t.join()
        await asyncio.sleep(0)
        assert r.pending() == 1  # queued and running; the caller went on
        go.touch()  # only possible because role() returned at once
    r = run(lambda: NotifyRunner(cfg, "d1"), script)
    assert done.read_text() == "ok\n" and r.stats["master"].killed == 0


def test_dest_hooks_run_on_the_master_only(tmp_path: Path) -> None:
    argv, out = recorder(tmp_path)
    cfg = NotifyConfig(dest_up=argv, dest_down=argv)

    async def script(r: NotifyRunner) -> None:
        r.dest(KEY, False)  # a backup applies verdicts too, but the master runs the hooks
        r.role("master")
        r.dest(KEY, False)
        r.dest(KEY, True)
        r.role("stepped_down")
        r.dest(KEY, False)
    run(lambda: NotifyRunner(cfg, "d1"), script)
    assert out.read_text().splitlines() == ["dest_down 1", "dest_up 2"]


def test_backlog_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify_mod, "MAX_PENDING", 2)
    argv, out = recorder(tmp_path, delay=0.2)
    cfg = NotifyConfig(master=argv, dest_up=argv, dest_down=argv)

    async def script(r: NotifyRunner) -> None:
        r.role("master")
        r.dest(KEY, True)
        while r.running < 2:  # both commands started: the dest lane's queue is empty again
            await asyncio.sleep(0.01)
        for i in range(1, 5):
            r.dest(KEY, i % 2 == 0)
    r = run(lambda: NotifyRunner(cfg, "d1"), script)
    lines = out.read_text().splitlines()
    assert "master 1" in lines and len(lines) == 1 + 3  # the first dest event ran, two waited
    assert [x for x in lines if x != "master 1"] == ["dest_up 2", "dest_down 5", "dest_up 6"]
    assert (r.stats["dest_up"].dropped, r.stats["dest_down"].dropped) == (1, 1)


def test_shutdown_reports_fault_and_waits(tmp_path: Path) -> None:
    argv, out = recorder(tmp_path, delay=0.2)
    cfg = NotifyConfig(fault=argv)

    async def main() -> float:
        r = NotifyRunner(cfg, "d1")
        started = time.monotonic()
        await r.stop("shutdown")
        return time.monotonic() - started
    asyncio.run(main())
    assert out.read_text().splitlines() == ["fault 1"]
    assert "LBD_REASON=shutdown" in Path(f"{out}.1").read_text().splitlines()


def test_environment_flattening() -> None:
    assert environment({"event": "dest_up", "up": True, "epoch": 3, "detail": "a\0b"}) == {
        "LBD_EVENT": "dest_up", "LBD_UP": "1", "LBD_EPOCH": "3", "LBD_DETAIL": "ab"}


BASE = {"node_id": "d1", "etcd": {"endpoints": ["198.18.1.250:2379"]},
        "interfaces": {"external": "ext0", "internal": "int0"}, "sync": {"listen": "198.18.1.1:7100"}}


def test_node_yaml_notify_section() -> None:
    cfg = node_config_from_dict({**BASE, "notify": {"master": ["/usr/local/bin/page", "--master"],
                                                    "fault": "/usr/local/bin/page --fault 'lb down'",
                                                    "timeout": 3}})
    assert cfg.notify == NotifyConfig(master=("/usr/local/bin/page", "--master"),
                                      fault=("/usr/local/bin/page", "--fault", "lb down"), timeout=3.0)
    assert node_config_from_dict(BASE).notify == NotifyConfig()
    with pytest.raises(NodeConfigError) as exc:
        node_config_from_dict({**BASE, "notify": {"master": [], "dest_up": [1], "bogus": 1, "timeout": 0,
                                                  "fault": "a 'b"}})
    assert exc.value.errors == (
        "notify.bogus: unknown field (allowed: backup, dest_down, dest_up, fault, master, timeout)",
        "notify.master: must name a program",
        "notify.fault: cannot split the command: No closing quotation",
        "notify.dest_up[0]: must be a non-empty string without NUL, got 1",
        "notify.timeout: must be a number in 0.1..3600, got 0")
    with pytest.raises(NodeConfigError, match="notify: must be a mapping"):
        node_config_from_dict({**BASE, "notify": ["x"]})


def test_the_example_in_config_md_parses() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "CONFIG.md").read_text()
    section = text[text.index("## Notify hooks"):]
    block = section[section.index("```yaml\n") + 8:section.index("```", section.index("```yaml\n") + 8)]
    cfg = node_config_from_dict({**BASE, **yaml.safe_load(block)}).notify
    assert cfg.backup == ("/usr/local/bin/page", "--backup") and cfg.timeout == 10.0
    errors = section[section.index("Refused, each naming its field:"):].split("```")[1].strip().splitlines()
    with pytest.raises(NodeConfigError) as exc:
        node_config_from_dict({**BASE, "notify": {"master": [], "fault": "a 'b", "dest_up": [1],
                                                  "timeout": 0}})
    assert list(exc.value.errors) == errors
