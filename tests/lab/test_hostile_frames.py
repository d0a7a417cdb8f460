"""Hostile L2 input on both sides of a director while real TCP connections run (issue 17, frames).

One static directord (``cluster: none``, tests/lab/labutil.py) runs in d1 with NAT services on the
VIP; frames are crafted with scapy by the test and sent raw from the client (its own port) or from d3
(an idle director namespace standing in for a foreign host on either segment, with a foreign MAC).
The director's stats file shows its counters; real kernel TCP at both ends judges the connections.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from deploy.lab import GATEWAY, PYTHON, VIP_NAT, Lab, real_addr
from tests.lab.labutil import DirectorProc, send_frames, wait_for

pytestmark = pytest.mark.lab

VMAC = "00:00:5e:00:01:01"
FOREIGN = "02:66:66:66:66:66"
HTTP, ECHO = 80, 7
NEIGH_MAX = 64
CONFIG = f"""\
vmac_id: 1
gateways: [{GATEWAY}]
neigh_max_entries: {NEIGH_MAX}
services:
  - {{name: http, protocol: tcp, vip: {VIP_NAT}, port: {HTTP}, scheduler: rr, forward: nat,
     dests: [{{address: {real_addr(1)}}}, {{address: {real_addr(2)}}}, {{address: {real_addr(3)}}}]}}
  - {{name: echo, protocol: tcp, vip: {VIP_NAT}, port: {ECHO}, scheduler: rr, forward: nat,
     dests: [{{address: {real_addr(1)}}}, {{address: {real_addr(2)}}}, {{address: {real_addr(3)}}}]}}
"""

HOLD = r"""
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"hello")
assert s.recv(5) == b"hello"
print(json.dumps("connected"), flush=True)
sys.stdin.readline()
s.settimeout(5.0)
try:
    s.sendall(b"again")
    got = s.recv(5).decode()
except OSError as exc:
    got = None
print(json.dumps(got), flush=True)
"""


@pytest.fixture(scope="module")
def director(lab: Lab) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, CONFIG, "hostile") as d:
        yield d


def client(lab: Lab, *args: str, timeout: float = 120.0) -> Any:
    return json.loads(lab.run_python(lab.client.ns, "tests.lab.clientops", *args, timeout=timeout).stdout)


def conns(stats: dict[str, Any]) -> int:
    return sum(s["counters"]["conns"] for s in stats["services"])


def syn(src_mac: str, dst_mac: str, saddr: str, sport: int, vlan: int | None = None) -> bytes:
    eth = Ether(src=src_mac, dst=dst_mac)
    l3 = IP(src=saddr, dst=VIP_NAT) / TCP(sport=sport, dport=HTTP, flags="S", seq=sport)
    return bytes(eth / Dot1Q(vlan=vlan) / l3 if vlan is not None else eth / l3)


def http_ok(lab: Lab, n: int) -> set[str]:
    got = client(lab, "http", VIP_NAT, str(HTTP), str(n))
    assert len(got) == n
    return {server for _src, server in got}


def test_vlan_tagged_syns_create_no_conns(lab: Lab, director: DirectorProc) -> None:
    before = director.fresh_stats()
    c = lab.client
    frames = [syn(c.macs["eth0"], VMAC, src, 30000 + k, vlan=5 + k % 3)
              for k, src in enumerate(lab.client_sources() * 7)][:64]
    assert send_frames(lab, c.ns, "eth0", frames) == 64
    wait_for(lambda: director.stats()["rx_frames"][0] - before["rx_frames"][0] >= 64, what="64 frames read")
    assert conns(director.fresh_stats()) == conns(before)
    assert director.stats()["drops"]["vlan_tagged"] - before["drops"]["vlan_tagged"] >= 64
    assert http_ok(lab, 3) == {"r1", "r2", "r3"}  # untagged traffic is served meanwhile


def test_frames_to_other_macs_are_counted_not_forwarded(lab: Lab, director: DirectorProc) -> None:
    before = director.fresh_stats()
    c = lab.client
    frames = [syn(c.macs["eth0"], dst, c.addrs["eth0"], 31000 + k)
              for k, dst in enumerate(["02:77:77:77:77:77", "ff:ff:ff:ff:ff:ff", "01:00:5e:01:02:03"] * 10)]
    send_frames(lab, c.ns, "eth0", frames)
    wait_for(lambda: director.stats()["rx_frames"][0] - before["rx_frames"][0] >= 30, what="30 frames read")
    assert conns(director.fresh_stats()) == conns(before)
    assert director.stats()["drops"]["not_vmac"] - before["drops"]["not_vmac"] >= 30


def _echo_many(lab: Lab, n: int, size: int) -> subprocess.Popen[bytes]:
    return lab.popen(lab.client.ns, [PYTHON, "-m", "tests.lab.clientops", "echo", VIP_NAT, str(ECHO), str(n),
                                     str(size)], stdout=subprocess.PIPE)


def test_spoofed_client_syn_does_not_break_live_connections(lab: Lab, director: DirectorProc) -> None:
    """SYNs carrying the client's address from a foreign MAC (another host on the client segment) while
    one connection is held open and 40 others move 256 KiB each: none of them breaks."""
    c, d3 = lab.client, lab.directors[2]
    held = lab.popen(c.ns, [PYTHON, "-c", HOLD, VIP_NAT, str(ECHO)], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE)
    assert held.stdout is not None and held.stdin is not None
    try:
        assert json.loads(held.stdout.readline()) == "connected"
        before = director.stats()
        bulk = _echo_many(lab, 40, 256 * 1024)
        spoofs = [syn(FOREIGN, VMAC, c.addrs["eth0"], 32000 + k) for k in range(20)]
        while bulk.poll() is None:  # spoof for as long as the bulk connections run
            send_frames(lab, d3.ns, "ext", spoofs)
        out, _ = bulk.communicate(timeout=120)
        got = json.loads(out)
        assert got["failed"] == [] and got["ok"] == 40
        # one more spoofed SYN, read by the director right before the held connection talks again
        rx = director.fresh_stats()["rx_frames"][0]
        send_frames(lab, d3.ns, "ext", [syn(FOREIGN, VMAC, c.addrs["eth0"], 32999)])
        wait_for(lambda: director.stats()["rx_frames"][0] > rx, what="the last spoofed SYN to be read")
        held.stdin.write(b"go\n")
        held.stdin.flush()
        assert json.loads(held.stdout.readline()) == "again"  # the held connection still works
        after = director.fresh_stats()
        assert conns(after) - conns(before) >= 21 + 40  # the spoofed SYNs were read (and scheduled)
        assert after["neigh"]["neigh_refused_data"] - before["neigh"]["neigh_refused_data"] >= 21
    finally:
        held.stdin.close()
        Lab.stop(held)
        held.stdout.close()


def test_spoofed_server_side_frames_do_not_break_new_connections(lab: Lab, director: DirectorProc) -> None:
    """Frames carrying the real servers' addresses from a foreign MAC on the server segment never change
    the director's neighbour entries: new connections through the VIP keep reaching every server."""
    d3 = lab.directors[2]
    before = director.fresh_stats()
    frames = [bytes(Ether(src=FOREIGN, dst=VMAC) / IP(src=real_addr(i), dst=VIP_NAT) /
                    TCP(sport=HTTP, dport=HTTP, flags="S")) for i in (1, 2, 3)]
    frames += [bytes(Ether(src=FOREIGN, dst=VMAC) / IP(src=real_addr(i), dst=lab.client.addrs["eth0"]) /
                     TCP(sport=HTTP, dport=33000, flags="SA")) for i in (1, 2, 3)]
    send_frames(lab, d3.ns, "int", frames)
    wait_for(lambda: director.stats()["rx_frames"][1] - before["rx_frames"][1] >= len(frames),
             what="the director to read the spoofed frames")
    assert http_ok(lab, 9) == {"r1", "r2", "r3"}


def test_arp_outcomes_are_counted(lab: Lab, director: DirectorProc) -> None:
    c = lab.client
    mac, addr = c.macs["eth0"], c.addrs["eth0"]
    before = director.fresh_stats()["neigh"]
    frames = [
        bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=addr, pdst=VIP_NAT)),
        bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=addr, pdst="198.18.0.77")),
        bytes(Ether(src=FOREIGN, dst=VMAC) / ARP(op=2, hwsrc=FOREIGN, psrc="198.18.0.78",
                                                 pdst="198.18.0.79")),
        bytes(Ether(src=mac, dst=VMAC) / ARP(op=9, hwsrc=mac, psrc=addr, pdst=VIP_NAT)),
        bytes(Ether(src=FOREIGN, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=FOREIGN, psrc=VIP_NAT,
                                                                  pdst=VIP_NAT)),
    ]
    send_frames(lab, c.ns, "eth0", frames)
    want = {"arp_request_answered": 1, "arp_request_ignored": 2, "arp_reply_ignored": 1, "arp_unknown_op": 1,
            "arp_conflicts": 1}

    def counted() -> bool:
        now = director.stats()["neigh"]
        return all(now[k] - before[k] >= n for k, n in want.items())

    wait_for(counted, what=f"ARP outcomes {want}")


def test_neighbour_cache_is_bounded_under_a_spoofed_flood(lab: Lab, director: DirectorProc) -> None:
    """1000 spoofed senders asking for the VIP: the cache stays at its bound, evictions are counted, and
    the real client is served afterwards (its entry is learned again)."""
    c = lab.client
    before = director.fresh_stats()["neigh"]
    frames = []
    for k in range(1000):  # distinct senders (the cache is keyed by address), each with its own MAC
        mac = f"02:55:00:00:{k >> 8:02x}:{k & 255:02x}"
        frames.append(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") /
                            ARP(op=1, hwsrc=mac, psrc=f"10.{k >> 8}.{k & 255}.1", pdst=VIP_NAT)))
    send_frames(lab, c.ns, "eth0", frames)
    answered = before["arp_request_answered"]
    wait_for(lambda: director.stats()["neigh"]["arp_request_answered"] - answered >= 1000,
             what="the flood to be answered")
    stats = director.fresh_stats()
    assert stats["neigh_entries"][0] <= NEIGH_MAX
    assert stats["neigh"]["neigh_evicted"] - before["neigh_evicted"] >= 1000 - NEIGH_MAX
    assert http_ok(lab, 3) == {"r1", "r2", "r3"}


def test_vlan_tags_are_seen_on_the_plain_socket_path_too(lab: Lab) -> None:
    """Without a ring the tag comes in PACKET_AUXDATA. A second director (own virtual MAC, backup: it
    claims nothing on the fabric) reads tagged and untagged SYNs: only the tagged ones are vlan_tagged."""
    vmac2 = "00:00:5e:00:01:02"
    d = DirectorProc(lab, 2, CONFIG.replace("vmac_id: 1", "vmac_id: 2"), "hostile-plain",
                     static_role="backup", rx_ring=False)
    try:
        c = lab.client
        tagged = [syn(c.macs["eth0"], vmac2, c.addrs["eth0"], 34000 + k, vlan=9) for k in range(10)]
        plain = [syn(c.macs["eth0"], vmac2, c.addrs["eth0"], 34100 + k) for k in range(10)]
        send_frames(lab, c.ns, "eth0", tagged + plain)
        wait_for(lambda: d.stats()["drops"]["vlan_tagged"] >= 10 and d.stats()["drops"]["not_active"] >= 10,
                 what="10 tagged SYNs counted as vlan_tagged, 10 untagged as not_active")
        assert d.stats()["drops"]["vlan_tagged"] == 10
    finally:
        d.stop()
