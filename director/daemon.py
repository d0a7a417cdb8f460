"""`directord`: one director node — data plane, conn table, sync, election, config, admin.

Theory of operation
-------------------
Everything runs on one asyncio loop, so the conn table needs no locks: the AF_PACKET fds are loop
readers (director.dataplane.io.plane), gRPC is grpc.aio (sync and admin), etcd is aetcd. ``main`` only
parses arguments and wires the parts; `Node` owns them and reacts to role changes:

* **backup** (BACKUP / STEPPED_DOWN): the director answers no ARP and forwards nothing; the sync
  backup copies the master's table (its address and epoch come from the leader record in etcd);
  the node becomes *ready* to campaign once that copy is live (or when no master exists).
* **master** (MASTER): the elector calls `_start_forwarding(epoch)` synchronously, inside the loop turn that
  won the election: stop following, serve the sync stream with the new epoch, activate the director (ARP
  answers + gratuitous ARPs), accept mid-flow TCP without an entry for `sloppy_grace` seconds (consistent
  schedulers pick the same dest again), and run the health checks.
* **step down** (lease renewal overdue, resign, shutdown): `_stop_forwarding()` deactivates the director
  at once, before the lease can expire anywhere else.

With ``workers: N`` (N >= 2) N worker processes forward instead (director.workers.pool; ``table`` is
then the replica of their shards, read by sync and admin; docs/DATAPLANE.md "Workers").

Config comes from etcd (``config/``), is validated by director.config.services and applied in place; invalid
config is refused with a log line naming the field, and the running config stays. SIGTERM resigns
(after flushing sync to every backup), SIGUSR1 resigns and stays as a backup (graceful failover);
SIGHUP and SIGUSR2 are logged and ignored.
Role changes and the first forwarded packet after a takeover are appended to ``events_file`` as
JSON lines with wall-clock times, so drills can measure takeover and check for split brain.

**Static mode** (``cluster: none``, docs/CONFIG.md): no etcd, election or sync. Services come from
``services_file`` (a bad one stops the start; SIGHUP re-applies it in place, a bad one is refused and
the running config kept); the node starts as ``static_role``, is never fenced (``fence_file`` aside);
SIGUSR2 takes over (gratuitous ARPs), SIGUSR1 stands by. Admin, metrics, health checks and workers work
as in a cluster; admin config writes (through etcd) are refused. ``stats_file``: counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from director import __version__
from director.admin.api import NodeEvent
from director.admin.metrics import MetricsServer, serve_metrics
from director.admin.node import NodeAdmin, start_admin
from director.admin.notify import NotifyRunner
from director.admin.sdnotify import Notifier, stopping, supervise
from director.admin.views import dest_label
from director.cluster.election import LeaderRecord, Role
from director.cluster.elector import NodeInfo, RoleChange
from director.cluster.elector_thread import ElectorThread
from director.cluster.release import LeaseRecord, write_lease_file
from director.cluster.store import ConfigSnapshot, EtcdStore
from director.cluster.track import LinkTracker
from director.config.node import NodeConfig, NodeConfigError, parse_node_config
from director.config.services import Config, ConfigError, apply_timeouts, apply_to_services
from director.config.watch import ConfigUpdate, config_updates, validate_snapshot
from director.dataplane.core import Director
from director.dataplane.io.plane import DEFAULT_RING, DataPlane
from director.health.service import HealthService
from director.logs import FORMATS, setup_logging
from director.node import (
    EventLog,
    FenceFile,
    NodeFiles,
    NoEtcd,
    arp_sender_outside,
    core_config_for,
    default_lease_file,
    defense_settings,
    load_services,
    mem_total,
    publish_conns,
    read_services,
    rss_bytes,
)
from director.services.service import ServiceTable
from director.services.stats import StatsEstimator
from director.table.conn import ConnTable
from director.table.defense_policy import DefensePolicy
from director.table.events import ConnEvent, RawEvent, cook
from director.workers.pool import WorkerPool
from syncd.backup import SyncBackup
from syncd.server import SyncServer, create_sync_server

log = logging.getLogger("directord")


class Node:
    """One director node. Build with `Node(cfg)`, then `await node.start()` / `await node.run()`."""

    def __init__(self, cfg: NodeConfig, *, lease_file: str | None = None) -> None:
        self.cfg = cfg
        self.lease_file = lease_file
        self._lease_recorded = 0
        self.clock = time.monotonic
        self.started = time.time()
        self.table = ConnTable(self.clock, bits=cfg.table_bits)
        self.services = ServiceTable()
        self.core_cfg = core_config_for(cfg)
        self.director = Director(self.table, self.services, self.clock, self.core_cfg)
        self.defense = DefensePolicy(defense_settings(cfg.defense, mem_total()))
        self.director.gate.max_conns = self.defense.settings.max_conns
        self._rng = random.Random()
        # fenced until the election says so (a static node, with no lease to lose: unless its fence_file does)
        self.pool = WorkerPool.for_node(cfg, self.director, self.defense.settings.max_conns)
        """``workers: N`` (N >= 2; else None): stands where the DataPlane stands (director.workers.pool)."""
        self.dataplane = self.pool or DataPlane(
            self.director, cfg.external, cfg.internal, ring=DEFAULT_RING if cfg.rx_ring else None,
            tx_ring=cfg.tx_ring, master_until=math.inf if cfg.static else None)
        self.store = NoEtcd() if cfg.static else EtcdStore(list(cfg.etcd_endpoints), prefix=cfg.etcd_prefix,
                                                          cluster=cfg.cluster)  # NoEtcd: refuses writes
        self.events = EventLog(cfg.events_file, cfg.node_id)
        self.files = NodeFiles(cfg.stats_file, FenceFile(cfg.fence_file) if cfg.fence_file else None,
                               self.stats_snapshot, self.dataplane.set_master_until, self.events)
        self.estimator = StatsEstimator()
        self.backup = SyncBackup(None, cfg.node_id, self.table, self.services,
                                 epoch_source=self._known_epoch, tls=cfg.sync_tls)
        self.sync: SyncServer | None = None
        self.elector: ElectorThread | None = None
        self.links = LinkTracker((cfg.external, cfg.internal), on_down=self._on_link_down)
        self.config_revision = 0
        self.config_error = ""
        self.config_snapshot: ConfigSnapshot | None = None
        self.config: Config | None = None
        """The running config, parsed once per applied snapshot (admin reads and health re-applies use it)."""
        self.role = Role.BACKUP
        self.master: LeaderRecord | None = None
        self.role_changes = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first_forward_task: asyncio.Task[None] | None = None
        self.health = HealthService(cfg.node_id, self.clock, epoch=self._known_epoch,
                                    on_change=self._on_health_change)
        self.api = NodeAdmin(self)
        self.table.events.tap = self._tap_conn_events
        self.backup.on_applied = (self._tap_synced_events if self.pool is None
                                  else self.pool.synced_router(self._tap_synced_events))
        if self.pool is None:  # the events only feed watchers: build them only while someone watches
            self.backup.applier.wants_events = lambda: bool(self.api.hub.watchers)
        else:
            self.pool.on_worker = lambda kind, i, fields: self.events.write(kind, worker=i, **fields)
            self.pool.on_random_drop = self.defense.note_random_drop
            self.pool.on_fatal = self._workers_failed
        self.admin: Any = None
        self.metrics: MetricsServer | None = None

    # -- readiness and epochs ---------------------------------------------------------------------
    def _known_epoch(self) -> int:
        return self.master.epoch if self.master is not None else 0

    def ready(self) -> bool:
        """Campaign only with both links up and a table in sync with the current master (or none).

        Called on the election thread: reads plain attributes only."""
        if self.config_snapshot is None or not self.links.all_up or (self.pool and not self.pool.ready):
            return False
        # the election's own view: fresher than self.master, which the main loop updates later
        ldr = self.elector.master if self.elector is not None and self.elector.started else self.master
        if ldr is None or ldr.node_id == self.cfg.node_id:
            return True
        return self.backup.fit_for(ldr.epoch)  # in sync, or was when that master's stream ended

    # -- fencing (on the election thread) ------------------------------------------------------------
    def _on_fence(self, until: float | None) -> None:
        """The election moved the mastership deadline: the packet path reads it before every batch.

        Runs on the election thread, so a step-down fences the data plane even while the main loop
        is busy. On a win it also records the lease for the process-exit hook (director.cluster.release)
        before the first packet can be forwarded."""
        self.dataplane.set_master_until(until)
        if until is not None and self.lease_file and self.elector is not None:
            lease_id = self.elector.elector.machine.lease.lease_id
            if lease_id and lease_id != self._lease_recorded:
                try:
                    write_lease_file(self.lease_file, LeaseRecord(
                        tuple(self.cfg.etcd_endpoints), self.cfg.etcd_prefix, self.cfg.cluster,
                        self.cfg.node_id, lease_id, os.getpid(), self.elector.elector.machine.epoch))
                    self._lease_recorded = lease_id
                except OSError as err:
                    log.error("cannot record the lease in %s (a crash will wait for the TTL): %s",
                              self.lease_file, err)

    # -- static stability: promises (docs/HA.md) -------------------------------------------------------
    def _on_promise_given(self, until: float, epoch: int) -> None:
        """Backup: we promised the master of `epoch` not to campaign before `until`."""
        if self.elector is not None:
            self.elector.hold_promise(until, epoch)

    def _on_promises_changed(self) -> None:
        """Master: a backup's promise moved; the election forwards on the earliest required one."""
        if self.elector is None or self.sync is None:
            return
        required = self.elector.required
        promises = self.sync.promises()
        until = min((promises.get(node, 0.0) for node in required), default=math.inf)
        self.elector.grant_promises(until, required)

    def _on_link_down(self, ifname: str) -> None:
        """A tracked link lost carrier (on the tracker's thread): stop forwarding now, resign."""
        self.events.write("link_down", ifname=ifname)  # any role: a backup now reports not ready
        self.notify.role("fault", reason=f"link {ifname} down")
        if self.elector is None or self.elector.role is not Role.MASTER:
            return
        log.warning("link %s is down: resigning mastership", ifname)
        self.dataplane.set_master_until(None)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._resign_now()))

    def _workers_failed(self, why: str) -> None:
        """Packet workers keep crashing (director.workers.pool): stop forwarding, hand the mastership over
        (a static node has nobody to hand it to: it goes on trying)."""
        self.events.write("workers_failed", why=why)
        if self.cfg.static:
            return
        self.dataplane.set_master_until(None)
        asyncio.ensure_future(self._resign_now())

    async def _resign_now(self) -> None:
        if self.elector is not None and self.elector.role is Role.MASTER:
            await self.elector.resign()

    # -- role callbacks (posted to the main loop by the election thread) ------------------------------
    def _start_forwarding(self, epoch: int) -> None:
        self.role = Role.MASTER
        self.events.write("master", epoch=epoch)
        self.backup.set_master(None, epoch)
        if self.sync is not None:
            self.sync.master.promising = True
            self.sync.set_epoch(epoch)  # a resume with the same epoch keeps the incarnation: no resnapshot
            self.sync.start_serving()
        self.director.sloppy_until = self.clock() + self.cfg.sloppy_grace
        if self.pool is not None:
            self.pool.set_active(True, self.director.sloppy_until)
        self.dataplane.send(self.director.set_active(True))
        self.events.write("forwarding", epoch=epoch)
        self._first_forward_task = asyncio.ensure_future(self._watch_first_forward(epoch))
        asyncio.ensure_future(self._repeat_garp())
        self.health.set_master(True)

    def _stop_forwarding(self) -> None:
        was = self.director.active
        self.director.set_active(False)
        if self.pool is not None:
            self.pool.set_active(False)
        if self.sync is not None:  # keep the stream (a stepped-down master may resume), ask no promises
            self.sync.master.promising = False
        if self._first_forward_task is not None:
            self._first_forward_task.cancel()
        self.health.set_master(False)
        if was:
            self.events.write("stopped_forwarding")

    def _on_change(self, change: RoleChange) -> None:
        self.role = change.role
        self.role_changes += 1
        self.master = change.master
        self.notify.role(change.role.name, epoch=change.epoch, master=getattr(change.master, "node_id", None))
        self.events.write("role", role=change.role.name, epoch=change.epoch,
                          master=change.master.node_id if change.master else None)
        self.api.hub.publish(NodeEvent(kind="role", time=time.time(), role=change.role.name.lower(),
                                       epoch=change.epoch,
                                       message=f"leader {change.master.node_id if change.master else '-'}"))
        if change.role is not Role.MASTER and not change.uncertain and self.sync is not None \
                and self.sync.serving:
            self.sync.stop_serving()  # another master, resigned or stopped: the stream ends
        ldr = change.master
        if change.role is not Role.MASTER and ldr is not None and ldr.node_id != self.cfg.node_id:
            self.backup.set_master(ldr.sync_addr or None, ldr.epoch)
            self.backup.start()

    async def _repeat_garp(self) -> None:
        """Gratuitous ARPs again after 0.2 s and 1 s: one lost frame must not strand clients."""
        for delay in (0.2, 1.0):
            await asyncio.sleep(delay)
            if self.director.active:
                self.dataplane.send_gratuitous_arp()

    def _forwarded(self) -> int:
        return sum(s.counters.inpkts + s.counters.outpkts for s in self.services)

    async def _watch_first_forward(self, epoch: int) -> None:
        base = self._forwarded()
        while self.director.active:
            if self._forwarded() != base:
                self.events.write("first_forward", epoch=epoch)
                return
            await asyncio.sleep(0.002)

    # -- config -----------------------------------------------------------------------------------
    def apply_snapshot(self, snap: ConfigSnapshot) -> bool:
        """Validate and apply one config snapshot; on error keep the running config."""
        return self.apply_update(validate_snapshot(snap))

    def apply_update(self, upd: ConfigUpdate[ConfigSnapshot]) -> bool:
        """Apply one validated snapshot; a refused one keeps the running config."""
        snap, cfg, err = upd.snapshot, upd.config, upd.error
        if cfg is None:
            err = err or ConfigError(["(internal): no config and no error"])
            self.config_error = str(err)
            log.error("config at revision %d refused, running config kept: %s", snap.revision, err)
            self.events.write("config_refused", revision=snap.revision, error=str(err))
            self.api.hub.publish(NodeEvent(kind="config", time=time.time(), revision=snap.revision,
                                           message=f"refused: {err}"))
            return False
        self.config = cfg
        self._reconcile()
        apply_timeouts(cfg.timeouts, self.core_cfg.timeouts)
        self.core_cfg.ext_addr = arp_sender_outside(self.services)
        self.config_snapshot = snap
        self.config_revision = snap.revision
        self.config_error = ""
        self.health.reconfigure(cfg)
        self.api.hub.publish(NodeEvent(kind="config", time=time.time(), revision=snap.revision,
                                       message=f"{len(self.services)} services"))
        self.events.write("config_applied", revision=snap.revision, services=len(self.services),
                          dests=sum(len(s.dests) for s in self.services))
        return True

    def _reconcile(self) -> None:
        """Bring the live services in line with the running config and the published health verdicts."""
        if self.config is None:
            return
        apply_to_services(self.config, self.services, down=self.health.down_keys())
        self.health.apply_weights(self.services)  # misc `dynamic` checks' weights
        self.backup.rebind_pending()
        if self.pool is not None:
            self.pool.push_config(self.config, self.health.down_keys(), self.health.weights())

    def _tap_conn_events(self, events: list[RawEvent]) -> None:
        """Conn events the sync master drained, for `directorctl watch` (only while someone watches)."""
        publish_conns(self.api.hub, (cook(ev) for ev in events), self.clock, synced=False)

    def _tap_synced_events(self, events: list[ConnEvent]) -> None:
        """Conn events this backup applied from its master's stream, marked synced, for watchers."""
        publish_conns(self.api.hub, events, self.clock, synced=True)

    def _on_health_change(self, newly_down: frozenset[Any], newly_up: frozenset[Any]) -> None:
        """A published health verdict changed: re-apply the config with the new down set."""
        self.events.write("health", down=len(newly_down), up=len(newly_up))
        for key in newly_down | newly_up:
            self.notify.dest(key, key in newly_up, self.health.verdicts.get(key, {}).get("detail", ""))
            self.api.hub.publish(NodeEvent(kind="health", time=time.time(), dest=dest_label(key),
                                           up=key in newly_up))
        self._reconcile()
        if self.role is Role.MASTER and self.pool is not None:  # the templates live in the workers
            self.pool.invalidate_down(newly_down, self.health.expire_quiescent)
        elif self.role is Role.MASTER:  # a backup's synced templates are the master's to invalidate
            self.health.invalidate_down(self.table, newly_down)

    async def _config_loop(self) -> None:
        # validation runs in a worker thread: a hostile or huge document never blocks the loop,
        # and a refused one never ends the watch (director.config.watch)
        async for upd in config_updates(self.store.watch_config()):
            self.apply_update(upd)
            if self.elector is not None:
                self.elector.poke()

    # -- periodic work ----------------------------------------------------------------------------
    def defend(self, now: float) -> None:
        """IPVS's defense, once a second: levels from table size and RSS for the packet path (drop rate,
        secure_tcp); the master's tables run random_drop while drop_entry is engaged (backups: EXPIREs)."""
        d = self.defense.update(self.table.count, rss_bytes(), now)
        self.director.gate.todrop.set_rate(d.drop_rate)
        self.core_cfg.timeouts.secure_tcp = d.secure_tcp
        if self.pool is not None:  # the workers' tables are the real ones: each drops from its shard
            self.pool.push_defense(d.drop_rate, d.secure_tcp, d.drop_entry)
        elif d.drop_entry and self.director.active:
            self.defense.note_random_drop(self.table.random_drop(self._rng))

    async def _timer_loop(self) -> None:
        """Conn timers, neighbour probes, defense. Sleeps until the table's next deadline (at most 100 ms)."""
        last_probe = last_neigh = last_defense = 0.0
        while True:
            if self.pool is None:  # a replica of the workers' shards is never ticked (pool docstring)
                self.table.tick()
            now = self.clock()
            if now - last_defense >= 1.0:
                last_defense = now
                self.defend(now)
            if self.estimator.due(now):
                self.estimator.update(self.services, now)
            if now - last_probe > 1.0:
                last_probe = now
                with contextlib.suppress(OSError):
                    self.dataplane.probe_neighbours()
            if now - last_neigh > 60.0:  # bounded neighbour caches; dests are re-probed above
                last_neigh = now
                self.director.expire_neighbours()
            nxt = self.table.next_deadline()
            delay = 0.1 if nxt is None else min(0.1, max(0.005, nxt - now))
            await asyncio.sleep(delay)

    async def _ready_loop(self) -> None:
        """Tell the elector when readiness may have changed; log sync state flips as events."""
        last: bool | None = None
        last_sync: bool | None = None
        while True:
            r = self.ready()
            if r != last and self.elector is not None:
                self.elector.poke()
                last = r
            in_sync = self.backup.in_sync
            if in_sync != last_sync:
                self.events.write("sync_state", in_sync=in_sync, conns=self.table.count,
                                  master=self.backup.target)
                last_sync = in_sync
            await asyncio.sleep(0.05)

    # -- static mode (cluster: none) ------------------------------------------------------------------
    def _start_static(self) -> None:
        """The services file, applied before any socket opens (main checked it); the data plane
        unfenced, unless the fence file says otherwise."""
        assert self.cfg.services_file is not None
        self.apply_update(ConfigUpdate(ConfigSnapshot(1), config=load_services(self.cfg.services_file)))
        self.dataplane.set_master_until(math.inf)
        self.files.poll_fence()

    def reload_static(self) -> None:
        """SIGHUP: re-read the services file and apply it in place (services, dests and conns stay,
        director.config.services.apply_to_services); a bad or unreadable file keeps the running config."""
        assert self.cfg.services_file is not None
        self.apply_update(read_services(self.cfg.services_file, self.config_revision + 1))

    def set_static_role(self, master: bool) -> None:
        """Take over (forward, gratuitous ARPs) or stand by (answer and forward nothing): at the start
        from ``static_role``, then SIGUSR2 / SIGUSR1. The operator keeps one master per virtual MAC."""
        if master != (self.role is Role.MASTER):
            me = LeaderRecord(self.cfg.node_id, admin_addr=self.cfg.admin_listen or "") if master else None
            self._on_change(RoleChange(Role.MASTER if master else Role.BACKUP, me, 0, time.time()))
            self._start_forwarding(0) if master else self._stop_forwarding()

    def stats_snapshot(self) -> dict[str, Any]:
        """The ``stats_file``: the data plane's counters, the node's role and config state."""
        return {**self.dataplane.stats(), "role": self.role.name.lower(), "ready": self.ready(),
                "config_revision": self.config_revision, "config_error": self.config_error}

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.notify = NotifyRunner(cfg.notify, cfg.node_id, cfg.cluster)  # role/dest hooks, on this loop
        self.links.start()
        if cfg.static:
            self._start_static()
        else:
            await self._start_sync()
        self.dataplane.attach(loop)
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="timers"))
        if self.files.wanted:
            self._tasks.append(asyncio.create_task(self.files.run(), name="files"))
        if not cfg.static:
            await self.store.connect()
            self._tasks.append(asyncio.create_task(self._config_loop(), name="config"))
            self._tasks.append(asyncio.create_task(self._ready_loop(), name="ready"))
            self._tasks.append(asyncio.create_task(self.health.run(self.store), name="health"))
        _api, self.admin = await start_admin(self)
        if cfg.metrics_listen:
            self.metrics = await serve_metrics(self.api, cfg.metrics_listen)
        if cfg.static:
            self.set_static_role(cfg.static_role == "master")
        else:
            await self._start_election()
        self.events.write("started", pid=os.getpid())

    async def _start_sync(self) -> None:
        cfg = self.cfg
        self.sync, _port = await create_sync_server(cfg.sync_listen, self.table, self.services, 0,
                                                    cfg.sync_tls, clock=self.clock)
        self.sync.master.on_promise = self._on_promises_changed
        if self.pool is not None:  # the table is the workers' replica: they know its real deadlines
            self.sync.master.on_stale = self.pool.ask_expires
        self.backup.on_promise = self._on_promise_given

    async def _start_election(self) -> None:
        cfg = self.cfg
        node = NodeInfo(cfg.node_id, cfg.sync_advertise, cfg.admin_listen or "", cfg.priority)
        self.elector = ElectorThread(
            lambda: EtcdStore(list(cfg.etcd_endpoints), prefix=cfg.etcd_prefix, cluster=cfg.cluster),
            node, ttl=max(1, round(cfg.lease_ttl)), ready=self.ready,
            on_start_forwarding=self._start_forwarding, on_stop_forwarding=self._stop_forwarding,
            on_change=self._on_change, on_fence=self._on_fence, preempt=cfg.preempt,
            member_info={"sync_addr": cfg.sync_advertise, "admin_addr": cfg.admin_listen or "",
                         "version": __version__})
        await self.elector.start()

    async def resign(self) -> None:
        """Graceful failover: flush sync to every backup, then hand the lease over."""
        if self.elector is None or self.role is not Role.MASTER:
            return
        if self.sync is not None:
            acked = await self.sync.flush(timeout=5.0)
            self.events.write("sync_flushed", all_acked=acked)
        await self.elector.resign()

    async def stop(self) -> None:
        """Clean stop: resign (after flushing sync), then close every part, each within a deadline."""
        self.events.write("stopping")
        if self.role is Role.MASTER:
            await self._bounded("resign", self.resign(), 8.0)
        if self.elector is not None:
            await self._bounded("elector", self.elector.stop(), 3.0)
        for t in self._tasks:
            t.cancel()
        await self._bounded("tasks", asyncio.gather(*self._tasks, return_exceptions=True), 2.0)
        await self._bounded("backup", self.backup.stop(), 2.0)
        if self.sync is not None:
            await self._bounded("sync server", self.sync.stop(), 2.0)
        await self._bounded("health", self.health.stop(), 2.0)
        if self.admin is not None:
            await self._bounded("admin server", self.admin.stop(0.5), 2.0)
        if self.metrics is not None:
            await self._bounded("metrics server", self.metrics.stop(), 2.0)
        self.links.stop()
        self.dataplane.detach()
        await self._bounded("etcd client", self.store.close(), 2.0)
        await self._bounded("notify hooks", self.notify.stop("shutdown"), self.cfg.notify.timeout + 2.0)
        self.events.write("stopped")

    async def _bounded(self, what: str, aw: Any, timeout: float) -> None:
        try:
            await asyncio.wait_for(aw, timeout)
        except (TimeoutError, asyncio.CancelledError):
            log.warning("stopping %s took longer than %.0f s; going on", what, timeout)
        except Exception:  # shutdown goes on whatever one part does
            log.exception("stopping %s failed", what)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        if self.cfg.static:  # manual roles: SIGUSR1 stands by (as a resign does), SIGUSR2 takes over
            loop.add_signal_handler(signal.SIGUSR1, self.set_static_role, False)
            loop.add_signal_handler(signal.SIGUSR2, self.set_static_role, True)
            loop.add_signal_handler(signal.SIGHUP, self.reload_static)
        else:  # a static node's SIGHUP / SIGUSR2 (reload / take over) must not kill a cluster member
            loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(self.resign()))
            for sig in (signal.SIGHUP, signal.SIGUSR2):
                loop.add_signal_handler(sig, log.warning, "%s ignored (not a static node)", sig.name)
        # systemd (Type=notify): READY=1 once serving (master, or ready: in sync), WATCHDOG=1 from this loop
        sd = Notifier.from_env()
        self._tasks.append(asyncio.create_task(supervise(
            sd, lambda: self.role is Role.MASTER or self.ready(),
            lambda: self.role.name.lower() + ("" if self.ready() else ", not in sync")), name="sd_notify"))
        await self.start()
        # The conn table makes no reference cycles: keep the cyclic GC off the packet path's back.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        await self._stopping.wait()
        stopping(sd)
        await self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="directord", description="run one director node")
    p.add_argument("--version", action="version", version=f"directord {__version__}")
    p.add_argument("-c", "--config", required=True, help="node YAML file")
    p.add_argument("--log-level", default=os.environ.get("DIRECTORD_LOG", "info"))
    p.add_argument("--log-format", choices=FORMATS, default="auto",
                   help="journal (priority prefixes, under systemd), text, json; auto picks journal under "
                        "journald, else json if the node YAML says log_json: true, else text")
    p.add_argument("--lease-file", default=default_lease_file(),
                   help="where the master records its etcd lease for the exit hook (`directorctl "
                        "release-lease`); default $RUNTIME_DIRECTORY/lease under systemd, else none")
    args = p.parse_args(argv)
    try:
        cfg = parse_node_config(Path(args.config).read_bytes())
    except (OSError, NodeConfigError) as err:
        print(f"directord: {args.config}: {err}", file=sys.stderr)
        return 2
    try:  # static mode: a bad services file stops the start before any socket is opened
        if cfg.services_file is not None:
            load_services(cfg.services_file)
    except (OSError, ConfigError) as err:
        print(f"directord: services_file: {err}", file=sys.stderr)
        return 2
    setup_logging(cfg.node_id, fmt=args.log_format, log_json=cfg.log_json, level=args.log_level)
    log.info("directord %s node %s on %s (pid %d)", __version__, cfg.node_id, socket.gethostname(),
             os.getpid())
    asyncio.run(Node(cfg, lease_file=args.lease_file).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
