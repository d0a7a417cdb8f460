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
   goes to :class:`~director.dataplane.nd.NeighbourDiscovery`; a backup drops (``NOT_ACTIVE``); other
   ICMPv6 goes to :meth:`Path6._icmp6` (echo to an owned address answered, errors about a flow
   translated or forwarded, a Packet Too Big about our ip6ip6 turned into one for the client:
   :mod:`director.dataplane.icmp6`); hop limit <= 1 drops (``TTL_EXCEEDED``, time exceeded to the
   client); with ``forward_fragments`` a first fragment leaves its ports for the later ones, which
   :meth:`Path6._fragment` forwards;
3. **lookup**: ``out_get`` for a NAT reply from the inside, else ``in_get``, with the SYN-reuse rule;
4. **miss**: the director's own ``_miss`` (service, BYPASS / NO_SERVICE, SYN rule, defense gate,
   :class:`~director.dataplane.newconn.Scheduling`: persistence templates with the service's IPv6
   prefix mask, scheduler, sorry dest); a datagram from a NAT dest of a one-packet service is
   translated back to its VIP without an entry, as in IPv4;
5. **state**, **count**, **transmit**: NAT rewrites one address and port (the L4 checksum patched
   over the pseudo-header), DR the MACs, TUN encapsulates in ip6ip6 (bigger than ``cfg.mtu``:
   ``TOO_BIG`` and Packet Too Big to the client; a NAT reply bigger than ``cfg.ext_mtu``: Packet Too
   Big back to the dest). Every forwarded packet's hop limit goes down by one.

Neighbours: IPv6 addresses live in the same per-side caches as IPv4 ones (their ints never meet).
Clients are learned from their NS (for a VIP) and their data frames (the rule of docs/DATAPLANE.md:
create only, rate limited); a next hop without a MAC (a real server, a client) is resolved by an NS
(its packet is dropped as ``NO_NEIGH``), a dest's configured MAC (``Dest.mac``) is taken first. No
ARP is ever sent for an IPv6 address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from director.dataplane.budget import PerSecond
from director.dataplane.config import CoreConfig
from director.dataplane.icmp6 import (
    ERRORS,
    ICMP6_ECHO_REQUEST,
    ICMP6_PACKET_TOO_BIG,
    ICMP6_TIME_EXCEEDED,
    MIN_MTU6,
    Quote6,
    echo6_reply,
    icmp6_error,
    icmp6_ok,
    nat6_icmp,
    ptb_mtu,
    quote6,
    quote6_at,
)
from director.dataplane.nd import ND_NA, ND_NS, NeighbourDiscovery
from director.dataplane.neigh import EXT, INT, Action, Neighbours
from director.dataplane.packet import TH_ACK, TH_SYN, Drop, DropCounters, FragTable, IPv4Info
from director.dataplane.packet6 import (
    IP6_HLEN,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMPV6,
    IPPROTO_IPV6,
    IPPROTO_ROUTING,
    L3_OFF,
    OFF_DADDR,
    OFF_SADDR,
    IPv6Info,
    fragment6,
    parse_ipv6,
)
from director.dataplane.xmit6 import addr6_rewrite, dr6_rewrite, nat6_rewrite, tun6_encap
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
    def icmp_budget(self) -> PerSecond: ...
    @property
    def frags(self) -> FragTable: ...
    @property
    def _timeouts(self) -> Timeouts: ...
    def _reuse(self, conn: Conn) -> bool: ...
    def _miss(self, frame: bytearray, side: int, r: IPv4Info) -> Conn | None: ...
    def _nodest(self, frame: bytearray, side: int, conn: Conn, r: IPv4Info) -> Action | None: ...
    def echo_reply(self, frame: bytearray, side: int, daddr: int, owned: set[int] | frozenset[int],
                   build: Callable[[bytes], bytearray], own_mac: bytes | None = None) -> Action | None: ...

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
_step = proto_state.step
_EXT_HDRS = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS))


class Path6:
    """IPv6 frames of one :class:`~director.dataplane.core.Director` (shares its tables and counters)."""

    __slots__ = ("d", "nd", "_drops", "_ext_hdr", "_int_hdr", "_fwd_frags")

    def __init__(self, director: Director) -> None:
        self.d = director
        self._drops = director.counters.counts
        self.nd = NeighbourDiscovery(director.nb, self._drops)
        self._ext_hdr = director.nb.caches[EXT].hdr
        self._int_hdr = director.nb.caches[INT].hdr
        self._fwd_frags = director.cfg.forward_fragments

    def handle(self, frame: bytearray, side: int) -> Action | None:
        """One IPv6 frame to the virtual MAC: the action to send, or None (counted)."""
        r = parse_ipv6(frame, self._fwd_frags)
        if isinstance(r, Drop):
            if r is Drop.FRAGMENT and self._fwd_frags:
                return self._fragment(frame, side)
            self._drops[r] += 1
            return None
        d = self.d
        if self._fwd_frags and frame[20] in _EXT_HDRS and r[0] != IPPROTO_ICMPV6:
            self._remember(frame, r)
        if r[0] == IPPROTO_ICMPV6 and r[2] in (ND_NS, ND_NA):
            return self.nd.handle(frame, side, d.active, d.clock())
        if not d.active:
            self._drops[Drop.NOT_ACTIVE] += 1
            return None
        if r[0] == IPPROTO_ICMPV6:
            return self._icmp6(frame, side, r)
        if r[7] <= 1:
            self._drops[Drop.TTL_EXCEEDED] += 1
            return self._time_exceeded(frame, side, r)
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
        if end - 14 > self.d.cfg.ext_mtu:
            return self._reply_too_big(frame, r)
        count_packet(conn.dest, end - 14, False)
        _step(self.d.table, conn, _OUT, tflags, self.d._timeouts)
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
        _step(d.table, conn, _IN, r[8], d._timeouts)
        return self._xmit(frame, conn, r)

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
            return self._too_big(frame, r)
        src = self.d.cfg.tun_src6 or conn.vaddr
        return INT, tun6_encap(frame, end, hdr, hlim, src, conn.daddr)

    def _too_big(self, frame: bytearray, r: IPv6Info) -> Action | None:
        """ip6ip6 would exceed the inside MTU: Packet Too Big to the client (the MTU left for the
        inner packet, at least 1280), never about an ICMPv6 message; the packet is dropped."""
        self._drops[Drop.TOO_BIG] += 1
        if r[0] == IPPROTO_ICMPV6:
            return None
        mtu = max(self.d.cfg.mtu - IP6_HLEN, MIN_MTU6)
        return self._originate(self._back(frame), r[3], r[1], ICMP6_PACKET_TOO_BIG, 0, mtu,
                               memoryview(frame)[14:r[6]])

    def _time_exceeded(self, frame: bytearray, side: int, r: IPv6Info) -> Action | None:
        """Time exceeded to a client whose packet to a virtual service ran out of hop limit (the IPv4
        rule: never about ICMPv6, never inside, within ``icmp_ratelimit``)."""
        proto, saddr, _sport, daddr, dport, _l4, end, _hlim, _ = r
        if side != EXT or self.d.services.get(proto, daddr, dport) is None:
            return None
        return self._originate(self._back(frame), daddr, saddr, ICMP6_TIME_EXCEEDED, 0, 0,
                               memoryview(frame)[14:end])

    def _back(self, frame: bytearray) -> bytes:
        """The Ethernet header back to a frame's sender (the client, or the router it came through)."""
        return bytes(frame[6:12]) + self.d.cfg.vmac6

    def _reply_too_big(self, frame: bytearray, r: IPv6Info) -> Action | None:
        """A NAT reply bigger than the outside MTU (``ext_mtu``; a real server on a bigger inside
        MTU, e.g. UDP fragments cut at 1600): Packet Too Big back to the dest, from the director's
        link-local address (a router's answer), so its kernel lowers its path MTU; dropped."""
        self._drops[Drop.TOO_BIG] += 1
        if r[0] == IPPROTO_ICMPV6:
            return None
        mtu = max(self.d.cfg.ext_mtu, MIN_MTU6)
        return self._originate(self._back(frame), self.nd.ll, r[1], ICMP6_PACKET_TOO_BIG, 0, mtu,
                               memoryview(frame)[14:r[6]], INT)

    def _originate(self, hdr: bytes | None, saddr: int, daddr: int, icmp_type: int, code: int, rest: int,
                   quote: memoryview, side: int = EXT) -> Action | None:
        """An ICMPv6 error from ``saddr`` to ``daddr`` (a client outside, unless ``side``), within the
        ICMP budget."""
        if hdr is None or not self.d.icmp_budget.take(self.d.clock()):
            return None
        return side, icmp6_error(hdr, saddr, daddr, icmp_type, code, rest, quote)

    # ---- fragments (forward_fragments) ---------------------------------------------------------

    def _remember(self, frame: bytearray, r: IPv6Info) -> None:
        """A first fragment (about to be forwarded like a whole packet): keep its ports for the rest."""
        f = fragment6(frame, r[6])
        if f is not None and f[3]:
            self.d.frags.remember((r[0], r[1], r[3], f[1]), r[2], r[4], self.d.clock())

    def _fragment(self, frame: bytearray, side: int) -> Action | None:
        """A fragment after the first: its flow by the ports its first fragment left, then the
        address (NAT), the MACs (DR) or ip6ip6 (TUN); the IPv4 rule (``Director._fragment``)."""
        d = self.d
        end = L3_OFF + IP6_HLEN + (frame[18] << 8 | frame[19])  # parse_ipv6 checked it
        f = fragment6(frame, end)
        saddr = int.from_bytes(frame[OFF_SADDR:OFF_DADDR], "big")
        daddr = int.from_bytes(frame[OFF_DADDR:OFF_DADDR + 16], "big")
        ports = d.frags.ports((f[0], saddr, daddr, f[1]), d.clock()) if f is not None else None
        hlim = frame[21]
        if f is None or ports is None:
            self._drops[Drop.FRAGMENT] += 1
            return None
        if not d.active or hlim <= 1:
            self._drops[Drop.NOT_ACTIVE if not d.active else Drop.TTL_EXCEEDED] += 1
            return None
        proto, (sport, dport) = f[0], ports
        conn = d.table.out_get(proto, saddr, sport, daddr, dport) if side else None
        if conn is not None and conn.flags & _FWD_MASK == _MASQ:
            if end - 14 > d.cfg.ext_mtu:
                return self._reply_too_big(frame, (proto, saddr, sport, daddr, dport, 0, end, hlim, 0))
            hdr = self._ext_hdr.get(daddr)
            if hdr is None:
                return self._neigh_miss(EXT, daddr, None)
            count_packet(conn.dest, end - 14, False)
            addr6_rewrite(frame, hdr, hlim, OFF_SADDR, conn.vaddr)
            return EXT, frame
        conn = d.table.in_get(proto, saddr, sport, daddr, dport)
        if conn is None or (conn.dest is not None and not _int_and(conn.dest.flags, _AVAILABLE)):
            self._drops[Drop.FRAGMENT if conn is None else Drop.DEST_UNAVAILABLE] += 1
            return None
        count_packet(conn.dest, end - 14, True)
        if conn.flags & _FWD_MASK != _MASQ:
            return self._xmit(frame, conn, (proto, saddr, sport, daddr, dport, 0, end, hlim, 0))
        hdr = self._int_hdr.get(conn.daddr)
        if hdr is None:
            return self._neigh_miss(INT, conn.daddr, conn.dest)
        addr6_rewrite(frame, hdr, hlim, OFF_DADDR, conn.daddr)
        return INT, frame

    # ---- ICMPv6 -------------------------------------------------------------------------------

    def _icmp6(self, frame: bytearray, side: int, r: IPv6Info) -> Action | None:
        """ICMPv6 (not ND) on the master: echo to an owned address answered; an error about a known
        flow translated (NAT) or forwarded (DR/TUN) to the other side; a Packet Too Big about one of
        our ip6ip6 packets turned into one to the client; anything else ``ICMP_UNRELATED``. A message
        whose checksum is wrong is ``BAD_L4`` first: translating recomputes the checksum, which would
        launder a corrupted error (IPVS verifies it too)."""
        _p, saddr, icmp_type, daddr, _code, l4, end, hlim, _ = r
        d = self.d
        if not icmp6_ok(frame, saddr, daddr, l4, end):
            self._drops[Drop.BAD_L4] += 1
            return None
        if icmp_type == ICMP6_ECHO_REQUEST:
            return d.echo_reply(frame, side, daddr, self.nd.owned(side),
                                lambda hdr: echo6_reply(hdr, daddr, saddr, frame, l4, end), d.cfg.vmac6)
        q = quote6(frame, l4, end) if icmp_type in ERRORS else None
        if q is None:
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        if hlim <= 1:
            self._drops[Drop.TTL_EXCEEDED] += 1
            return None
        if q[0] == IPPROTO_IPV6:
            return self._tunnel_ptb(frame, side, r, q)
        qproto, qsaddr, qsport, qdaddr, qdport, _q, _ql4 = q
        if side:  # from the servers' side: the quote is client -> dest (what the dest received)
            conn = d.table.out_get(qproto, qdaddr, qdport, qsaddr, qsport)
            if conn is not None and conn.flags & _FWD_MASK == _MASQ:
                hdr = self._ext_hdr.get(conn.caddr)
                if hdr is None:
                    return self._neigh_miss(EXT, conn.caddr, None)
                count_packet(conn.dest, end - 14, False)
                nat6_icmp(frame, hdr, hlim, l4, end, q, True, conn.vaddr, conn.vport)
                return EXT, frame
        # From the clients' side: the quote is VIP -> client (a reply that left through us or a DR/TUN dest).
        conn = d.table.in_get(qproto, qdaddr, qdport, qsaddr, qsport)
        if conn is None:
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        count_packet(conn.dest, end - 14, True)
        if conn.flags & _FWD_MASK != _MASQ:
            return self._xmit(frame, conn, r)
        hdr = self._int_hdr.get(conn.daddr)
        if hdr is None:
            return self._neigh_miss(INT, conn.daddr, conn.dest)
        nat6_icmp(frame, hdr, hlim, l4, end, q, False, conn.daddr, conn.dport)
        return INT, frame

    def _tunnel_ptb(self, frame: bytearray, side: int, r: IPv6Info, q: Quote6) -> Action | None:
        """A Packet Too Big from the inside about an ip6ip6 packet we sent to a TUN dest: the client
        gets one about its own packet, announcing the reported MTU less the outer header (PMTU through
        the tunnel, as IPVS's ``ip_vs_in_icmp_v6`` does for its tunnels)."""
        inner = quote6_at(frame, q[6], r[6]) if side and r[2] == ICMP6_PACKET_TOO_BIG else None
        conn = self.d.table.in_get(inner[0], inner[1], inner[2], inner[3], inner[4]) if inner else None
        if inner is None or conn is None or conn.flags & _FWD_MASK != _TUNNEL or conn.daddr != q[3]:
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        mtu = max(ptb_mtu(frame, r[5]) - IP6_HLEN, MIN_MTU6)
        return self._originate(self._ext_hdr.get(inner[1]), inner[3], inner[1], ICMP6_PACKET_TOO_BIG, 0, mtu,
                               memoryview(frame)[q[6]:r[6]])

    def _ops_reply(self, frame: bytearray, dest: Dest, r: IPv6Info) -> Action | None:
        """A datagram from a NAT dest of a one-packet service, no entry: source back to the VIP."""
        proto, saddr, sport, caddr, _cport, l4, end, hlim, _ = r
        if end - 14 > self.d.cfg.ext_mtu:
            return self._reply_too_big(frame, r)
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
