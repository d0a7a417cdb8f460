"""sd_notify from real directord nodes: each sends READY=1 once serving (the master; the backup once in
sync), WATCHDOG=1 pings from its event loop, and STATUS= with its role; STOPPING=1 on SIGTERM.

The nodes get ``$NOTIFY_SOCKET`` (a path socket: abstract ones are per network namespace) and
``$WATCHDOG_USEC`` as systemd would set them; the socket passes credentials (SO_PASSCRED), so each
datagram is attributed to the node by its pid, as systemd's NotifyAccess=main does (etcd, which
inherits the variables too, sends its own READY=1).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from deploy.cluster import LabCluster, wait_for
from deploy.drill import services_yaml
from deploy.lab import Lab, new_name

pytestmark = [pytest.mark.lab, pytest.mark.etcd]


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        path.chmod(0o777)
        self.sock.setblocking(False)
        self.got: list[tuple[int, float, dict[str, str]]] = []

    def drain(self) -> list[tuple[int, float, dict[str, str]]]:
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return self.got
            pid = next((struct.unpack("3i", d[:12])[0] for lvl, typ, d in anc
                        if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS), 0)
            self.got.append((pid, time.time(), dict(ln.split("=", 1) for ln in data.decode().split("\n"))))

    def of(self, pid: int, key: str) -> list[str]:
        return [m[key] for p, _t, m in self.drain() if p == pid and key in m]


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    tmp_path.chmod(0o755)
    ns = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    yield ns
    ns.sock.close()


def test_ready_watchdog_status_and_stopping_from_live_nodes(notify: NotifySocket) -> None:
    lab = Lab(new_name(), n_directors=2, n_reals=3)
    cluster = LabCluster(lab, n_nodes=2)
    try:
        master = cluster.bring_up(services_yaml(3))
        backup = next(n for n in cluster.nodes if n is not master)
        pids = {n.node_id: n.proc.pid for n in cluster.nodes if n.proc is not None}
        for node_id, pid in pids.items():
            ready = partial(lambda p: notify.of(p, "READY") == ["1"], pid)  # once, and only once
            wait_for(f"READY=1 from {node_id}", ready, 30, 0.1)
        t0 = time.time()
        wait_for("3 s of watchdog pings", lambda: notify.drain() and time.time() - t0 > 3, 10, 0.1)
        for node_id, pid in pids.items():
            pings = [t for p, t, m in notify.drain() if p == pid and m.get("WATCHDOG") == "1" and t > t0]
            assert len(pings) >= 3, (node_id, len(pings))  # every second (half of WATCHDOG_USEC)
            assert max(b - a for a, b in zip([t0, *pings], pings, strict=False)) < 2.0, (node_id, pings)
        assert notify.of(pids[master.node_id], "STATUS")[-1] == "master"
        assert notify.of(pids[backup.node_id], "STATUS")[-1] == "backup"
        cluster.stop_node(backup)
        assert notify.of(pids[backup.node_id], "STOPPING") == ["1"]
    finally:
        cluster.close()
        lab.down()
