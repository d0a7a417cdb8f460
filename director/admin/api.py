"""The node facade the admin API talks to (`NodeApi`), its plain return types, and typed errors.

Theory of operation
-------------------
The gRPC layer (`director.admin.server`) is thin: it authorizes a call, converts the request into the
plain values below, calls one `NodeApi` method, and converts the answer into protobuf. No protobuf
object crosses into the node. The node daemon implements `NodeApi`; tests implement it in memory on
the real `ServiceTable` and `ConnTable`.

Reads (`status`, `services`, `conns`, `stats`, `config_yaml`) are synchronous snapshots of the
node's own view. Config writes are coroutines: they go through etcd and return the etcd revision
that holds the change; every node (this one included) applies them from its config watch. Local
operations (`flush`, `zero_counters`) act on this node only. `resign` is the graceful failover.
Events (connection, role, config, health) are fanned out by an `EventHub`; each admin watcher holds
one bounded `Subscription` that never blocks the publisher and reports an overflow.

Errors raised by a `NodeApi` method (the gRPC layer maps each to one status code)::

    AdminError
     +-- InvalidArgument(field, message)   INVALID_ARGUMENT (names the field)
     +-- NotFound                          NOT_FOUND
     +-- NotMaster(master_id)              FAILED_PRECONDITION
     +-- Conflict                          FAILED_PRECONDITION
     +-- PermissionDenied                  PERMISSION_DENIED
     +-- Unauthenticated                   UNAUTHENTICATED

Helpers at the bottom (`service_view`, `select_conns`, `diff_documents`) build the views from the
real tables so every implementation renders them the same way.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from director.services.service import Counters, Dest, DestKey, ServiceTable, SvcKey, VirtualService
from director.services.stats import StatsEstimator
from director.table.conn import Conn
from director.table.events import ConnEvent, ConnSnapshot
from director.types import ConnFlags, DestFlags, FwdMethod, Proto

log = logging.getLogger(__name__)

# ---- errors -----------------------------------------------------------------------------------


class AdminError(Exception):
    """Base of the errors a NodeApi method raises on purpose."""


class InvalidArgument(AdminError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


class NotFound(AdminError):
    pass


class NotMaster(AdminError):
    def __init__(self, master_id: str | None, message: str = "") -> None:
        where = f"the master is {master_id}" if master_id else "no master is elected"
        super().__init__(message or f"this node is not the master ({where})")
        self.master_id = master_id


class Conflict(AdminError):
    pass


class PermissionDenied(AdminError):
    pass


class Unauthenticated(AdminError):
    pass


# ---- plain views ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterValues:
    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0

    @staticmethod
    def of(c: Counters) -> CounterValues:
        return CounterValues(c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes)


@dataclass(frozen=True)
class RateValues:
    """Per-second rates (like ipvsadm --rate): conns, packets and bytes in/out."""

    cps: float = 0.0
    inpps: float = 0.0
    outpps: float = 0.0
    inbps: float = 0.0
    outbps: float = 0.0


@dataclass(frozen=True)
class SvcRef:
    """Names a virtual service: (protocol, vaddr, vport) or a fwmark."""

    protocol: int
    vaddr: int
    vport: int
    fwmark: int = 0

    @property
    def key(self) -> SvcKey:
        return (self.protocol, self.vaddr, self.vport, self.fwmark)

    def matches(self, svc_key: SvcKey) -> bool:
        if self.fwmark:
            return svc_key[3] == self.fwmark
        return svc_key[:3] == (self.protocol, self.vaddr, self.vport) and svc_key[3] == 0

    def __str__(self) -> str:
        return svc_label(self.key)


@dataclass(frozen=True)
class DestView:
    addr: int
    port: int
    fwd: FwdMethod
    weight: int
    u_threshold: int
    l_threshold: int
    activeconns: int
    inactconns: int
    persistconns: int
    available: bool
    overloaded: bool
    health: str = ""  # "up" | "down" | "unknown" | "" (no check)
    configured_weight: int | None = None
    counters: CounterValues = CounterValues()
    rates: RateValues = RateValues()


@dataclass(frozen=True)
class ServiceView:
    ref: SvcRef
    scheduler: str
    persistent: bool
    timeout: float
    netmask: int
    dests: tuple[DestView, ...]
    counters: CounterValues = CounterValues()
    rates: RateValues = RateValues()
    name: str = ""


@dataclass(frozen=True)
class ConnView:
    protocol: int
    caddr: int
    cport: int
    vaddr: int
    vport: int
    daddr: int
    dport: int
    fwmark: int
    state: str
    flags: int
    expires_in: float
    timeout: float
    in_pkts: int
    has_control: bool
    n_control: int

    @property
    def is_template(self) -> bool:
        return bool(self.flags & ConnFlags.TEMPLATE)

    @property
    def fwd(self) -> FwdMethod:
        return FwdMethod(self.flags & ConnFlags.FWD_MASK)

    @property
    def sort_key(self) -> tuple[int, ...]:
        return (self.protocol, self.vaddr, self.vport, self.fwmark, self.caddr, self.cport,
                self.daddr, self.dport, int(self.is_template))


@dataclass(frozen=True)
class ConnFilter:
    """ListConns filters; None / False = any."""

    service: SvcRef | None = None
    caddr: int | None = None
    daddr: int | None = None
    dport: int | None = None
    state: str | None = None
    templates_only: bool = False

    def accepts(self, c: ConnView) -> bool:
        if self.templates_only and not c.is_template:
            return False
        if self.service is not None and not self.service.matches((c.protocol, c.vaddr, c.vport, c.fwmark)):
            return False
        if self.caddr is not None and c.caddr != self.caddr:
            return False
        if self.daddr is not None and c.daddr != self.daddr:
            return False
        if self.dport is not None and c.dport != self.dport:
            return False
        return self.state is None or c.state == self.state.upper()


@dataclass(frozen=True)
class BackupSync:
    node_id: str
    state: str  # "snapshot" | "streaming" | "behind" | "disconnected"
    lag_events: int = 0
    lag_seconds: float = 0.0


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    role: str  # "master" | "backup" | "candidate" | "stopped"
    epoch: int
    master_id: str
    master_sync_addr: str
    backups: tuple[BackupSync, ...]
    conns: int
    templates: int
    services: int
    dests: int
    uptime: float
    version: str
    config_revision: int = 0
    role_changes: int = 0
    elections: int = 0
    ready: bool = True


@dataclass(frozen=True)
class StatsView:
    services: tuple[ServiceView, ...]
    totals: CounterValues
    total_rates: RateValues
    drops: Mapping[str, int]
    conns: int
    templates: int


@dataclass(frozen=True)
class ConfigChange:
    op: str  # "add" | "change" | "delete"
    key: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


@dataclass(frozen=True)
class ApplyResult:
    changes: tuple[ConfigChange, ...]
    revision: int  # 0 on dry run


@dataclass(frozen=True)
class NodeEvent:
    """One admin-visible event. `kind`: conn | role | config | health | overflow."""

    kind: str
    time: float
    message: str = ""
    conn: ConnView | None = None
    conn_event: str = ""  # new | update | expire
    role: str = ""
    epoch: int = 0
    revision: int = 0
    dest: str = ""
    up: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)


# ---- the facade -------------------------------------------------------------------------------


class NodeApi(Protocol):
    """What the admin API needs from a node. Implemented by the daemon (and by test fakes)."""

    def status(self) -> NodeStatus: ...

    def services(self) -> list[ServiceView]: ...

    def conns(self, flt: ConnFilter) -> Iterable[ConnView]:
        """Matching entries (templates included), any order; may be lazy (see `table_conns`)."""
        ...

    def stats(self) -> StatsView: ...

    def config_yaml(self) -> tuple[str, int]:
        """The running config as YAML (apply -f schema) and its etcd revision."""
        ...

    async def apply_config(self, document: str, *, dry_run: bool, prune: bool) -> ApplyResult:
        """Validate a whole `apply -f` document; changes = diff_documents(running, new) keyed by
        service name (documents: config.service_dict); write them unless dry_run (revision 0).
        Writes may raise InvalidArgument, NotFound, Conflict or director.config.services.ConfigError."""
        ...

    async def put_service(self, spec: Mapping[str, Any], *, create_only: bool) -> int:
        """One service document in the config schema (with its `name`); Conflict if create_only
        and it exists."""
        ...

    async def delete_service(self, ref: SvcRef) -> int: ...

    async def put_dest(self, ref: SvcRef, spec: Mapping[str, Any], *, create_only: bool) -> int: ...

    async def delete_dest(self, ref: SvcRef, daddr: int, dport: int) -> int: ...

    async def edit_dest(self, ref: SvcRef, daddr: int, dport: int, *, weight: int | None,
                        u_threshold: int | None, l_threshold: int | None) -> int: ...

    async def drain_dest(self, ref: SvcRef, daddr: int, dport: int) -> int:
        """Set the dest's configured weight to 0 (through etcd); returns the revision."""
        ...

    async def set_timeouts(self, timeouts: Mapping[str, float]) -> int: ...

    def flush(self) -> int:
        """Drop every conn entry on this node; returns how many were removed."""
        ...

    def zero_counters(self, ref: SvcRef | None) -> None: ...

    async def resign(self) -> tuple[str, int]:
        """Master only (else NotMaster): hand over gracefully; returns (new master id or "", epoch)."""
        ...

    def subscribe(self) -> Subscription: ...


# ---- event fan-out ----------------------------------------------------------------------------


class Subscription:
    """One consumer's bounded queue of events. Overflow drops the oldest and queues one 'overflow'."""

    def __init__(self, hub: EventHub, capacity: int) -> None:
        self._hub = hub
        self._q: collections.deque[NodeEvent] = collections.deque()
        self._capacity = capacity
        self._wake = asyncio.Event()
        self._overflowed = False
        self.closed = False

    def push(self, ev: NodeEvent) -> None:
        if len(self._q) >= self._capacity:
            self._q.clear()
            self._overflowed = True
        self._q.append(ev)
        self._wake.set()

    async def get(self) -> NodeEvent:
        while not self._q and not self._overflowed:
            self._wake.clear()
            await self._wake.wait()
        if self._overflowed:
            self._overflowed = False
            return NodeEvent(kind="overflow", time=self._q[0].time if self._q else 0.0,
                             message="events were dropped: consumer too slow")
        return self._q.popleft()

    def close(self) -> None:
        self.closed = True
        self._hub.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fan-out of NodeEvents to admin watchers; publish never blocks."""

    def __init__(self, capacity: int = 10000) -> None:
        self._subs: set[Subscription] = set()
        self._capacity = capacity

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._capacity)
        self._subs.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def watchers(self) -> int:
        return len(self._subs)

    def publish(self, ev: NodeEvent) -> None:
        for sub in self._subs:
            sub.push(ev)


# ---- helpers shared by implementations --------------------------------------------------------


def fmt_addr(addr: int) -> str:
    return str(ipaddress.IPv4Address(addr) if addr < 2**32 else ipaddress.IPv6Address(addr))


def parse_addr(text: str, field_name: str) -> int:
    try:
        return int(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InvalidArgument(field_name, f"not an IP address: {text!r}") from None


def proto_name(protocol: int) -> str:
    try:
        return Proto(protocol).name.lower()
    except ValueError:
        return str(protocol)


def parse_proto(text: str, field_name: str) -> int:
    try:
        return int(Proto[text.strip().upper()])
    except KeyError:
        raise InvalidArgument(field_name, f"unknown protocol {text!r} (tcp, udp)") from None


def svc_label(key: SvcKey) -> str:
    proto, vaddr, vport, fwmark = key
    if fwmark:
        return f"fwm/{fwmark}"
    return f"{proto_name(proto)}/{fmt_hostport(vaddr, vport)}"


def fmt_hostport(addr: int, port: int) -> str:
    text = fmt_addr(addr)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def dest_label(key: DestKey) -> str:
    return f"{svc_label(key[:4])} -> {fmt_hostport(key[4], key[5])}"


def dest_view(d: Dest, *, health: str = "", configured_weight: int | None = None,
              rates: RateValues = RateValues()) -> DestView:
    return DestView(
        addr=d.addr, port=d.port, fwd=d.fwd, weight=d.weight, u_threshold=d.u_threshold,
        l_threshold=d.l_threshold, activeconns=d.activeconns, inactconns=d.inactconns,
        persistconns=d.persistconns, available=bool(d.flags & DestFlags.AVAILABLE),
        overloaded=bool(d.flags & DestFlags.OVERLOAD), health=health,
        configured_weight=configured_weight, counters=CounterValues.of(d.counters), rates=rates)


def service_view(svc: VirtualService, *, health: Mapping[DestKey, str] | None = None,
                 configured: Mapping[DestKey, int] | None = None,
                 estimator: StatsEstimator | None = None) -> ServiceView:
    """A ServiceView of a live VirtualService; health, configured weights and rates are optional overlays."""
    health = health or {}
    configured = configured or {}

    def rates(c: Counters) -> RateValues:
        return RateValues(*estimator.rates(c)) if estimator is not None else RateValues()

    dests = tuple(
        dest_view(d, health=health.get(d.key, ""), configured_weight=configured.get(d.key),
                  rates=rates(d.counters))
        for d in svc.dests)
    return ServiceView(
        ref=SvcRef(svc.protocol, svc.addr, svc.port, svc.fwmark), scheduler=svc.scheduler.name,
        persistent=svc.persistent, timeout=svc.timeout, netmask=svc.netmask, dests=dests,
        counters=CounterValues.of(svc.counters), rates=rates(svc.counters), name=svc.name)


def configured_weights(services: Iterable[Any]) -> dict[DestKey, int]:
    """DestKey -> weight in the config, from config ServiceConfig objects (for `configured`)."""
    return {(int(sc.proto), sc.vaddr, sc.port, 0, dc.daddr, dc.port): dc.weight
            for sc in services for dc in sc.dests}


def find_service(services: ServiceTable, ref: SvcRef) -> VirtualService:
    svc = services.get_fwmark(ref.fwmark) if ref.fwmark else None
    if svc is None and not ref.fwmark:
        svc = next((s for s in services if s.key == ref.key), None)
    if svc is None:
        raise NotFound(f"no service {ref}")
    return svc


def find_dest(services: ServiceTable, ref: SvcRef, daddr: int, dport: int) -> Dest:
    d = find_service(services, ref).find_dest(daddr, dport)
    if d is None:
        raise NotFound(f"no dest {fmt_hostport(daddr, dport)} in service {ref}")
    return d


def select_conns(views: Iterable[ConnView], flt: ConnFilter) -> list[ConnView]:
    return [c for c in views if flt.accepts(c)]


def table_conns(table: Iterable[Conn], flt: ConnFilter, now: float) -> Iterator[ConnView]:
    """Lazily yield views of the matching entries of a ConnTable (cheap raw checks first).

    Suitable as `NodeApi.conns`: ConnTable iteration tolerates table changes between entries, so
    the admin layer may consume it in slices while the event loop keeps forwarding.
    """
    svc = flt.service
    for c in table:
        if flt.templates_only and not c.flags & ConnFlags.TEMPLATE:
            continue
        if flt.caddr is not None and c.caddr != flt.caddr:
            continue
        if flt.daddr is not None and c.daddr != flt.daddr:
            continue
        if svc is not None and not svc.matches((c.protocol, c.vaddr, c.vport, c.fwmark)):
            continue
        v = conn_view(c, now)
        if flt.accepts(v):
            yield v


def page(conns: list[ConnView], page_size: int, after: tuple[int, ...] | None
         ) -> tuple[list[ConnView], tuple[int, ...] | None]:
    """Sort by key, skip up to `after`, take page_size (0 = all); returns (page, last key if more)."""
    if after is not None:
        conns = [c for c in conns if c.sort_key > after]
    conns.sort(key=lambda c: c.sort_key)
    if page_size <= 0 or len(conns) <= page_size:
        return conns, None
    chunk = conns[:page_size]
    return chunk, chunk[-1].sort_key


def diff_documents(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]],
                   *, prune: bool) -> tuple[ConfigChange, ...]:
    """Changes from `old` to `new` (both: key -> plain document); deletes only when pruning."""
    out: list[ConfigChange] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            out.append(ConfigChange("add", key, None, after))
        elif after is None and before is not None:
            if prune:
                out.append(ConfigChange("delete", key, before, None))
        elif before != after:
            out.append(ConfigChange("change", key, before, after))
    return tuple(out)


TCP_STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
                   "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
"""director.table.tcp.TcpState names in Linux order (the value is the index)."""


def state_name(protocol: int, state: int) -> str:
    if protocol == Proto.TCP and 0 <= state < len(TCP_STATE_NAMES):
        return TCP_STATE_NAMES[state]
    if protocol == Proto.UDP:
        return "UDP"
    if protocol == Proto.ICMP:
        return "ICMP"
    return "NONE" if state == 0 else str(state)


def conn_view(c: Conn, now: float) -> ConnView:
    return ConnView(
        protocol=c.protocol, caddr=c.caddr, cport=c.cport, vaddr=c.vaddr, vport=c.vport, daddr=c.daddr,
        dport=c.dport, fwmark=c.fwmark, state=state_name(c.protocol, c.state), flags=int(c.flags),
        expires_in=max(0.0, c.expires - now), timeout=c.timeout, in_pkts=c.in_pkts,
        has_control=c.control is not None, n_control=c.n_control)


def snapshot_view(snap: ConnSnapshot, now: float) -> ConnView:
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, _ = snap.key
    return ConnView(
        protocol=proto, caddr=caddr, cport=cport, vaddr=vaddr, vport=vport, daddr=daddr, dport=dport,
        fwmark=fwmark, state=state_name(proto, snap.state), flags=snap.flags,
        expires_in=max(0.0, snap.expires - now), timeout=snap.timeout, in_pkts=snap.in_pkts,
        has_control=snap.control_key is not None, n_control=0)


def conn_event(ev: ConnEvent, now: float, wall: float) -> NodeEvent:
    """A conn-table event as a NodeEvent (`now`: the table's clock; `wall`: unix time for display)."""
    return NodeEvent(kind="conn", time=wall, conn=snapshot_view(ev.snap, now),
                     conn_event=ev.kind.name.lower())
