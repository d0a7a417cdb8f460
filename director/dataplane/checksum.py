"""Internet checksums: full computation and RFC 1624 incremental updates.

Theory of operation
-------------------
The Internet checksum is the one's complement of the one's complement sum of 16-bit words
(RFC 1071). Because ``2**16 == 1 (mod 0xFFFF)``, the one's complement sum of a byte string equals
the big-endian integer it spells, reduced modulo ``0xFFFF`` (with the one caveat that a non-zero
sum is ``0xFFFF``, never ``0``). So a full checksum is ``int.from_bytes(...) % 0xFFFF``: one C call
over the whole buffer, no Python loop over words.

The same identity makes RFC 1624's incremental update (eqn. 3, ``HC' = ~(~HC + ~m + m')``) a single
modular subtraction: ``HC' = (HC - (m' - m)) mod 0xFFFF``, where ``m' - m`` may be the difference of
whole 32-bit addresses (a 32-bit value is congruent to the sum of its two 16-bit halves). The
result lies in ``[0, 0xFFFE]``, exactly what a full recomputation over non-zero data gives, so an
incrementally patched packet is byte-identical to one rebuilt from scratch (scapy checks this in
the tests). UDP adds two rules: a stored ``0`` means "no checksum" and stays ``0``; a computed
``0`` is sent as ``0xFFFF``.

Offload: frames a local stack hands out with CHECKSUM_PARTIAL carry in the L4 checksum field only
the (uncomplemented) pseudo-header sum; the NIC would sum the segment from the L4 header on and
store the complement. :func:`fix_partial_csum` does that job in software, like the kernel's
``skb_checksum_help``. The I/O layer calls it before the packet path touches the frame.
"""

from __future__ import annotations

import struct

_H = struct.Struct("!H")
_U16_AT = _H.unpack_from
_PACK16 = _H.pack_into
_IP_HDR = struct.Struct("!BxHxxHxB")  # ver_ihl, tot_len, frag_off, proto


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's complement sum of ``data`` (padded to even length) plus ``initial``: in [0, 0xFFFF].

    ``0`` only when everything summed is zero.
    """
    x = int.from_bytes(data, "big")
    if len(data) & 1:
        x <<= 8
    x += initial
    s = x % 0xFFFF
    if s == 0 and x:
        return 0xFFFF
    return s


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Internet checksum (RFC 1071) of ``data``; ``initial`` adds e.g. a pseudo-header sum."""
    return 0xFFFF - ones_sum(data, initial)


def pseudo_sum(saddr: int, daddr: int, proto: int, length: int) -> int:
    """IPv4 pseudo-header contribution (not folded: add it as ``initial``)."""
    return saddr + daddr + proto + length


def adjust(csum: int, delta: int) -> int:
    """RFC 1624 update of a checksum after the covered data grew by ``delta`` (new - old words).

    ``delta`` may combine 16-bit fields and whole 32-bit addresses (``new_addr - old_addr``).
    """
    return (csum - delta) % 0xFFFF


def adjust_udp(csum: int, delta: int) -> int:
    """:func:`adjust` with UDP's rules: 0 = no checksum stays 0; a computed 0 is sent as 0xFFFF."""
    if csum == 0:
        return 0
    return (csum - delta) % 0xFFFF or 0xFFFF


def ip_header_ok(buf: bytes | bytearray | memoryview, off: int = 14) -> bool:
    """True if the IPv4 header at ``off`` has a correct checksum."""
    ihl = (buf[off] & 0x0F) * 4
    return ones_sum(memoryview(buf)[off:off + ihl]) == 0xFFFF


def set_ip_checksum(buf: bytearray, off: int = 14) -> None:
    """Compute and store the IPv4 header checksum of the header at ``off``."""
    ihl = (buf[off] & 0x0F) * 4
    buf[off + 10] = buf[off + 11] = 0
    _PACK16(buf, off + 10, checksum(memoryview(buf)[off:off + ihl]))


def l4_checksum(buf: bytes | bytearray | memoryview, off: int = 14) -> int | None:
    """Correct TCP/UDP checksum for the IPv4 packet at ``off`` (field value ignored); None if n/a."""
    if len(buf) < off + 20:
        return None
    ver_ihl, tot_len, _, proto = _IP_HDR.unpack_from(buf, off)
    ihl = (ver_ihl & 0x0F) * 4
    l4 = off + ihl
    end = off + tot_len
    if proto == 6:
        cpos = l4 + 16
    elif proto == 17:
        cpos = l4 + 6
    else:
        return None
    if end > len(buf) or cpos + 2 > end:
        return None
    saddr = int.from_bytes(buf[off + 12:off + 16], "big")
    daddr = int.from_bytes(buf[off + 16:off + 20], "big")
    field = _U16_AT(buf, cpos)[0]
    # Sum everything with the field as stored, then remove the field: one pass, no copy.
    total = ones_sum(memoryview(buf)[l4:end], pseudo_sum(saddr, daddr, proto, end - l4) + 0xFFFF - field)
    c = 0xFFFF - total
    if proto == 17 and c == 0:
        return 0xFFFF
    return c


def fix_partial_csum(frame: bytearray, off: int = 14) -> bool:
    """Complete a CHECKSUM_PARTIAL TCP/UDP checksum in place (the NIC's job). True if done.

    The field holds the pseudo-header sum; the full checksum is the complement of the sum of the
    L4 segment (field included, as stored). IPv6 is completed when TCP/UDP directly follows the fixed
    header (what a local stack sends). Non-IP, non-TCP/UDP, fragments and truncated frames are left
    alone (False).
    """
    if frame[off - 2:off] == b"\x86\xdd":
        return _fix_partial6(frame, off)
    if len(frame) < off + 20 or frame[off - 2:off] != b"\x08\x00":
        return False
    ver_ihl, tot_len, frag, proto = _IP_HDR.unpack_from(frame, off)
    if ver_ihl >> 4 != 4 or frag & 0x3FFF:
        return False
    ihl = (ver_ihl & 0x0F) * 4
    l4 = off + ihl
    end = off + tot_len
    if proto == 6:
        cpos = l4 + 16
    elif proto == 17:
        cpos = l4 + 6
    else:
        return False
    if ihl < 20 or end > len(frame) or cpos + 2 > end:
        return False
    c = 0xFFFF - ones_sum(memoryview(frame)[l4:end])
    if proto == 17 and c == 0:
        c = 0xFFFF
    _PACK16(frame, cpos, c)
    return True


def _fix_partial6(frame: bytearray, off: int) -> bool:
    if len(frame) < off + 40 or frame[off] >> 4 != 6 or frame[off + 6] not in (6, 17):
        return False
    l4 = off + 40
    end = l4 + _U16_AT(frame, off + 4)[0]
    cpos = l4 + (16 if frame[off + 6] == 6 else 6)
    if end > len(frame) or cpos + 2 > end:
        return False
    c = 0xFFFF - ones_sum(memoryview(frame)[l4:end])
    _PACK16(frame, cpos, c if c or frame[off + 6] == 6 else 0xFFFF)
    return True


__all__ = [
    "adjust", "adjust_udp", "checksum", "fix_partial_csum", "ip_header_ok", "l4_checksum",
    "ones_sum", "pseudo_sum", "set_ip_checksum",
]
