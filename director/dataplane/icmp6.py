"""ICMPv6 the director translates or originates (pure: frame in, frame out).

Theory of operation
-------------------
:mod:`director.dataplane.xmit`'s ICMP part for IPv6 (RFC 4443). Three jobs:

* **errors about a flow** (destination unreachable, packet too big, time exceeded, parameter
  problem): :func:`quote6` reads the packet an error quotes (its own extension headers walked, a
  first fragment allowed, ports needed for TCP and UDP) so the packet path can find the conn, and
  :func:`nat6_icmp` translates a NAT flow's error like ``ip_vs_nat_icmp_v6``: the outer address on
  the dest's side and the quoted address and port, with the quoted L4 checksum patched by the same
  delta (when the quote reaches it) and the ICMPv6 checksum recomputed over the pseudo-header (the
  slow path: errors are rare, a full sum is simplest and byte-exact). A quoted ``ip6ip6`` packet
  (next header 41) is one of our own TUN packets: :func:`quote6` returns it with protocol 41 and the
  inner packet's offset, which the packet path reads again with :func:`quote6_at`;
* **errors the director originates** (:func:`icmp6_error`): Packet Too Big when a TUN packet plus
  its 40-byte outer header would exceed the inside MTU, time exceeded when a client's hop limit
  runs out at a VIP. The quote is as much of the offending packet as keeps the error within the
  IPv6 minimum MTU (1280 bytes, RFC 4443 §2.4 (c));
* **echo** (:func:`echo6_reply`): an Echo Reply to an Echo Request for an owned address, from
  that address, identifier, sequence and data unchanged.

Every frame built here leaves from the virtual MAC's header the caller passes (``hdr12``, the
neighbour cache's 12-byte destination + source MAC prefix).
"""

from __future__ import annotations

import struct

from director.dataplane.checksum import checksum
from director.dataplane.packet import Drop
from director.dataplane.packet6 import IP6_HLEN, IPPROTO_ICMPV6, IPPROTO_IPV6, OFF_DADDR, OFF_SADDR, walk_ext

ICMP6_DST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROB = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ERRORS = frozenset((ICMP6_DST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROB))
"""The ICMPv6 error types (RFC 4443 §3) that quote a packet of a flow."""
MIN_MTU6 = 1280
"""IPv6's minimum link MTU: no error is bigger, no Packet Too Big announces less."""
QUOTE_MAX = MIN_MTU6 - IP6_HLEN - 8
"""Bytes of the offending packet an originated error quotes at most (1232)."""
HOP_LIMIT = 64
"""Hop limit of the frames the director originates (Linux's default)."""

Quote6 = tuple[int, int, int, int, int, int, int]
"""(proto, saddr, sport, daddr, dport, quoted_ip6_off, quoted_l4_off); for ``ip6ip6`` the ports
are 0 and ``quoted_l4_off`` is the inner packet's IPv6 header."""

_Q6 = struct.Struct("!IHB")         # ver/tclass/flow, payload length, next header
_PORTS = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_u16_at = _U16.unpack_from
_p16 = _U16.pack_into
_IP6 = struct.Struct("!HIHBB")      # ethertype, ver/tclass/flow, payload length, next header, hop limit
_ICMP_HDR = struct.Struct("!BBHI")  # type, code, checksum, rest (MTU / pointer / unused)
_EXT = frozenset((0, 43, 44, 60))
_from = int.from_bytes


def quote6(frame: bytes | bytearray | memoryview, l4: int, end: int) -> Quote6 | None:
    """The flow an ICMPv6 error (its header at ``l4``) quotes, or None when the quote is unusable."""
    return quote6_at(frame, l4 + 8, end)


def quote6_at(frame: bytes | bytearray | memoryview, q: int, end: int) -> Quote6 | None:
    """The quoted IPv6 packet starting at ``q``: TCP or UDP with both ports inside ``end``, or an
    ``ip6ip6`` packet (the inner header's offset in the last slot). Never raises."""
    if q + IP6_HLEN > end:
        return None
    vtf, _plen, nh = _Q6.unpack_from(frame, q)
    if vtf >> 28 != 6:
        return None
    saddr = _from(frame[q + 8:q + 24], "big")
    daddr = _from(frame[q + 24:q + 40], "big")
    w = walk_ext(frame, nh, end, q + IP6_HLEN, True) if nh in _EXT else (nh, q + IP6_HLEN)
    if isinstance(w, Drop):
        return None
    proto, ql4 = w
    if proto == IPPROTO_IPV6:
        return proto, saddr, 0, daddr, 0, q, ql4
    if proto not in (6, 17) or ql4 + 4 > end:
        return None
    sport, dport = _PORTS.unpack_from(frame, ql4)
    return proto, saddr, sport, daddr, dport, q, ql4


def icmp6_ok(frame: bytes | bytearray | memoryview, saddr: int, daddr: int, l4: int, end: int) -> bool:
    """The ICMPv6 message at ``l4`` (up to ``end``) has a valid checksum over the pseudo-header."""
    return checksum(memoryview(frame)[l4:end], saddr + daddr + (end - l4) + IPPROTO_ICMPV6) == 0


def icmp6_sum(frame: bytearray, l4: int, end: int) -> None:
    """Recompute the ICMPv6 checksum at ``l4`` (message up to ``end``) over the frame's addresses."""
    frame[l4 + 2] = frame[l4 + 3] = 0
    saddr = _from(frame[OFF_SADDR:OFF_DADDR], "big")
    daddr = _from(frame[OFF_DADDR:OFF_DADDR + 16], "big")
    _p16(frame, l4 + 2, checksum(memoryview(frame)[l4:end], saddr + daddr + (end - l4) + IPPROTO_ICMPV6))


def nat6_icmp(frame: bytearray, hdr12: bytes, hlim: int, l4: int, end: int, quote: Quote6,
              outbound: bool, new_addr: int, new_port: int) -> None:
    """Translate an ICMPv6 error about a NAT flow in place (``ip_vs_nat_icmp_v6``).

    ``outbound`` (from the dest's side to the client): the outer source and the quoted destination
    (client -> dest) become ``new_addr`` (the VIP), the quoted destination port ``new_port``.
    Inbound (from the client's side to the dest): the outer destination and the quoted source
    (VIP -> client) become the dest's address, the quoted source port its port.
    """
    qproto, qsaddr, qsport, qdaddr, qdport, q, ql4 = quote
    if outbound:
        outer_off, q_addr, q_port, old_a, old_p = OFF_SADDR, q + 24, ql4 + 2, qdaddr, qdport
    else:
        outer_off, q_addr, q_port, old_a, old_p = OFF_DADDR, q + 8, ql4, qsaddr, qsport
    frame[0:12] = hdr12
    frame[21] = hlim - 1
    packed = new_addr.to_bytes(16, "big")
    frame[outer_off:outer_off + 16] = packed
    frame[q_addr:q_addr + 16] = packed
    _p16(frame, q_port, new_port)
    c = ql4 + (16 if qproto == 6 else 6)
    if c + 2 <= end:
        old = _u16_at(frame, c)[0]
        if qproto == 6 or old:  # a UDP checksum 0 (none) stays 0, a computed 0 is sent as 0xFFFF
            new = (old - (new_addr - old_a + new_port - old_p)) % 0xFFFF
            _p16(frame, c, new if new or qproto == 6 else 0xFFFF)
    icmp6_sum(frame, l4, end)


def icmp6_error(hdr12: bytes, saddr: int, daddr: int, icmp_type: int, code: int, rest: int,
                quote: bytes | bytearray | memoryview) -> bytearray:
    """An ICMPv6 error frame from ``saddr`` to ``daddr`` quoting ``quote`` (the offending IPv6
    packet, cut to :data:`QUOTE_MAX`); ``rest``: the MTU of a Packet Too Big, the pointer of a
    parameter problem, else 0."""
    icmp = bytearray(_ICMP_HDR.pack(icmp_type, code, 0, rest)) + bytes(quote[:QUOTE_MAX])
    return _frame6(hdr12, saddr, daddr, icmp)


def echo6_reply(hdr12: bytes, saddr: int, daddr: int, frame: bytes | bytearray | memoryview, l4: int,
                end: int) -> bytearray:
    """The Echo Reply from ``saddr`` (the address pinged) to ``daddr`` for the Echo Request at
    ``l4`` in ``frame``: identifier, sequence and data copied; no extension header."""
    icmp = bytearray(frame[l4:end])
    icmp[0] = ICMP6_ECHO_REPLY
    icmp[2] = icmp[3] = 0
    return _frame6(hdr12, saddr, daddr, icmp)


def _frame6(hdr12: bytes, saddr: int, daddr: int, icmp: bytearray) -> bytearray:
    """``hdr12 | IPv6 (next header 58) | icmp``, the ICMPv6 checksum (zero in ``icmp``) filled in."""
    _p16(icmp, 2, checksum(icmp, saddr + daddr + len(icmp) + IPPROTO_ICMPV6))
    out = bytearray(hdr12)
    out += _IP6.pack(0x86DD, 0x60000000, len(icmp), IPPROTO_ICMPV6, HOP_LIMIT)
    out += saddr.to_bytes(16, "big")
    out += daddr.to_bytes(16, "big")
    out += icmp
    return out


def ptb_mtu(frame: bytes | bytearray | memoryview, l4: int) -> int:
    """The MTU a Packet Too Big at ``l4`` announces."""
    return int(struct.unpack_from("!I", frame, l4 + 4)[0])


__all__ = [
    "ERRORS", "HOP_LIMIT", "ICMP6_DST_UNREACH", "ICMP6_ECHO_REPLY", "ICMP6_ECHO_REQUEST",
    "ICMP6_PACKET_TOO_BIG", "ICMP6_PARAM_PROB", "ICMP6_TIME_EXCEEDED", "MIN_MTU6", "QUOTE_MAX", "Quote6",
    "echo6_reply", "icmp6_error", "icmp6_ok", "icmp6_sum", "nat6_icmp", "ptb_mtu", "quote6", "quote6_at",
]
