"""Parse Ethernet / IPv6 / extension headers / TCP / UDP / ICMPv6 in place (never raises).

Theory of operation
-------------------
:func:`parse_ipv6` is :func:`director.dataplane.packet.parse_ipv4`'s twin: one frame in, the
fields the packet path needs out, as the same 9-tuple (:data:`IPv6Info` has
:data:`~director.dataplane.packet.IPv4Info`'s layout, the hop limit in the TTL slot), or a
:class:`~director.dataplane.packet.Drop` reason. Addresses are 128-bit ints; every address
admitted is at least 2**32 (``director.table.entry``: one address space for both families).

Wire layout (offsets from the start of the frame)::

    0      6      12     14                   18     20  21  22          38          54
    +------+------+------+--------------------+------+---+---+-----------+-----------+-----------
    | dmac | smac |86dd  | ver tclass flow    | plen |nh |hl | saddr     | daddr     | ext... L4
    +------+------+------+--------------------+------+---+---+-----------+-----------+-----------

Extension headers are walked, at most :data:`MAX_EXT_HEADERS` of them, each checked to lie inside
the packet before it is read:

* hop-by-hop options (0): only as the first header (RFC 8200 §4.1), skipped;
* destination options (60): skipped;
* routing (43): skipped when no segment is left; with segments left the packet asks this node to
  route it on, which a load balancer does not do: ``BAD_EXTHDR``;
* fragment (44): an atomic fragment (offset 0, no more fragments, RFC 6946) is read as a whole
  packet; any other fragment is ``FRAGMENT``, except a first fragment when the caller forwards
  fragments (``first_fragment``; the later ones are followed by :func:`fragment6`);
* anything else ends the walk: TCP, UDP, ICMPv6 are parsed, the rest is ``UNKNOWN_PROTO``
  (ESP, AH, no next header, ...).

Other drops: a payload length of 0 (a jumbogram) or past the frame is ``BAD_TOTLEN``; a source or
destination in ``::/96`` or ``::ffff:0:0/96``, or a multicast source, is ``BAD_ADDR``; a UDP datagram
with checksum 0 is ``BAD_L4`` (mandatory in IPv6, RFC 8200 §8.1). Ethernet padding after the packet
is allowed and kept.
"""

from __future__ import annotations

import ipaddress
import struct

from director.dataplane.packet import Drop

ETH_P_IPV6 = 0x86DD
IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58
IPPROTO_DSTOPTS = 60
IPPROTO_IPV6 = 41
IP6_HLEN = 40
L3_OFF = 14
"""The IPv6 header's offset in the frame."""
OFF_HLIM = 21
OFF_SADDR = 22
OFF_DADDR = 38
MAX_EXT_HEADERS = 8
"""Extension headers walked at most (Linux has no fixed bound; 8 is far more than real traffic uses)."""

IPv6Info = tuple[int, int, int, int, int, int, int, int, int]
"""(proto, saddr, sport, daddr, dport, l4_off, end, hop_limit, extra), as ``IPv4Info``."""

_FIXED = struct.Struct("!12xHIHBB16s16s")  # ethertype, ver/tclass/flow, payload length, next header,
#                                            hop limit, source, destination
_UDP = struct.Struct("!HHHH")
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_MIN_FRAME = L3_OFF + IP6_HLEN
_V6_MIN = 1 << 32
_EXT = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS))
_from = int.from_bytes


def bad_addr(saddr: int, daddr: int) -> bool:
    """Addresses no IPv6 packet to or from a VIP carries: ``::/96`` (unspecified, loopback,
    IPv4-compatible), ``::ffff:0:0/96`` (IPv4-mapped), a multicast source."""
    return (saddr < _V6_MIN or daddr < _V6_MIN or saddr >> 32 == 0xFFFF or daddr >> 32 == 0xFFFF
            or saddr >> 120 == 0xFF)


def walk_ext(frame: bytes | bytearray | memoryview, nh: int, end: int, off: int = _MIN_FRAME,
             first_fragment: bool = False) -> tuple[int, int] | Drop:
    """(upper-layer protocol, its offset) after the extension headers, or why the packet is dropped.

    ``off``: where the first extension header starts (a quoted packet inside an ICMPv6 error starts
    deeper than a frame's own). ``first_fragment``: a fragment header with offset 0 passes even
    with M set (the first fragment of a datagram carries the upper-layer header)."""
    frag_mask = 0xFFF8 if first_fragment else 0xFFF9
    for i in range(MAX_EXT_HEADERS + 1):
        if nh not in _EXT:
            return nh, off
        if i == MAX_EXT_HEADERS or off + 8 > end or (nh == IPPROTO_HOPOPTS and i):
            return Drop.BAD_EXTHDR
        if nh == IPPROTO_FRAGMENT:
            if _U16.unpack_from(frame, off + 2)[0] & frag_mask:  # offset (or M) set: a real fragment
                return Drop.FRAGMENT
            size = 8
        else:
            if nh == IPPROTO_ROUTING and frame[off + 3]:
                return Drop.BAD_EXTHDR
            size = (frame[off + 1] + 1) * 8
        nh = frame[off]
        off += size
        if off > end:
            return Drop.BAD_EXTHDR
    return Drop.BAD_EXTHDR  # (not reached: the loop returns at i == MAX_EXT_HEADERS)


def fragment6(frame: bytes | bytearray | memoryview, end: int) -> tuple[int, int, int, int] | None:
    """(next header after it, identification, fragment offset in bytes, M flag) of the fragment
    header of a frame whose IPv6 header ``parse_ipv6`` validated; None if it has none (walked like
    :func:`walk_ext`, bounded)."""
    nh, off = frame[20], _MIN_FRAME
    for _ in range(MAX_EXT_HEADERS):
        if nh not in _EXT or off + 8 > end:
            return None
        if nh == IPPROTO_FRAGMENT:
            fo = _U16.unpack_from(frame, off + 2)[0]
            return frame[off], _U32.unpack_from(frame, off + 4)[0], fo & 0xFFF8, fo & 1
        nh, off = frame[off], off + (frame[off + 1] + 1) * 8
    return None


def parse_ipv6(frame: bytes | bytearray | memoryview, first_fragment: bool = False) -> IPv6Info | Drop:
    """Parse an Ethernet/IPv6 frame: the fields of :data:`IPv6Info`, or why it is unusable.

    ``first_fragment`` (``forward_fragments``): the first fragment of a datagram (offset 0, M set,
    the upper-layer header inside) is parsed like a whole packet, its UDP length allowed past the
    fragment's end; later fragments stay ``FRAGMENT`` (the caller follows them by
    :func:`fragment6`)."""
    n = len(frame)
    if n < _MIN_FRAME:
        return Drop.TRUNCATED
    etype, vtf, plen, nh, hlim, sbytes, dbytes = _FIXED.unpack_from(frame, 0)
    if etype != ETH_P_IPV6:
        return Drop.NOT_IPV4
    if vtf >> 28 != 6:
        return Drop.BAD_VERSION
    end = _MIN_FRAME + plen
    if not plen or end > n:
        return Drop.BAD_TOTLEN
    saddr = _from(sbytes, "big")
    daddr = _from(dbytes, "big")
    if bad_addr(saddr, daddr):
        return Drop.BAD_ADDR
    w = walk_ext(frame, nh, end, _MIN_FRAME, first_fragment) if nh in _EXT else (nh, _MIN_FRAME)
    if isinstance(w, Drop):
        return w
    proto, l4 = w
    r = _l4(frame, proto, saddr, daddr, l4, end, hlim)
    if r is Drop.BAD_L4 and first_fragment and proto == 17 and (f := fragment6(frame, end)) and f[3]:
        return _l4(frame, proto, saddr, daddr, l4, end, hlim, partial=True)
    return r


def _l4(frame: bytes | bytearray | memoryview, proto: int, saddr: int, daddr: int, l4: int, end: int,
        hlim: int, partial: bool = False) -> IPv6Info | Drop:
    if proto == 6:
        if l4 + 20 > end or not 20 <= (frame[l4 + 12] >> 4) * 4 <= end - l4:
            return Drop.BAD_L4
        sport, dport = _PORTS.unpack_from(frame, l4)
        return proto, saddr, sport, daddr, dport, l4, end, hlim, frame[l4 + 13]
    if proto == 17:
        if l4 + 8 > end:
            return Drop.BAD_L4
        sport, dport, ulen, csum = _UDP.unpack_from(frame, l4)
        if ulen < 8 or (ulen > end - l4 and not partial) or not csum:
            return Drop.BAD_L4
        return proto, saddr, sport, daddr, dport, l4, end, hlim, 0
    if proto == IPPROTO_ICMPV6:
        if l4 + 8 > end:
            return Drop.BAD_L4
        return proto, saddr, frame[l4], daddr, frame[l4 + 1], l4, end, hlim, 0
    return Drop.UNKNOWN_PROTO


def ip6_str(addr: int) -> str:
    """Text of a 128-bit address int (logs and reprs only)."""
    return str(ipaddress.IPv6Address(addr))


__all__ = [
    "ETH_P_IPV6", "IP6_HLEN", "IPPROTO_DSTOPTS", "IPPROTO_FRAGMENT", "IPPROTO_HOPOPTS", "IPPROTO_ICMPV6",
    "IPPROTO_IPV6", "IPPROTO_ROUTING", "L3_OFF", "MAX_EXT_HEADERS", "OFF_DADDR", "OFF_HLIM", "OFF_SADDR",
    "IPv6Info", "bad_addr", "fragment6", "ip6_str", "parse_ipv6", "walk_ext",
]
