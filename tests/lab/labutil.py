"""Helpers for lab tests: poll a condition, run a static directord and read its stats.

``DirectorProc`` runs ``directord`` in static mode (node config ``cluster: none``, services from a
file) in a director namespace and reads the JSON ``stats_file`` it rewrites every 200 ms; everything
waits on conditions with generous deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from deploy.cluster import wait_for as cluster_wait_for
from deploy.lab import PYTHON, Lab, real_addr, static_node_config

DEADLINE = 30.0
SERVICE_KEYS = ("services", "timeouts")
"""Top-level keys of the services file (``directorctl apply``'s schema); any other key is a node key."""


def wait_for(cond: Callable[[], Any], timeout: float = DEADLINE, what: str = "condition") -> Any:
    """Poll ``cond()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    return cluster_wait_for(what, cond, timeout, every=0.05)


def split_config(text: str) -> tuple[dict[str, Any], str]:
    """A test's one document (node keys such as ``vmac_id`` beside ``services`` / ``timeouts``, as a test
    reads best) split into node keys and the services file's text."""
    doc = yaml.safe_load(text) or {}
    node = {k: v for k, v in doc.items() if k not in SERVICE_KEYS}
    return node, yaml.safe_dump({k: v for k, v in doc.items() if k in SERVICE_KEYS}, sort_keys=False)


class DirectorProc:
    """A static ``directord`` in director namespace ``n`` of ``lab``.

    ``config_text`` holds the services (the services file) and may hold node keys; ``node`` adds node
    keys (``static_role="backup"``, ``fence_file=...``, ``rx_ring=False``, ``workers=2``, ...). The
    node has no sloppy window (``sloppy_grace: 0``): a packet-path test wants TCP conns opened by SYNs
    only; a node key in ``node`` overrides that."""

    def __init__(self, lab: Lab, n: int, config_text: str, tag: str, **node: Any) -> None:
        self.lab = lab
        keys, services = split_config(config_text)
        self.services = lab.write_file(f"{tag}.services.yaml", services)
        self.stats_file = lab.workdir / f"{tag}.stats.json"
        self.log = lab.workdir / f"{tag}.log"
        self.stats_file.unlink(missing_ok=True)
        keys = {"sloppy_grace": 0, **keys, **node, "stats_file": str(self.stats_file),
                "events_file": str(lab.workdir / f"{tag}.events.jsonl")}
        self.config = lab.write_file(f"{tag}.node.yaml", static_node_config(n, self.services, **keys))
        with open(self.log, "ab") as logf:
            self.proc = lab.start_director(n, self.config, stdout=logf, stderr=subprocess.STDOUT)
        wait_for(lambda: self._alive() and self.stats_file.exists() and self.stats()["ready"],
                 what=f"director {tag} to start (log: {self.log})")

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"director exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return True

    def stats(self) -> dict[str, Any]:
        self._alive()
        data: dict[str, Any] = json.loads(Path(self.stats_file).read_text())
        return data

    def fresh_stats(self) -> dict[str, Any]:
        """Stats written after this call (the file is rewritten every 200 ms)."""
        before = self.stats_file.stat().st_mtime_ns
        wait_for(lambda: self.stats_file.stat().st_mtime_ns != before, what="a fresh stats snapshot")
        return self.stats()

    def reload(self, config_text: str) -> None:
        """Rewrite the services file and SIGHUP the director; returns once its stats show the new
        config applied (node keys in the text are ignored: they need a restart)."""
        revision = self.stats()["config_revision"]
        self.services.write_text(split_config(config_text)[1])
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: self.stats()["config_revision"] > revision, what="the services file reloaded")
        self.fresh_stats()

    def take_over(self) -> None:
        """SIGUSR2: become master (forward, announce the VIPs)."""
        self.proc.send_signal(signal.SIGUSR2)

    def stand_by(self) -> None:
        """SIGUSR1: stand by (answer and forward nothing), as a clustered node's resign."""
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        Lab.stop(self.proc)

    def __enter__(self) -> DirectorProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def big_document() -> str:
    """~1 MB of valid config (4000 services): parsing it is real work for the node."""
    dests = ", ".join(f"{{address: {real_addr(i)}, port: 80, weight: {i}}}" for i in (1, 2, 3))
    lines = ["services:"]
    for i in range(4000):
        lines.append(f"  - {{name: flood-{i:05d}, protocol: tcp, vip: 198.18.0.{10 + i % 10},"
                     f" port: {1024 + i}, scheduler: wlc, forward: nat, dests: [{dests}]}}  # {'x' * 2}")
    text = "\n".join(lines) + "\n"
    assert 900_000 < len(text) < 1 << 20
    return text


# -- crafted frames and a fabric observer (hostile-frame and fencing tests) ---------------------------

SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
n = 0
for line in sys.stdin:
    if line.strip():
        s.send(bytes.fromhex(line.strip()))
        n += 1
print(n)
"""


def send_frames(lab: Lab, ns: str, ifname: str, frames: list[bytes]) -> int:
    """Send raw Ethernet frames (built with scapy by the test) from ``ifname`` in namespace ``ns``."""
    res = subprocess.run(["ip", "netns", "exec", ns, PYTHON, "-c", SENDER, ifname],
                         input="\n".join(f.hex() for f in frames), capture_output=True, text=True, timeout=60,
                         check=True)
    return int(res.stdout)


CAPTURE = r"""
import json, select, socket, sys
want = bytes.fromhex(sys.argv[1])
socks = {}
for port in sys.argv[2:]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((port, 3))
    socks[s.fileno()] = (port, s)
counts = {port: 0 for port in sys.argv[2:]}
print("ready", flush=True)
poller = select.poll()
for fd in socks:
    poller.register(fd, select.POLLIN)
poller.register(sys.stdin.fileno(), select.POLLIN)
while True:
    ready = [fd for fd, _ in poller.poll(1000)]
    if sys.stdin.fileno() in ready and not sys.stdin.readline():
        break
    for fd in ready:
        if fd in socks:
            port, s = socks[fd]
            data, addr = s.recvfrom(65536)
            if addr[2] != socket.PACKET_OUTGOING and data[6:12] == want:
                counts[port] += 1
print(json.dumps(counts), flush=True)
"""


class Capture:
    """A fabric observer: counts frames with source MAC ``src_mac`` that the switch *receives* on the
    given bridge ports (the peers of a director's interfaces), i.e. frames that director sent."""

    def __init__(self, lab: Lab, ports: list[str], src_mac: str) -> None:
        argv = [PYTHON, "-c", CAPTURE, src_mac.replace(":", ""), *ports]
        self.proc = lab.popen(lab.switch, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            Lab.stop(self.proc)
            raise AssertionError(f"capture did not start: {line!r}")

    def stop(self) -> dict[str, int]:
        """Stop and return frames per port."""
        out, _ = self.proc.communicate(timeout=60)
        counts: dict[str, int] = json.loads(out.splitlines()[-1])
        return counts
