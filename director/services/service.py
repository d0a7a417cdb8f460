"""Virtual services and their dests (real servers), and the service table.

A virtual service is keyed by ``(protocol, vaddr, vport)`` (or a fwmark). It owns its dests, a
scheduler, and the persistence settings (``timeout`` seconds and ``netmask``). A dest carries the
IPVS counters the conn table maintains (active / inactive / persistent conns), its thresholds and
its forwarding method. Addresses are ints (IPv4 fits in 32 bits; IPv6 in 128).

The conn table and the packet path mutate the counters; the control plane (config, health checks)
mutates weights and membership through the methods here so the scheduler is always told.

A service may have a **sorry dest** (keepalived's ``sorry_server``): a ``Dest`` of the service that is
not in ``dests`` (no scheduler ever sees it); the packet path sends a new conn there when the scheduler
finds no usable dest. ``ServiceTable.find_dest`` finds it too, so a synced sorry conn binds to it.

A **service group** (IPVS fwmark service, ``fwmark != 0``) is found by its selectors instead of its
address: ``selectors`` holds (protocol, vaddr, first port, last port) tuples, and ``ServiceTable.get``
looks an address service up first, then a group's single port, then a group's port range, then a
port-0 (any port) address service. The config refuses overlapping selectors, so at most one matches.

**One-packet services** (``SvcFlags.ONEPACKET``, UDP): ``ServiceTable.ops_dest`` maps the
(protocol, address, port) of each NAT dest (and NAT sorry dest) of such a service to that dest, so a
reply that matches no entry can still be translated back to its VIP; the map is rebuilt by ``add``,
``remove`` and ``reindex`` (the config reconcile calls it after every change) and only ever grows stale
toward dests that recently left, whose late replies it still translates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from director.types import DestFlags, FwdMethod, Proto, SvcFlags

Selector = tuple[int, int, int, int]
"""(protocol, vaddr, first port, last port): which packets a service group takes."""
SvcKey = tuple[int, int, int, int]
"""(protocol, vaddr, vport, fwmark)."""
DestKey = tuple[int, int, int, int, int, int]
"""(protocol, vaddr, vport, fwmark, daddr, dport): names one dest cluster-wide (used by sync)."""


class Scheduler(Protocol):
    """What a service needs from its scheduler (implementations: director.services.sched, one per file).

    ``update(dests)`` after every change of the dest list, a weight or a dest's availability, so a
    scheduler may precompute; ``schedule`` picks a dest for a new connection, or None if none is usable.
    """

    name: str

    def update(self, dests: Sequence[Dest]) -> None: ...

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None: ...


class Counters:
    """Traffic counters (ipvsadm --stats); rates are derived by director.services.stats."""

    __slots__ = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")

    def __init__(self) -> None:
        self.conns = 0
        self.inpkts = 0
        self.outpkts = 0
        self.inbytes = 0
        self.outbytes = 0

    def zero(self) -> None:
        self.conns = self.inpkts = self.outpkts = self.inbytes = self.outbytes = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Dest:
    __slots__ = (
        "svc", "addr", "port", "weight", "fwd", "u_threshold", "l_threshold", "flags",
        "activeconns", "inactconns", "persistconns", "conn_flags", "counters", "mac",
    )

    def __init__(
        self,
        svc: VirtualService,
        addr: int,
        port: int,
        weight: int = 1,
        fwd: FwdMethod = FwdMethod.NAT,
        u_threshold: int = 0,
        l_threshold: int = 0,
    ) -> None:
        self.svc = svc
        self.addr = addr
        self.port = port
        self.weight = weight
        self.fwd = fwd
        self.u_threshold = u_threshold
        self.l_threshold = l_threshold
        self.flags = DestFlags.AVAILABLE
        self.activeconns = 0
        self.inactconns = 0
        self.persistconns = 0
        self.conn_flags = int(fwd)
        self.counters = Counters()
        self.mac: bytes | None = None

    def totalconns(self) -> int:
        """ip_vs_dest_totalconns: active + inactive (persistent templates are not traffic)."""
        return self.activeconns + self.inactconns

    @property
    def key(self) -> DestKey:
        s = self.svc
        return (s.protocol, s.addr, s.port, s.fwmark, self.addr, self.port)

    def __repr__(self) -> str:
        return f"Dest({self.addr:#x}:{self.port} w={self.weight} fwd={self.fwd.name})"


@dataclass(eq=False)
class VirtualService:
    protocol: int
    addr: int
    port: int
    scheduler: Scheduler
    fwmark: int = 0
    flags: SvcFlags = SvcFlags(0)
    timeout: float = 300.0
    """Persistence timeout (seconds), used when PERSISTENT is set."""
    netmask: int = 0xFFFFFFFF
    dests: list[Dest] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    name: str = ""
    """The config's service name (director.config.services); informational."""
    expire_nodest_conn: bool = False
    """Per-service expire_nodest_conn (set from the config; Linux has it as a sysctl)."""
    expire_quiescent_template: bool = False
    """Per-service expire_quiescent_template (set from the config; Linux has it as a sysctl)."""
    sorry: Dest | None = None
    """The sorry dest (keepalived ``sorry_server``): new conns go there when no dest is usable."""
    selectors: tuple[Selector, ...] = ()
    """A group's (fwmark service's) selectors; change them through ``ServiceTable.set_selectors``."""

    @property
    def key(self) -> SvcKey:
        return (self.protocol, self.addr, self.port, self.fwmark)

    @property
    def persistent(self) -> bool:
        return bool(self.flags & SvcFlags.PERSISTENT)

    @property
    def one_packet(self) -> bool:
        """One-packet scheduling (``ipvsadm --ops``): no entry outlives its datagram."""
        return bool(self.flags & SvcFlags.ONEPACKET)

    def counted_dests(self) -> tuple[Dest, ...]:
        """Every dest with counters of its own: ``dests`` and the sorry dest (for stats and sums)."""
        return (*self.dests, self.sorry) if self.sorry is not None else tuple(self.dests)

    def set_sorry(self, dest: Dest | None) -> None:
        """Install (or clear) the sorry dest; a replaced one is no longer AVAILABLE (its conns drop
        like a removed dest's)."""
        old = self.sorry
        if old is not None and old is not dest:
            old.flags &= ~DestFlags.AVAILABLE
        self.sorry = dest

    def find_dest(self, addr: int, port: int) -> Dest | None:
        for d in self.dests:
            if d.addr == addr and d.port == port:
                return d
        return None

    def add_dest(self, dest: Dest) -> None:
        if self.find_dest(dest.addr, dest.port) is not None:
            raise ValueError(f"dest {dest.addr:#x}:{dest.port} already in service")
        self.dests.append(dest)
        self.scheduler.update(self.dests)

    def remove_dest(self, dest: Dest) -> None:
        """Unlink a dest. Conns still bound keep it (like the IPVS trash) but it is no longer AVAILABLE."""
        self.dests.remove(dest)
        dest.flags &= ~DestFlags.AVAILABLE
        self.scheduler.update(self.dests)

    def edit_dest(self, dest: Dest, *, weight: int | None = None, u_threshold: int | None = None,
                  l_threshold: int | None = None) -> None:
        if weight is not None:
            dest.weight = weight
        if u_threshold is not None:
            dest.u_threshold = u_threshold
        if l_threshold is not None:
            dest.l_threshold = l_threshold
        self.scheduler.update(self.dests)


class ServiceTable:
    """All virtual services of a node, found by (protocol, vaddr, vport) or fwmark."""

    def __init__(self) -> None:
        self._by_addr: dict[tuple[int, int, int], VirtualService] = {}
        self._by_fwmark: dict[int, VirtualService] = {}
        self._vips: dict[int, int] = {}  # vaddr -> address services on it
        self._group_vips: set[int] = set()
        self._by_sel: dict[tuple[int, int, int], VirtualService] = {}  # a group's single ports
        self._ranges: dict[tuple[int, int], list[tuple[int, int, VirtualService]]] = {}  # its port ranges
        self.ops_dest: dict[tuple[int, int, int], Dest] = {}
        """(protocol, daddr, dport) -> NAT dest of a one-packet service (the module docstring); changed
        in place only (the packet path holds it)."""

    def add(self, svc: VirtualService, *, index: bool = True) -> None:
        """Add a service; ``index=False`` leaves ``reindex`` to the caller (one pass after many adds)."""
        if svc.fwmark:
            self._by_fwmark[svc.fwmark] = svc
        else:
            self._by_addr[(svc.protocol, svc.addr, svc.port)] = svc
            self._vips[svc.addr] = self._vips.get(svc.addr, 0) + 1
        if index:
            self.reindex()

    def remove(self, svc: VirtualService, *, index: bool = True) -> None:
        if svc.fwmark:
            self._by_fwmark.pop(svc.fwmark, None)
        elif self._by_addr.pop((svc.protocol, svc.addr, svc.port), None) is not None:
            n = self._vips.pop(svc.addr, 0) - 1
            if n > 0:
                self._vips[svc.addr] = n
        for d in svc.dests:
            d.flags &= ~DestFlags.AVAILABLE
        svc.set_sorry(None)
        if index:
            self.reindex()

    def set_selectors(self, svc: VirtualService, selectors: tuple[Selector, ...]) -> None:
        """Give a service group new selectors (and index them)."""
        svc.selectors = selectors
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the groups' selector index and ``ops_dest`` (from the one-packet services' NAT dests)
        after any change of selectors, dests, sorry dests or flags."""
        self._by_sel.clear()
        self._ranges.clear()
        self._group_vips.clear()
        for svc in self._by_fwmark.values():
            for proto, vaddr, lo, hi in svc.selectors:
                self._group_vips.add(vaddr)
                if lo == hi:
                    self._by_sel.setdefault((proto, vaddr, lo), svc)
                else:
                    self._ranges.setdefault((proto, vaddr), []).append((lo, hi, svc))
        fresh: dict[tuple[int, int, int], Dest] = {}
        for svc in self:
            if svc.one_packet:
                for d in svc.counted_dests():
                    if d.fwd == FwdMethod.NAT:
                        fresh.setdefault((svc.protocol, d.addr, d.port), d)
        if fresh != self.ops_dest:
            self.ops_dest.clear()
            self.ops_dest.update(fresh)

    def is_vip(self, vaddr: int) -> bool:
        """Some service listens on ``vaddr`` (any protocol or port)."""
        return vaddr in self._vips or vaddr in self._group_vips

    def get(self, protocol: int, vaddr: int, vport: int) -> VirtualService | None:
        """Service for a packet to vaddr:vport: an address service, a group by its selectors (port, then
        range), a port-0 address service (any port, persistent)."""
        svc = self._by_addr.get((protocol, vaddr, vport))
        if svc is None:
            if self._group_vips:
                svc = self._by_sel.get((protocol, vaddr, vport))
                if svc is None:
                    for lo, hi, group in self._ranges.get((protocol, vaddr), ()):
                        if lo <= vport <= hi:
                            return group
            if svc is None:
                svc = self._by_addr.get((protocol, vaddr, 0))
        return svc

    def get_addr(self, protocol: int, vaddr: int, vport: int) -> VirtualService | None:
        """The address service keyed exactly so (no group, no port-0 fallback)."""
        return self._by_addr.get((protocol, vaddr, vport))

    def get_fwmark(self, fwmark: int) -> VirtualService | None:
        return self._by_fwmark.get(fwmark)

    def find_dest(self, key: DestKey) -> Dest | None:
        proto, vaddr, vport, fwmark, daddr, dport = key
        svc = self._by_fwmark.get(fwmark) if fwmark else self._by_addr.get((proto, vaddr, vport))
        if svc is None:
            return None
        dest = svc.find_dest(daddr, dport)
        sorry = svc.sorry
        if dest is None and sorry is not None and sorry.addr == daddr and sorry.port == dport:
            return sorry
        return dest

    def vaddrs(self) -> set[int]:
        return set(self._vips) | self._group_vips

    def __iter__(self) -> Iterator[VirtualService]:
        yield from self._by_addr.values()
        yield from self._by_fwmark.values()

    def __len__(self) -> int:
        return len(self._by_addr) + len(self._by_fwmark)


def set_dest_weights(services: ServiceTable, weights: Mapping[Any, int]) -> int:
    """Give dests (by key) these weights (misc `dynamic` health checks); returns how many changed."""
    changed = 0
    for key, weight in weights.items():
        dest = services.find_dest(key)
        if dest is not None and dest.weight != weight:
            dest.svc.edit_dest(dest, weight=weight)
            changed += 1
    return changed


def count_packet(dest: Dest | None, n: int, inbound: bool) -> None:
    """Count one packet of ``n`` bytes (from the IP header on) of a conn to ``dest`` on the dest and its
    service (no dest: a conn whose dest was removed, nothing to count)."""
    if dest is None:
        return
    for c in (dest.counters, dest.svc.counters):
        if inbound:
            c.inpkts += 1
            c.inbytes += n
        else:
            c.outpkts += 1
            c.outbytes += n


__all__ = ["Counters", "Dest", "DestKey", "Proto", "Selector", "ServiceTable", "SvcKey", "VirtualService",
           "count_packet", "set_dest_weights"]
