"""The IPv6 codec (packet6) and transmitters (xmit6) on their own."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Ether

from director.dataplane.packet import Drop
from director.dataplane.packet6 import MAX_EXT_HEADERS, bad_addr, parse_ipv6
from director.dataplane.xmit6 import nat6_rewrite

C, V, R = "2001:db8:1::77", "2001:db8::10", "fd00:2::1"
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def a6(t: str) -> int:
    return int(ipaddress.IPv6Address(t))


def frame(l4: object, ext: object = None, src: str = C, dst: str = V) -> bytearray:
    ip = IPv6(src=src, dst=dst, hlim=9)
    pkt = ip / ext / l4 if ext is not None else ip / l4
    return bytearray(bytes(ETH / pkt))


def test_parse_tcp_behind_extension_headers() -> None:
    f = frame(TCP(sport=1234, dport=80, flags="S"), IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt())
    assert parse_ipv6(f) == (6, a6(C), 1234, a6(V), 80, 54 + 16, len(f), 9, 0x02)


def test_parse_udp_and_padding() -> None:
    f = frame(UDP(sport=5, dport=53) / b"abc")
    n = len(f)
    f += b"\x00" * 10  # Ethernet padding
    assert parse_ipv6(f) == (17, a6(C), 5, a6(V), 53, 54, n, 9, 0)


def test_malformed_headers() -> None:
    f = frame(TCP())
    assert parse_ipv6(f[:53]) == Drop.TRUNCATED
    g = bytearray(f)
    g[14] = 0x45
    assert parse_ipv6(g) == Drop.BAD_VERSION
    g = bytearray(f)
    g[18:20] = b"\xff\xff"
    assert parse_ipv6(g) == Drop.BAD_TOTLEN
    g = bytearray(f)
    g[18:20] = b"\x00\x00"
    assert parse_ipv6(g) == Drop.BAD_TOTLEN
    assert parse_ipv6(f[:60]) == Drop.BAD_TOTLEN
    many = IPv6ExtHdrDestOpt()
    for _ in range(MAX_EXT_HEADERS):
        many = many / IPv6ExtHdrDestOpt()
    assert parse_ipv6(frame(TCP(), many)) == Drop.BAD_EXTHDR
    g = frame(TCP(), IPv6ExtHdrDestOpt())
    g[55] = 200  # the header claims more bytes than the packet has
    assert parse_ipv6(g) == Drop.BAD_EXTHDR
    g = frame(TCP())
    g[54 + 12] = 0x30  # data offset 12 bytes
    assert parse_ipv6(g) == Drop.BAD_L4


def test_bad_addresses() -> None:
    assert bad_addr(a6("::1"), a6(V)) and bad_addr(a6(C), a6("::ffff:1.2.3.4"))
    assert bad_addr(a6("ff02::1"), a6(V)) and not bad_addr(a6(C), a6(V))


def test_nat6_rewrite_equals_a_recomputed_checksum() -> None:
    for l4 in (TCP(sport=1234, dport=80, flags="PA") / b"payload!", UDP(sport=1234, dport=80) / (b"x" * 33)):
        f = frame(l4)
        r = parse_ipv6(f)
        assert not isinstance(r, Drop)
        nat6_rewrite(f, bytes(12), 9, r[5], r[0], 38, 2, a6(V), a6(R), 80, 8080)
        p = Ether(bytes(f))
        layer = TCP if TCP in p else UDP
        got = p[layer].chksum
        q = ETH / IPv6(src=C, dst=R, hlim=8) / layer(bytes(p[layer]))
        del q[layer].chksum
        assert Ether(bytes(q))[layer].chksum == got and p[IPv6].hlim == 8 and p[layer].dport == 8080
