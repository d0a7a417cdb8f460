"""director.dataplane.io.afpacket on real veths: checksum-offload completion (ring and AUXDATA paths), no
re-reception of sent frames, the client-address fanout split; and the data plane's fanout workers.

Receivers run in director namespace d3 (idle: no director process there); the client sends from its
namespace with its real kernel stack, so its frames arrive CHECKSUM_PARTIAL as they do in production.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from deploy.lab import GATEWAY, PYTHON, VIP_NAT, Lab, real_addr
from tests.lab.labutil import DirectorProc, wait_for

pytestmark = pytest.mark.lab

PORT = 9999

RECEIVER = r"""
import json, select, sys, time
from director.dataplane.checksum import l4_checksum
from director.dataplane.io.afpacket import PacketSocket, RingSpec
from director.dataplane.io.bpf import FANOUT_CBPF_SRC, Fanout
mode, want = sys.argv[1], int(sys.argv[2])
PORT = int(sys.argv[3]).to_bytes(2, "big")
if mode == "fanout":
    socks = [PacketSocket("ext", fanout=Fanout(77, FANOUT_CBPF_SRC)) for _ in range(2)]
else:
    socks = [PacketSocket("ext", ring=RingSpec() if mode == "ring" else None)]
poller = select.poll()
for s in socks:
    poller.register(s.fileno(), select.POLLIN)
print("ready", flush=True)
seen = [[] for _ in socks]
valid = 0
deadline = time.monotonic() + 60
while sum(map(len, seen)) < want and time.monotonic() < deadline:
    poller.poll(100)
    for i, s in enumerate(socks):
        for f in s.recv_batch(64):
            if len(f) > 42 and f[12:14] == b"\x08\x00" and f[23] == 17 and f[36:38] == PORT:
                seen[i].append(".".join(map(str, f[26:30])))
                valid += l4_checksum(f) == int.from_bytes(f[40:42], "big")
print(json.dumps({"seen": seen, "valid": valid, "csum_fixed": sum(s.csum_fixed for s in socks)}))
"""

SENDER = r"""
import socket, sys
for src in sys.argv[2].split(","):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.sendto(b"payload-%s" % src.encode(), (sys.argv[1], int(sys.argv[3])))
    s.close()
"""


def _receive(lab: Lab, mode: str, sources: list[str]) -> dict[str, object]:
    """Start a receiver in d3, send one datagram from each source, return the receiver's report."""
    d3 = lab.directors[2]
    argv = [PYTHON, "-c", RECEIVER, mode, str(len(sources)), str(PORT)]
    rx = lab.popen(d3.ns, argv, stdout=subprocess.PIPE)
    assert rx.stdout is not None
    try:
        assert rx.stdout.readline().strip() == b"ready"
        lab.run_python(lab.client.ns, SENDER, d3.addrs["ext"], ",".join(sources), str(PORT))
        out, _ = rx.communicate(timeout=90)
        result: dict[str, object] = json.loads(out)
        return result
    finally:
        rx.stdout.close()
        Lab.stop(rx)


@pytest.mark.parametrize("mode", ["ring", "plain"])
def test_partial_checksums_are_completed(lab: Lab, mode: str) -> None:
    sources = lab.client_sources()[:8]
    got = _receive(lab, mode, sources)
    seen = got["seen"]
    assert isinstance(seen, list) and sorted(seen[0]) == sorted(sources)
    assert got["valid"] == len(sources)           # every L4 checksum is right after the fix-up
    assert got["csum_fixed"] == len(sources)      # ... because each came CHECKSUM_PARTIAL


def test_fanout_splits_by_client_address(lab: Lab) -> None:
    sources = lab.client_sources()
    got = _receive(lab, "fanout", sources)
    seen = got["seen"]
    assert isinstance(seen, list)
    a, b = set(seen[0]), set(seen[1])
    assert a and b and not a & b and a | b == set(sources)


IGNORE_OUTGOING = r"""
import json, socket
from director.dataplane.io.afpacket import PacketSocket
a = PacketSocket("ext", qdisc_bypass=False)
b = PacketSocket("ext", ring=None)  # plain: a frame tapped at send time is readable at once
tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
tap.bind(("ext", 3))
tap.settimeout(5)
marker = b"own-frame-marker"
frame = b"\xff" * 6 + a.mac + b"\x88\xb5" + marker + b"\0" * 30
a.send(frame)
tapped = b""
while marker not in tapped:
    tapped = tap.recv(2048)
b_frames = [bytes(f).hex() for f in b.recv_batch(64) if marker in f]
print(json.dumps({"tap_saw_it": True, "a_got": len(a.recv_batch(64)), "b_frames": b_frames}))
"""


def test_sent_frames_are_not_received_back(lab: Lab) -> None:
    res = lab.run_python(lab.directors[2].ns, IGNORE_OUTGOING)
    got = json.loads(res.stdout)
    assert got["tap_saw_it"] and got["b_frames"] == []


FANOUT_SERVICES = f"""\
vmac_id: 1
gateways: [{GATEWAY}]
services:
  - {{name: web, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,
     dests: [{{address: {real_addr(1)}}}, {{address: {real_addr(2)}}}]}}
"""


@pytest.fixture
def fanout_director(lab: Lab) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, FANOUT_SERVICES, "fanout", workers=2) as d:
        yield d


def test_fanout_workers_serve_every_client(lab: Lab, fanout_director: DirectorProc) -> None:
    """Two workers split clients by address; each must still resolve MACs (own ARP sockets)."""
    sources = lab.client_sources()
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "http", VIP_NAT, "80", "1",
                         "--sources", ",".join(sources), "--repeat", "2", timeout=120)
    got = json.loads(res.stdout)
    assert sorted(src for src, _ in got) == sorted(sources * 2)
    assert {srv for _, srv in got} == {"r1", "r2"}
    wait_for(lambda: fanout_director.stats()["rx_frames"][0] > 0, what="worker 0 stats")
