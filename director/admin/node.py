"""`NodeAdmin`: the daemon's implementation of `director.admin.api.NodeApi`, and `start_admin`.

Theory of operation
-------------------
Reads are snapshots of this node's own live objects (service table, conn table, estimator,
election state, sync status). Config writes never touch the live tables: they read the current
config from etcd, edit the affected service documents (the canonical dicts of
`director.config.services.service_dict`), validate the result with the real config model, and write it back
in one transaction — then every node, this one included, applies it from its config watch. A write
therefore returns the etcd revision that holds it, and an invalid edit is refused before anything
is written (`ConfigError` -> INVALID_ARGUMENT naming the field). Role and config changes are
published to the admin event hub by the daemon; `resign` is the graceful failover.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from director import __version__
from director.admin.api import (
    ApplyResult,
    BackupSync,
    ConfigChange,
    Conflict,
    ConnFilter,
    ConnView,
    CounterValues,
    DefenseView,
    HealthCounts,
    HookView,
    InvalidArgument,
    NodeStatus,
    NotFound,
    NotMaster,
    RateValues,
    ServiceView,
    StatsView,
    SvcRef,
    WorkerView,
    fmt_hostport,
)
from director.admin.hub import EventHub, Subscription
from director.admin.notify import NotifyRunner
from director.admin.server import AdminServer, server_config_from_node, start_server
from director.admin.views import configured_weights, diff_documents, find_service, service_view, table_conns
from director.cluster.election import LeaderRecord, Role
from director.cluster.store import ConfigEdit, ConfigSnapshot, EtcdStore, update_config
from director.cluster.store import apply as etcd_apply
from director.config import edits as config_edits
from director.config import services as config
from director.config.node import NodeConfig
from director.dataplane.core import Director
from director.dataplane.packet import Drop
from director.health.service import HealthService
from director.services.service import ServiceTable
from director.services.stats import StatsEstimator
from director.table.conn import ConnTable
from director.table.defense_policy import DefensePolicy, mode_name
from director.types import Proto
from syncd.server import SyncServer

log = logging.getLogger(__name__)

ROLE_NAMES = {Role.MASTER: "master", Role.BACKUP: "backup", Role.STEPPED_DOWN: "backup",
              Role.CANDIDATE: "candidate", Role.STOPPED: "stopped"}


def _ref_of(doc: Mapping[str, Any]) -> SvcRef:
    return SvcRef(int(Proto[str(doc.get("protocol", "tcp")).upper()]),
                  int(ipaddress.ip_address(doc.get("vip", "0.0.0.0"))), int(doc.get("port", 0)),
                  int(doc.get("fwmark", 0)))


class Workers(Protocol):
    """What admin drives in a node's packet workers (director.workers.pool.WorkerPool)."""

    per_worker: list[dict[str, Any]]
    exits: int

    def flush(self) -> None: ...
    def zero_counters(self, svc_keys: list[Any]) -> None: ...


class Node(Protocol):
    """The parts of a running node (`director.daemon.Node`) the admin API reads and drives.

    Declared here so that admin depends on the layers below it and never on the daemon that wires it.
    """

    cfg: NodeConfig
    clock: Callable[[], float]
    started: float
    table: ConnTable
    services: ServiceTable
    director: Director
    defense: DefensePolicy
    store: EtcdStore
    estimator: StatsEstimator
    health: HealthService
    notify: NotifyRunner
    sync: SyncServer | None
    config: config.Config | None
    config_revision: int
    role: Role
    master: LeaderRecord | None
    role_changes: int

    @property
    def pool(self) -> Workers | None: ...

    @property
    def api(self) -> NodeAdmin: ...

    def ready(self) -> bool: ...

    async def resign(self) -> None: ...


def worker_views(pool: Workers | None) -> tuple[WorkerView, ...]:
    if pool is None:
        return ()
    return tuple(WorkerView(i, bool(r), int(r.get("pid", 0)), int(r.get("forwarded", 0)),
                            int(r.get("conns", 0)), int(r.get("ring_drops", 0)), float(r.get("cpu", 0.0)))
                 for i, r in enumerate(pool.per_worker))


def health_counts(n: Node) -> HealthCounts:
    h = n.health.stats
    hooks = tuple((name, HookView(s.runs, s.failed, s.killed, s.dropped))
                  for name, s in sorted(n.notify.stats.items()))
    return HealthCounts(h.probes, h.failures, h.killed, hooks)


class NodeAdmin:
    """NodeApi over a running node (see `Node`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.hub = EventHub()

    # ---- reads ------------------------------------------------------------------------------
    def status(self) -> NodeStatus:
        n = self.node
        templates = n.table.template_count
        backups: tuple[BackupSync, ...] = ()
        if n.sync is not None and n.sync.serving:
            backups = tuple(BackupSync(f.node_id, "snapshot" if f.state == "snapshot" else "streaming",
                                           f.lag_seqs, f.lag_ms / 1000.0) for f in n.sync.backups())
        ldr = n.master
        return NodeStatus(
            node_id=n.cfg.node_id, role=ROLE_NAMES.get(n.role, "backup"), epoch=ldr.epoch if ldr else 0,
            master_id=ldr.node_id if ldr else "", master_sync_addr=ldr.sync_addr if ldr else "",
            backups=backups, conns=n.table.count - templates, templates=templates,
            services=len(n.services), dests=sum(len(s.dests) for s in n.services),
            uptime=time.time() - n.started, version=_version(), config_revision=n.config_revision,
            role_changes=n.role_changes, elections=n.role_changes, ready=n.ready(),
            defense=defense_view(n.defense, n.director), health=health_counts(n),
            workers=worker_views(n.pool), worker_exits=n.pool.exits if n.pool is not None else 0,
            cluster=n.cfg.cluster)

    def services(self) -> list[ServiceView]:
        cfg = self.node.config
        configured = configured_weights(cfg.services) if cfg is not None else {}
        health = self.node.health.health_view()
        return [service_view(s, health=health, configured=configured, estimator=self.node.estimator)
                for s in self.node.services]

    def conns(self, flt: ConnFilter, after: tuple[int, ...] | None = None) -> Iterator[ConnView]:
        return table_conns(self.node.table, flt, self.node.clock(), after)

    def stats(self) -> StatsView:
        n = self.node
        st = self.status()
        views = tuple(self.services())
        totals = CounterValues(*(sum(getattr(v.counters, f) for v in views)  # live, not the last estimate
                                 for f in ("conns", "inpkts", "outpkts", "inbytes", "outbytes")))
        return StatsView(views, totals, RateValues(*n.estimator.total_rates()),
                         dict(n.director.counters.as_dict()), st.conns, st.templates)

    def config_yaml(self) -> tuple[str, int]:
        cfg = self.node.config
        return (config.dump_config(cfg), self.node.config_revision) if cfg is not None else ("", 0)

    # ---- config writes (through etcd) ----------------------------------------------------------
    # Every write is an *intent* over the stored documents, applied by update_config as a
    # compare-and-swap on the revision it was computed from and re-applied to a fresh read when
    # another writer got in between: a concurrent write is never silently reverted.
    async def _update(self, change: Callable[[dict[str, dict[str, Any]]], None]) -> int:
        def edit(snap: ConfigSnapshot) -> ConfigEdit:
            docs = config_edits.documents(snap.services)
            change(docs)  # may raise NotFound / Conflict / InvalidArgument
            put, delete = config_edits.plan(snap.services, docs)
            return ConfigEdit(put, delete)
        return await update_config(self.node.store, edit, offload=True)

    async def apply_config(self, document: str, *, dry_run: bool, prune: bool) -> ApplyResult:
        # a 1 MB document is seconds of parsing and diffing: never on the loop
        cfg = await asyncio.to_thread(config.parse_config, document)
        snap = await self.node.store.read_config()

        def diff() -> tuple[ConfigChange, ...]:
            new = {svc.name: config.service_dict(svc) for svc in cfg.services}
            return diff_documents(config_edits.documents(snap.services), new, prune=prune)
        changes = await asyncio.to_thread(diff)
        t_text = config.dump_timeouts(cfg.timeouts) if cfg.timeouts is not None else None
        if dry_run or (not changes and t_text is None):
            return ApplyResult(changes, 0)
        texts = await asyncio.to_thread(lambda: {svc.name: config.dump_service(svc) for svc in cfg.services})
        # prune deletes only what the file dropped relative to the revision this diff was made at
        rev = await etcd_apply(self.node.store, texts, t_text, prune=prune, base_revision=snap.revision)
        return ApplyResult(changes, rev)

    def _name_of(self, docs: Mapping[str, Mapping[str, Any]], ref: SvcRef) -> str:
        for name, doc in docs.items():
            if ref.matches(_ref_of(doc).key):
                return name
        raise NotFound(f"no service {ref}")

    async def put_service(self, spec: Mapping[str, Any], *, create_only: bool) -> int:
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("service.name", "a service needs a name")

        def change(docs: dict[str, dict[str, Any]]) -> None:
            if create_only and name in docs:
                raise Conflict(f"service {name} exists; edit it or delete it first")
            docs[name] = copy.deepcopy(dict(spec))
        return await self._update(change)

    async def delete_service(self, ref: SvcRef) -> int:
        def change(docs: dict[str, dict[str, Any]]) -> None:
            del docs[self._name_of(docs, ref)]
        return await self._update(change)

    async def edit_service(self, ref: SvcRef, fields: Mapping[str, Any]) -> int:
        for key in fields:
            if key in _IDENTITY:
                raise InvalidArgument(f"set.{key}", "cannot be edited: delete the service and add it "
                                      "again (dests have their own calls)")

        def change(docs: dict[str, dict[str, Any]]) -> None:
            merge_fields(docs[self._name_of(docs, ref)], fields)
        return await self._update(change)

    def _dest_index(self, doc: Mapping[str, Any], daddr: int, dport: int, ref: SvcRef) -> int:
        for i, d in enumerate(doc.get("dests", [])):
            if int(ipaddress.ip_address(d["address"])) == daddr and int(d["port"]) == dport:
                return i
        raise NotFound(f"no dest {fmt_hostport(daddr, dport)} in service {ref}")

    async def put_dest(self, ref: SvcRef, spec: Mapping[str, Any], *, create_only: bool) -> int:
        def change(docs: dict[str, dict[str, Any]]) -> None:
            doc = docs[self._name_of(docs, ref)]
            same = (str(spec.get("address")), spec.get("port"))
            dests = [d for d in doc.get("dests", []) if (str(d["address"]), d["port"]) != same]
            if create_only and len(dests) != len(doc.get("dests", [])):
                raise Conflict(f"dest {same[0]}:{same[1]} exists in service {ref}")
            doc["dests"] = [*dests, copy.deepcopy(dict(spec))]
        return await self._update(change)

    async def delete_dest(self, ref: SvcRef, daddr: int, dport: int) -> int:
        def change(docs: dict[str, dict[str, Any]]) -> None:
            doc = docs[self._name_of(docs, ref)]
            del doc["dests"][self._dest_index(doc, daddr, dport, ref)]
        return await self._update(change)

    async def edit_dest(self, ref: SvcRef, daddr: int, dport: int, *, weight: int | None,
                        u_threshold: int | None, l_threshold: int | None,
                        fields: Mapping[str, Any] | None = None) -> int:
        for key in fields or {}:
            if key in ("address", "port"):
                raise InvalidArgument(f"set.{key}", "cannot be edited: delete the dest and add it again")

        def change(docs: dict[str, dict[str, Any]]) -> None:
            doc = docs[self._name_of(docs, ref)]
            d = doc["dests"][self._dest_index(doc, daddr, dport, ref)]
            merge_fields(d, fields or {})
            for key, value in (("weight", weight), ("u_threshold", u_threshold),
                               ("l_threshold", l_threshold)):
                if value is not None:
                    d[key] = value
        return await self._update(change)

    async def drain_dest(self, ref: SvcRef, daddr: int, dport: int) -> int:
        return await self.edit_dest(ref, daddr, dport, weight=0, u_threshold=None, l_threshold=None)

    async def set_timeouts(self, timeouts: Mapping[str, float]) -> int:
        def edit(snap: ConfigSnapshot) -> ConfigEdit:
            t = config.parse_timeouts(snap.timeouts) if snap.timeouts else config.TimeoutsConfig()
            merged: dict[str, Any] = {"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp}
            merged.update({k: int(v) if float(v).is_integer() else v for k, v in timeouts.items()})
            parsed = config.config_from_dict({"timeouts": merged}).timeouts
            assert parsed is not None
            return ConfigEdit(timeouts=config.dump_timeouts(parsed))
        return await update_config(self.node.store, edit, offload=True)

    # ---- node-local -------------------------------------------------------------------------------
    def flush(self) -> int:
        n = self.node.table.count
        if self.node.pool is not None:  # the workers' tables; their EXPIRE events empty the replica
            self.node.pool.flush()
        else:
            self.node.table.flush()
        return n

    def zero_counters(self, ref: SvcRef | None) -> None:
        svcs = [find_service(self.node.services, ref)] if ref is not None else list(self.node.services)
        if self.node.pool is not None:  # the node's counters are the workers' sums
            self.node.pool.zero_counters([s.key for s in svcs])
        for svc in svcs:
            svc.counters.zero()
            for d in svc.counted_dests():
                d.counters.zero()

    async def resign(self) -> tuple[str, int]:
        n = self.node
        if n.role is not Role.MASTER:
            raise NotMaster(n.master.node_id if n.master else "")
        await n.resign()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            ldr = n.master
            if ldr is not None and ldr.node_id != n.cfg.node_id:
                return ldr.node_id, ldr.epoch
            await asyncio.sleep(0.02)
        return "", 0

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()


_IDENTITY = ("name", "dests", "protocol", "vip", "port")
"""Fields EditService refuses: they say which service it is (or are edited by the dest calls)."""


def merge_fields(doc: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Set each field of `doc` (a service or dest document); None removes it."""
    for key, value in fields.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = copy.deepcopy(value)


def defense_view(p: DefensePolicy, director: Director) -> DefenseView:
    s, st, drops = p.settings, p.stats, director.counters
    return DefenseView(
        drop_entry=mode_name(p.drop_entry), drop_packet=mode_name(p.drop_packet),
        secure_tcp=mode_name(p.secure_tcp), pressure=st.pressure, drop_rate=p.decision.drop_rate,
        conn_threshold=s.conn_threshold, max_conns=s.max_conns, rss=st.rss, rss_threshold=s.rss_threshold,
        rss_max=s.rss_max, entries_dropped=st.entries_dropped, packets_dropped=drops[Drop.DEFENSE_DROP],
        table_full_drops=drops[Drop.TABLE_FULL], engaged=st.engaged)


def _version() -> str:
    return __version__


async def start_admin(node: Node) -> tuple[NodeAdmin, AdminServer | None]:
    """Serve the admin API of `node` on its configured unix socket / TCP address (if any)."""
    api = node.api
    cfg = server_config_from_node(node.cfg)
    if cfg.listen is None and cfg.unix_path is None:
        return api, None
    server = await start_server(api, cfg)
    return api, server
