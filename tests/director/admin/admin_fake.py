"""An in-memory NodeApi for admin/CLI/metrics tests: a fake only of the etcd and election side.

The tables and the config model are real (ServiceTable, ConnTable, StatsEstimator, EventHub,
director.config.services); "etcd" is a dict name -> canonical service document (config.service_dict) with a
revision counter, applied to the live tables the way a config watch does
(config.apply_to_services edits existing VirtualService/Dest objects in place, so conns stay bound).

`LoopThread` runs an asyncio loop in a thread so synchronous gRPC clients and the CLI can call
a server living in that loop.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import yaml

from director.admin.api import (
    ApplyResult,
    BackupSync,
    Conflict,
    ConnFilter,
    ConnView,
    CounterValues,
    NodeEvent,
    NodeStatus,
    NotFound,
    NotMaster,
    RateValues,
    ServiceView,
    StatsView,
    SvcRef,
)
from director.admin.hub import EventHub, Subscription
from director.admin.node import merge_fields
from director.admin.views import (
    configured_weights,
    conn_event,
    diff_documents,
    find_service,
    service_view,
    table_conns,
)
from director.config import services as config
from director.services.service import Dest, DestKey, ServiceTable, VirtualService
from director.services.stats import StatsEstimator
from director.table.conn import ConnTable
from director.types import ConnFlags, Proto

T = TypeVar("T")


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


class FakeNode:
    def __init__(self, node_id: str = "n1", role: str = "master") -> None:
        self.now = 1000.0
        self.clock = lambda: self.now
        self.node_id = node_id
        self.role = role
        self.master_id = node_id if role == "master" else "n0"
        self.epoch = 7
        self.role_changes = 1
        self.services_tab = ServiceTable()
        self.table = ConnTable(self.clock)
        self.table.events.enabled = True
        self.est = StatsEstimator()
        self.hub = EventHub()
        self.revision = 1
        self.docs: dict[str, dict[str, Any]] = {}
        self.timeouts: dict[str, float] = {"tcp": 900, "tcpfin": 120, "udp": 300}
        self.health: dict[DestKey, str] = {}
        self.drops = {"no_service": 3, "bad_checksum": 1}
        self.backups = (BackupSync("n2", "streaming", 4, 0.01),)

    # ---- test helpers (call in the loop thread) ----------------------------------------------

    def docs_from(self, document: str) -> None:
        """Load a config synchronously (what apply_config does, without the coroutine)."""
        for svc in config.parse_config(document).services:
            self.docs[svc.name] = config.service_dict(svc)
        self._commit()

    def svc(self, port: int) -> VirtualService:
        return next(s for s in self.services_tab if s.port == port)

    def add_conn(self, svc: VirtualService, caddr: str, cport: int, dest: Dest, *, state: int = 1,
                 template: bool = False) -> None:
        flags = int(ConnFlags.TEMPLATE) if template else 0
        self.table.new(svc.protocol, ip(caddr), cport, svc.addr, svc.port, dest.addr, dest.port, flags,
                       dest, state=0, timeout=60.0)
        c = self.table.get((svc.protocol, ip(caddr), cport, svc.addr, svc.port, dest.addr, dest.port,
                            svc.fwmark, template))
        assert c is not None
        if state:
            self.table.set_state(c, state, 900.0)
        self.pump()

    def pump(self) -> None:
        """Move conn-table events into the hub (the daemon does this from the feed's on_ready)."""
        for ev in self.table.events.drain():
            self.hub.publish(conn_event(ev, self.now, 1.7e9 + self.now))

    def traffic(self, svc: VirtualService, dest: Dest, pkts: int, nbytes: int, dt: float) -> None:
        for c in (svc.counters, dest.counters):
            c.inpkts += pkts
            c.inbytes += nbytes
            c.conns += 1
        self.now += dt
        self.est.update(self.services_tab, self.now)

    # ---- reads -------------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        templates = sum(1 for c in self.table if c.flags & ConnFlags.TEMPLATE)
        return NodeStatus(
            node_id=self.node_id, role=self.role, epoch=self.epoch, master_id=self.master_id,
            master_sync_addr="198.18.0.1:7100", backups=self.backups,
            conns=self.table.count - templates, templates=templates, services=len(self.services_tab),
            dests=sum(len(s.dests) for s in self.services_tab), uptime=self.now - 900.0, version="test",
            config_revision=self.revision, role_changes=self.role_changes, elections=3)

    def services(self) -> list[ServiceView]:
        return [service_view(s, health=self.health, configured=self._configured(), estimator=self.est)
                for s in self.services_tab]

    def conns(self, flt: ConnFilter, after: tuple[int, ...] | None = None) -> Iterator[ConnView]:
        return table_conns(self.table, flt, self.now, after)

    def stats(self) -> StatsView:
        t = self.est.totals
        return StatsView(tuple(self.services()), CounterValues.of(t), RateValues(*self.est.total_rates()),
                         dict(self.drops), self.status().conns, self.status().templates)

    def config_yaml(self) -> tuple[str, int]:
        texts = {name: yaml.safe_dump(doc) for name, doc in self.docs.items()}
        cfg = config.config_from_texts(texts, yaml.safe_dump(self.timeouts))
        return config.dump_config(cfg), self.revision

    # ---- writes ("etcd") ---------------------------------------------------------------------

    async def apply_config(self, document: str, *, dry_run: bool, prune: bool) -> ApplyResult:
        cfg = config.parse_config(document)  # ConfigError -> INVALID_ARGUMENT in the admin layer
        new = {svc.name: config.service_dict(svc) for svc in cfg.services}
        changes = diff_documents(self.docs, new, prune=prune)
        if dry_run or not changes:
            return ApplyResult(changes, 0)
        for ch in changes:
            if ch.op == "delete":
                del self.docs[ch.key]
            else:
                self.docs[ch.key] = new[ch.key]
        return ApplyResult(changes, self._commit())

    async def put_service(self, spec: Mapping[str, Any], *, create_only: bool) -> int:
        name = spec.get("name")
        if create_only and name in self.docs:
            raise Conflict(f"service {name} exists")
        self._store(dict(spec))
        return self._commit()

    async def delete_service(self, ref: SvcRef) -> int:
        del self.docs[self._doc_name(ref)]
        return self._commit()

    async def edit_service(self, ref: SvcRef, fields: Mapping[str, Any]) -> int:
        doc = copy.deepcopy(self.docs[self._doc_name(ref)])
        merge_fields(doc, fields)
        self._store(doc)
        return self._commit()

    async def put_dest(self, ref: SvcRef, spec: Mapping[str, Any], *, create_only: bool) -> int:
        doc = copy.deepcopy(self.docs[self._doc_name(ref)])
        same = (spec.get("address"), spec.get("port"))
        dests = [d for d in doc["dests"] if (d["address"], d["port"]) != same]
        if create_only and len(dests) != len(doc["dests"]):
            raise Conflict("dest exists")
        doc["dests"] = [*dests, dict(spec)]
        self._store(doc)
        return self._commit()

    async def delete_dest(self, ref: SvcRef, daddr: int, dport: int) -> int:
        name, i = self._doc_dest(ref, daddr, dport)
        doc = copy.deepcopy(self.docs[name])
        del doc["dests"][i]
        self._store(doc)
        return self._commit()

    async def edit_dest(self, ref: SvcRef, daddr: int, dport: int, *, weight: int | None,
                        u_threshold: int | None, l_threshold: int | None,
                        fields: Mapping[str, Any] | None = None) -> int:
        name, i = self._doc_dest(ref, daddr, dport)
        doc = copy.deepcopy(self.docs[name])
        merge_fields(doc["dests"][i], fields or {})
        for key, value in (("weight", weight), ("u_threshold", u_threshold), ("l_threshold", l_threshold)):
            if value is not None:
                doc["dests"][i][key] = value
        self._store(doc)
        return self._commit()

    async def drain_dest(self, ref: SvcRef, daddr: int, dport: int) -> int:
        return await self.edit_dest(ref, daddr, dport, weight=0, u_threshold=None, l_threshold=None)

    async def set_timeouts(self, timeouts: Mapping[str, float]) -> int:
        merged = {**self.timeouts, **{k: int(v) if float(v).is_integer() else v for k, v in timeouts.items()}}
        t = config.config_from_dict({"timeouts": merged}).timeouts
        assert t is not None
        self.timeouts = {"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp}
        return self._commit()

    def _store(self, doc: dict[str, Any]) -> None:
        """Validate one service document with the real config model and keep its canonical form."""
        others = [d for name, d in self.docs.items() if name != doc.get("name")]
        svc = config.config_from_dict({"services": [doc, *others]}).services[0]  # cross-checked too
        self.docs[svc.name] = config.service_dict(svc)

    def _commit(self) -> int:
        self.revision += 1
        self._reconcile()
        self.hub.publish(NodeEvent(kind="config", time=1.7e9 + self.now, revision=self.revision))
        return self.revision

    # ---- node-local --------------------------------------------------------------------------

    def flush(self) -> int:
        n = self.table.count
        self.table.flush()
        self.pump()
        return n

    def zero_counters(self, ref: SvcRef | None) -> None:
        for svc in [find_service(self.services_tab, ref)] if ref else list(self.services_tab):
            svc.counters.zero()
            for d in svc.dests:
                d.counters.zero()

    async def resign(self) -> tuple[str, int]:
        if self.role != "master":
            raise NotMaster(self.master_id)
        await asyncio.sleep(0)
        self.role, self.master_id, self.epoch = "backup", "n2", self.epoch + 1
        self.role_changes += 1
        self.hub.publish(NodeEvent(kind="role", time=1.7e9 + self.now, role="backup", epoch=self.epoch))
        return self.master_id, self.epoch

    def subscribe(self) -> Subscription:
        return self.hub.subscribe()

    # ---- config -> live tables ---------------------------------------------------------------

    def _doc_name(self, ref: SvcRef) -> str:
        for name, doc in self.docs.items():
            if ref.matches(doc_ref(doc).key):
                return name
        raise NotFound(f"no service {ref}")

    def _doc_dest(self, ref: SvcRef, daddr: int, dport: int) -> tuple[str, int]:
        name = self._doc_name(ref)
        for i, d in enumerate(self.docs[name]["dests"]):
            if ip(d["address"]) == daddr and d["port"] == dport:
                return name, i
        raise NotFound(f"no dest {ipaddress.ip_address(daddr)}:{dport} in service {ref}")

    def _configured(self) -> dict[DestKey, int]:
        texts = {name: yaml.safe_dump(doc) for name, doc in self.docs.items()}
        return configured_weights(config.config_from_texts(texts).services)

    def _reconcile(self) -> None:
        texts = {name: yaml.safe_dump(doc) for name, doc in self.docs.items()}
        config.apply_to_services(config.config_from_texts(texts), self.services_tab)


def doc_ref(doc: Mapping[str, Any]) -> SvcRef:
    return SvcRef(int(Proto[doc.get("protocol", "tcp").upper()]), ip(doc.get("vip", "0.0.0.0")),
                  doc.get("port", 0), doc.get("fwmark", 0))


class LoopThread:
    """An asyncio loop in a daemon thread; run coroutines / callables in it from the test thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        async def wrap() -> T:
            return await coro
        fut: Future[T] = asyncio.run_coroutine_threadsafe(wrap(), self.loop)
        return fut.result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        async def wrap() -> T:
            return fn()
        return self.run(wrap())

    def close(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


WEB_YAML = """\
services:
  - name: web
    protocol: tcp
    vip: 198.18.0.10
    port: 80
    scheduler: wlc
    persistence: {timeout: 300}
    dests:
      - {address: 198.18.1.2, port: 8080, weight: 2}
      - {address: 198.18.1.3, port: 8080, weight: 1}
  - name: dns
    protocol: udp
    vip: 198.18.0.10
    port: 53
    scheduler: rr
    dests:
      - {address: 198.18.1.4, port: 53}
"""
