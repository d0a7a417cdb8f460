"""Transmitters: rewrite a parsed frame for NAT (both ways), DR or TUN (pure: frame in, frame out).

Theory of operation
-------------------
Like IPVS's ``ip_vs_xmit.c`` there is one function per forwarding method. Each works on a frame
already parsed by :func:`director.dataplane.packet.parse_ipv4` (offsets and header fields are passed in, so
nothing is read twice) and rewrites it **in place**; only TUN builds a new frame, because IPIP
needs 20 more bytes in front of the IP header. Every forwarded packet has its TTL decremented
(the caller dropped TTL <= 1 first) — like IPVS's ``decrement_ttl()`` — and all checksums are
updated incrementally (RFC 1624, see :mod:`director.dataplane.checksum`), never recomputed, except the new
IPIP header's.

``hdr12`` is the first 12 bytes of the outgoing frame, destination MAC then source MAC, as cached by
the neighbour cache, so the Ethernet rewrite is one slice assignment.

ICMP errors (RFC 792 layout: 8-byte ICMP header, then the IP header and at least 8 bytes of the
packet that caused the error) are translated like IPVS's ``ip_vs_nat_icmp``: outer address and
the quoted packet's address/port are mapped, the quoted IP header checksum is recomputed, the
quoted TCP/UDP checksum (when quoted) is updated incrementally so the quote reads exactly like the
packet the peer sent, and the ICMP checksum is recomputed over the whole message.
"""

from __future__ import annotations

import struct

from director.dataplane.checksum import checksum, ones_sum

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_u16_at = _U16.unpack_from
_p16 = _U16.pack_into
_p32 = _U32.pack_into
_OUTER = struct.Struct("!HBBHHHBBHII")  # ethertype, ver_ihl, tos, tot_len, id, frag, ttl, proto, csum, sa, da
_QUOTED = struct.Struct("!B8xB2xII")  # ver_ihl, proto, saddr, daddr of a quoted IP header

IP_DF = 0x4000


def nat_rewrite(frame: bytearray, hdr12: bytes, ttl: int, l4: int, proto: int, addr_off: int,
                port_off: int, old_addr: int, new_addr: int, old_port: int, new_port: int) -> None:
    """Rewrite one address and its port (NAT) in place, decrement TTL, patch all checksums.

    NAT in (to the dest): ``addr_off=30`` (daddr), ``port_off=2`` (dport).
    NAT out (reply to the client): ``addr_off=26`` (saddr), ``port_off=0`` (sport).
    ``proto`` is TCP or UDP.
    """
    frame[0:12] = hdr12
    frame[22] = ttl - 1
    da = new_addr - old_addr
    _p32(frame, addr_off, new_addr)
    _p16(frame, 24, (_u16_at(frame, 24)[0] - da + 0x100) % 0xFFFF)
    _p16(frame, l4 + port_off, new_port)
    if proto == 6:
        c = l4 + 16
        _p16(frame, c, (_u16_at(frame, c)[0] - da - new_port + old_port) % 0xFFFF)
    else:
        c = l4 + 6
        old = _u16_at(frame, c)[0]
        if old:
            _p16(frame, c, (old - da - new_port + old_port) % 0xFFFF or 0xFFFF)


def ip_rewrite(frame: bytearray, hdr12: bytes, ttl: int, addr_off: int, old_addr: int, new_addr: int
               ) -> None:
    """NAT of a non-first fragment: only the IP address (26 = saddr, 30 = daddr) and TTL change.

    Its L4 checksum was fixed in the first fragment (it covers the whole datagram).
    """
    frame[0:12] = hdr12
    frame[22] = ttl - 1
    _p32(frame, addr_off, new_addr)
    _p16(frame, 24, (_u16_at(frame, 24)[0] - (new_addr - old_addr) + 0x100) % 0xFFFF)


def dr_rewrite(frame: bytearray, hdr12: bytes, ttl: int) -> None:
    """Direct routing: new MACs (the dest's), TTL - 1; the IP packet is otherwise untouched."""
    frame[0:12] = hdr12
    frame[22] = ttl - 1
    _p16(frame, 24, (_u16_at(frame, 24)[0] + 0x100) % 0xFFFF)


def tun_encap(frame: bytearray, end: int, hdr12: bytes, ttl: int, saddr: int, daddr: int,
              ipid: int) -> bytearray:
    """IPIP (RFC 2003) to the dest: a new frame ``eth | outer IPv4 | inner IP packet``.

    The inner packet's TTL is decremented (and its checksum patched) in ``frame`` first; the outer
    header copies the inner TOS, DF bit and (decremented) TTL like IPVS's tunnel transmitter.
    Ethernet padding of ``frame`` is not carried over.
    """
    frame[22] = ttl - 1
    _p16(frame, 24, (_u16_at(frame, 24)[0] + 0x100) % 0xFFFF)
    inner_len = end - 14
    hdr = _OUTER.pack(0x0800, 0x45, frame[15], inner_len + 20, ipid,
                      _u16_at(frame, 20)[0] & IP_DF, ttl - 1, 4, 0, saddr, daddr)
    out = bytearray(hdr12)
    out += hdr
    _p16(out, 24, checksum(memoryview(out)[14:34]))
    out += memoryview(frame)[14:end]
    return out


def icmp_quote(frame: bytes | bytearray | memoryview, l4: int, end: int, q: int = 0
               ) -> tuple[int, int, int, int, int, int] | None:
    """The flow an ICMP error quotes: (proto, saddr, sport, daddr, dport, quoted_l4) or None.

    Only TCP and UDP quotes with both ports present are returned. ``q``: where the quoted IP header
    starts when not right after the ICMP header at ``l4`` (the inner packet of a quoted IPIP one).
    """
    q = q or l4 + 8
    if q + 28 > end:
        return None
    ver_ihl, proto, saddr, daddr = _QUOTED.unpack_from(frame, q)
    if ver_ihl >> 4 != 4 or (ver_ihl & 0x0F) < 5 or proto not in (6, 17):
        return None
    ql4 = q + (ver_ihl & 0x0F) * 4
    if ql4 + 4 > end:
        return None
    sport, dport = struct.unpack_from("!HH", frame, ql4)
    return proto, saddr, sport, daddr, dport, ql4


def ipip_quote(frame: bytes | bytearray | memoryview, l4: int, end: int) -> tuple[int, int] | None:
    """(outer destination, inner header offset) when the ICMP error at ``l4`` quotes an IPIP packet
    (protocol 4: one of our TUN packets), else None."""
    q = l4 + 8
    if q + 20 > end:
        return None
    ver_ihl, proto, _saddr, daddr = _QUOTED.unpack_from(frame, q)
    if ver_ihl >> 4 != 4 or (ver_ihl & 0x0F) < 5 or proto != 4:
        return None
    return daddr, q + (ver_ihl & 0x0F) * 4


def nat_icmp(frame: bytearray, hdr12: bytes, ttl: int, l4: int, end: int, ql4: int, qproto: int,
             outbound: bool, vaddr: int, vport: int, daddr: int, dport: int) -> None:
    """Translate an ICMP error about a NAT flow in place (``ip_vs_nat_icmp``).

    ``outbound`` (dest side -> client): outer saddr := vaddr; the quoted packet (client -> dest) gets
    its daddr:dport set back to vaddr:vport. Inbound (client side -> dest): outer daddr := daddr;
    the quoted packet (VIP -> client) gets its saddr:sport set to daddr:dport.
    """
    q = l4 + 8
    if outbound:
        outer_off, q_addr, q_port, new_a, new_p = 26, q + 16, ql4 + 2, vaddr, vport
    else:
        outer_off, q_addr, q_port, new_a, new_p = 30, q + 12, ql4, daddr, dport
    frame[0:12] = hdr12
    frame[22] = ttl - 1
    old_outer = _U32.unpack_from(frame, outer_off)[0]
    _p32(frame, outer_off, new_a)
    _p16(frame, 24, (_u16_at(frame, 24)[0] - (new_a - old_outer) + 0x100) % 0xFFFF)
    old_a = _U32.unpack_from(frame, q_addr)[0]
    old_p = _u16_at(frame, q_port)[0]
    _p32(frame, q_addr, new_a)
    _p16(frame, q_port, new_p)
    frame[q + 10] = frame[q + 11] = 0
    _p16(frame, q + 10, checksum(memoryview(frame)[q:ql4]))
    _fix_quoted_l4(frame, ql4, end, qproto, new_a - old_a + new_p - old_p)
    frame[l4 + 2] = frame[l4 + 3] = 0
    _p16(frame, l4 + 2, 0xFFFF - ones_sum(memoryview(frame)[l4:end]))


def _fix_quoted_l4(frame: bytearray, ql4: int, end: int, qproto: int, delta: int) -> None:
    c = ql4 + (16 if qproto == 6 else 6)
    if c + 2 > end:
        return
    old = _u16_at(frame, c)[0]
    if qproto == 17:
        if old:
            _p16(frame, c, (old - delta) % 0xFFFF or 0xFFFF)
    else:
        _p16(frame, c, (old - delta) % 0xFFFF)


def icmp_error(hdr12: bytes, saddr: int, daddr: int, icmp_type: int, code: int, rest: int,
               quote: bytes | bytearray | memoryview, ipid: int = 0) -> bytearray:
    """Build an ICMP error frame (e.g. type 3 code 4 frag-needed, ``rest`` = next-hop MTU).

    ``quote`` is the offending IP packet; its header plus 8 bytes are quoted (RFC 792).
    """
    ihl = (quote[0] & 0x0F) * 4 if len(quote) else 20
    body = bytes(quote[:ihl + 8])
    return _icmp_frame(hdr12, saddr, daddr, bytearray(struct.pack("!BBHI", icmp_type, code, 0, rest)) + body,
                       ipid)


def echo_reply(hdr12: bytes, saddr: int, daddr: int, frame: bytes | bytearray | memoryview, l4: int,
               end: int, ipid: int = 0) -> bytearray:
    """The ICMP echo reply from ``saddr`` (the address pinged) to ``daddr`` for the echo request at
    ``l4`` in ``frame``: identifier, sequence and data copied; a fresh 20-byte IP header, TTL 64."""
    icmp = bytearray(frame[l4:end])
    icmp[0] = 0
    icmp[2] = icmp[3] = 0
    return _icmp_frame(hdr12, saddr, daddr, icmp, ipid)


def _icmp_frame(hdr12: bytes, saddr: int, daddr: int, icmp: bytearray, ipid: int) -> bytearray:
    """``hdr12 | IPv4 (protocol 1, TTL 64) | icmp``, the ICMP checksum (zero in ``icmp``) filled in."""
    _p16(icmp, 2, checksum(icmp))
    out = bytearray(hdr12)
    out += _OUTER.pack(0x0800, 0x45, 0, 20 + len(icmp), ipid, 0, 64, 1, 0, saddr, daddr)
    _p16(out, 24, checksum(memoryview(out)[14:34]))
    out += icmp
    return out


__all__ = [
    "IP_DF", "dr_rewrite", "echo_reply", "icmp_error", "icmp_quote", "ip_rewrite", "ipip_quote", "nat_icmp",
    "nat_rewrite",
    "tun_encap",
]
