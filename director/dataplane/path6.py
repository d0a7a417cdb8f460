"""The IPv6 packet path: what :class:`director.dataplane.core.Director` does with an IPv6 frame.

Theory of operation
-------------------
The director hands every IPv6 frame addressed to its virtual MAC here (from its slow path: the
IPv4 hot path never sees one and pays nothing for it). The steps are the IPv4 path's, in the same
order and with the same conn table, services, scheduling, defense gate and drop counters; only the
codec (:mod:`director.dataplane.packet6`) and the transmitters (:mod:`director.dataplane.xmit6`)
differ:

1. **parse**: :func:`~director.dataplane.packet6.parse_ipv6` (extension headers walked, bounded);
2. **guards**: neighbour discovery (NS/NA, also those to a multicast MAC: :meth:`Path6.multicast`)
   goes to :class:`~director.dataplane.nd.NeighbourDiscovery`; other ICMPv6 is not handled yet
   (``ICMP_UNRELATED``: errors about flows are future work, docs/IPV6.md); a backup drops
   (``NOT_ACTIVE``); hop limit <= 1 drops (``TTL_EXCEEDED``, no ICMPv6 time exceeded yet);
3. **lookup**: ``out_get`` for a NAT reply from the inside, else ``in_get``, with the SYN-reuse rule;
4. **miss**: the director's own ``_miss`` (service, BYPASS / NO_SERVICE, SYN rule, defense gate,
   :class:`~director.dataplane.newconn.Scheduling`: persistence templates with the service's IPv6
   prefix mask, scheduler, sorry dest); a datagram from a NAT dest of a one-packet service is
   translated back to its VIP without an entry, as in IPv4;
5. **state**, **count**, **transmit**: NAT rewrites one address and port (the L4 checksum patched
   over the pseudo-header), DR the MACs, TUN encapsulates in ip6ip6 (bigger than ``cfg.mtu``:
   ``TOO_BIG``, no Packet Too Big sent yet). Every forwarded packet's hop limit goes down by one.

Neighbours: IPv6 addresses live in the same per-side caches as IPv4 ones (their ints never meet).
Clients are learned from their NS (for a VIP) and their data frames (the rule of docs/DATAPLANE.md:
create only, rate limited); a next hop without a MAC (a real server, a client) is resolved by an NS
(its packet is dropped as ``NO_NEIGH``), a dest's configured MAC (``Dest.mac``) is taken first. No
ARP is ever sent for an IPv6 address.
"""

from __future__ import annotations

from typing import Protocol

from director.dataplane.config import CoreConfig
from director.dataplane.nd import ND_NA, ND_NS, NeighbourDiscovery
from director.dataplane.neigh import EXT, INT, Action, Neighbours
from director.dataplane.packet import TH_ACK, TH_SYN, Drop, DropCounters, IPv4Info
from director.dataplane.packet6 import IP6_HLEN, IPPROTO_ICMPV6, OFF_DADDR, OFF_SADDR, IPv6Info, parse_ipv6
from director.dataplane.xmit6 import dr6_rewrite, nat6_rewrite, tun6_encap
from director.services.service import Dest, ServiceTable, count_packet
from director.table import proto_state
from director.table.conn import Conn, ConnTable
from director.table.tcp import Direction, TcpState, Timeouts
from director.types import Clock, ConnFlags, DestFlags


class Director(Protocol):
    """What the IPv6 path uses of its :class:`director.dataplane.core.Director` (which holds a
    ``Path6``): its tables, counters and the steps both families share. A protocol, so that the core
    importing this module is not an import cycle."""

    @property
    def active(self) -> bool: ...
    @property
    def cfg(self) -> CoreConfig: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def counters(self) -> DropCounters: ...
    @property
    def nb(self) -> Neighbours: ...
    @property
    def services(self) -> ServiceTable: ...
    @property
    def table(self) -> ConnTable: ...
    @property
    def _timeouts(self) -> Timeouts: ...
    def _reuse(self, conn: Conn) -> bool: ...
    def _miss(self, frame: bytearray, side: int, r: IPv4Info) -> Conn | None: ...
    def _nodest(self, frame: bytearray, side: int, conn: Conn, r: IPv4Info) -> Action | None: ...

_FWD_MASK = int(ConnFlags.FWD_MASK)
_MASQ = int(ConnFlags.MASQ)
_TUNNEL = int(ConnFlags.TUNNEL)
_DROUTE = int(ConnFlags.DROUTE)
_LOCALNODE = int(ConnFlags.LOCALNODE)
_AVAILABLE = int(DestFlags.AVAILABLE)
_REUSABLE = frozenset({int(TcpState.TIME_WAIT), int(TcpState.CLOSE)})
_IN = int(Direction.INPUT)
_OUT = int(Direction.OUTPUT)
_int_and = int.__and__


class Path6:
    """IPv6 frames of one :class:`~director.dataplane.core.Director` (shares its tables and counters)."""

    __slots__ = ("d", "nd", "_drops", "_ext_hdr", "_int_hdr")

    def __init__(self, director: Director) -> None:
        self.d = director
        self._drops = director.counters.counts
        self.nd = NeighbourDiscovery(director.nb, self._drops)
        self._ext_hdr = director.nb.caches[EXT].hdr
        self._int_hdr = director.nb.caches[INT].hdr

    def handle(self, frame: bytearray, side: int) -> Action | None:
        """One IPv6 frame to the virtual MAC: the action to send, or None (counted)."""
        r = parse_ipv6(frame)
        if isinstance(r, Drop):
            self._drops[r] += 1
            return None
        d = self.d
        if r[0] == IPPROTO_ICMPV6 and r[2] in (ND_NS, ND_NA):
            return self.nd.handle(frame, side, d.active, d.clock())
        reason = (Drop.ICMP_UNRELATED if r[0] == IPPROTO_ICMPV6 else Drop.NOT_ACTIVE if not d.active
                  else Drop.TTL_EXCEEDED if r[7] <= 1 else None)
        if reason is not None:
            self._drops[reason] += 1
            return None
        proto, saddr, sport, daddr, dport = r[:5]
        conn = d.table.out_get(proto, saddr, sport, daddr, dport) if side else None
        if conn is not None and not conn.flags & _FWD_MASK:
            return self._nat_out(frame, conn, r)
        conn = d.table.in_get(proto, saddr, sport, daddr, dport)
        if (conn is not None and proto == 6 and r[8] & (TH_SYN | TH_ACK) == TH_SYN
                and conn.state in _REUSABLE and d._reuse(conn)):
            conn = None
        if conn is None:
            ops = d.services.ops_dest
            if side and ops and (dest := ops.get((proto, saddr, sport))) is not None:
                return self._ops_reply(frame, dest, r)
            conn = d._miss(frame, side, r)
            if conn is None:
                return None
        return self._input(frame, side, conn, r)

    def multicast(self, frame: bytearray, side: int) -> Action | None:
        """An IPv6 frame to a group MAC (``33:33:...``): neighbour discovery, or ``NOT_VMAC``."""
        return self.nd.handle(frame, side, self.d.active, self.d.clock())

    # ---- the two ways ------------------------------------------------------------------------

    def _nat_out(self, frame: bytearray, conn: Conn, r: IPv6Info) -> Action | None:
        """A NAT reply from the dest: source back to the VIP, out to the client."""
        proto, saddr, sport, caddr, _dport, l4, end, hlim, tflags = r
        count_packet(conn.dest, end - 14, False)
        self._state(conn, _OUT, tflags)
        hdr = self._ext_hdr.get(caddr)
        if hdr is None:
            return self._neigh_miss(EXT, caddr, None)
        nat6_rewrite(frame, hdr, hlim, l4, proto, OFF_SADDR, 0, saddr, conn.vaddr, sport, conn.vport)
        return EXT, frame

    def _input(self, frame: bytearray, side: int, conn: Conn, r: IPv6Info) -> Action | None:
        """Client -> VIP (any forwarding method): dest check, count, state, transmit."""
        d = self.d
        dest = conn.dest
        if dest is not None and not _int_and(dest.flags, _AVAILABLE):
            return d._nodest(frame, side, conn, r)
        count_packet(conn.dest, r[6] - 14, True)
        conn.in_pkts += 1
        saddr = r[1]
        if not side and saddr not in self._ext_hdr:  # a new client (or a synced conn): never inside
            d.nb.learn_client(saddr, bytes(frame[6:12]), d.clock())
        self._state(conn, _IN, r[8])
        return self._xmit(frame, conn, r)

    def _state(self, conn: Conn, way: int, tflags: int) -> None:
        d = self.d
        proto_state.update(d.table, conn, way, tflags if conn.protocol == 6 else 0, d._timeouts)

    # ---- transmit ------------------------------------------------------------------------------

    def _xmit(self, frame: bytearray, conn: Conn, r: IPv6Info) -> Action | None:
        fwd = conn.flags & _FWD_MASK
        if fwd not in (_MASQ, _DROUTE, _TUNNEL):  # LOCALNODE (a loopback dest) / BYPASS: nowhere to send
            self._drops[Drop.LOCALNODE if fwd == _LOCALNODE else Drop.BYPASS] += 1
            return None
        hdr = self._int_hdr.get(conn.daddr)
        if hdr is None:
            return self._neigh_miss(INT, conn.daddr, conn.dest)
        proto, _saddr, _sport, daddr, dport, l4, end, hlim, _ = r
        if fwd == _MASQ:
            nat6_rewrite(frame, hdr, hlim, l4, proto, OFF_DADDR, 2, daddr, conn.daddr, dport, conn.dport)
            return INT, frame
        if fwd == _DROUTE:
            dr6_rewrite(frame, hdr, hlim)
            return INT, frame
        if end - 14 + IP6_HLEN > self.d.cfg.mtu:
            self._drops[Drop.TOO_BIG] += 1
            return None
        src = self.d.cfg.tun_src6 or conn.vaddr
        return INT, tun6_encap(frame, end, hdr, hlim, src, conn.daddr)

    def _ops_reply(self, frame: bytearray, dest: Dest, r: IPv6Info) -> Action | None:
        """A datagram from a NAT dest of a one-packet service, no entry: source back to the VIP."""
        proto, saddr, sport, caddr, _cport, l4, end, hlim, _ = r
        svc = dest.svc
        count_packet(dest, end - 14, False)
        hdr = self._ext_hdr.get(caddr)
        if hdr is None:
            return self._neigh_miss(EXT, caddr, None)
        nat6_rewrite(frame, hdr, hlim, l4, proto, OFF_SADDR, 0, saddr, svc.addr, sport, svc.port)
        return EXT, frame

    def _neigh_miss(self, side: int, addr: int, dest: Dest | None) -> Action | None:
        """No MAC for the next hop: take the dest's configured one, else a Neighbor Solicitation."""
        self._drops[Drop.NO_NEIGH] += 1
        mac = dest.mac if dest is not None and dest.addr == addr else None
        return self.nd.probe(side, addr, mac, self.d.clock())


__all__ = ["Path6"]
