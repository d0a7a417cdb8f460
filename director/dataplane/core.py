"""The packet path: one frame in, at most one frame out (pure, single-threaded, no clock reads).

Theory of operation
-------------------
:attr:`Director.handle` takes a frame received on one side (``EXT`` = clients, ``INT`` = real
servers) and returns an :data:`Action` ``(out_side, frame)`` for the I/O layer to send, or
``None`` when the frame is consumed (every such case is counted in :class:`DropCounters`). The
steady state of a flow (parse, lookup, timer refresh, counters, NAT rewrite) is inlined in one
closure built by ``_hot_path`` because every call and lookup costs on this path; everything else is
a small method. The steps, in order:

1. **L2 and parse**: only frames to the virtual MAC are taken (ARP and ND also to group MACs; see
   ``docs/DATAPLANE.md``: ``NOT_VMAC``, ``TO_HOST``, ``VLAN_TAGGED``); plain IPv4 TCP/UDP frames are
   read with one ``unpack_from`` (checksum fields included, the header checksum verified from them);
   anything else takes :func:`director.dataplane.packet.parse_ipv4`'s full checks; IPv6 frames to
   either virtual MAC leave at the first test for :class:`director.dataplane.path6.Path6`: the same
   steps, v6 codecs (docs/IPV6.md).
2. **ARP**: :class:`director.dataplane.neigh.Neighbours` learns by its rule and answers requests for
   owned addresses (VIPs outside, NAT gateways inside) from the virtual MAC, only if active.
3. **guards**: "not active" (backup) drops; TTL <= 1 drops and answers a client with ICMP time
   exceeded (rate-limited); ICMP goes to :class:`director.dataplane.icmp4.Icmp4` (errors, path MTU,
   echo).
4. **lookup**: from the inside ``out_get`` finds a NAT reply (OUTPUT); else ``in_get`` (INPUT), a hit
   whose dest was removed follows ``expire_nodest_conn``; a SYN hitting a TIME_WAIT or CLOSE conn
   expires it and is a miss (``_reuse``, IPVS ``conn_reuse_mode``).
5. **miss**: from the inside, a datagram from a NAT dest of a one-packet service (``ops``) has no
   entry by design: ``services.ops_dest`` names its dest and its source goes back to the VIP
   (``_ops_reply``). Else find the service (none, to a VIP: ``BYPASS``; to anything else:
   ``NO_SERVICE``); TCP needs a SYN (or ``sloppy_until > now``: mid-flow after a takeover), UDP any
   datagram; unless the defense refuses it (``gate``; never for ``ops``, which adds no entry),
   :class:`director.dataplane.newconn.Scheduling` picks the dest (persistence template, scheduler,
   then the sorry dest) and creates the conn (no usable dest and no sorry dest: ``BYPASS``); a
   one-packet service's conn lives for this packet only.
6. **state** (one sequence for both ways): ``director.table.proto_state.update``; an ESTABLISHED TCP
   conn hit by a plain ACK (a UDP datagram) whose timeout stays the same only needs its timer refreshed.
7. **count** ``in_pkts`` and per-service / per-dest packets and bytes.
8. **transmit**: a NAT reply gets its source rewritten back to the VIP, out of the EXT side; else by
   the conn's forwarding method (:mod:`director.dataplane.xmit`): NAT rewrites the destination, DR the
   MACs, TUN encapsulates; out of the INT side.

ICMP errors (dest unreachable incl. frag-needed, source quench, time exceeded) quoting a known
flow are translated (NAT) or forwarded (DR/TUN) to the other side; an echo request to an owned
address is answered (``icmp_echo``, ``echo_ratelimit``); other ICMP is dropped.
A next hop whose MAC is unknown turns the packet into an ARP request (rate-limited) and a drop.
Fragments are dropped (``FRAGMENT``) unless ``cfg.forward_fragments``: then they are forwarded
without reassembly (a first fragment leaves its ports in ``frags``, the later ones follow its conn).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from director.dataplane.budget import PerSecond
from director.dataplane.config import CoreConfig
from director.dataplane.gate import NewConnGate
from director.dataplane.icmp4 import ICMP_ECHO, Icmp4
from director.dataplane.neigh import EXT, INT, Action, Neighbours, NeighEvent
from director.dataplane.newconn import Scheduling
from director.dataplane.packet import (
    ETH_P_ARP,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
    Drop,
    DropCounters,
    FragTable,
    IPv4Info,
    parse_fragment,
    parse_ipv4,
)
from director.dataplane.packet6 import ETH_P_IPV6
from director.dataplane.path6 import Path6
from director.dataplane.xmit import (
    dr_rewrite,
    ip_rewrite,
    nat_rewrite,
    tun_encap,
)
from director.services.service import Dest, ServiceTable, count_packet
from director.table import proto_state
from director.table.conn import Conn, ConnTable
from director.table.entry import F_NO_CPORT
from director.table.tcp import Direction, TcpState
from director.types import Clock, ConnFlags, DestFlags

log = logging.getLogger(__name__)

_MASQ = int(ConnFlags.MASQ)
_FWD_MASK = int(ConnFlags.FWD_MASK)
_TUNNEL = int(ConnFlags.TUNNEL)
_DROUTE = int(ConnFlags.DROUTE)
_LOCALNODE = int(ConnFlags.LOCALNODE)
_AVAILABLE = int(DestFlags.AVAILABLE)
_ESTABLISHED = int(TcpState.ESTABLISHED)
_REUSABLE = frozenset({int(TcpState.TIME_WAIT), int(TcpState.CLOSE)})
_SYN_ONLY = TH_SYN | TH_ACK
_ACK_ONLY_MASK = TH_FIN | TH_SYN | TH_RST | TH_ACK
"""``tflags & _ACK_ONLY_MASK == TH_ACK``: a plain ACK (PSH/URG/ECE/CWR may be set)."""
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
_int_and = int.__and__  # dest.flags is an IntFlag: test bits without its Python-level __and__
_FAST = struct.Struct("!6s6xHBBHHHBBHIIHHHH4xBB2xH").unpack_from
"""52 bytes: dst MAC, ethertype ver_ihl tos tot_len id frag ttl proto ip_csum saddr daddr | sport dport,
then at 38/40 the UDP length/checksum, at 46/47 the TCP data offset/flags and at 50 the TCP checksum.
The IPv4 header checksum is verified from these fields: the header's 16-bit words sum to 0 modulo 0xFFFF
(a 32-bit address counts as the sum of its halves, as 2**16 == 1 modulo 0xFFFF)."""
_NAT_TCP = struct.Struct("!12sHBBHHHBBHIIHH").pack_into
"""NAT of a fast-parsed frame in one write: MACs, then ethertype and the IPv4 header as read (ttl, checksum,
addresses rewritten), then the ports (TCP; its checksum at 50 is written apart)."""
_NAT_UDP = struct.Struct("!12sHBBHHHBBHIIHHHH").pack_into
"""The same for UDP, through the UDP length and checksum (42 bytes)."""
_U16 = struct.Struct("!H").pack_into
_U32_AT = struct.Struct("!I").unpack_from
_IN = int(Direction.INPUT)
_OUT = int(Direction.OUTPUT)


class Director:
    """The whole packet path of one node over a :class:`ConnTable` and a :class:`ServiceTable`."""

    def __init__(self, table: ConnTable, services: ServiceTable, clock: Clock, cfg: CoreConfig) -> None:
        self.table = table
        self.services = services
        self.clock = clock
        self.cfg = cfg
        self.active = False
        self.sloppy_until = 0.0
        self.counters = DropCounters()
        self.conns_reused = 0  # SYNs whose 4-tuple was in TIME_WAIT or CLOSE, scheduled anew (`_reuse`)
        self.nb = Neighbours(cfg, services.vaddrs, self.counters.counts)
        self.neigh = self.nb.caches
        self.host_macs: frozenset[bytes] = frozenset()
        """The director's own interface MACs (set by the I/O layer): frames to them are its kernel's."""
        self.frags = FragTable()
        self.gate = NewConnGate(table, self.counters.counts)  # the defense: max_conns, drop_packet
        self.sched = Scheduling(table, cfg, clock)
        self.path6 = Path6(self)  # IPv6 frames (handed over by the hot path's first test)
        self.icmp4 = Icmp4(self, self.counters.counts)  # ICMP errors, echo, time exceeded, frag-needed (IPv4)
        self._ipid = 0
        self.icmp_budget = PerSecond(cfg.icmp_ratelimit)  # errors this node originates (both families)
        self.echo_budget = PerSecond(cfg.echo_ratelimit)
        self.echo_replies = 0  # echo requests to an owned address answered (both families)
        self._drops = self.counters.counts
        self._int_hdr = self.neigh[INT].hdr
        self._ext_hdr = self.neigh[EXT].hdr
        self._in_get = table.in_get
        self._out_get = table.out_get
        self._refresh = table.refresh
        self._update = proto_state.update
        self._timeouts = cfg.timeouts
        self._verify = cfg.verify_ip_csum
        self._fwd_frags = cfg.forward_fragments
        self._vmac = cfg.vmac
        self.handle: Callable[[bytearray, int], Action | None] = self._hot_path()
        """``handle(frame, side)``: process one received frame; the returned action (if any) is to be sent."""

    @property
    def arp_replies(self) -> int:
        """ARP requests answered (for owned addresses, while active)."""
        return self.nb.stats[NeighEvent.ARP_REQUEST_ANSWERED]

    # ---- the hot path ---------------------------------------------------------------------

    def _hot_path(self) -> Callable[[bytearray, int], Action | None]:
        """Build :attr:`handle`: everything it reads per packet is bound here once, so the steady state
        does no attribute or global lookups (closure cells are cheaper; every call costs on this path).
        The bound objects are never replaced: the caches' ``hdr`` dicts and ``cfg.timeouts`` change in
        place."""
        director, table, tmo, clock = self, self.table, self._timeouts, self.clock
        vmac, verify, fwd_frags = self._vmac, self._verify, self._fwd_frags
        in_get, out_get, refresh, update = self._in_get, self._out_get, self._refresh, self._update
        ext_hdr, int_hdr = self._ext_hdr, self._int_hdr
        learn_client, remember_frag = self.nb.learn_client, self.frags.remember
        guard, not_vmac, not_ip = self._guard, self._not_vmac, self._not_ip
        miss, nodest, ext_miss, neigh_miss, xmit_other = (self._miss, self._nodest, self._ext_miss,
                                                          self._neigh_miss, self._xmit_other)
        ops_dest, ops_reply = self.services.ops_dest, self._ops_reply
        fast_unpack, u16, int_and = _FAST, _U16, _int_and
        fwd_mask, ack_only, th_ack, established = _FWD_MASK, _ACK_ONLY_MASK, TH_ACK, _ESTABLISHED
        available, masq = _AVAILABLE, _MASQ
        way_in, way_out = _IN, _OUT
        reusable, syn_only, th_syn, reuse = _REUSABLE, _SYN_ONLY, TH_SYN, self._reuse
        tab, mask, no_cport = table._tab, table._mask, F_NO_CPORT  # the bucket list is never replaced
        tclock = table._clock
        nat_udp, nat_tcp = _NAT_UDP, _NAT_TCP
        vmacs, path6_handle = (bytes(self._vmac), bytes(self.cfg.vmac6)), self.path6.handle

        def handle(frame: bytearray, side: int) -> Action | None:
            # Fast parse of the common case (Ethernet II, IPv4 without options, not a fragment, TCP or
            # UDP header within the packet); everything else goes through parse_ipv4's full checks.
            n = len(frame)
            fast = False
            if n >= 52:
                (dmac, etype, ver_ihl, tos, tot_len, ipid, frag, ttl, proto, ipsum, saddr, daddr, sport,
                 dport, ulen, usum, doff, tflags, tsum) = fast_unpack(frame, 0)
                end = tot_len + 14
                if (etype == 0x800 and dmac == vmac and ver_ihl == 0x45 and not frag & 0x3FFF
                        and 34 <= end <= n
                        and (not verify or not (ver_ihl * 256 + tos + tot_len + ipid + frag + ttl * 256
                                                + proto + ipsum + saddr + daddr) % 0xFFFF)):
                    if proto == 6:
                        fast = end >= 54 and doff >= 0x50 and (doff >> 4) * 4 <= tot_len - 20
                    elif proto == 17:
                        fast = 8 <= ulen <= tot_len - 20
                        tflags = 0
            if fast:
                l4 = 34
                if ttl <= 1 or not director.active:
                    return guard(frame, side, (proto, saddr, sport, daddr, dport, l4, end, ttl, tflags))
            else:
                if frame[12:14] == b"\x86\xdd" and frame[0:6] in vmacs:  # IPv6 to either virtual MAC
                    return path6_handle(frame, side)
                if frame[0:6] != vmac:
                    return not_vmac(frame, side)
                r = parse_ipv4(frame, verify, fwd_frags)
                if isinstance(r, Drop):
                    return not_ip(frame, side, r)
                proto, saddr, sport, daddr, dport, l4, end, ttl, tflags = r
                if proto == 1 or ttl <= 1 or not director.active:
                    return guard(frame, side, r)
                if frame[20] & 0x20:  # a first fragment: its ports, for the fragments that follow
                    remember_frag((proto, saddr, daddr, frame[18] << 8 | frame[19]), sport, dport,
                                        clock())
            # Which conn, and which way: a NAT reply (from the real servers, OUTPUT) or anything else (INPUT).
            if side and (conn := out_get(proto, saddr, sport, daddr, dport)) is not None and not (
                    conn.flags & fwd_mask):
                way = way_out
                dest = conn.dest
                if dest is not None:
                    n = end - 14
                    c = dest.counters
                    c.outpkts += 1
                    c.outbytes += n
                    c = dest.svc.counters
                    c.outpkts += 1
                    c.outbytes += n
            else:
                way = way_in
                if sport:  # table.in_get inlined for a real port (entries without NO_CPORT; else its retry)
                    conn = tab[(saddr ^ sport) & mask].get(saddr << 24 | proto << 16 | sport)
                    while conn is not None and (conn.vport != dport or conn.vaddr != daddr
                                                or conn.flags & no_cport):
                        conn = conn._next
                    if conn is None and table.no_cport_count:
                        conn = in_get(proto, saddr, sport, daddr, dport)
                else:
                    conn = in_get(proto, saddr, sport, daddr, dport)
                if conn is not None and tflags & syn_only == th_syn and conn.state in reusable \
                        and proto == 6 and reuse(conn):
                    conn = None  # a new connection on a closed one's 4-tuple: scheduled anew
                if conn is None:
                    if side and ops_dest and (dest := ops_dest.get((proto, saddr, sport))) is not None:
                        return ops_reply(frame, dest, (proto, saddr, sport, daddr, dport, l4, end, ttl, 0))
                    conn = miss(frame, side, (proto, saddr, sport, daddr, dport, l4, end, ttl, tflags))
                    if conn is None:
                        return None
                dest = conn.dest
                if dest is not None:
                    if not int_and(dest.flags, available):
                        return nodest(frame, side, conn, (proto, saddr, sport, daddr, dport, l4, end, ttl,
                                                                tflags))
                    n = end - 14
                    c = dest.counters
                    c.inpkts += 1
                    c.inbytes += n
                    c = dest.svc.counters
                    c.inpkts += 1
                    c.inbytes += n
                conn.in_pkts += 1
                if not side and saddr not in ext_hdr:  # a new client (or synced conn): never inside
                    learn_client(saddr, bytes(frame[6:12]), clock())
            # State, both ways: an ESTABLISHED conn hit by a plain ACK (or a UDP datagram) whose timeout
            # stays the same only needs its timer refreshed; anything else runs the state machine (the rule of
            # proto_state.step, inlined).
            # (table.refresh inlined: expires := now + timeout; the table re-slots it only when that
            # is before its slot, or when it is not armed)
            t = conn.timeout
            if (conn.state == established and tflags & ack_only == th_ack and t == tmo.tcp[established]
                    if proto == 6 else t == tmo.udp):
                if (ts := conn._tslot) is None or (e := tclock() + t) < ts.deadline:
                    refresh(conn)
                else:
                    conn.expires = e
            else:
                update(table, conn, way, tflags, tmo)
            if way:  # NAT reply out to the client
                hdr = ext_hdr.get(daddr)  # daddr == conn.caddr (out_get matched it)
                if hdr is None or not fast:
                    return ext_miss(frame, hdr, daddr, (proto, saddr, sport, daddr, dport, l4, end, ttl,
                                                              tflags), conn)
                # nat_rewrite(..., 26, 0, saddr, vaddr, sport, vport) inlined: the headers rewritten
                # in one write (the fields that stay, as read)
                na = conn.vaddr
                np = conn.vport
                da = na - saddr
                if proto == 6:
                    nat_tcp(frame, 0, hdr, etype, ver_ihl, tos, tot_len, ipid, frag, ttl - 1, proto,
                            (ipsum - da + 0x100) % 0xFFFF, na, daddr, np, dport)
                    u16(frame, 50, (tsum - da - np + sport) % 0xFFFF)
                else:
                    nat_udp(frame, 0, hdr, etype, ver_ihl, tos, tot_len, ipid, frag, ttl - 1, proto,
                            (ipsum - da + 0x100) % 0xFFFF, na, daddr, np, dport, ulen,
                            ((usum - da - np + sport) % 0xFFFF or 0xFFFF) if usum else 0)
                return EXT, frame
            fwd = conn.flags & fwd_mask
            if fwd == masq:
                na = conn.daddr
                hdr = int_hdr.get(na)
                if hdr is None:
                    return neigh_miss(INT, na, dest)
                np = conn.dport
                if not fast:
                    nat_rewrite(frame, hdr, ttl, l4, proto, 30, 2, daddr, na, dport, np)
                    return INT, frame
                # nat_rewrite(..., 30, 2, daddr, conn.daddr, dport, conn.dport) inlined, one write
                da = na - daddr
                if proto == 6:
                    nat_tcp(frame, 0, hdr, etype, ver_ihl, tos, tot_len, ipid, frag, ttl - 1, proto,
                            (ipsum - da + 0x100) % 0xFFFF, saddr, na, sport, np)
                    u16(frame, 50, (tsum - da - np + dport) % 0xFFFF)
                else:
                    nat_udp(frame, 0, hdr, etype, ver_ihl, tos, tot_len, ipid, frag, ttl - 1, proto,
                            (ipsum - da + 0x100) % 0xFFFF, saddr, na, sport, np, ulen,
                            ((usum - da - np + dport) % 0xFFFF or 0xFFFF) if usum else 0)
                return INT, frame
            return xmit_other(frame, conn, fwd, (proto, saddr, sport, daddr, dport, l4, end, ttl, tflags))

        return handle

    def _ext_miss(self, frame: bytearray, hdr: bytes | None, caddr: int, r: IPv4Info, conn: Conn
                  ) -> Action | None:
        """NAT reply (slow parse, or the client has no neighbour entry: route via the gateway or
        ARP for it)."""
        if hdr is None:
            hdr = self.nb.route(caddr)
            if hdr is None:
                return self._neigh_miss(EXT, self.nb.nexthop(caddr), None)
        proto, saddr, sport, _daddr, _dport, l4, _end, ttl, _tflags = r
        nat_rewrite(frame, hdr, ttl, l4, proto, 26, 0, saddr, conn.vaddr, sport, conn.vport)
        return EXT, frame

    # ---- new connections ------------------------------------------------------------------

    def _reuse(self, conn: Conn) -> bool:
        """A SYN for a TIME_WAIT/CLOSE conn: expire it, schedule anew (docs/DATAPLANE.md "Reuse")."""
        if removed := self.table.expire(conn):
            self.conns_reused += 1
        return removed

    def _miss(self, frame: bytearray, side: int, r: IPv4Info) -> Conn | None:
        """No entry: schedule and create one if this packet may open a conn; else count a drop."""
        proto, saddr, sport, daddr, dport, _l4, _end, _ttl, tflags = r
        svc = self.services.get(proto, daddr, dport)
        if svc is None:  # to a VIP: BYPASS (IPVS would pass it on to the VIP: that is us); else not ours
            self._drops[Drop.BYPASS if self.services.is_vip(daddr) else Drop.NO_SERVICE] += 1
            return None
        if proto == 6 and not self._may_open(tflags) or not svc.one_packet and self.gate.refuse():
            return None
        conn = self.sched.conn(svc, proto, saddr, sport, daddr, dport)
        if conn is None:
            self._drops[Drop.BYPASS] += 1
            return None
        if not side and saddr in self._ext_hdr:  # (unknown ones: learnt in handle)
            self.nb.learn_client(saddr, bytes(frame[6:12]), self.clock())  # counts a MAC that disagrees
        return conn

    def _may_open(self, tflags: int) -> bool:
        """TCP: a SYN without ACK opens a conn; any non-RST segment does while sloppy."""
        if tflags & TH_RST:
            self._drops[Drop.RST_NO_CONN] += 1
            return False
        if tflags & (TH_SYN | TH_ACK | TH_FIN) == TH_SYN or self.sloppy_until > self.clock():
            return True
        self._drops[Drop.NO_CONN] += 1
        return False

    def _ops_reply(self, frame: bytearray, dest: Dest, r: IPv4Info) -> Action | None:
        """A datagram from a NAT dest of a one-packet service, matching no entry: its source is
        translated back to the service's VIP and port (``services.ops_dest``; docs/DATAPLANE.md)."""
        proto, saddr, sport, caddr, _cport, l4, end, ttl, _ = r
        svc = dest.svc
        count_packet(dest, end - 14, False)
        hdr = self._ext_hdr.get(caddr) or self.nb.route(caddr)
        if hdr is None:
            return self._neigh_miss(EXT, self.nb.nexthop(caddr), None)
        nat_rewrite(frame, hdr, ttl, l4, proto, 26, 0, saddr, svc.addr, sport, svc.port)
        return EXT, frame

    def _nodest(self, frame: bytearray, side: int, conn: Conn, r: IPv4Info) -> Action | None:
        """The conn's dest was removed: drop; with expire_nodest_conn expire it and reschedule
        if the packet may open a new conn (like current IPVS)."""
        dest = conn.dest
        per_svc = dest is not None and dest.svc.expire_nodest_conn
        if not (per_svc or self.cfg.expire_nodest_conn) or not self.table.expire(conn):
            self._drops[Drop.DEST_UNAVAILABLE] += 1
            return None
        proto, _s, _sp, _d, _dp, _l4, _end, _ttl, tflags = r
        if proto == 6 and tflags & (TH_SYN | TH_ACK | TH_RST | TH_FIN) != TH_SYN:
            self._drops[Drop.DEST_UNAVAILABLE] += 1
            return None
        if self._in_get(r[0], r[1], r[2], r[3], r[4]) is not None:  # still there: give up
            self._drops[Drop.DEST_UNAVAILABLE] += 1
            return None
        return self.handle(frame, side)

    # ---- transmitters other than NAT in ----------------------------------------------------

    def _xmit_other(self, frame: bytearray, conn: Conn, fwd: int, r: IPv4Info) -> Action | None:
        if fwd != _DROUTE and fwd != _TUNNEL:  # LOCALNODE (a loopback dest) / BYPASS: nowhere to send
            self._drops[Drop.LOCALNODE if fwd == _LOCALNODE else Drop.BYPASS] += 1
            return None
        hdr = self._int_hdr.get(conn.daddr)
        if hdr is None:
            return self._neigh_miss(INT, conn.daddr, conn.dest)
        if fwd == _DROUTE:
            dr_rewrite(frame, hdr, r[7])
            return INT, frame
        return self._tun(frame, conn, hdr, r)

    def _tun(self, frame: bytearray, conn: Conn, hdr: bytes, r: IPv4Info) -> Action | None:
        end = r[6]
        if end - 14 + 20 > self.cfg.mtu:
            return self.icmp4.too_big(frame, r)
        self._ipid = (self._ipid + 1) & 0xFFFF
        src = self.cfg.tun_src or self.cfg.int_addr
        return INT, tun_encap(frame, end, hdr, r[7], src, conn.daddr, self._ipid)

    # ---- neighbours ------------------------------------------------------------------------

    def _neigh_miss(self, side: int, addr: int, dest: Dest | None) -> Action | None:
        """No MAC for the next hop: use the dest's configured MAC, else send an ARP request."""
        self._drops[Drop.NO_NEIGH] += 1
        mac = dest.mac if dest is not None and dest.addr == addr else None
        return self.nb.probe(side, addr, mac, self.clock())

    # ---- slow paths: not IPv4, ARP, guards, ICMP ------------------------------------------

    def _not_vmac(self, frame: bytearray, side: int) -> Action | None:
        """A frame not addressed to the virtual MAC: only ARP to a group MAC or to this host is taken."""
        if len(frame) < 14:
            reason = Drop.TRUNCATED
        elif frame[12] << 8 | frame[13] in _VLAN_TPIDS:
            reason = Drop.VLAN_TAGGED
        elif frame[0] & 1:
            if frame[12] << 8 | frame[13] == ETH_P_ARP:
                return self.nb.arp(frame, side, self.active, self.clock())
            if frame[12] << 8 | frame[13] == ETH_P_IPV6:  # neighbour discovery to a group MAC
                return self.path6.multicast(frame, side)
            reason = Drop.NOT_VMAC
        elif bytes(frame[0:6]) in self.host_macs:
            if frame[12] << 8 | frame[13] == ETH_P_ARP:  # the answer to a quiet probe: learn, never answer
                self.nb.arp(frame, side, False, self.clock(), fenced=True)
            reason = Drop.TO_HOST
        else:
            reason = Drop.NOT_VMAC
        self._drops[reason] += 1
        return None

    def _not_ip(self, frame: bytearray, side: int, reason: Drop) -> Action | None:
        if reason == Drop.NOT_IPV4:  # (IPv6 to a virtual MAC never gets here: the hot path hands it over)
            etype = frame[12] << 8 | frame[13]
            if etype == ETH_P_ARP:
                return self.nb.arp(frame, side, self.active, self.clock())
            if etype in _VLAN_TPIDS:
                reason = Drop.VLAN_TAGGED
        if reason == Drop.FRAGMENT and self._fwd_frags:
            return self._fragment(frame, side)
        self._drops[reason] += 1
        return None

    def _fragment(self, frame: bytearray, side: int) -> Action | None:
        """A non-first fragment: find its flow by the ports its first fragment had, then rewrite
        the IP header only (NAT), the MACs (DR) or encapsulate it (TUN)."""
        f = parse_fragment(frame)
        proto, saddr, daddr = frame[23], _U32_AT(frame, 26)[0], _U32_AT(frame, 30)[0]
        ports = self.frags.ports((proto, saddr, daddr, f[0]), self.clock()) if f is not None else None
        if f is None or ports is None or not self.active or f[2] <= 1:
            reason = Drop.FRAGMENT if ports is None else Drop.NOT_ACTIVE if not self.active else (
                Drop.TTL_EXCEEDED)
            self._drops[reason] += 1
            return None
        _ipid, _frag, ttl, end = f
        sport, dport = ports
        r = (proto, saddr, sport, daddr, dport, 0, end, ttl, 0)
        conn = self._out_get(proto, saddr, sport, daddr, dport) if side else None
        if conn is not None and conn.flags & _FWD_MASK == _MASQ:
            hdr = self._ext_hdr.get(daddr) or self.nb.route(daddr)
            if hdr is None:
                return self._neigh_miss(EXT, self.nb.nexthop(daddr), None)
            count_packet(conn.dest, end - 14, False)
            ip_rewrite(frame, hdr, ttl, 26, saddr, conn.vaddr)
            return EXT, frame
        conn = self._in_get(proto, saddr, sport, daddr, dport)
        if conn is None or (conn.dest is not None and not _int_and(conn.dest.flags, _AVAILABLE)):
            self._drops[Drop.FRAGMENT if conn is None else Drop.DEST_UNAVAILABLE] += 1
            return None
        count_packet(conn.dest, end - 14, True)
        fwd = conn.flags & _FWD_MASK
        if fwd != _MASQ:
            return self._xmit_other(frame, conn, fwd, r)
        hdr = self._int_hdr.get(conn.daddr)
        if hdr is None:
            return self._neigh_miss(INT, conn.daddr, conn.dest)
        ip_rewrite(frame, hdr, ttl, 30, daddr, conn.daddr)
        return INT, frame

    def owned(self, side: int) -> set[int] | frozenset[int]:
        """Addresses this node answers ARP for on ``side`` while active."""
        return self.nb.owned(side)

    def _guard(self, frame: bytearray, side: int, r: IPv4Info) -> Action | None:
        if not self.active:
            self._drops[Drop.NOT_ACTIVE] += 1
            return None
        if r[7] <= 1 and not (r[0] == 1 and r[2] == ICMP_ECHO):  # a ping that reached us is answered
            self._drops[Drop.TTL_EXCEEDED] += 1
            return self.icmp4.time_exceeded(frame, side, r)
        return self.icmp4.handle(frame, side, r)

    def echo_reply(self, frame: bytearray, side: int, daddr: int, owned: set[int] | frozenset[int],
                   build: Callable[[bytes], bytearray], own_mac: bytes | None = None) -> Action | None:
        """An echo request (either family) to ``daddr``: answered (``build(hdr12)`` makes the reply,
        back to the frame's source MAC, from ``own_mac``, default the virtual MAC) when ``daddr`` is
        one of the ``owned`` addresses of ``side`` and ``icmp_echo`` is on, within ``echo_ratelimit``;
        else counted and dropped."""
        if not self.cfg.icmp_echo or daddr not in owned:
            self._drops[Drop.ICMP_UNRELATED] += 1
            return None
        if not self.echo_budget.take(self.clock()):
            self._drops[Drop.ECHO_RATELIMIT] += 1
            return None
        self.echo_replies += 1
        return side, build(bytes(frame[6:12]) + (own_mac or self._vmac))

    # ---- role ------------------------------------------------------------------------------

    def set_active(self, active: bool) -> list[Action]:
        """Become master (returns the gratuitous ARPs to send) or backup (returns nothing)."""
        was = self.active
        self.active = active
        if active and not was:
            log.info("director active: announcing %d addresses", len(self.owned(EXT)) + len(self.owned(INT)))
            return self.garp_actions()
        if was and not active:
            log.info("director inactive: no more ARP answers, no forwarding")
        return []

    def learn_arp(self, frame: bytearray, side: int) -> None:
        """Not master (fenced): learn from an ARP (or IPv6 NS/NA) frame so the caches stay warm; answer
        nothing, count no drop (the I/O layer counts the frame as ``NOT_MASTER``)."""
        if frame[12:14] == b"\x86\xdd":
            return self.path6.nd.learn(frame, side, self.clock())
        self.nb.arp(frame, side, False, self.clock(), fenced=True)

    def expire_neighbours(self) -> int:
        """Age both neighbour caches by ``cfg.neigh_max_age``; returns the entries removed."""
        return self.nb.expire(self.clock())

    def garp_actions(self) -> list[Action]:
        """Gratuitous ARPs (IPv4) and unsolicited NAs (IPv6) for every owned address, both sides."""
        return self.nb.garp_actions() + self.path6.nd.announce()


__all__ = ["EXT", "INT", "Action", "CoreConfig", "Director"]
