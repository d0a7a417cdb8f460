"""The IPv6 packet path (director.dataplane.path6) on a real ConnTable, frames built with scapy."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from director.dataplane.arp import vrrp_mac
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.packet import mac_bytes as mb
from director.services.sched import registry
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import ConnTable
from director.types import FwdMethod, SvcFlags

VIP6 = "2001:db8::10"
RS6 = ["fd00:2::1", "fd00:2::2"]
RS_MAC = ["02:00:00:00:02:01", "02:00:00:00:02:02"]
CLIENT6 = "2001:db8:1::77"
CLIENT_MAC = "02:00:00:00:01:01"
VMAC = "00:00:5e:00:02:01"
"""IPv6's virtual MAC (VRRP's 00:00:5e:00:02:XX): what clients resolve an IPv6 VIP to, the source of
IPv6 frames."""
VMAC4 = "00:00:5e:00:01:01"
VIP4 = "198.18.0.100"
RS4 = "198.18.2.1"


def a6(text: str) -> int:
    return int(ipaddress.ip_address(text))


class Lab6:
    def __init__(self, fwd: FwdMethod = FwdMethod.NAT, proto: int = 6, persistent: bool = False,
                 macs: bool = True, sched: str = "rr", **cfg_kw: Any) -> None:
        self.now = 1000.0
        self.table = ConnTable(lambda: self.now)
        services = ServiceTable()
        self.svc = VirtualService(protocol=proto, addr=a6(VIP6), port=80, scheduler=registry.create(sched),
                                  flags=SvcFlags.PERSISTENT if persistent else SvcFlags(0), timeout=300.0,
                                  netmask=int(ipaddress.IPv6Network("::/64").netmask))
        for a, m in zip(RS6, RS_MAC, strict=True):
            d = Dest(self.svc, a6(a), 8080 if fwd == FwdMethod.NAT else 80, fwd=fwd)
            d.mac = mb(m) if macs else None
            self.svc.add_dest(d)
        services.add(self.svc)
        svc4 = VirtualService(protocol=6, addr=a6(VIP4), port=80, scheduler=registry.create("rr"))
        svc4.add_dest(Dest(svc4, a6(RS4), 8080))
        services.add(svc4)
        self.d = Director(self.table, services, lambda: self.now, CoreConfig(vmac=vrrp_mac(1), **cfg_kw))
        self.garp = self.d.set_active(True)
        if macs:
            for a, m in zip(RS6, RS_MAC, strict=True):
                self.d.neigh[INT].learn(a6(a), mb(m), self.now)

    def send(self, pkt: Packet, side: int = EXT) -> tuple[int, Packet] | None:
        out = self.d.handle(bytearray(bytes(pkt)), side)
        return None if out is None else (out[0], Ether(bytes(out[1])))

    def drops(self) -> dict[str, int]:
        return {k: v for k, v in self.d.counters.as_dict().items() if v}


def cpkt(l4: Packet | None = None, src: str = CLIENT6, dst: str = VIP6, hlim: int = 64,
         ext: Packet | None = None) -> Packet:
    l4 = TCP(sport=40000, dport=80, flags="S", seq=1) if l4 is None else l4
    ip = IPv6(src=src, dst=dst, hlim=hlim)
    return Ether(src=CLIENT_MAC, dst=VMAC) / (ip / ext / l4 if ext is not None else ip / l4)


def rpkt(src: str, l4: Packet, dst: str = CLIENT6, mac: str = RS_MAC[0]) -> Packet:
    return Ether(src=mac, dst=VMAC) / IPv6(src=src, dst=dst, hlim=64) / l4


def l4_csum_ok(p: Packet) -> bool:
    """The frame's TCP/UDP checksum equals the one scapy computes from scratch."""
    layer = TCP if TCP in p else UDP
    got = p[layer].chksum
    q = p.copy()
    del q[layer].chksum
    return bool(Ether(bytes(q))[layer].chksum == got)


def test_nat_both_ways_rewrites_addresses_ports_hop_limit_and_checksum() -> None:
    lab = Lab6()
    res = lab.send(cpkt(TCP(sport=40000, dport=80, flags="S", seq=1) / b"hello"))
    assert res is not None
    side, p = res
    assert side == INT and (p.src, p.dst) == (VMAC, RS_MAC[0])
    assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (CLIENT6, RS6[0], 63)
    assert (p[TCP].sport, p[TCP].dport) == (40000, 8080) and bytes(p[TCP].payload) == b"hello"
    assert l4_csum_ok(p)
    res = lab.send(rpkt(RS6[0], TCP(sport=8080, dport=40000, flags="SA", seq=9, ack=2)), INT)
    assert res is not None
    side, p = res
    assert side == EXT and (p.src, p.dst) == (VMAC, CLIENT_MAC)
    assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (VIP6, CLIENT6, 63)
    assert (p[TCP].sport, p[TCP].dport) == (80, 40000) and l4_csum_ok(p)
    conn = lab.table.in_get(6, a6(CLIENT6), 40000, a6(VIP6), 80)
    assert conn is not None and conn.daddr == a6(RS6[0]) and conn.in_pkts == 1
    assert lab.svc.dests[0].counters.inpkts == 1 and lab.svc.dests[0].counters.outpkts == 1
    assert lab.drops() == {}


def test_udp_nat_both_ways_keeps_a_valid_checksum() -> None:
    lab = Lab6(proto=17)
    for i in range(20):
        res = lab.send(cpkt(UDP(sport=5000 + i, dport=80) / (b"q" * i)))
        assert res is not None and res[1][UDP].dport == 8080 and l4_csum_ok(res[1])
        back = lab.send(rpkt(res[1][IPv6].dst, UDP(sport=8080, dport=5000 + i) / b"a",
                             mac=RS_MAC[RS6.index(res[1][IPv6].dst)]), INT)
        assert back is not None and back[1][UDP].sport == 80 and back[1][IPv6].src == VIP6
        assert l4_csum_ok(back[1])


def test_dr_changes_only_the_macs_and_hop_limit() -> None:
    lab = Lab6(FwdMethod.DR)
    pkt = cpkt(TCP(sport=40000, dport=80, flags="S"))
    res = lab.send(pkt)
    assert res is not None
    side, p = res
    assert side == INT and p.dst == RS_MAC[0] and p[IPv6].hlim == 63
    want = pkt.copy()
    want[IPv6].hlim = 63
    assert bytes(p)[12:] == bytes(want)[12:]


@pytest.mark.parametrize("tun_src", [0, a6("fd00:2::fe")])
def test_tun_is_ip6ip6_to_the_dest(tun_src: int) -> None:
    lab = Lab6(FwdMethod.TUN, tun_src6=tun_src)
    pkt = cpkt(TCP(sport=40000, dport=80, flags="S") / b"x")
    res = lab.send(pkt)
    assert res is not None
    side, p = res
    outer = p[IPv6]
    assert side == INT and p.dst == RS_MAC[0] and outer.nh == 41 and outer.dst == RS6[0]
    assert outer.src == (str(ipaddress.IPv6Address(tun_src)) if tun_src else VIP6)
    inner = outer.payload
    assert isinstance(inner, IPv6) and inner.hlim == 63 and (inner.src, inner.dst) == (CLIENT6, VIP6)
    assert outer.plen == len(bytes(inner)) and bytes(inner[TCP]) == bytes(pkt[TCP])


def test_tun_bigger_than_the_mtu_is_too_big() -> None:
    lab = Lab6(FwdMethod.TUN, mtu=1280)
    out = lab.send(cpkt(TCP(sport=40000, dport=80, flags="S") / (b"x" * 1200)))
    assert out is not None and out[0] == EXT and ICMPv6PacketTooBig in out[1]  # not forwarded: test_icmp6
    assert lab.drops() == {"too_big": 1}


@pytest.mark.parametrize("ext", [
    IPv6ExtHdrHopByHop(),
    IPv6ExtHdrDestOpt(),
    IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0, addresses=[VIP6]),
    IPv6ExtHdrFragment(offset=0, m=0, id=7),  # an atomic fragment is a whole packet
])
def test_extension_headers_are_walked_and_kept(ext: Packet) -> None:
    lab = Lab6()
    pkt = cpkt(TCP(sport=40000, dport=80, flags="S") / b"data", ext=ext)
    res = lab.send(pkt)
    assert res is not None and res[1][TCP].dport == 8080 and l4_csum_ok(res[1])
    n = len(bytes(pkt[IPv6].payload)) - len(bytes(pkt[TCP]))
    assert n >= 8 and bytes(res[1])[54:54 + n] == bytes(pkt)[54:54 + n]


@pytest.mark.parametrize(("pkt", "reason"), [
    (cpkt(ext=IPv6ExtHdrFragment(offset=0, m=1, id=7)), "fragment"),
    (cpkt(ext=IPv6ExtHdrFragment(offset=10, m=0, id=7)), "fragment"),
    (cpkt(ext=IPv6ExtHdrRouting(segleft=1, addresses=[RS6[0]])), "bad_exthdr"),
    (cpkt(ext=IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()), "bad_exthdr"),
    (cpkt(ext=IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
          / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
          / IPv6ExtHdrDestOpt()), "bad_exthdr"),
    (cpkt(hlim=1), "ttl_exceeded"),
    (cpkt(ICMPv6EchoReply()), "icmp_unrelated"),
    (cpkt(src="::198.18.1.10"), "bad_addr"),
    (cpkt(src="::ffff:198.18.1.10"), "bad_addr"),
    (cpkt(src="ff02::1"), "bad_addr"),
    (cpkt(dst="2001:db8::99"), "no_service"),
    (cpkt(TCP(sport=40000, dport=81, flags="S")), "bypass"),
    (cpkt(TCP(sport=40000, dport=80, flags="A")), "no_conn"),
    (cpkt(TCP(sport=40000, dport=80, flags="R")), "rst_no_conn"),
])
def test_drops_are_counted_by_reason(pkt: Packet, reason: str) -> None:
    lab = Lab6()
    out = lab.send(pkt)  # nothing forwarded; only time exceeded answers (test_icmp6)
    assert out is None or (reason == "ttl_exceeded" and ICMPv6TimeExceeded in out[1])
    assert lab.drops() == {reason: 1}


def test_udp_with_a_zero_checksum_is_bad_l4() -> None:
    lab = Lab6(proto=17)
    raw = bytearray(bytes(cpkt(UDP(sport=5000, dport=80) / b"x")))
    raw[54 + 6:54 + 8] = b"\x00\x00"
    assert lab.d.handle(raw, EXT) is None and lab.drops() == {"bad_l4": 1}


def test_a_backup_forwards_no_v6() -> None:
    lab = Lab6()
    lab.d.set_active(False)
    assert lab.send(cpkt()) is None and lab.drops() == {"not_active": 1}


def test_persistence_keeps_a_v6_prefix_on_one_dest() -> None:
    lab = Lab6(persistent=True)
    first = lab.send(cpkt(src="2001:db8:1::1"))
    same_net = lab.send(cpkt(src="2001:db8:1::2:3"))
    other_net = lab.send(cpkt(src="2001:db8:2::1"))
    assert first is not None and same_net is not None and other_net is not None
    assert first[1][IPv6].dst == same_net[1][IPv6].dst != other_net[1][IPv6].dst
    t = lab.table.ct_in_get(6, a6("2001:db8:1::"), 0, a6(VIP6), 80)
    assert t is not None and t.n_control == 2


def test_a_zero_prefix_template_stays_an_ipv6_key() -> None:
    lab = Lab6(persistent=True)
    lab.svc.netmask = 0
    assert lab.send(cpkt()) is not None
    templates = [c for c in lab.table if c.flags & 0x1000]
    assert len(templates) == 1 and templates[0].caddr >= 2**32


def test_an_unresolved_v6_dest_is_no_neigh_and_solicited_never_arped() -> None:
    lab = Lab6(macs=False)
    out = lab.send(cpkt())
    assert out is not None and out[0] == INT and out[1][ICMPv6ND_NS].tgt == RS6[0]
    assert lab.drops() == {"no_neigh": 1}
    assert all(ARP not in Ether(bytes(f)) or Ether(bytes(f))[ARP].psrc != "0.0.0.0" for _s, f in lab.garp)


def test_a_configured_dest_mac_resolves_the_next_packet() -> None:
    lab = Lab6(macs=False)
    lab.svc.dests[0].mac = mb(RS_MAC[0])
    first = lab.send(cpkt())  # no_neigh: the configured MAC is taken, an NS confirms it
    assert first is not None and ICMPv6ND_NS in first[1]
    assert lab.send(cpkt(TCP(sport=40000, dport=80, flags="S"))) is not None


def test_v4_and_v6_services_side_by_side() -> None:
    from scapy.layers.inet import IP

    lab = Lab6()
    garp = [Ether(bytes(f)) for _s, f in lab.garp]
    assert [p[ARP].psrc for p in garp if ARP in p] == [VIP4]  # no ARP for a v6 VIP: an unsolicited NA
    assert VIP6 in {p[ICMPv6ND_NA].tgt for p in garp if ICMPv6ND_NA in p}
    lab.d.neigh[INT].learn(a6(RS4), mb(RS_MAC[0]), lab.now)
    v4 = lab.send(Ether(src=CLIENT_MAC, dst=VMAC4) / IP(src="198.18.1.10", dst=VIP4) /
                  TCP(sport=40000, dport=80, flags="S"))
    v6 = lab.send(cpkt())
    assert v4 is not None and v4[1][IP].dst == RS4
    assert v6 is not None and v6[1][IPv6].dst == RS6[0]
    assert len(lab.table) == 2 and lab.drops() == {}


def test_the_client_is_learned_from_its_first_frame() -> None:
    lab = Lab6()
    lab.send(cpkt())
    assert lab.d.neigh[EXT].get(a6(CLIENT6)) == mb(CLIENT_MAC)


def test_ops_reply_without_entry_goes_back_from_the_vip() -> None:
    lab = Lab6(proto=17)
    lab.svc.flags |= SvcFlags.ONEPACKET
    lab.d.services.reindex()
    res = lab.send(cpkt(UDP(sport=5353, dport=80) / b"q"))
    assert res is not None and len(lab.table) == 0
    back = lab.send(rpkt(res[1][IPv6].dst, UDP(sport=8080, dport=5353) / b"a",
                         mac=RS_MAC[RS6.index(res[1][IPv6].dst)]), INT)
    assert back is not None and back[1][IPv6].src == VIP6 and back[1][UDP].sport == 80
    assert l4_csum_ok(back[1])


def _mutants(rng: random.Random, seeds: list[bytes]) -> bytes:
    base = bytearray(rng.choice(seeds))
    op = rng.randrange(4)
    if op == 0:
        return bytes(base[:rng.randrange(len(base) + 1)])
    if op == 1:
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(14, len(base))
            base[i] = rng.randrange(256)
        return bytes(base)
    if op == 2:
        return bytes(base[:14]) + rng.randbytes(rng.randrange(120))
    i = rng.randrange(54, len(base))  # next-header / length bytes of extension headers
    base[i] = rng.choice((0, 6, 17, 43, 44, 58, 60, 255))
    return bytes(base)


def test_fuzz_random_and_truncated_v6_frames_never_raise() -> None:
    rng = random.Random(1306)
    seeds = [bytes(p) for p in (
        cpkt(), cpkt(UDP(sport=1, dport=80) / b"xyz"), cpkt(ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()),
        cpkt(ext=IPv6ExtHdrRouting(segleft=0, addresses=[VIP6])), cpkt(ext=IPv6ExtHdrFragment(m=1)),
        cpkt(ICMPv6EchoRequest()))]
    for fwd in (FwdMethod.NAT, FwdMethod.DR, FwdMethod.TUN):
        lab = Lab6(fwd)
        for _ in range(3000):
            frame = _mutants(rng, seeds)
            lab.d.handle(bytearray(frame), rng.randrange(2))
        assert lab.d.counters.total() > 0


def test_ipv6_has_vrrps_ipv6_virtual_mac_and_ipv4_keeps_its_own() -> None:
    lab = Lab6()
    assert lab.d.cfg.vmac6 == mb("00:00:5e:00:02:01") and lab.d.cfg.vmac == mb(VMAC4)
    out = lab.send(cpkt())  # to IPv6's virtual MAC: forwarded from it
    assert out is not None and out[1].src == VMAC
    to_v4_mac = cpkt(TCP(sport=40001, dport=80, flags="S"))
    to_v4_mac[Ether].dst = VMAC4  # IPv6 to the IPv4 virtual MAC is taken too (a stale neighbour entry)
    out2 = lab.send(to_v4_mac)
    assert out2 is not None and out2[1].src == VMAC
    v4_to_v6_mac = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP4) / TCP(flags="S")
    assert lab.send(v4_to_v6_mac) is None and lab.drops() == {"not_vmac": 1}
    # one cache per side holds both families: each prefix has its family's source MAC
    cache = lab.d.neigh[INT]
    cache.learn(a6(RS4), mb("02:00:00:00:04:01"), lab.now)
    assert cache.hdr[a6(RS4)][6:] == mb(VMAC4) and cache.hdr[a6(RS6[0])][6:] == mb(VMAC)
    cache.set_own_mac(mb("02:aa:00:00:00:01"), mb("02:aa:00:00:00:02"))
    assert cache.hdr[a6(RS4)][6:] == mb("02:aa:00:00:00:01")
    assert cache.hdr[a6(RS6[0])][6:] == mb("02:aa:00:00:00:02")
