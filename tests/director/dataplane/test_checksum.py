"""Checksums: full (against scapy's), RFC 1624 incremental updates, CHECKSUM_PARTIAL completion."""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, in4_pseudoheader
from scapy.layers.l2 import Ether
from scapy.utils import checksum as scapy_checksum

from director.dataplane.checksum import (
    adjust,
    adjust_udp,
    checksum,
    fix_partial_csum,
    ip_header_ok,
    l4_checksum,
    ones_sum,
    set_ip_checksum,
)


@given(st.binary(max_size=300))
def test_full_checksum_equals_scapy(data: bytes) -> None:
    assert checksum(data) == scapy_checksum(data)


def test_checksum_edge_values() -> None:
    assert checksum(b"") == 0xFFFF
    assert checksum(b"\x00\x00") == 0xFFFF
    assert checksum(b"\xff\xff") == 0  # one's complement "negative zero" sum: checksum 0
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert checksum(b"\x01") == scapy_checksum(b"\x01")


@given(st.binary(min_size=8, max_size=64).filter(lambda b: any(b)),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.data())
def test_incremental_update_equals_recompute(data: bytes, new16: int, new32: int, d: st.DataObject) -> None:
    buf = bytearray(data if len(data) % 2 == 0 else data + b"\0")
    c0 = checksum(buf)
    off16 = d.draw(st.integers(0, len(buf) // 2 - 1)) * 2
    old16 = struct.unpack_from("!H", buf, off16)[0]
    struct.pack_into("!H", buf, off16, new16)
    off32 = d.draw(st.integers(0, len(buf) // 2 - 2)) * 2
    old32 = struct.unpack_from("!I", buf, off32)[0]
    struct.pack_into("!I", buf, off32, new32)
    if not any(buf):
        return  # the all-zero string has no canonical checksum to compare with
    # the 32-bit write may have overlapped the 16-bit one: compute the delta from what changed
    delta = (new32 - old32) + (new16 - old16)
    if abs(off16 - off32) < 4:
        before = bytearray(data if len(data) % 2 == 0 else data + b"\0")
        delta = int.from_bytes(buf, "big") - int.from_bytes(before, "big")
    assert adjust(c0, delta) == checksum(buf)


def test_adjust_udp_rules() -> None:
    assert adjust_udp(0, 1234) == 0  # "no checksum" stays so
    # a checksum that becomes 0 is sent as 0xFFFF
    assert adjust_udp(0x1234, 0x1234) == 0xFFFF
    assert adjust_udp(0x1234, 0x1) == 0x1233


def _pkts(n: int, seed: int) -> list[Ether]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ip = IP(src=f"198.18.{rng.randrange(256)}.{rng.randrange(256)}",
                dst=f"198.19.{rng.randrange(256)}.{rng.randrange(256)}", ttl=rng.randrange(2, 256))
        payload = rng.randbytes(rng.randrange(0, 60))
        l4 = (TCP(sport=rng.randrange(65536), dport=rng.randrange(65536), seq=rng.randrange(2**32))
              if i % 2 else UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)))
        out.append(Ether() / ip / l4 / payload)
    return out


def test_l4_checksum_and_ip_header_match_scapy() -> None:
    for pkt in _pkts(200, 1):
        raw = bytes(pkt)
        l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
        assert l4_checksum(raw) == Ether(raw)[type(l4)].chksum
        assert ip_header_ok(raw)
        broken = bytearray(raw)
        broken[24] ^= 0x01
        assert not ip_header_ok(broken)
        set_ip_checksum(broken)
        assert bytes(broken) == raw


def test_fix_partial_csum_completes_offloaded_checksums() -> None:
    for pkt in _pkts(200, 2):
        raw = bytes(pkt)
        cls = TCP if TCP in pkt else UDP
        l4 = Ether(raw)[cls]
        ip = Ether(raw)[IP]
        pseudo = in4_pseudoheader(ip.proto, ip, len(bytes(l4)))
        partial = (~scapy_checksum(pseudo)) & 0xFFFF  # what the kernel leaves: the folded pseudo sum
        frame = bytearray(raw)
        cpos = 14 + 20 + (16 if cls is TCP else 6)
        struct.pack_into("!H", frame, cpos, partial)
        assert bytes(frame) != raw or partial == l4.chksum
        assert fix_partial_csum(frame)
        assert bytes(frame) == raw


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_fix_partial_csum_never_raises(data: bytes) -> None:
    frame = bytearray(b"\x00" * 12 + b"\x08\x00" + data)
    assert fix_partial_csum(frame) in (True, False)
    assert fix_partial_csum(bytearray(data)) in (True, False)
