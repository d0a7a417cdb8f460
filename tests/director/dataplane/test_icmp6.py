"""ICMPv6 in the packet path: errors about flows translated (NAT) or forwarded (DR/TUN) both ways,
Packet Too Big for TUN (ours, and one about our ip6ip6 from the inside), time exceeded, echo.

The oracles are independent of the code: the quoted packet after translation must equal, byte for
byte, the packet its sender really sent (hop limit one lower, as it was when quoted), and every
ICMPv6 checksum must equal scapy's ``in6_chksum`` over the pseudo-header.
"""

from __future__ import annotations

import ipaddress
import random

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    in6_chksum,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from director.dataplane.core import EXT, INT
from director.dataplane.icmp6 import QUOTE_MAX, quote6
from director.dataplane.nd import link_local
from director.dataplane.packet import mac_bytes as mb
from director.types import FwdMethod
from tests.director.dataplane.test_core_ipv6 import (
    CLIENT6,
    CLIENT_MAC,
    RS6,
    RS_MAC,
    VIP6,
    VMAC,
    Lab6,
    cpkt,
    rpkt,
)


def icmp_csum_ok(p: Packet) -> bool:
    """The frame's ICMPv6 checksum equals scapy's over the IPv6 pseudo-header."""
    raw = bytearray(bytes(p[IPv6].payload))
    got = raw[2] << 8 | raw[3]
    raw[2] = raw[3] = 0
    return bool(in6_chksum(58, p[IPv6], bytes(raw)) == got)


def ip6_bytes(p: Packet, hlim_drop: int = 1) -> bytes:
    """The IPv6 packet of frame ``p`` as it looks one hop later (hop limit lowered)."""
    raw = bytearray(bytes(p[IPv6]))
    raw[7] -= hlim_drop
    return bytes(raw)


def quoted(p: Packet) -> bytes:
    """The packet an ICMPv6 error frame quotes."""
    return bytes(p[IPv6].payload)[8:]


# ---- errors about NAT flows ----------------------------------------------------------------------


def test_port_unreachable_from_a_nat_dest_reaches_the_client_as_from_the_vip() -> None:
    lab = Lab6(proto=17)
    sent = cpkt(UDP(sport=5353, dport=80) / b"query")
    fwd = lab.send(sent)
    assert fwd is not None and fwd[0] == INT
    rs_got = fwd[1]  # what the dest received (client -> dest:8080)
    err = rpkt(RS6[0], ICMPv6DestUnreach(code=4) / bytes(rs_got[IPv6]))
    out = lab.send(err, INT)
    assert out is not None and out[0] == EXT
    p = out[1]
    assert (p.src, p.dst) == (VMAC, CLIENT_MAC)
    assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == (VIP6, CLIENT6, 63)
    assert quoted(p) == ip6_bytes(sent)  # what the client sent, as it was one hop later
    assert icmp_csum_ok(p)
    assert lab.svc.dests[0].counters.outpkts == 1


def test_packet_too_big_from_the_client_side_reaches_the_nat_dest_about_its_own_reply() -> None:
    lab = Lab6()
    assert lab.send(cpkt()) is not None
    reply = rpkt(RS6[0], TCP(sport=8080, dport=40000, flags="SA", seq=9, ack=2) / (b"r" * 100))
    out = lab.send(reply, INT)
    assert out is not None and out[0] == EXT
    ptb = (Ether(src=CLIENT_MAC, dst=VMAC) / IPv6(src="2001:db8:1::1", dst=VIP6) /
           ICMPv6PacketTooBig(mtu=1400) / bytes(out[1][IPv6]))
    res = lab.send(ptb, EXT)
    assert res is not None and res[0] == INT
    p = res[1]
    assert p.dst == RS_MAC[0] and (p[IPv6].src, p[IPv6].dst) == ("2001:db8:1::1", RS6[0])
    assert p[ICMPv6PacketTooBig].mtu == 1400
    assert quoted(p) == ip6_bytes(reply)  # the dest's own reply, as the director forwarded it
    assert icmp_csum_ok(p)


def test_truncated_quote_is_still_translated_and_its_checksum_right() -> None:
    lab = Lab6(proto=17)
    fwd = lab.send(cpkt(UDP(sport=5353, dport=80) / b"q"))
    assert fwd is not None
    short = bytes(fwd[1][IPv6])[:44]  # the ports only: no UDP checksum in the quote
    out = lab.send(rpkt(RS6[0], ICMPv6DestUnreach(code=4) / short), INT)
    assert out is not None and out[1][IPv6].src == VIP6 and icmp_csum_ok(out[1])
    assert quoted(out[1])[24:40] == bytes(IPv6(dst=VIP6))[24:40] and quoted(out[1])[42:44] == b"\x00\x50"


def test_errors_about_dr_flows_are_forwarded_to_the_dest_unchanged_but_the_macs() -> None:
    lab = Lab6(FwdMethod.DR)
    assert lab.send(cpkt()) is not None
    reply = IPv6(src=VIP6, dst=CLIENT6, hlim=63) / TCP(sport=80, dport=40000, flags="SA")
    err = Ether(src=CLIENT_MAC, dst=VMAC) / IPv6(src="2001:db8:1::1", dst=VIP6) / ICMPv6DestUnreach() / reply
    res = lab.send(err, EXT)
    assert res is not None and res[0] == INT and res[1].dst == RS_MAC[0]
    assert bytes(res[1][IPv6]) == ip6_bytes(err)


# ---- Packet Too Big and TUN ------------------------------------------------------------------------


def test_tun_packet_over_the_mtu_gets_packet_too_big_from_the_vip() -> None:
    lab = Lab6(FwdMethod.TUN, mtu=1500)
    big = cpkt(TCP(sport=40000, dport=80, flags="S") / (b"x" * 1440))  # 1500 bytes: 1540 with ip6ip6
    res = lab.send(big)
    assert res is not None and res[0] == EXT
    p = res[1]
    assert p.dst == CLIENT_MAC and (p[IPv6].src, p[IPv6].dst) == (VIP6, CLIENT6)
    assert p[ICMPv6PacketTooBig].mtu == 1460
    assert quoted(p) == bytes(big[IPv6])[:QUOTE_MAX] and len(bytes(p[IPv6])) <= 1280
    assert icmp_csum_ok(p)
    assert lab.drops() == {"too_big": 1}


def test_tun_mtu_announced_is_never_below_1280() -> None:
    lab = Lab6(FwdMethod.TUN, mtu=1280)
    res = lab.send(cpkt(TCP(sport=40000, dport=80, flags="S") / (b"x" * 1200)))
    assert res is not None and res[1][ICMPv6PacketTooBig].mtu == 1280


def test_packet_too_big_about_our_ip6ip6_becomes_one_to_the_client_for_the_inner_packet() -> None:
    lab = Lab6(FwdMethod.TUN, mtu=1500)
    sent = cpkt(TCP(sport=40000, dport=80, flags="S") / b"hello")
    res = lab.send(sent)
    assert res is not None and res[1][IPv6].nh == 41
    tunnelled = bytes(res[1][IPv6])
    ptb = rpkt("fd00:2::fd", ICMPv6PacketTooBig(mtu=1400) / tunnelled, dst=VIP6)  # a router inside
    out = lab.send(ptb, INT)
    assert out is not None and out[0] == EXT
    p = out[1]
    assert (p[IPv6].src, p[IPv6].dst) == (VIP6, CLIENT6) and p[ICMPv6PacketTooBig].mtu == 1360
    assert quoted(p) == ip6_bytes(sent)  # the client's own packet (its hop limit as tunnelled)
    assert icmp_csum_ok(p)


def test_packet_too_big_about_an_unknown_or_foreign_tunnel_is_dropped() -> None:
    lab = Lab6(FwdMethod.TUN)
    res = lab.send(cpkt())
    assert res is not None
    other = bytearray(bytes(res[1][IPv6]))
    other[24:40] = bytes(IPv6(dst="fd00:2::99"))[24:40]  # outer to another host: not our tunnel packet
    assert lab.send(rpkt("fd00:2::fd", ICMPv6PacketTooBig(mtu=1400) / bytes(other), dst=VIP6), INT) is None
    # the same quote arriving from the outside is no tunnel PMTU either
    assert lab.send(cpkt(ICMPv6PacketTooBig(mtu=1400) / bytes(res[1][IPv6])), EXT) is None
    assert lab.drops() == {"icmp_unrelated": 2}


# ---- what is dropped -------------------------------------------------------------------------------


def test_errors_about_no_flow_on_a_backup_or_out_of_hops_are_dropped_by_reason() -> None:
    lab = Lab6(proto=17)
    fwd = lab.send(cpkt(UDP(sport=5353, dport=80) / b"q"))
    assert fwd is not None
    stranger = bytes(IPv6(src=CLIENT6, dst=RS6[0]) / UDP(sport=1, dport=8080))
    assert lab.send(rpkt(RS6[0], ICMPv6DestUnreach() / stranger), INT) is None
    assert lab.send(rpkt(RS6[0], ICMPv6DestUnreach() / b"\x60\x00"), INT) is None  # quote cut short
    err = rpkt(RS6[0], ICMPv6DestUnreach(code=4) / bytes(fwd[1][IPv6]))
    err[IPv6].hlim = 1
    assert lab.send(err, INT) is None
    lab.d.set_active(False)
    err[IPv6].hlim = 64
    assert lab.send(err, INT) is None
    assert lab.drops() == {"icmp_unrelated": 2, "ttl_exceeded": 1, "not_active": 1}


def test_quote6_never_raises_on_cut_or_random_quotes() -> None:
    rng = random.Random(6)
    good = bytes(Ether() / IPv6() / ICMPv6DestUnreach() / IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=1, dport=2))
    for n in range(len(good) + 1):
        frame = good[:n]
        quote6(frame, 54, len(frame))
    for _ in range(3000):
        frame = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(54, len(frame))] = rng.randrange(256)
        q = quote6(frame, 54, rng.randint(54, len(frame)))
        assert q is None or q[0] in (6, 17, 41)


# ---- time exceeded and echo --------------------------------------------------------------------------


def test_hop_limit_running_out_at_a_vip_gets_time_exceeded_within_the_ratelimit() -> None:
    lab = Lab6(icmp_ratelimit=2)
    sent = cpkt(hlim=1)
    outs = [lab.send(sent) for _ in range(3)]
    assert outs[2] is None
    first = outs[0]
    assert first is not None and first[0] == EXT
    p = first[1]
    assert (p[IPv6].src, p[IPv6].dst) == (VIP6, CLIENT6) and p[ICMPv6TimeExceeded].code == 0
    assert quoted(p) == bytes(sent[IPv6]) and icmp_csum_ok(p)
    assert lab.drops() == {"ttl_exceeded": 3}
    lab.now += 1.0
    assert lab.send(sent) is not None


def test_echo_to_a_v6_vip_and_the_link_local_is_answered_byte_exact() -> None:
    lab = Lab6()
    req = cpkt(ICMPv6EchoRequest(id=7, seq=3, data=b"abc"))
    out = lab.send(req)
    assert out is not None and out[0] == EXT
    expected = (Ether(src=VMAC, dst=CLIENT_MAC) / IPv6(src=VIP6, dst=CLIENT6, hlim=64) /
                ICMPv6EchoReply(id=7, seq=3, data=b"abc"))
    assert bytes(out[1]) == bytes(expected)
    ll = str(ipaddress.IPv6Address(link_local(mb(VMAC))))
    out2 = lab.send(rpkt(RS6[0], ICMPv6EchoRequest(id=1), dst=ll), INT)
    assert out2 is not None and out2[0] == INT and out2[1][IPv6].src == ll and out2[1].dst == RS_MAC[0]
    assert lab.d.echo_replies == 2


@pytest.mark.parametrize("case", ["not_owned", "backup", "off"])
def test_echo_v6_not_answered(case: str) -> None:
    lab = Lab6(icmp_echo=case != "off")
    dst = "2001:db8::99" if case == "not_owned" else VIP6
    if case == "backup":
        lab.d.set_active(False)
    assert lab.send(cpkt(ICMPv6EchoRequest(), dst=dst)) is None
    assert lab.drops() == {"not_active" if case == "backup" else "icmp_unrelated": 1}


def test_nat_reply_over_the_outside_mtu_gets_packet_too_big_back_to_the_dest() -> None:
    lab = Lab6(proto=17, ext_mtu=1500)
    assert lab.send(cpkt(UDP(sport=5353, dport=80) / b"q")) is not None
    big = rpkt(RS6[0], UDP(sport=8080, dport=5353) / (b"r" * 1600))
    out = lab.send(big, INT)
    assert out is not None and out[0] == INT
    p = out[1]
    ll = str(ipaddress.IPv6Address(link_local(mb(VMAC))))
    assert p.dst == RS_MAC[0] and (p[IPv6].src, p[IPv6].dst) == (ll, RS6[0])
    assert p[ICMPv6PacketTooBig].mtu == 1500 and quoted(p) == bytes(big[IPv6])[:QUOTE_MAX]
    assert icmp_csum_ok(p)
    assert lab.drops() == {"too_big": 1} and lab.svc.dests[0].counters.outpkts == 0
    fits = rpkt(RS6[0], UDP(sport=8080, dport=5353) / (b"r" * 1400))
    assert lab.send(fits, INT) is not None and lab.svc.dests[0].counters.outpkts == 1


def _emitted_icmp6_ok(out: tuple[int, Packet] | None) -> bool:
    """An ICMPv6 frame the director emits (no extension header) carries a valid checksum."""
    if out is None or IPv6 not in out[1] or out[1][IPv6].nh != 58:
        return True
    return icmp_csum_ok(out[1])


def test_fuzzed_errors_quoting_live_flows_never_raise_and_emit_valid_checksums() -> None:
    """Mutated ICMPv6 errors whose quotes name live NAT, DR and TUN flows (and mutated echo requests):
    the translation, forwarding and tunnel-PMTU paths run on hostile quotes; nothing raises and every
    ICMPv6 frame that comes out has a checksum scapy agrees with."""
    from tests.director.dataplane.test_core_ipv6 import _mutants

    rng = random.Random(4443)
    emitted = 0
    for fwd in (FwdMethod.NAT, FwdMethod.DR, FwdMethod.TUN):
        lab = Lab6(fwd, proto=17, forward_fragments=True, mtu=1500)
        sent = cpkt(UDP(sport=5353, dport=80) / b"q")
        fwd_out = lab.send(sent)
        assert fwd_out is not None
        inside = bytes(fwd_out[1][IPv6])  # client -> dest, or our ip6ip6
        reply = bytes(IPv6(src=VIP6, dst=CLIENT6, hlim=63) / UDP(sport=80, dport=5353) / b"a")
        seeds = [bytes(rpkt(RS6[0], ICMPv6DestUnreach(code=4) / inside)),
                 bytes(rpkt("fd00:2::fd", ICMPv6PacketTooBig(mtu=1400) / inside, dst=VIP6)),
                 bytes(Ether(src=CLIENT_MAC, dst=VMAC) / IPv6(src="2001:db8:1::1", dst=VIP6) /
                       ICMPv6PacketTooBig(mtu=1280) / reply),
                 bytes(cpkt(ICMPv6EchoRequest(id=3, seq=4, data=b"ping")))]
        handled = [lab.send(Ether(seed), side) is not None  # unmutated: translated, forwarded, answered
                   for seed, side in zip(seeds, (INT, INT, EXT, EXT), strict=True)]
        assert handled == {FwdMethod.NAT: [True, True, True, True], FwdMethod.DR: [False, False, True, True],
                           FwdMethod.TUN: [False, True, True, True]}[fwd], fwd
        corrupt = bytearray(seeds[2])
        corrupt[-1] ^= 0xFF  # a bit flipped in the quote: the checksum no longer matches
        assert lab.d.handle(corrupt, EXT) is None and lab.drops()["bad_l4"] == 1
        for _ in range(1500):
            frame = _mutants(rng, seeds)
            out = lab.d.handle(bytearray(frame), rng.randrange(2))
            parsed = None if out is None else (out[0], Ether(bytes(out[1])))
            emitted += parsed is not None
            assert _emitted_icmp6_ok(parsed), parsed[1].summary() if parsed else None
    assert emitted > 0
