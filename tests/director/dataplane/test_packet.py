"""Header parsing: fields equal scapy's, every malformed frame maps to a drop reason, nothing raises."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from director.dataplane.checksum import set_ip_checksum
from director.dataplane.packet import (
    Drop,
    DropCounters,
    FragTable,
    ip_str,
    mac_bytes,
    mac_str,
    parse_fragment,
    parse_ipv4,
)

ips = st.integers(0, 2**32 - 1).map(ip_str)
ports = st.integers(0, 65535)


@given(ips, ips, ports, ports, st.integers(2, 255), st.sampled_from(["S", "A", "FA", "R", "PA", "SA"]),
       st.binary(max_size=40), st.booleans())
def test_tcp_fields_equal_scapy(src: str, dst: str, sport: int, dport: int, ttl: int, flags: str,
                                payload: bytes, options: bool) -> None:
    ip = IP(src=src, dst=dst, ttl=ttl, options=[IPOption_RR()] if options else [])
    pkt = Ether() / ip / TCP(sport=sport, dport=dport, flags=flags) / payload
    raw = bytes(pkt)
    r = parse_ipv4(bytearray(raw), verify=True)
    assert not isinstance(r, Drop)
    proto, saddr, sp, daddr, dp, l4, end, t, tflags = r
    p = Ether(raw)
    assert (proto, ip_str(saddr), sp, ip_str(daddr), dp, t) == (6, p[IP].src, p[TCP].sport, p[IP].dst,
                                                                p[TCP].dport, p[IP].ttl)
    assert l4 == 14 + p[IP].ihl * 4
    assert end == len(raw)
    assert tflags == int(p[TCP].flags)


@given(ips, ips, ports, ports, st.binary(max_size=40))
def test_udp_fields_equal_scapy(src: str, dst: str, sport: int, dport: int, payload: bytes) -> None:
    raw = bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)
    r = parse_ipv4(raw, verify=True)
    assert not isinstance(r, Drop)
    assert r[:5] == (17, int.from_bytes(raw[26:30], "big"), sport, int.from_bytes(raw[30:34], "big"), dport)


def test_icmp_type_and_code() -> None:
    raw = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / ICMP(type=3, code=4) / (b"x" * 28))
    r = parse_ipv4(raw)
    assert not isinstance(r, Drop)
    assert (r[0], r[2], r[4]) == (1, 3, 4)


def test_padding_is_accepted_and_excluded() -> None:
    raw = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=1, dport=2))
    padded = raw + b"\0" * (60 - len(raw))
    r = parse_ipv4(padded)
    assert not isinstance(r, Drop)
    assert r[6] == len(raw)


def _good() -> bytearray:
    return bytearray(bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / TCP(sport=1, dport=80)
                           / b"hello"))


def test_malformed_frames_map_to_reasons() -> None:
    good = _good()
    cases: list[tuple[bytes | bytearray, Drop]] = []
    for n in range(0, 34):
        cases.append((good[:n], Drop.TRUNCATED))
    cases.append((good[:40], Drop.BAD_TOTLEN))  # tot_len beyond the frame end
    bad = bytearray(good)
    bad[14] = 0x65
    cases.append((bad, Drop.BAD_VERSION))
    bad = bytearray(good)
    bad[14] = 0x44
    cases.append((bad, Drop.BAD_IHL))
    bad = bytearray(good)
    bad[14] = 0x4F  # 60-byte header in a 45-byte packet
    cases.append((bad, Drop.BAD_IHL))
    bad = bytearray(good)
    bad[16:18] = (10).to_bytes(2, "big")
    cases.append((bad, Drop.BAD_TOTLEN))
    bad = bytearray(good)
    bad[16:18] = (30).to_bytes(2, "big")  # header fits, TCP header does not
    set_ip_checksum(bad)
    cases.append((bad, Drop.BAD_L4))
    bad = bytearray(good)
    bad[24] ^= 0xFF
    cases.append((bad, Drop.BAD_IP_CSUM))
    bad = bytearray(good)
    bad[14 + 20 + 12] = 0x40  # TCP data offset 16 bytes < 20
    cases.append((bad, Drop.BAD_L4))
    cases.append((bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", flags="MF") / UDP()), Drop.FRAGMENT))
    cases.append((bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", frag=100) / (b"x" * 8)),
                  Drop.FRAGMENT))
    cases.append((bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", proto=47) / (b"x" * 8)),
                  Drop.UNKNOWN_PROTO))
    cases.append((bytes(Ether() / IPv6() / UDP()), Drop.NOT_IPV4))
    cases.append((bytes(Ether() / Dot1Q(vlan=5) / IP() / UDP()), Drop.NOT_IPV4))
    cases.append((bytes(Ether() / ARP()), Drop.NOT_IPV4))
    udp = bytearray(bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=1, dport=2) / b"abc"))
    udp[38:40] = (200).to_bytes(2, "big")  # UDP length beyond the IP packet
    cases.append((udp, Drop.BAD_L4))
    icmp = bytes(Ether() / IP(src="198.18.0.1", dst="198.18.0.2", proto=1, len=24) / b"\x08\x00\x00\x00")
    cases.append((icmp, Drop.BAD_L4))
    for frame, reason in cases:
        assert parse_ipv4(frame, verify=True) == reason, (frame.hex(), reason)


def test_checksum_verification_is_optional() -> None:
    bad = _good()
    bad[24] ^= 0xFF
    assert not isinstance(parse_ipv4(bad, verify=False), Drop)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    for frame in (data, b"\0" * 12 + b"\x08\x00" + data, b"\0" * 12 + b"\x08\x00\x45" + data):
        r = parse_ipv4(frame, verify=True)
        assert isinstance(r, (Drop, tuple))


def test_mutated_frames_never_raise() -> None:
    rng = random.Random(7)
    base = _good()
    seen: set[object] = set()
    for _ in range(3000):
        f = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            f[rng.randrange(14, len(f))] = rng.randrange(256)
        f = f[: rng.randrange(0, len(f) + 1)]
        r = parse_ipv4(f, verify=rng.random() < 0.5)
        seen.add(r if isinstance(r, Drop) else "ok")
    assert {"ok", Drop.TRUNCATED, Drop.BAD_TOTLEN} <= seen


def test_drop_counters() -> None:
    c = DropCounters()
    c.counts[Drop.FRAGMENT] += 3
    assert c[Drop.FRAGMENT] == 3
    assert c.total() == 3
    assert c.as_dict()["fragment"] == 3
    c.zero()
    assert c.total() == 0


def test_mac_helpers() -> None:
    assert mac_str(mac_bytes("00:00:5e:00:01:0a")) == "00:00:5e:00:01:0a"


def test_first_fragments_parse_when_asked_and_later_fragments_never() -> None:
    from scapy.layers.inet import fragment

    big = Ether() / IP(src="198.18.1.10", dst="198.18.0.100", id=321) / UDP(sport=7, dport=53) / (b"d" * 3000)
    first, *rest = [bytes(f) for f in fragment(big, fragsize=1200)]  # type: ignore[no-untyped-call]
    assert parse_ipv4(first) == Drop.FRAGMENT
    r = parse_ipv4(first, verify=True, first_fragment=True)
    assert not isinstance(r, Drop) and r[:5] == (17, int.from_bytes(first[26:30], "big"), 7,
                                                 int.from_bytes(first[30:34], "big"), 53)
    for f in rest:
        assert parse_ipv4(f, first_fragment=True) == Drop.FRAGMENT
        info = parse_fragment(f)
        assert info is not None
        ipid, frag, ttl, end = info
        p = Ether(f)
        assert (ipid, frag & 0x1FFF, ttl, end) == (321, p[IP].frag, p[IP].ttl, 14 + p[IP].len)
    assert parse_fragment(bytes(Ether() / IP() / UDP())) is None  # not a fragment
    assert parse_fragment(first[:20]) is None


def test_frag_table_times_out_and_stays_bounded() -> None:
    t = FragTable(timeout=30.0, capacity=3)
    t.remember((17, 1, 2, 10), 1000, 53, now=0.0)
    assert t.ports((17, 1, 2, 10), 29.0) == (1000, 53)
    assert t.ports((17, 1, 2, 10), 30.0) is None and len(t) == 0
    for i in range(5):
        t.remember((17, 1, 2, i), i, 53, now=float(i))
    assert len(t) == 3
    assert t.ports((17, 1, 2, 0), 5.0) is None  # oldest evicted
    assert t.ports((17, 1, 2, 4), 5.0) == (4, 53)
