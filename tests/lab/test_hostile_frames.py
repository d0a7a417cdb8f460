"""Hostile L2 input on both sides of a director while real TCP connections run (issue 17, frames).

One static directord (``cluster: none``, tests/lab/labutil.py) runs in d1 with NAT services on the
VIP; frames are crafted with scapy by the test and sent raw from the client (its own port) or from d3
(an idle director namespace standing in for a foreign host on either segment, with a foreign MAC).
The director's stats file shows its counters; real kernel TCP at both ends judges the connections.
The services exist in both families (IPv4 and IPv6 NAT VIPs): malformed IPv6 headers, bad extension-
header chains, IPv6 fragments and malformed neighbour discovery are sent at the live director while
an IPv4 and an IPv6 connection are held open (``test_hostile_ipv6_frames_...``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from deploy.lab import GATEWAY, PYTHON, VIP6_NAT, VIP_NAT, Lab, client_addr6, real_addr, real_addr6
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
  - {{name: http6, protocol: tcp, vip: "{VIP6_NAT}", port: {HTTP}, scheduler: rr, forward: nat,
     dests: [{{address: "{real_addr6(1)}"}}, {{address: "{real_addr6(2)}"}}, {{address: "{real_addr6(3)}"}}]}}
  - {{name: echo6, protocol: tcp, vip: "{VIP6_NAT}", port: {ECHO}, scheduler: rr, forward: nat,
     dests: [{{address: "{real_addr6(1)}"}}, {{address: "{real_addr6(2)}"}}, {{address: "{real_addr6(3)}"}}]}}
"""

HOLD = r"""
import json, socket, sys, time
deadline = time.monotonic() + 60
while True:  # an IPv6 VIP's first SYNs may meet unresolved neighbours: TCP retransmits, we retry
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
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


# -- IPv6 ------------------------------------------------------------------------------------------

SOLICITED_VIP6 = "ff02::1:ff00:10"
"""The solicited-node group of VIP6_NAT (fd00:18::10) and its MAC."""
SOLICITED_VIP6_MAC = "33:33:ff:00:00:10"


def _v6(mac: str, upper: Packet, dst_mac: str = VMAC, **ip: object) -> bytes:
    fields: dict[str, object] = {"src": client_addr6(1), "dst": VIP6_NAT, **ip}
    return bytes(Ether(src=mac, dst=dst_mac) / IPv6(**fields) / upper)


def _ns(mac: str, dst_mac: str = SOLICITED_VIP6_MAC, dst: str = SOLICITED_VIP6, hlim: int = 255,
        code: int = 0, opt_len: int = 1, cksum: int | None = None) -> bytes:
    ns = ICMPv6ND_NS(tgt=VIP6_NAT, code=code) / ICMPv6NDOptSrcLLAddr(lladdr=mac, len=opt_len)
    if cksum is not None:
        ns[ICMPv6ND_NS].cksum = cksum
    return _v6(mac, ns, dst_mac, dst=dst, hlim=hlim)


def hostile_v6(mac: str) -> dict[str, list[bytes]]:
    """Malformed IPv6 frames to the virtual MAC (and ND to the VIP's solicited-node group), by the drop
    reason (or ``nd_malformed``) each must be counted under."""
    c6 = client_addr6(1)

    def syn(sport: int) -> TCP:
        return TCP(sport=sport, dport=HTTP, flags="S", seq=sport)

    good = _v6(mac, syn(40000))
    bad_version = bytearray(good)
    bad_version[14] = 0x40 | bad_version[14] & 0x0F
    plen_zero, plen_long = bytearray(good), bytearray(good)
    plen_zero[18:20] = b"\0\0"
    plen_long[18:20] = (len(good) - 54 + 200).to_bytes(2, "big")
    ext_past_end = bytearray(_v6(mac, IPv6ExtHdrDestOpt(nh=6, len=20) / syn(40007)))
    ext_past_end[18:20] = (8 + 20).to_bytes(2, "big")  # the options header claims 168 bytes, 28 left
    del ext_past_end[14 + 40 + 28:]
    chain = syn(40008)
    for _ in range(9):
        chain = IPv6ExtHdrDestOpt() / chain
    return {
        "truncated": [good[:40], good[:50]],
        "bad_version": [bytes(bad_version)],
        "bad_totlen": [bytes(plen_zero), bytes(plen_long)],
        "bad_addr": [_v6(mac, syn(40001), src="::1"), _v6(mac, syn(40002), src="::ffff:198.18.0.100"),
                     _v6(mac, syn(40003), src="ff02::1"), _v6(mac, syn(40004), dst="::198.18.0.10")],
        "bad_exthdr": [_v6(mac, IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / syn(40005)),
                       _v6(mac, IPv6ExtHdrRouting(addresses=[c6], segleft=1) / syn(40006)),
                       bytes(ext_past_end), _v6(mac, chain)],
        "fragment": [_v6(mac, IPv6ExtHdrFragment(offset=0, m=1, id=7) / syn(40009)),
                     _v6(mac, IPv6ExtHdrFragment(nh=6, offset=100, m=0, id=7) / Raw(b"x" * 24)),
                     _v6(mac, IPv6ExtHdrFragment(nh=17, offset=3, m=1, id=8) / Raw(b"y" * 16))],
        "bad_l4": [_v6(mac, UDP(sport=40010, dport=HTTP, chksum=0) / Raw(b"z" * 8)),
                   _v6(mac, TCP(sport=40011, dport=HTTP, flags="S", dataofs=15))],
        "unknown_proto": [_v6(mac, Raw(b"\0" * 16), nh=50), _v6(mac, Raw(b"\0" * 8), nh=59)],
        "icmp_unrelated": [_v6(mac, ICMPv6EchoRequest(id=1, seq=1), dst="fd00:18::1e"),  # not owned
                           _v6(mac, ICMPv6EchoReply(id=1, seq=1)),
                           _v6(mac, ICMPv6DestUnreach() / IPv6(src=VIP6_NAT, dst=c6) / UDP(sport=1, dport=2)),
                           _v6(mac, ICMPv6PacketTooBig(mtu=1280) / b"\x60\x00")],  # quote cut short
        "ttl_exceeded": [_v6(mac, syn(40012), hlim=1)],
        "nd_malformed": [_ns(mac, hlim=64), _ns(mac, code=1), _ns(mac, opt_len=0), _ns(mac, cksum=0x1234),
                         _ns(mac, dst_mac=VMAC, dst=VIP6_NAT, hlim=1),
                         _v6(mac, ICMPv6ND_NA(tgt=c6, S=1, O=1), "33:33:00:00:00:01", dst="ff02::1",
                             hlim=255),
                         _v6(mac, ICMPv6ND_NS(tgt="ff02::1"), SOLICITED_VIP6_MAC, dst=SOLICITED_VIP6,
                             hlim=255)],
    }


def _hold(lab: Lab, vip: str) -> subprocess.Popen[bytes]:
    held = lab.popen(lab.client.ns, [PYTHON, "-c", HOLD, vip, str(ECHO)], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE)
    assert held.stdout is not None
    assert json.loads(held.stdout.readline()) == "connected"
    return held


def _again(held: subprocess.Popen[bytes]) -> Any:
    assert held.stdin is not None and held.stdout is not None
    held.stdin.write(b"go\n")
    held.stdin.flush()
    return json.loads(held.stdout.readline())


def test_hostile_ipv6_frames_are_counted_and_live_flows_go_on(lab: Lab, director: DirectorProc) -> None:
    """Malformed IPv6 headers, bad extension-header chains, fragments and malformed ND, sent (ten rounds)
    while one IPv4 and one IPv6 connection are held open: each frame is counted under its drop reason,
    no conn is created, the director stays up, both held connections and new ones in both families work."""
    c = lab.client
    held = [_hold(lab, VIP_NAT), _hold(lab, VIP6_NAT)]
    try:
        before = director.fresh_stats()
        frames = hostile_v6(c.macs["eth0"])
        rounds = 10
        sent = sum(send_frames(lab, c.ns, "eth0", [f for fs in frames.values() for f in fs])
                   for _ in range(rounds))
        assert sent == rounds * sum(len(fs) for fs in frames.values())
        want = {k: rounds * len(fs) for k, fs in frames.items()}

        def grown(now: dict[str, Any]) -> dict[str, int]:
            got = {k: now["drops"][k] - before["drops"][k] for k in want if k != "nd_malformed"}
            got["nd_malformed"] = now["neigh"]["nd_malformed"] - before["neigh"]["nd_malformed"]
            return got

        wait_for(lambda: all(n >= want[k] for k, n in grown(director.stats()).items()),
                 what=f"every hostile IPv6 frame counted under its reason {want}")
        after = director.fresh_stats()
        assert director.proc.poll() is None
        assert conns(after) == conns(before)  # nothing scheduled (the ttl_exceeded SYN neither)
        assert after["drops"]["arp_ignored"] - before["drops"]["arp_ignored"] >= want["nd_malformed"]
        assert [_again(h) for h in held] == ["again", "again"]  # both families' live flows go on
    finally:
        for h in held:
            for pipe in (h.stdin, h.stdout):
                if pipe is not None:
                    pipe.close()
            Lab.stop(h)
    assert http_ok(lab, 3) == {"r1", "r2", "r3"}
    got6 = client(lab, "http", VIP6_NAT, str(HTTP), "3")
    assert {server for _src, server in got6} == {"r1", "r2", "r3"}
