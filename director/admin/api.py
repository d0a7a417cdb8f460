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
     +-- RateLimited                       RESOURCE_EXHAUSTED (per-peer token bucket, heavy calls)

`director.admin.views` builds these views from the real tables so every implementation renders them
the same way; `director.admin.hub` is the event fan-out.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from director.services.service import Counters, SvcKey
from director.types import ConnFlags, FwdMethod, Proto

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


class RateLimited(AdminError):
    """Too many calls from one peer, or too much heavy work in progress (RESOURCE_EXHAUSTED)."""


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
    sorry: bool = False  # the service's sorry server (keepalived sorry_server), listed after its dests


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
    ops: bool = False  # one-packet scheduling (ipvsadm --ops)


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
    cursor: tuple[int, ...] = ()
    """Position in the table's paging order (``table_conns``): (bucket, *sort_key); () if not from a table."""

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
class DefenseView:
    """IPVS defense strategies (director.table.defense_policy): modes, levels, what they did."""

    drop_entry: str = "off"  # off | auto | auto (engaged) | always
    drop_packet: str = "off"
    secure_tcp: str = "off"
    pressure: float = 0.0  # 0: below every threshold; 1: at a maximum
    drop_rate: int = 0  # one new-conn packet in drop_rate is dropped (0: none)
    conn_threshold: int = 0
    max_conns: int = 0
    rss: int = 0
    rss_threshold: int = 0
    rss_max: int = 0
    entries_dropped: int = 0
    packets_dropped: int = 0
    table_full_drops: int = 0
    engaged: int = 0  # times pressure started


@dataclass(frozen=True)
class HookView:
    """One notify hook's totals (director.admin.notify)."""

    runs: int = 0
    failed: int = 0
    killed: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class HealthCounts:
    """Health-check totals over the node's life, and the notify hooks' per hook."""

    probes: int = 0
    failures: int = 0
    killed: int = 0
    hooks: tuple[tuple[str, HookView], ...] = ()


@dataclass(frozen=True)
class WorkerView:
    """One packet worker (``workers:`` >= 2), from its last report (every 100 ms)."""

    index: int
    up: bool
    pid: int = 0
    forwarded: int = 0  # packets its services forwarded
    conns: int = 0  # entries in its shard of the table
    ring_drops: int = 0  # frames the kernel dropped on its receive rings
    cpu_seconds: float = 0.0


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
    defense: DefenseView = DefenseView()
    health: HealthCounts = HealthCounts()
    workers: tuple[WorkerView, ...] = ()  # empty: the data plane runs in directord itself
    worker_exits: int = 0
    cluster: str = ""  # "none": a static node (node config cluster: none)


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
    synced: bool = False
    """A conn event this backup applied from its master's sync stream (not its own traffic)."""


# ---- the facade -------------------------------------------------------------------------------


class NodeApi(Protocol):
    """What the admin API needs from a node. Implemented by the daemon (and by test fakes)."""

    def status(self) -> NodeStatus: ...

    def services(self) -> list[ServiceView]: ...

    def conns(self, flt: ConnFilter, after: tuple[int, ...] | None = None) -> Iterable[ConnView]:
        """Matching entries (templates included), lazily, in the stable paging order of `table_conns`
        (each view's `cursor`); with `after` (a cursor) only the entries past it."""
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

    async def edit_service(self, ref: SvcRef, fields: Mapping[str, Any]) -> int:
        """Set some fields of one service (config schema; None removes an optional one); its
        dests and name stay. InvalidArgument for `name`/`dests`, NotFound for no such service."""
        ...

    async def put_dest(self, ref: SvcRef, spec: Mapping[str, Any], *, create_only: bool) -> int: ...

    async def delete_dest(self, ref: SvcRef, daddr: int, dport: int) -> int: ...

    async def edit_dest(self, ref: SvcRef, daddr: int, dport: int, *, weight: int | None,
                        u_threshold: int | None, l_threshold: int | None,
                        fields: Mapping[str, Any] | None = None) -> int:
        """Set the given values (and `fields`, other dest fields; None removes one) of one dest."""
        ...

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

    def subscribe(self) -> EventStream: ...


class EventStream(Protocol):
    """One watcher's bounded stream of events (`director.admin.hub.Subscription`)."""

    async def get(self) -> NodeEvent: ...

    def close(self) -> None: ...

    def __enter__(self) -> EventStream: ...

    def __exit__(self, *exc: object) -> None: ...


# ---- names of the nouns ------------------------------------------------------------------------


def fmt_addr(addr: int) -> str:
    return str(ipaddress.IPv4Address(addr) if addr < 2**32 else ipaddress.IPv6Address(addr))


def proto_name(protocol: int) -> str:
    try:
        return Proto(protocol).name.lower()
    except ValueError:
        return str(protocol)


def svc_label(key: SvcKey) -> str:
    proto, vaddr, vport, fwmark = key
    if fwmark:
        return f"fwm/{fwmark}"
    return f"{proto_name(proto)}/{fmt_hostport(vaddr, vport)}"


def fmt_hostport(addr: int, port: int) -> str:
    text = fmt_addr(addr)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"
