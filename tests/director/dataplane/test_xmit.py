"""Transmitters against scapy: our in-place rewrite equals scapy's rebuild byte for byte."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption_RR
from scapy.layers.l2 import Ether

from director.dataplane.checksum import l4_checksum
from director.dataplane.packet import Drop, ip_str, parse_ipv4
from director.dataplane.xmit import dr_rewrite, icmp_error, icmp_quote, nat_icmp, nat_rewrite, tun_encap

DMAC = "02:00:00:00:00:0d"
SMAC = "00:00:5e:00:01:01"
HDR12 = bytes.fromhex(DMAC.replace(":", "")) + bytes.fromhex(SMAC.replace(":", ""))

addrs = st.integers(1, 2**32 - 2)
ports = st.integers(0, 65535)


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


@st.composite
def l4_packets(draw: st.DrawFn) -> Ether:
    ip = IP(src=ip_str(draw(addrs)), dst=ip_str(draw(addrs)), ttl=draw(st.integers(2, 255)),
            tos=draw(st.integers(0, 255)), id=draw(ports), flags=draw(st.sampled_from([0, 2])),
            options=[IPOption_RR()] if draw(st.booleans()) else [])
    payload = draw(st.binary(max_size=64))
    l4: TCP | UDP
    if draw(st.booleans()):
        l4 = TCP(sport=draw(ports), dport=draw(ports), flags=draw(st.sampled_from(["S", "A", "PA", "FA"])),
                 seq=draw(st.integers(0, 2**32 - 1)), ack=draw(st.integers(0, 2**32 - 1)))
    else:
        l4 = UDP(sport=draw(ports), dport=draw(ports))
        if draw(st.integers(0, 9)) == 0:
            l4.chksum = 0  # sender did not checksum
    return Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / ip / l4 / payload


def _expected_nat(pkt: Ether, inbound: bool, new_addr: int, new_port: int) -> bytes:
    e = Ether(bytes(pkt))
    e.dst, e.src = DMAC, SMAC
    e[IP].ttl -= 1
    del e[IP].chksum
    l4 = e[TCP] if TCP in e else e[UDP]
    if inbound:
        e[IP].dst = ip_str(new_addr)
        l4.dport = new_port
    else:
        e[IP].src = ip_str(new_addr)
        l4.sport = new_port
    if UDP in e and e[UDP].chksum == 0:
        pass  # stays 0
    else:
        del l4.chksum
    return bytes(e)


@settings(max_examples=300)
@given(l4_packets(), addrs, ports, st.booleans())
def test_nat_rewrite_equals_scapy(pkt: Ether, new_addr: int, new_port: int, inbound: bool) -> None:
    frame = bytearray(bytes(pkt))
    r = parse_ipv4(frame, verify=True)
    assert not isinstance(r, Drop)
    proto, saddr, sport, daddr, dport, l4, _end, ttl, _ = r
    if inbound:
        nat_rewrite(frame, HDR12, ttl, l4, proto, 30, 2, daddr, new_addr, dport, new_port)
    else:
        nat_rewrite(frame, HDR12, ttl, l4, proto, 26, 0, saddr, new_addr, sport, new_port)
    assert bytes(frame) == _expected_nat(pkt, inbound, new_addr, new_port)


def test_nat_round_trip_restores_the_packet_except_ttl() -> None:
    pkt = Ether() / IP(src="198.18.1.10", dst="198.18.0.100", ttl=64) / TCP(sport=40000, dport=80) / b"x"
    frame = bytearray(bytes(pkt))
    r = parse_ipv4(frame)
    assert not isinstance(r, Drop)
    nat_rewrite(frame, HDR12, 64, r[5], 6, 30, 2, r[3], _i("198.18.2.1"), 80, 8080)
    r2 = parse_ipv4(frame, verify=True)
    assert not isinstance(r2, Drop)
    assert (ip_str(r2[3]), r2[4], r2[7]) == ("198.18.2.1", 8080, 63)
    nat_rewrite(frame, bytes(12), 63, r[5], 6, 30, 2, r2[3], r[3], 8080, 80)
    back = Ether(bytes(frame))
    assert back[IP].dst == "198.18.0.100" and back[TCP].dport == 80 and back[IP].ttl == 62
    assert back[TCP].chksum == pkt.__class__(bytes(pkt))[TCP].chksum


@settings(max_examples=100)
@given(l4_packets())
def test_dr_rewrite_equals_scapy(pkt: Ether) -> None:
    frame = bytearray(bytes(pkt))
    r = parse_ipv4(frame)
    assert not isinstance(r, Drop)
    dr_rewrite(frame, HDR12, r[7])
    e = Ether(bytes(pkt))
    e.dst, e.src = DMAC, SMAC
    e[IP].ttl -= 1
    del e[IP].chksum
    assert bytes(frame) == bytes(e)


@settings(max_examples=100)
@given(l4_packets(), addrs, addrs, ports)
def test_tun_encap_equals_scapy(pkt: Ether, src: int, dst: int, ipid: int) -> None:
    frame = bytearray(bytes(pkt) + b"\0" * 6)  # with Ethernet padding, which must not be carried
    r = parse_ipv4(frame)
    assert not isinstance(r, Drop)
    out = tun_encap(frame, r[6], HDR12, r[7], src, dst, ipid)
    inner = Ether(bytes(pkt))[IP]
    inner.ttl -= 1
    del inner.chksum
    df = "DF" if int(inner.flags) & 2 else 0
    expected = (Ether(dst=DMAC, src=SMAC) /
                IP(src=ip_str(src), dst=ip_str(dst), proto=4, id=ipid, tos=inner.tos, ttl=inner.ttl, flags=df)
                / inner)
    assert bytes(out) == bytes(expected)


def _icmp_case(outbound: bool, proto: str) -> tuple[bytearray, bytes]:
    """An ICMP error about a NAT flow, as received, and what the other side must get."""
    caddr, vaddr, daddr = "198.18.1.10", "198.18.0.100", "198.18.2.1"
    l4cls = TCP if proto == "tcp" else UDP
    if outbound:
        # the dest received client -> dest (cport 40000 -> dport 8080) and complains to the client
        client_pkt = IP(src=caddr, dst=vaddr, ttl=63) / l4cls(sport=40000, dport=80) / b"payload!"
        seen = IP(src=caddr, dst=daddr, ttl=63) / l4cls(sport=40000, dport=8080) / b"payload!"
        seen = IP(bytes(seen))
        err = (Ether() / IP(src=daddr, dst=caddr, ttl=64) / ICMP(type=3, code=3) /
               IPerror(bytes(seen)[:28 + (12 if proto == "tcp" else 0)]))
        orig = IP(bytes(client_pkt))
        exp_quote = bytes(orig)[:28 + (12 if proto == "tcp" else 0)]
        expected = (Ether(dst=DMAC, src=SMAC) / IP(src=vaddr, dst=caddr, ttl=63) / ICMP(type=3, code=3)
                    / exp_quote)
    else:
        # the client complains (frag-needed) about a reply we sent: VIP:80 -> client
        sent = IP(bytes(IP(src=vaddr, dst=caddr, ttl=63) / l4cls(sport=80, dport=40000) / b"payload!"))
        err = (Ether() / IP(src=caddr, dst=vaddr, ttl=64) / ICMP(type=3, code=4, nexthopmtu=1400) /
               IPerror(bytes(sent)[:28]))
        at_dest = IP(bytes(IP(src=daddr, dst=caddr, ttl=63) / l4cls(sport=8080, dport=40000) / b"payload!"))
        expected = (Ether(dst=DMAC, src=SMAC) / IP(src=caddr, dst=daddr, ttl=63) /
                    ICMP(type=3, code=4, nexthopmtu=1400) / bytes(at_dest)[:28])
    return bytearray(bytes(err)), bytes(expected)


def test_nat_icmp_translation_equals_scapy() -> None:
    vaddr, daddr = _i("198.18.0.100"), _i("198.18.2.1")
    for outbound in (True, False):
        for proto in ("tcp", "udp"):
            frame, expected = _icmp_case(outbound, proto)
            r = parse_ipv4(frame, verify=True)
            assert not isinstance(r, Drop)
            q = icmp_quote(frame, r[5], r[6])
            assert q is not None
            nat_icmp(frame, HDR12, r[7], r[5], r[6], q[5], q[0], outbound, vaddr, 80, daddr, 8080)
            assert bytes(frame) == expected, (outbound, proto)


def test_icmp_quote_rejects_short_or_foreign_quotes() -> None:
    short = bytes(Ether() / IP() / ICMP(type=3) / (b"\x45" + b"\0" * 10))
    r = parse_ipv4(short)
    assert not isinstance(r, Drop)
    assert icmp_quote(short, r[5], r[6]) is None
    gre = bytes(Ether() / IP() / ICMP(type=3) / IPerror(proto=47) / (b"\0" * 8))
    r = parse_ipv4(gre)
    assert not isinstance(r, Drop)
    assert icmp_quote(gre, r[5], r[6]) is None


def test_icmp_error_builder_equals_scapy() -> None:
    offending = bytes(IP(src="198.18.1.10", dst="198.18.0.100", flags="DF") / UDP(sport=5, dport=53) /
                      (b"z" * 1500))
    out = icmp_error(HDR12, _i("198.18.0.100"), _i("198.18.1.10"), 3, 4, 1480, offending, ipid=7)
    expected = (Ether(dst=DMAC, src=SMAC) / IP(src="198.18.0.100", dst="198.18.1.10", id=7, ttl=64) /
                ICMP(type=3, code=4, nexthopmtu=1480) / offending[:28])
    assert bytes(out) == bytes(expected)


def test_udp_checksum_that_becomes_zero_is_sent_as_ffff() -> None:
    pkt = Ether() / IP(src="198.18.1.10", dst="198.18.0.100") / UDP(sport=40000, dport=53) / b"query"
    raw = bytes(pkt)
    new_addr = _i("198.18.2.1")
    # find the port whose rewrite makes the one's complement sum 0xFFFF (checksum field 0 -> 0xFFFF)
    base = l4_checksum(raw)
    assert base is not None
    target = next(p for p in range(65536) if (base - (new_addr - _i("198.18.0.100")) - p + 53) % 0xFFFF == 0)
    frame = bytearray(raw)
    r = parse_ipv4(frame)
    assert not isinstance(r, Drop)
    nat_rewrite(frame, HDR12, r[7], r[5], 17, 30, 2, r[3], new_addr, 53, target)
    assert frame[40:42] == b"\xff\xff"
    assert bytes(frame) == _expected_nat(pkt, True, new_addr, target)
