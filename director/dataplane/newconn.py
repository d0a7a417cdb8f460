"""Scheduling a new conn (``ip_vs_schedule``): persistence, the sorry dest and one-packet conns.

Theory of operation
-------------------
:meth:`Scheduling.conn` runs on the miss path once the packet proved it may open a conn. It picks the
dest and creates the entry, in this order:

1. **persistence**: a persistent service looks up the template of the client's network
   (``ct_in_get(caddr & netmask, 0, vaddr, vport or 0)`` + ``check_template``; an IPv6 service's
   netmask is its prefix mask, and an IPv6 network that masks to 0 is keyed ``V6_MIN`` so it stays
   an IPv6 key, ``director.table.entry``) and reuses its dest;
   else its scheduler picks one and a template is created (``table.new(..., TEMPLATE)``). A service
   group (fwmark service) keys its templates as IPVS keys fwmark templates: the mark in place of the
   VIP, port 0, so one client network sticks to one dest over all the group's VIPs and ports. IPVS's
   fwmark template is protocol-less (its IPv6 twin has the mark in the address's first 32 bits,
   ``mark << 96``, so it is an IPv6 address like its client's); here a template is of its conns'
   protocol (sync requires it), and
   a client's first template of the other protocol takes the dest of a valid one of this protocol, so
   TCP and UDP selectors stick together too. Its conns carry the mark (``Conn.fwmark``) and the
   packet's own VIP and port;
2. **scheduler**: any other service asks its scheduler;
3. **sorry dest** (keepalived ``sorry_server``): when the scheduler finds no usable dest (all down,
   quiesced or overloaded, or none configured), the service's sorry dest takes the conn. No template
   is made for it, so once a dest is usable again the client's next conn goes there, while the conns
   already on the sorry dest stay with it (they are ordinary entries: synced, timed, counted on the
   sorry dest's counters);
4. else ``None``: the caller counts ``BYPASS``.

The conn is an ordinary table entry, except for a **one-packet** service (``ipvsadm --ops``, UDP):
there :meth:`one_packet` makes a ``Conn`` that is never hashed, armed or announced (no event, so no
sync traffic), flagged ``ONE_PACKET``, carrying the dest for this one datagram only; its ``timeout``
is the UDP timeout, so the packet path's state step sees nothing to do. ``conns`` counts it on the dest
and the service, as IPVS counts every OPS datagram as a connection. The dest's active/inactive
counters never see it (IPVS binds and unbinds it within the packet), so lc/wlc/sed/nq pick by weight
alone on such a service: use rr, wrr, sh or mh there.
"""

from __future__ import annotations

from director.dataplane.config import CoreConfig
from director.services.service import Dest, VirtualService
from director.table.conn import Conn, ConnTable
from director.table.entry import V6_MIN, make_key
from director.types import Clock, ConnFlags, Proto

_ONE_PACKET = int(ConnFlags.ONE_PACKET)
_TEMPLATE = ConnFlags.TEMPLATE
_OTHER = {int(Proto.TCP): int(Proto.UDP), int(Proto.UDP): int(Proto.TCP)}


class Scheduling:
    """Dest choice and entry creation for a packet that opens a conn."""

    __slots__ = ("table", "cfg", "clock")

    def __init__(self, table: ConnTable, cfg: CoreConfig, clock: Clock) -> None:
        self.table = table
        self.cfg = cfg
        self.clock = clock

    def conn(self, svc: VirtualService, proto: int, caddr: int, cport: int, vaddr: int,
             vport: int) -> Conn | None:
        """The new conn (a template first for a persistent service), or None: no usable dest."""
        template: Conn | None = None
        if svc.persistent:
            template = self._template(svc, proto, caddr, cport, vaddr, vport)
            dest = template.dest if template is not None else None
        else:
            dest = svc.scheduler.schedule(svc.dests, caddr, cport)
        if dest is None:
            dest = svc.sorry
            if dest is None:
                return None
        dest.counters.conns += 1
        svc.counters.conns += 1
        if svc.one_packet:
            return self.one_packet(dest, proto, caddr, cport, vaddr, vport)
        conn = self.table.new(proto, caddr, cport, vaddr, vport, dest.addr, dest.port or vport,
                              dest.conn_flags, dest, svc.fwmark, control=template)
        if template is not None:
            self.table.refresh(template, svc.timeout)
        return conn

    def one_packet(self, dest: Dest, proto: int, caddr: int, cport: int, vaddr: int, vport: int) -> Conn:
        """A conn for one datagram: not in the table, no event, gone with the packet."""
        conn = Conn(make_key(proto, caddr, cport), vaddr, vport, dest.addr, dest.port or vport, 0,
                    dest.conn_flags | _ONE_PACKET, 0, self.cfg.timeouts.udp, self.clock())
        conn.dest = dest
        return conn

    def _valid_template(self, svc: VirtualService, proto: int, snet: int, vaddr: int,
                        vport: int) -> Conn | None:
        """The template under this key if ``check_template`` keeps it."""
        ct = self.table.ct_in_get(proto, snet, 0, vaddr, vport)
        if ct is not None and ct.dest is not None and self.table.check_template(
                ct, svc.expire_quiescent_template or self.cfg.expire_quiescent_template):
            return ct
        return None

    def _template(self, svc: VirtualService, proto: int, caddr: int, cport: int, vaddr: int,
                  vport: int) -> Conn | None:
        """The persistence template of this client network (ip_vs_sched_persist); None: no dest
        (the sorry dest, if any, then takes the conn without a template)."""
        snet = caddr & svc.netmask
        if not snet and caddr > 0xFFFFFFFF:  # an IPv6 network masked to ::/p stays in the IPv6 key space
            snet = V6_MIN
        fwmark = svc.fwmark
        if fwmark:  # a group: one template per client network over all its selectors (the mark as vaddr;
            # IPv6: in the address's first 32 bits, as IPVS stores htonl(mark) in an nf_inet_addr)
            vaddr, tvport = (fwmark << 96 if caddr > 0xFFFFFFFF else fwmark), 0
        else:
            tvport = vport if svc.port else 0
        ct = self._valid_template(svc, proto, snet, vaddr, tvport)
        if ct is not None:
            return ct
        sibling = None
        if fwmark and proto in _OTHER:  # the client's template of the group's other protocol, if any
            sibling = self._valid_template(svc, _OTHER[proto], snet, vaddr, 0)
        dest = sibling.dest if sibling is not None else svc.scheduler.schedule(svc.dests, caddr, cport)
        if dest is None:
            return None
        tdport = dest.port if svc.port else 0
        return self.table.new(proto, snet, 0, vaddr, tvport, dest.addr, tdport, _TEMPLATE | dest.conn_flags,
                              dest, fwmark, timeout=svc.timeout)


__all__ = ["Scheduling"]
