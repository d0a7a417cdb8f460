"""IPv6 transmitters: NAT (both ways), DR and TUN as ip6ip6 (pure: frame in, frame out).

Theory of operation
-------------------
:mod:`director.dataplane.xmit`'s twins for frames parsed by
:func:`director.dataplane.packet6.parse_ipv6`. IPv6 has no header checksum, so NAT patches only
the TCP/UDP checksum, whose pseudo-header covers both 128-bit addresses: RFC 1624's update with
``delta = new_addr - old_addr + new_port - old_port`` (a 128-bit address is congruent to the sum of
its eight 16-bit words modulo 0xFFFF, as :mod:`director.dataplane.checksum` explains for 32 bits), so
the patched packet is byte-identical to one rebuilt from scratch. A UDP checksum that comes out 0 is
sent as 0xFFFF (a received 0 was dropped by the parser). Every forwarded packet has its hop limit
decremented (the caller dropped hop limit <= 1 first). Extension headers are forwarded untouched
(none of those the parser lets through is covered by a checksum).

TUN (``tun6_encap``) is IPv6-in-IPv6 (RFC 2473, next header 41): a new 40-byte outer header whose
traffic class is the inner one's, hop limit the inner (decremented) one, source the caller's
(``CoreConfig.tun_src6``, else the VIP). The real server decapsulates with an ``ip6tnl`` device.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct("!H")
_u16_at = _U16.unpack_from
_p16 = _U16.pack_into
_OUTER6 = struct.Struct("!HIHBB")  # ethertype, ver/tclass/flow, payload length, next header, hop limit
_VER_TCLASS = 0xFFF00000
IP6IP6 = 41


def nat6_rewrite(frame: bytearray, hdr12: bytes, hlim: int, l4: int, proto: int, addr_off: int,
                 port_off: int, old_addr: int, new_addr: int, old_port: int, new_port: int) -> None:
    """Rewrite one address and its port in place, decrement the hop limit, patch the L4 checksum.

    NAT in (to the dest): ``addr_off=38`` (daddr), ``port_off=2`` (dport).
    NAT out (reply to the client): ``addr_off=22`` (saddr), ``port_off=0`` (sport).
    """
    frame[0:12] = hdr12
    frame[21] = hlim - 1
    frame[addr_off:addr_off + 16] = new_addr.to_bytes(16, "big")
    _p16(frame, l4 + port_off, new_port)
    delta = new_addr - old_addr + new_port - old_port
    c = l4 + (16 if proto == 6 else 6)
    new = (_u16_at(frame, c)[0] - delta) % 0xFFFF
    _p16(frame, c, new if proto == 6 or new else 0xFFFF)


def addr6_rewrite(frame: bytearray, hdr12: bytes, hlim: int, addr_off: int, new_addr: int) -> None:
    """NAT of a fragment after the first: only the address (and MACs, hop limit) changes; the L4
    checksum, in the first fragment, was patched there for the whole datagram."""
    frame[0:12] = hdr12
    frame[21] = hlim - 1
    frame[addr_off:addr_off + 16] = new_addr.to_bytes(16, "big")


def dr6_rewrite(frame: bytearray, hdr12: bytes, hlim: int) -> None:
    """Direct routing: the dest's MACs, hop limit - 1; nothing else changes (no header checksum)."""
    frame[0:12] = hdr12
    frame[21] = hlim - 1


def tun6_encap(frame: bytearray, end: int, hdr12: bytes, hlim: int, saddr: int, daddr: int) -> bytearray:
    """ip6ip6 to the dest: a new frame ``eth | outer IPv6 | inner IPv6 packet`` (padding dropped)."""
    frame[21] = hlim - 1
    inner_len = end - 14
    vtf = struct.unpack_from("!I", frame, 14)[0] & _VER_TCLASS
    out = bytearray(hdr12)
    out += _OUTER6.pack(0x86DD, vtf, inner_len, IP6IP6, hlim - 1)
    out += saddr.to_bytes(16, "big")
    out += daddr.to_bytes(16, "big")
    out += memoryview(frame)[14:end]
    return out


__all__ = ["IP6IP6", "addr6_rewrite", "dr6_rewrite", "nat6_rewrite", "tun6_encap"]
