"""IPv6 fragments with ``forward_fragments`` (the IPv4 rules of ``test_core``'s fragment tests):
forwarded without reassembly, the first fragment's ports remembered for the later ones.

Oracle: scapy translates the whole datagram, then fragments it with the same identification;
the director's fragments must equal those byte for byte.
"""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from director.dataplane.core import EXT, INT
from director.dataplane.packet import Drop
from director.dataplane.packet6 import parse_ipv6
from director.types import FwdMethod
from tests.director.dataplane.test_core_ipv6 import CLIENT6, CLIENT_MAC, RS6, RS_MAC, VIP6, VMAC, Lab6, a6


def frags(pkt: Packet, size: int = 1280) -> list[Packet]:
    """``pkt`` (with a fragment header) cut by scapy, each in an Ethernet frame like ``pkt``'s."""
    eth = pkt[Ether]
    return [Ether(src=eth.src, dst=eth.dst) / f
            for f in fragment6(pkt[IPv6], size)]  # type: ignore[no-untyped-call]


def datagram(ident: int, size: int = 3000, ext: Packet | None = None) -> Packet:
    ip = IPv6(src=CLIENT6, dst=VIP6, hlim=64)
    frag = IPv6ExtHdrFragment(id=ident)
    upper = UDP(sport=5353, dport=80) / (bytes(range(256)) * (size // 256 + 1))[:size]
    l3 = ip / ext / frag / upper if ext is not None else ip / frag / upper
    return Ether(src=CLIENT_MAC, dst=VMAC) / l3


def nat_in(pkt: Packet, rs: str) -> Packet:
    """What a NAT director makes of the whole datagram: to the dest, hop limit - 1, checksum anew."""
    e = Ether(bytes(pkt))
    e.src, e.dst = VMAC, RS_MAC[RS6.index(rs)]
    e[IPv6].dst, e[IPv6].hlim = rs, 63
    e[UDP].dport = 8080
    del e[UDP].chksum
    return Ether(bytes(e))


def test_fragmented_udp_is_forwarded_both_ways_equal_scapy() -> None:
    lab = Lab6(proto=17, forward_fragments=True)
    big = datagram(4242)
    parts = frags(big)
    assert len(parts) == 3
    outs = [lab.send(p) for p in parts]
    conn = lab.table.in_get(17, a6(CLIENT6), 5353, a6(VIP6), 80)
    assert conn is not None and all(o is not None and o[0] == INT for o in outs)
    rs = str(ipaddress.IPv6Address(conn.daddr))
    expected = [bytes(f) for f in frags(nat_in(big, rs))]
    assert [bytes(o[1]) for o in outs if o is not None] == expected
    assert lab.svc.dests[RS6.index(rs)].counters.inpkts == 3
    # the reply, fragmented by the real server
    reply = (Ether(src=RS_MAC[RS6.index(rs)], dst=VMAC) / IPv6(src=rs, dst=CLIENT6, hlim=64) /
             IPv6ExtHdrFragment(id=777) / UDP(sport=8080, dport=5353) / (b"r" * 2600))
    back = Ether(bytes(reply))
    back.src, back.dst = VMAC, CLIENT_MAC
    back[IPv6].src, back[IPv6].hlim = VIP6, 63
    back[UDP].sport = 80
    del back[UDP].chksum
    outs2 = [lab.send(p, INT) for p in frags(reply)]
    want = [(EXT, bytes(f)) for f in frags(Ether(bytes(back)))]
    assert [(o[0], bytes(o[1])) for o in outs2 if o is not None] == want


def test_first_fragment_after_extension_headers_is_remembered() -> None:
    lab = Lab6(proto=17, forward_fragments=True)
    parts = frags(datagram(5, ext=IPv6ExtHdrDestOpt()))
    outs = [lab.send(p) for p in parts]
    assert all(o is not None and o[0] == INT for o in outs), lab.drops()


def test_fragment_before_its_first_or_after_the_timeout_is_dropped() -> None:
    lab = Lab6(proto=17, forward_fragments=True)
    first, second, third = frags(datagram(99))
    assert lab.send(second) is None and lab.drops() == {"fragment": 1}
    assert lab.send(first) is not None and lab.send(third) is not None
    lab.now += 31
    assert lab.send(second) is None and lab.drops() == {"fragment": 2}


def test_fragments_of_a_dr_flow_get_new_macs_and_hop_limit_only() -> None:
    lab = Lab6(FwdMethod.DR, proto=17, forward_fragments=True)
    for p in frags(datagram(5)):
        out = lab.send(p)
        e = Ether(bytes(p))
        e.src, e.dst = VMAC, RS_MAC[0]
        e[IPv6].hlim -= 1
        assert out is not None and bytes(out[1]) == bytes(e)


def test_fragments_of_a_tun_flow_are_each_tunnelled() -> None:
    lab = Lab6(FwdMethod.TUN, proto=17, forward_fragments=True, mtu=1500)
    parts = frags(datagram(6))
    for p in parts:
        out = lab.send(p)
        assert out is not None and out[0] == INT and out[1][IPv6].nh == 41
        inner = bytearray(bytes(p[IPv6]))
        inner[7] -= 1
        assert bytes(out[1][IPv6].payload) == bytes(inner)


def test_fragments_on_a_backup_or_out_of_hops_are_dropped_by_reason() -> None:
    lab = Lab6(proto=17, forward_fragments=True)
    first, second, _third = frags(datagram(11))
    assert lab.send(first) is not None
    second[IPv6].hlim = 1
    assert lab.send(second) is None
    lab.d.set_active(False)
    second[IPv6].hlim = 64
    assert lab.send(second) is None
    assert lab.drops() == {"ttl_exceeded": 1, "not_active": 1}


def test_fragments_are_dropped_by_default_and_leave_nothing() -> None:
    lab = Lab6(proto=17)
    assert [lab.send(p) for p in frags(datagram(7))] == [None, None, None]
    assert lab.drops() == {"fragment": 3} and lab.table.count == 0 and len(lab.d.frags) == 0


def test_first_fragment_udp_length_past_the_fragment_only_with_forward_fragments() -> None:
    first = bytes(frags(datagram(8))[0])
    assert parse_ipv6(first) is Drop.FRAGMENT
    r = parse_ipv6(first, True)
    assert isinstance(r, tuple) and r[0] == 17 and (r[2], r[4]) == (5353, 80)
