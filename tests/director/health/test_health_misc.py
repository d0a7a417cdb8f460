"""MISC checks: real scripts run by the checker (exit codes, misc_dynamic weights, the environment,
a script killed with its whole process group at the timeout, counted by the manager)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

from director.health.manager import HealthManager, Probe, run_probe
from director.health.misc import check_misc, run_command, verdict
from director.health.spec import CheckResult, HealthSpec

KEY = (6, 0xC612000A, 80, 0, 0x7F000001, 8080)


def script(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def run(argv: list[str], timeout: float = 5.0, **kw: object) -> CheckResult:
    return asyncio.run(check_misc(argv, timeout, **kw))  # type: ignore[arg-type]


def test_exit_codes(tmp_path: Path) -> None:
    assert run([script(tmp_path, "ok", "echo all good; exit 0")]) == CheckResult(True, "exit 0: all good")
    assert run([script(tmp_path, "bad", "echo db down >&2; exit 1")]) == CheckResult(False, "exit 1: db down")
    seven = script(tmp_path, "seven", "exit 7")
    assert run([seven]) == CheckResult(False, "exit 7")
    assert run([seven], dynamic=True) == CheckResult(True, "exit 7: weight 5", weight=5)
    assert run([script(tmp_path, "two", "exit 2")], dynamic=True).weight == 0
    assert run([script(tmp_path, "one", "exit 1")], dynamic=True).ok is False
    assert verdict(-9, True) == CheckResult(False, "killed by signal 9")


def test_arguments_are_not_shell_words_and_missing_program(tmp_path: Path) -> None:
    echo = script(tmp_path, "args", 'printf "%s|" "$@"')
    assert run([echo, "a b", "$HOME", ";exit 1"]).detail == "exit 0: a b|$HOME|;exit 1|"
    res = run([str(tmp_path / "missing")])
    assert not res.ok and res.detail.startswith("cannot run") and "No such file" in res.detail


def test_killed_at_timeout_with_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hang = script(tmp_path, "hang", f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait")
    started = time.monotonic()
    res = run([hang], timeout=0.5)
    assert res == CheckResult(False, "killed after 0.5s", killed=True)
    assert time.monotonic() - started < 30  # not the 300 s of the sleep
    for pid in pids.read_text().split():
        _gone(int(pid))


def test_leftovers_of_a_finished_script_are_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    res = run([script(tmp_path, "bg", f"sleep 300 & echo $! > {pids}; exit 0")])
    assert res.ok
    _gone(int(pids.read_text()))


def test_environment_names_the_dest(tmp_path: Path) -> None:
    env = script(tmp_path, "env", 'echo "$LBD_DEST $LBD_DEST_ADDR $LBD_DEST_PORT $LBD_CHECK_PORT '
                                  '$LBD_SERVICE $LBD_TIMEOUT ${#PATH}"')
    spec = HealthSpec.from_dict({"type": "misc", "command": [env], "timeout": 3})
    res = asyncio.run(run_probe(Probe(KEY, "127.0.0.1", 9000, spec)))
    assert res.ok
    path_len = len(os.environ["PATH"])
    assert res.detail == f"exit 0: 127.0.0.1:8080 127.0.0.1 8080 9000 tcp/198.18.0.10:80 3 {path_len}"


def test_the_manager_counts_killed_probes(tmp_path: Path) -> None:
    spec = HealthSpec.from_dict({"type": "misc", "command": [sys.executable, "-c", "import time; "
                                                             "time.sleep(60)"], "timeout": 0.3, "fall": 1})
    m = HealthManager()
    m.configure({KEY: ("127.0.0.1", 8080, spec)}, 0.0)
    (p,) = m.due(0.0)
    t = m.report(KEY, asyncio.run(run_probe(p)), 1.0)
    assert t is not None and not t.up and t.detail == "killed after 0.3s"
    assert (m.stats.probes, m.stats.failures, m.stats.killed) == (1, 1, 1)


def _gone(pid: int, deadline: float = 20.0) -> None:
    """Wait until `pid` is dead (SIGKILL is delivered asynchronously); fail after the deadline."""
    end = time.monotonic() + deadline
    while _alive(pid):
        assert time.monotonic() < end, f"process {pid} of the check still runs"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_cancelling_a_starting_command_neither_hangs_nor_leaves_it_running(tmp_path: Path) -> None:
    token = f"lbd-cancel-{os.getpid()}-{time.monotonic_ns()}"
    hang = script(tmp_path, "hang", f"exec -a {token} sleep 300")

    async def main() -> None:
        task = asyncio.ensure_future(run_command([hang], 60))
        await asyncio.sleep(0)  # inside the subprocess start
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
    asyncio.run(main())
    end = time.monotonic() + 20
    while _with_token(token):
        assert time.monotonic() < end, "the cancelled command still runs"
        time.sleep(0.01)


def _with_token(token: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                    out.append(int(entry.name))
    return out
