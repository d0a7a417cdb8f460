"""sd_notify over a real AF_UNIX datagram socket: READY once serving, WATCHDOG pings, STATUS changes."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from director.admin.sdnotify import Notifier, message, socket_address, stopping, supervise


def listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    while True:
        try:
            data = s.recv(4096)
        except BlockingIOError:
            return out
        out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


def test_message_and_addresses() -> None:
    assert message(ready=1, status="backup, in sync") == b"READY=1\nSTATUS=backup, in sync"
    with pytest.raises(ValueError):
        message(status="two\nlines")
    assert socket_address("@lbd/notify") == "\0lbd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    with pytest.raises(ValueError):
        socket_address("relative")


def test_from_env() -> None:
    assert Notifier.from_env({}) == Notifier(None, None)
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}
    assert Notifier.from_env(env, pid=42) == Notifier("/x", 10.0)
    other = Notifier.from_env({**env, "WATCHDOG_PID": "7"}, pid=42)
    assert other.watchdog is None  # the watchdog is meant for another process
    assert not Notifier(None).send(ready=1)  # not under systemd: nothing sent, no error


def test_supervise_ready_watchdog_status(tmp_path: Path) -> None:
    sock = listener(tmp_path / "notify")
    state = {"serving": False, "status": "backup, syncing"}

    async def main() -> list[dict[str, str]]:
        n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
        task = asyncio.create_task(supervise(n, lambda: bool(state["serving"]), lambda: str(state["status"])))
        await asyncio.sleep(0.35)
        before = drain(sock)
        assert not any("READY" in m for m in before)  # not serving yet: no READY
        assert sum("WATCHDOG" in m for m in before) >= 2  # pings every 100 ms
        assert before[0] == {"STATUS": "backup, syncing"}
        state.update(serving=True, status="backup, in sync")
        await asyncio.sleep(0.25)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stopping(n)
        return drain(sock)

    after = asyncio.run(main())
    ready = [m for m in after if m.get("READY") == "1"]
    assert len(ready) == 1 and ready[0]["STATUS"] == "backup, in sync"
    assert after[-1] == {"STOPPING": "1", "STATUS": "stopping"}
    sock.close()


def test_a_stuck_loop_stops_the_pings(tmp_path: Path) -> None:
    sock = listener(tmp_path / "notify")

    async def main() -> None:
        n = Notifier(str(tmp_path / "notify"), watchdog=0.1)
        task = asyncio.create_task(supervise(n, lambda: True, lambda: "master"))
        await asyncio.sleep(0.12)
        drain(sock)
        time.sleep(0.3)  # the loop is blocked: nothing can be sent
        assert drain(sock) == []
        await asyncio.sleep(0.06)
        assert any("WATCHDOG" in m for m in drain(sock))  # back as soon as the loop runs
        task.cancel()

    asyncio.run(main())
    sock.close()


def test_abstract_socket() -> None:
    name = f"lbd-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).send(ready=1)
    assert s.recv(100) == b"READY=1"
    s.close()
