"""IPv6 neighbour discovery (director.dataplane.nd) through the Director, checked with scapy."""

from __future__ import annotations

import ipaddress
import random

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from director.dataplane.core import EXT, INT
from director.dataplane.nd import (
    ND_NA,
    ND_NS,
    NOT_ND,
    link_local,
    multicast_mac,
    na_frame,
    ns_frame,
    parse_nd,
    solicited_node,
)
from director.dataplane.packet import mac_bytes as mb
from tests.director.dataplane.test_core_ipv6 import (
    CLIENT6,
    CLIENT_MAC,
    RS6,
    RS_MAC,
    VIP6,
    VMAC,
    Lab6,
    a6,
    cpkt,
)

LL = "fe80::200:5eff:fe00:201"  # EUI-64 of 00:00:5e:00:02:01
GW6 = "fd00:2::fe"


def ns(target: str, src: str = CLIENT6, mac: str = CLIENT_MAC, hlim: int = 255, sll: bool = True,
       dst: str | None = None) -> Packet:
    group = dst or str(ipaddress.IPv6Address(solicited_node(a6(target))))
    p = Ether(src=mac, dst=":".join(f"{b:02x}" for b in multicast_mac(a6(group)))) / IPv6(
        src=src, dst=group, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    return p / ICMPv6NDOptSrcLLAddr(lladdr=mac) if sll else p


def na(target: str, mac: str, dst: str = LL, dmac: str = VMAC, flags: str = "SO") -> Packet:
    return Ether(src=mac, dst=dmac) / IPv6(src=target, dst=dst, hlim=255) / ICMPv6ND_NA(
        tgt=target, R=0, S=int("S" in flags), O=int("O" in flags)) / ICMPv6NDOptDstLLAddr(lladdr=mac)


def csum_ok(p: Packet) -> bool:
    """The ICMPv6 checksum is what scapy computes from scratch."""
    layer = ICMPv6ND_NA if ICMPv6ND_NA in p else ICMPv6ND_NS
    got = p[layer].cksum
    q = p.copy()
    del q[layer].cksum
    return bool(Ether(bytes(q))[layer].cksum == got)


def counts(lab: Lab6) -> dict[str, int]:
    return {k: v for k, v in lab.d.nb.stats.as_dict().items() if v}


def test_addresses() -> None:
    assert link_local(mb(VMAC)) == a6(LL)
    assert solicited_node(a6("2001:db8::12:3456")) == a6("ff02::1:ff12:3456")
    assert multicast_mac(a6("ff02::1:ff12:3456")) == mb("33:33:ff:12:34:56")


def test_frames_equal_scapy() -> None:
    n = ns_frame(mb(VMAC), a6(LL), a6(RS6[0]))
    expected = (Ether(src=VMAC, dst="33:33:ff:00:00:01") / IPv6(src=LL, dst="ff02::1:ff00:1", hlim=255) /
                ICMPv6ND_NS(tgt=RS6[0]) / ICMPv6NDOptSrcLLAddr(lladdr=VMAC))
    assert bytes(n) == bytes(expected)
    a = na_frame(mb(CLIENT_MAC), mb(VMAC), a6(VIP6), a6(CLIENT6), a6(VIP6), 0x60)
    expected = (Ether(src=VMAC, dst=CLIENT_MAC) / IPv6(src=VIP6, dst=CLIENT6, hlim=255) /
                ICMPv6ND_NA(tgt=VIP6, R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=VMAC))
    assert bytes(a) == bytes(expected)
    m = parse_nd(bytes(ns(VIP6)))
    assert m == (ND_NS, a6(CLIENT6), solicited_node(a6(VIP6)), a6(VIP6), 0, mb(CLIENT_MAC), mb(CLIENT_MAC))
    assert parse_nd(bytes(cpkt())) == NOT_ND
    assert parse_nd(bytes(na(RS6[0], RS_MAC[0])))[0] == ND_NA  # type: ignore[index]


def test_ns_for_a_vip_to_its_solicited_node_group_is_answered_from_the_vmac() -> None:
    lab = Lab6()
    out = lab.send(ns(VIP6))
    assert out is not None and out[0] == EXT
    p = out[1]
    assert (p.src, p.dst, p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (VMAC, CLIENT_MAC, VIP6, CLIENT6, 255)
    assert (p[ICMPv6ND_NA].tgt, p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O, p[ICMPv6ND_NA].R) == (VIP6, 1, 1, 0)
    assert p[ICMPv6NDOptDstLLAddr].lladdr == VMAC and csum_ok(p)
    assert lab.d.neigh[EXT].get(a6(CLIENT6)) == mb(CLIENT_MAC)  # the solicitor is learned
    assert counts(lab) == {"nd_ns_answered": 1, "neigh_learned_nd": 1} and lab.drops() == {}


def test_unicast_ns_to_the_vmac_and_for_the_link_local_are_answered() -> None:
    lab = Lab6()
    nud = Ether(src=CLIENT_MAC, dst=VMAC) / IPv6(src=CLIENT6, dst=VIP6, hlim=255) / ICMPv6ND_NS(tgt=VIP6)
    out = lab.send(nud)
    assert out is not None and out[1][ICMPv6ND_NA].tgt == VIP6 and out[1].dst == CLIENT_MAC
    for side in (EXT, INT):
        out = lab.send(ns(LL, src="fe80::1", mac=RS_MAC[0]), side)
        assert out is not None and out[0] == side and out[1][ICMPv6ND_NA].tgt == LL
        assert int(side == INT) == out[1][ICMPv6ND_NA].R and csum_ok(out[1])


def test_a_v6_nat_gateway_is_answered_inside_as_a_router() -> None:
    lab = Lab6(gw_addrs=frozenset({a6(GW6)}))
    out = lab.send(ns(GW6, src=RS6[0], mac=RS_MAC[0]), INT)
    assert out is not None and out[0] == INT and out[1][ICMPv6ND_NA].R == 1
    assert lab.send(ns(GW6), EXT) is None  # not owned outside
    assert lab.send(ns(VIP6, src=RS6[0], mac=RS_MAC[0]), INT) is None  # a VIP is not owned inside


def test_a_backup_stays_silent_but_learns() -> None:
    lab = Lab6()
    lab.d.set_active(False)
    assert lab.send(ns(VIP6)) is None
    assert lab.drops() == {"not_active": 1}
    assert counts(lab) == {"nd_ns_not_active": 1, "neigh_learned_nd": 1}
    assert lab.d.neigh[EXT].get(a6(CLIENT6)) == mb(CLIENT_MAC)


def test_ns_between_other_hosts_only_updates_a_known_entry() -> None:
    lab = Lab6()
    assert lab.send(ns("2001:db8::99")) is None
    assert a6(CLIENT6) not in lab.d.neigh[EXT]
    lab.d.neigh[EXT].learn(a6(CLIENT6), mb("02:00:00:00:09:09"), lab.now)
    assert lab.send(ns("2001:db8::99")) is None
    assert lab.d.neigh[EXT].get(a6(CLIENT6)) == mb(CLIENT_MAC)
    assert counts(lab) == {"nd_ns_ignored": 2, "neigh_updated_nd": 1} and lab.drops() == {"arp_ignored": 2}


def test_takeover_sends_an_unsolicited_na_for_every_v6_address() -> None:
    lab = Lab6(gw_addrs=frozenset({a6(GW6)}))
    lab.d.set_active(False)
    nas = [(side, Ether(bytes(f))) for side, f in lab.d.set_active(True) if ICMPv6ND_NA in Ether(bytes(f))]
    assert {(side, p[ICMPv6ND_NA].tgt) for side, p in nas} == {(EXT, VIP6), (EXT, LL), (INT, GW6), (INT, LL)}
    for side, p in nas:
        assert (p.src, p.dst, p[IPv6].dst, p[IPv6].hlim) == (VMAC, "33:33:00:00:00:01", "ff02::1", 255)
        flags = (p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O, p[ICMPv6ND_NA].R)
        assert flags == (0, 1, int(side == INT))
        assert p[ICMPv6NDOptDstLLAddr].lladdr == VMAC and csum_ok(p)


def test_an_ipv4_only_node_sends_and_answers_no_nd() -> None:
    from tests.director.dataplane.test_core import make_lab

    lab = make_lab()
    lab.director.set_active(False)
    assert all(Ether(bytes(f)).type == 0x0806 for _s, f in lab.director.set_active(True))
    assert lab.director.handle(bytearray(bytes(ns(LL))), EXT) is None


def test_a_dest_is_resolved_by_ns_and_learned_from_the_na() -> None:
    lab = Lab6(macs=False)
    out = lab.send(cpkt())
    assert out is not None and out[0] == INT
    p = out[1]
    assert (p.src, p.dst, p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (
        VMAC, "33:33:ff:00:00:01", LL, "ff02::1:ff00:1", 255)
    assert p[ICMPv6ND_NS].tgt == RS6[0] and p[ICMPv6NDOptSrcLLAddr].lladdr == VMAC and csum_ok(p)
    assert lab.send(cpkt()) is None  # probed once per interval
    assert lab.send(na(RS6[0], RS_MAC[0]), INT) is None
    assert lab.d.neigh[INT].get(a6(RS6[0])) == mb(RS_MAC[0])
    fwd = lab.send(cpkt())
    assert fwd is not None and fwd[0] == INT and fwd[1].dst == RS_MAC[0] and fwd[1][IPv6].dst == RS6[0]
    assert counts(lab)["nd_na_learned"] == 1 and counts(lab)["neigh_learned_nd"] == 1


def test_a_client_without_an_entry_is_solicited_for_the_reply() -> None:
    lab = Lab6()
    lab.send(cpkt())
    lab.d.neigh[EXT].forget(a6(CLIENT6))
    reply = Ether(src=RS_MAC[0], dst=VMAC) / IPv6(src=RS6[0], dst=CLIENT6) / TCP(
        sport=8080, dport=40000, flags="SA")
    out = lab.send(reply, INT)
    assert out is not None and out[0] == EXT and out[1][ICMPv6ND_NS].tgt == CLIENT6
    assert lab.drops() == {"no_neigh": 1}


def test_unsolicited_na_about_an_unknown_address_is_ignored_and_known_ones_update() -> None:
    lab = Lab6()
    assert lab.send(na("fd00:2::77", "02:00:00:00:02:77", dst="ff02::1", dmac="33:33:00:00:00:01",
                       flags="O"), INT) is None
    assert a6("fd00:2::77") not in lab.d.neigh[INT]
    assert lab.send(na(RS6[0], "02:00:00:00:02:99", dst="ff02::1", dmac="33:33:00:00:00:01",
                       flags="O"), INT) is None
    assert lab.d.neigh[INT].get(a6(RS6[0])) == mb("02:00:00:00:02:99")
    assert counts(lab) == {"nd_na_ignored": 1, "nd_na_learned": 1, "neigh_updated_nd": 1}


def test_nobody_may_claim_an_owned_address() -> None:
    lab = Lab6()
    assert lab.send(na(VIP6, "02:00:00:00:06:66", dst="ff02::1", dmac="33:33:00:00:00:01", flags="O")) is None
    assert a6(VIP6) not in lab.d.neigh[EXT]
    dad = ns(VIP6, src="::", mac="02:00:00:00:06:66", sll=False)
    out = lab.send(dad)  # somebody probes our VIP (DAD): defended to all-nodes
    assert out is not None and out[1][IPv6].dst == "ff02::1" and out[1][ICMPv6ND_NA].S == 0
    assert counts(lab) == {"nd_conflicts": 2, "nd_na_ignored": 1, "nd_ns_answered": 1}


@pytest.mark.parametrize("mutate", ["hlim", "csum", "code", "optlen", "dad_sll", "mcast_solicited", "short"])
def test_malformed_nd_is_dropped_and_counted(mutate: str) -> None:
    lab = Lab6()
    if mutate == "hlim":
        raw = bytes(ns(VIP6, hlim=64))
    elif mutate == "dad_sll":
        raw = bytes(ns(VIP6, src="::"))
    elif mutate == "mcast_solicited":
        raw = bytes(na(RS6[0], RS_MAC[0], dst="ff02::1", dmac="33:33:00:00:00:01", flags="SO"))
    else:
        b = bytearray(bytes(ns(VIP6)))
        if mutate == "csum":
            b[56] ^= 1
        elif mutate == "code":
            b[55] = 1
        elif mutate == "optlen":
            b[54 + 24 + 1] = 0
        else:
            b = b[:54 + 12]
            b[18:20] = (12).to_bytes(2, "big")
        raw = bytes(b)
    assert lab.d.handle(bytearray(raw), EXT) is None
    assert counts(lab) == {"nd_malformed": 1} and lab.drops() == {"arp_ignored": 1}
    assert a6(CLIENT6) not in lab.d.neigh[EXT]


def test_other_multicast_icmpv6_is_not_vmac() -> None:
    lab = Lab6()
    rs = (Ether(src=CLIENT_MAC, dst="33:33:00:00:00:02") / IPv6(src=CLIENT6, dst="ff02::2", hlim=255)
          / ICMPv6ND_RS())
    assert lab.send(rs) is None and lab.drops() == {"not_vmac": 1}


def test_nd_entries_age_like_arp_ones() -> None:
    lab = Lab6()
    lab.send(ns(VIP6))
    lab.now += lab.d.cfg.neigh_max_age + 1
    lab.d.expire_neighbours()
    assert a6(CLIENT6) not in lab.d.neigh[EXT]


def test_fuzzed_nd_frames_never_raise() -> None:
    rng = random.Random(13)
    lab = Lab6(macs=False, gw_addrs=frozenset({a6(GW6)}))
    seeds = [bytes(ns(VIP6)), bytes(ns(VIP6, src="::", sll=False)), bytes(na(RS6[0], RS_MAC[0])),
             bytes(ns(GW6, src=RS6[0], mac=RS_MAC[0]))]
    for i in range(4000):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(14, len(b))] = rng.randrange(256)
        if i % 3 == 0:
            b = b[:rng.randrange(14, len(b))]
        lab.d.handle(b, rng.choice((EXT, INT)))
        lab.d.set_active(i % 50 != 0)


def test_a_partial_v6_checksum_is_completed() -> None:
    """CHECKSUM_PARTIAL frames (veth with tx offload): the I/O layer completes IPv6 TCP/UDP too."""
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import in6_chksum

    from director.dataplane.checksum import fix_partial_csum

    for l4 in (TCP(sport=1, dport=80, flags="S"), UDP(sport=1, dport=53) / b"abc"):
        good = Ether(bytes(cpkt(l4)))
        layer = TCP if TCP in good else UDP
        ip = good[IPv6]
        partial = bytearray(bytes(good))
        cpos = 54 + (16 if layer is TCP else 6)
        pseudo = (0xFFFF - in6_chksum(6 if layer is TCP else 17, ip, b"\0" * len(ip.payload))) & 0xFFFF
        partial[cpos:cpos + 2] = pseudo.to_bytes(2, "big")  # what the sending stack leaves there
        assert fix_partial_csum(partial)
        assert bytes(partial) == bytes(good)


def test_a_fenced_backup_learns_its_probed_dests_from_the_nas_it_hears() -> None:
    """The quiet probe's answer (an NA to all-nodes) reaches a fenced backup only through the I/O
    layer's learn-only sink (``Director.learn_arp``): learned, nothing answered, no drop counted."""
    lab = Lab6(macs=False)
    lab.d.set_active(False)
    assert lab.d.neigh[INT].should_probe(a6(RS6[0]), lab.now)  # what probe_neighbours does (quietly)
    answer = na(RS6[0], RS_MAC[0], dst="ff02::1", dmac="33:33:00:00:00:01", flags="O")
    lab.d.learn_arp(bytearray(bytes(answer)), INT)
    assert lab.d.neigh[INT].get(a6(RS6[0])) == mb(RS_MAC[0])
    lab.d.learn_arp(bytearray(bytes(na(RS6[1], RS_MAC[1], dst="ff02::1", dmac="33:33:00:00:00:01",
                                       flags="O"))), INT)
    assert a6(RS6[1]) not in lab.d.neigh[INT]  # never probed, unknown: ignored, as in handle()
    lab.d.learn_arp(bytearray(bytes(ns(VIP6))), EXT)  # a client asking for the VIP: learned, not answered
    assert lab.d.neigh[EXT].get(a6(CLIENT6)) == mb(CLIENT_MAC)
    lab.d.learn_arp(bytearray(bytes(ns(VIP6, hlim=64))), EXT)  # malformed: nothing
    assert lab.drops() == {} and counts(lab) == {"nd_na_learned": 1, "nd_na_ignored": 1,
                                                 "neigh_learned_nd": 2}
