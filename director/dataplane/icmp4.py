"""IPv4 ICMP in the packet path: errors about flows, path MTU, time exceeded, echo (the twin of
:mod:`director.dataplane.path6`'s ICMPv6 part; docs/DATAPLANE.md "ICMP").

Theory of operation
-------------------
:class:`Icmp4` is the slow path the core hands ICMP frames (and packets out of TTL) to, once its
guard has let them through (only the master handles ICMP):

* **errors about a flow** (dest unreachable incl. frag-needed, source quench, time exceeded) quoting
  a known conn: translated for NAT (``xmit.nat_icmp``: outer and quoted address and port, both
  checksums), forwarded like the flow for DR/TUN, else ``ICMP_UNRELATED``;
* **path MTU through the tunnel**: a TUN packet that will not fit ``cfg.mtu`` once in IPIP gets
  frag-needed from the VIP when DF is set (:meth:`Icmp4.too_big`); frag-needed from the inside about
  one of our IPIP packets becomes frag-needed to the client about its own packet, MTU less 20;
* **time exceeded** to a client whose packet to a virtual service runs out of TTL;
* **echo**: requests to an owned address go to the director's shared ``echo_reply`` (both families).

Originated errors share the director's ``icmp_budget`` (``icmp_ratelimit`` per second).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from director.dataplane.budget import PerSecond
from director.dataplane.checksum import checksum
from director.dataplane.config import CoreConfig
from director.dataplane.neigh import EXT, INT, Action, Neighbours
from director.dataplane.packet import Drop, IPv4Info
from director.dataplane.xmit import IP_DF, echo_reply, icmp_error, icmp_quote, ipip_quote, nat_icmp
from director.services.service import Dest, ServiceTable, count_packet
from director.table.conn import Conn, ConnTable
from director.types import Clock, ConnFlags

ICMP_ECHO = 8
_ICMP_ERRORS = frozenset((3, 4, 11))
_FWD_MASK = int(ConnFlags.FWD_MASK)
_MASQ = int(ConnFlags.MASQ)
_TUNNEL = int(ConnFlags.TUNNEL)


class Director(Protocol):
    """What the ICMP path uses of its :class:`director.dataplane.core.Director` (a protocol, so that
    the core importing this module is not an import cycle)."""

    @property
    def cfg(self) -> CoreConfig: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def nb(self) -> Neighbours: ...
    @property
    def services(self) -> ServiceTable: ...
    @property
    def table(self) -> ConnTable: ...
    @property
    def icmp_budget(self) -> PerSecond: ...
    def owned(self, side: int) -> set[int] | frozenset[int]: ...
    def echo_reply(self, frame: bytearray, side: int, daddr: int, owned: set[int] | frozenset[int],
                   build: Callable[[bytes], bytearray], own_mac: bytes | None = None) -> Action | None: ...
    def _neigh_miss(self, side: int, addr: int, dest: Dest | None) -> Action | None: ...
    def _xmit_other(self, frame: bytearray, conn: Conn, fwd: int, r: IPv4Info) -> Action | None: ...


class Icmp4:
    """IPv4 ICMP of one :class:`~director.dataplane.core.Director` (shares its tables and counters)."""

    __slots__ = ("d", "_drops", "_ext_hdr", "_int_hdr")

    def __init__(self, director: Director, drops: list[int]) -> None:
        self.d = director
        self._drops = drops
        self._ext_hdr = director.nb.caches[EXT].hdr
        self._int_hdr = director.nb.caches[INT].hdr

    def time_exceeded(self, frame: bytearray, side: int, r: IPv4Info) -> Action | None:
        """ICMP time exceeded to a client whose packet to a VIP ran out of TTL (like IPVS's
        decrement_ttl), at most ``icmp_ratelimit`` per second; never about ICMP, never inside."""
        proto, saddr, _sport, daddr, dport, _l4, end, _ttl, _ = r
        if side != EXT or proto == 1 or self.d.services.get(proto, daddr, dport) is None:
            return None
        hdr = self._ext_hdr.get(saddr) or self.d.nb.route(saddr)
        if hdr is None or not self.d.icmp_budget.take(self.d.clock()):
            return None
        return EXT, icmp_error(hdr, self.d.cfg.ext_addr or daddr, saddr, 11, 0, 0, memoryview(frame)[14:end])

    def handle(self, frame: bytearray, side: int, r: IPv4Info) -> Action | None:
        """ICMP errors about a known flow: translate (NAT) or forward (DR/TUN) to the other side;
        echo requests to an owned address: answered. A wrong ICMP checksum is ``BAD_L4`` first
        (translating recomputes it, which would launder a corrupted error; IPVS verifies it too)."""
        _p, saddr, icmp_type, daddr, code, l4, end, ttl, _ = r
        if checksum(memoryview(frame)[l4:end]):
            self._drops[Drop.BAD_L4] += 1
            return None
        if icmp_type == ICMP_ECHO:
            return self.d.echo_reply(frame, side, daddr, self.d.owned(side),
                                     lambda hdr: echo_reply(hdr, daddr, saddr, frame, l4, end))
        q = icmp_quote(frame, l4, end) if icmp_type in _ICMP_ERRORS else None
        if q is None:
            if icmp_type == 3 and code == 4 and side == INT and (t := ipip_quote(frame, l4, end)):
                return self._tunnel_pmtu(frame, r, *t)
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        qproto, qsaddr, qsport, qdaddr, qdport, ql4 = q
        # From the servers' side: the quote is client -> dest (what the dest received).
        conn = self.d.table.out_get(qproto, qdaddr, qdport, qsaddr, qsport)
        if conn is not None and conn.flags & _FWD_MASK == _MASQ:
            hdr = self._ext_hdr.get(conn.caddr) or self.d.nb.route(conn.caddr)
            if hdr is None:
                return self.d._neigh_miss(EXT, self.d.nb.nexthop(conn.caddr), None)
            count_packet(conn.dest, end - 14, False)
            nat_icmp(frame, hdr, ttl, l4, end, ql4, qproto, True, conn.vaddr, conn.vport, 0, 0)
            return EXT, frame
        # From the clients' side: the quote is VIP -> client (a reply we sent).
        conn = self.d.table.in_get(qproto, qdaddr, qdport, qsaddr, qsport)
        if conn is None:
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        count_packet(conn.dest, end - 14, True)
        fwd = conn.flags & _FWD_MASK
        if fwd != _MASQ:
            return self.d._xmit_other(frame, conn, fwd, r)
        hdr = self._int_hdr.get(conn.daddr)
        if hdr is None:
            return self.d._neigh_miss(INT, conn.daddr, conn.dest)
        nat_icmp(frame, hdr, ttl, l4, end, ql4, qproto, False, 0, 0, conn.daddr, conn.dport)
        return INT, frame

    def _tunnel_pmtu(self, frame: bytearray, r: IPv4Info, outer_daddr: int, inner: int) -> Action | None:
        """Frag-needed from the inside about one of our IPIP packets (to the conn's dest): the client
        gets frag-needed about its own packet, announcing the reported MTU less the 20-byte outer
        header (PMTU through the tunnel; the router must quote the inner header and 8 bytes)."""
        l4, end = r[5], r[6]
        q = icmp_quote(frame, l4, end, inner)
        conn = self.d.table.in_get(q[0], q[1], q[2], q[3], q[4]) if q is not None else None
        if conn is None or conn.flags & _FWD_MASK != _TUNNEL or conn.daddr != outer_daddr:
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        hdr = self._ext_hdr.get(conn.caddr) or self.d.nb.route(conn.caddr)
        if hdr is None or not self.d.icmp_budget.take(self.d.clock()):
            return None
        mtu = max((frame[l4 + 6] << 8 | frame[l4 + 7]) - 20, 68)
        return EXT, icmp_error(hdr, conn.vaddr, conn.caddr, 3, 4, mtu, memoryview(frame)[inner:end])

    def too_big(self, frame: bytearray, r: IPv4Info) -> Action | None:
        """TUN would exceed the MTU: frag-needed to the client if DF is set, else drop."""
        self._drops[Drop.TOO_BIG] += 1
        saddr, daddr, end = r[1], r[3], r[6]
        if not (frame[20] << 8) & IP_DF:
            return None
        hdr = self._ext_hdr.get(saddr) or self.d.nb.route(saddr)
        if hdr is None:
            return None
        mtu = self.d.cfg.mtu - 20
        return EXT, icmp_error(hdr, daddr, saddr, 3, 4, mtu, memoryview(frame)[14:end])


__all__ = ["ICMP_ECHO", "Icmp4"]
