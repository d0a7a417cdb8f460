"""directord's packet workers, seen from the parent: spawn, fence, config, events, stats, restarts.

Theory of operation
-------------------
With ``workers: N`` (N >= 2) the parent process keeps everything but the packets: the election (its
own thread), config watch, health checks, sync server and backup, admin and metrics. It owns no
packet socket; :class:`WorkerPool` stands where the in-process ``DataPlane`` stands in
``director.daemon`` (``set_master_until``, ``send``, ``send_gratuitous_arp``, ``attach``,
``detach``) and drives N worker processes (director.workers.worker), each forwarding the clients
of its shard (director.dataplane.io.shard) with its own conn table.

* **Fence**: ``set_master_until`` writes the deadline into the shared page
  (director.workers.fence) that every worker reads before every ring block and TX flush. It is
  called on the election thread (and the link tracker's): a lock keeps the seqlock single-writer.
* **Config**: ``push_config(cfg, down)`` sends the validated ``Config`` the parent applied, with
  the health-checked down set, to every worker (same ``apply_to_services`` code path), and the shard
  mask (widest persistence netmask) when it changed.
* **The parent's table is a replica** of the union of the shards: every worker event batch is
  applied to it with syncd's ``BackupApplier`` (the code a sync backup runs; event feed off during
  the apply), then, while the parent serves sync, the worker's raw events are pushed into the
  replica's feed as they are: the ``SyncMaster`` sees exactly what an in-process master would,
  one stream multiplexing every shard; snapshots, ``ListConns`` and ``Status`` read the replica.
  The replica is never ticked: its entries go away only by a worker's EXPIRE. Traffic extends a
  worker's entry without an event, so when the sync master's refresh pass finds a replica entry not
  extended it asks (``on_stale`` -> ``ask_expires``); the worker answers with its real deadline, the
  pool extends the replica's copy and the next pass sends the REFRESH (as an in-process master would).
* **Backup**: what the parent's ``SyncBackup`` applied to the replica (``on_applied`` events) is
  routed to the owning worker by the shard function (``route_synced``).
* **Stats**: each worker reports its counters every 100 ms; the pool sums them into the parent's
  services, dests and drop counters (so admin, rates and metrics read node totals) and keeps the
  per-worker figures (``per_worker``; also written to ``stats_path`` as JSON once a second).
* **Backpressure**: a worker whose pipe backlog grows too big drops its events and later sends its
  whole shard (``resync``): the pool replaces that shard in the replica and has every backup
  re-snapshot (director.workers.worker, "Backpressure").
* **Global dest counts**: from the workers' own per-dest active/inactive counts the pool sends
  each worker the others' share (``peers``, only when it changed): lc/wlc/sed/nq and the overload
  thresholds see node totals (director.workers.worker, "Global dest counts").
* **Crash**: a worker's exit is seen at once (pidfd readable). The pool spawns it again with the
  same index (so the same shard: the filter is a pure function of the address), pushes the config,
  the role and the shard's entries from the replica (their timers restarted at full timeout: the
  replica holds no live timers). A second restart within ``RESTART_WINDOW`` waits (0.4 s, doubling,
  at most 5 s); more than ``MAX_RESTARTS``: ``on_fatal`` (the daemon resigns) and the pool keeps
  trying at that pace.
* **Defense**: each worker's table is bounded by ``max_conns / N`` (the node's bound shared out;
  a node whose clients all fall into one shard reaches the bound with fewer conns).
* **Parent death**: workers die with it (``PR_SET_PDEATHSIG``). The crash exit hook
  (director.cluster.release) revokes the lease only after the launcher reaped the *whole* node:
  systemd runs ``ExecStopPost=`` once the unit's cgroup (workers included) is empty, the lab kills
  the node's process group; workers are spawned in the parent's process group and cgroup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from director.config.node import NodeConfig
from director.config.services import Config
from director.dataplane.core import Action, CoreConfig, Director
from director.dataplane.io.plane import service_stats
from director.dataplane.io.shard import shard_of, widest_mask
from director.dataplane.packet import Drop
from director.services.service import ServiceTable
from director.table.conn import ConnTable
from director.table.entry import is_v6
from director.table.events import ConnEvent, RawEvent
from director.workers.channel import Channel, Message
from director.workers.fence import SharedFence
from syncd.apply import BackupApplier
from syncd.model import SyncKind, Update

log = logging.getLogger("directord.workers")
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
_SLOTS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_SUMMED = ("ring_packets", "ring_drops", "handler_errors", "tx_errors", "tx_fenced", "ctl_fenced",
           "arp_replies", "echo_replies", "csum_fixed", "cpu")


class WorkerProc:
    """One worker process and its end of the control pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], channel: Channel, pidfd: int) -> None:
        self.proc = proc
        self.channel = channel
        self.pidfd = pidfd
        self.ready = False


class WorkerPool:
    """N packet workers standing in for the node's DataPlane (see the module docstring)."""

    def __init__(self, count: int, ext: str, intf: str, core: CoreConfig, table: ConnTable,
                 services: ServiceTable, *, table_bits: int, max_conns: int,
                 stats_path: str | None = None, drop_counts: list[int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.clock = clock
        """CLOCK_MONOTONIC: one clock for the parent and its workers (event times are on it)."""
        self.ifnames = (ext, intf)
        self.core = core
        self.table = table
        self.services = services
        self.table_bits = table_bits
        self.max_conns = max_conns
        self.stats_path = stats_path
        self.drop_counts = drop_counts
        """The parent's ``Director.counters.counts``: set to the workers' sum."""
        self.fence = SharedFence.create()
        self._fence_lock = threading.Lock()
        self.applier = BackupApplier(table, services)
        self.workers: list[WorkerProc | None] = [None] * count
        self.per_worker: list[dict[str, Any]] = [{} for _ in range(count)]
        self._peers_sent: list[dict[Any, tuple[int, int]]] = [{} for _ in range(count)]
        self.mask = 0xFFFFFFFF
        self.active = False
        self.sloppy_until = 0.0
        self.config: tuple[Config, frozenset[Any]] | None = None
        self.weights: dict[Any, int] = {}
        self.restarts: list[float] = []
        self.exits = 0
        """Workers that exited (and were restarted) over the node's life."""
        self.on_fatal: Callable[[str], None] = lambda _why: None
        self.on_worker: Callable[[str, int, dict[str, Any]], None] = lambda _kind, _i, _f: None
        self.on_random_drop: Callable[[int], None] = lambda _marked: None
        """Entries a worker's random_drop marked (the node's defense counts them)."""
        self.mirrored = 0
        self._asked: set[Any] = set()
        """Replica keys whose deadline was asked of their worker and not answered yet."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._last_stats_write = 0.0

    @classmethod
    def for_node(cls, cfg: NodeConfig, director: Director, max_conns: int) -> WorkerPool | None:
        """The pool of a node with ``workers: N`` (N >= 2) around its Director's tables; else None."""
        if cfg.workers < 2:
            return None
        return cls(cfg.workers, cfg.external, cfg.internal, director.cfg, director.table, director.services,
                   table_bits=cfg.table_bits, max_conns=max_conns,
                   stats_path=f"{cfg.events_file}.workers.json" if cfg.events_file else None,
                   drop_counts=director.counters.counts)

    def synced_router(self, tap: Callable[[list[ConnEvent]], None]) -> Callable[[list[ConnEvent]], None]:
        """The sync backup's ``on_applied``: route to the workers (``route_synced``), then ``tap``."""
        def route(events: list[ConnEvent]) -> None:
            self.route_synced(events)
            tap(events)
        return route

    @property
    def ready(self) -> bool:
        """Every worker is up (said ``ready``): a node campaigns only then (plain reads: any thread)."""
        return all(w is not None and w.ready for w in self.workers)

    # -- DataPlane's surface for the daemon --------------------------------------------------------
    def set_master_until(self, deadline: float | None) -> None:
        """The election moved the deadline: every worker reads it before its next block."""
        with self._fence_lock:
            self.fence.set(deadline)

    @property
    def master_until(self) -> float | None:
        return self.fence.master_until()

    def fenced(self) -> bool:
        return time.monotonic() >= self.fence.until()

    def send(self, actions: Iterable[Action]) -> int:
        """Control frames (gratuitous ARP) go out through worker 0 (fenced there)."""
        acts = list(actions)
        w = self.workers[0]
        if acts and w is not None:
            w.channel.send(("send", acts))
        return len(acts)

    def send_gratuitous_arp(self) -> int:
        self._send_to(0, ("garp",))
        return 0

    def probe_neighbours(self) -> int:
        """Worker 0 probes on its own (and every worker learns the answers)."""
        return 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i in range(self.count):
            self._spawn(i)

    def detach(self) -> None:
        """Stop every worker (``stop`` message, then SIGKILL after 2 s) and close the fence."""
        self._stopping = True
        for w in self.workers:
            if w is not None:
                w.channel.send(("stop",))
        deadline = time.monotonic() + 2.0
        for i, w in enumerate(self.workers):
            if w is None:
                continue
            try:
                w.proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            self._forget(i)

    # -- role and config -----------------------------------------------------------------------------
    def set_active(self, on: bool, sloppy_until: float = 0.0) -> None:
        self.active, self.sloppy_until = on, sloppy_until
        self._broadcast(("active", on, sloppy_until))

    def push_config(self, cfg: Config, down: frozenset[Any],
                    weights: Mapping[Any, int] | None = None) -> None:
        """The config the parent applied (its health down set, and the weights dynamic checks set),
        for every worker."""
        self.config = (cfg, down)
        self.weights = dict(weights or {})
        self._broadcast(("config", cfg, down, self.weights))
        # IPv6 services are left out: every v6 frame goes to worker 0 (the shard filter is IPv4-only)
        mask = widest_mask([s.netmask for s in self.services if s.persistent and not is_v6(s.addr)])
        if mask != self.mask:
            log.info("shard mask %08x -> %08x: filters replaced, shards rebuilt", self.mask, mask)
            self.mask = mask
            self._broadcast(("mask", mask))
            for i in range(self.count):
                self._send_to(i, ("synced", self._shard_updates(i)))

    def invalidate_down(self, keys: Iterable[Any], expire_quiescent: dict[Any, bool]) -> None:
        """Master: health took these dests down; every worker checks its templates bound to them
        (``check_template``, as ``HealthService.invalidate_down`` does in-process)."""
        down = frozenset(keys)
        if down:
            self._broadcast(("invalidate", down, {k: expire_quiescent.get(k, False) for k in down}))

    def flush(self) -> None:
        """``directorctl flush``: every worker empties its table (the replica follows their EXPIREs)."""
        self._broadcast(("flush",))

    def zero_counters(self, svc_keys: list[Any]) -> None:
        """``directorctl zero``: the workers zero these services' counters (the node's are their sums)."""
        self._broadcast(("zero", svc_keys))

    def push_defense(self, drop_rate: int, secure_tcp: bool, drop_entry: bool = False) -> None:
        """The node's defense levels (once a second); with ``drop_entry`` every active worker runs
        random_drop on its shard once (the in-process daemon runs it on the whole table)."""
        self._broadcast(("defense", drop_rate, secure_tcp, drop_entry))

    # -- sync -----------------------------------------------------------------------------------------
    def route_synced(self, events: list[ConnEvent]) -> None:
        """Entries the parent's sync backup applied go to the worker owning their client."""
        now = self.clock()
        per: list[list[Update]] = [[] for _ in range(self.count)]
        for kind, snap, old_key in events:
            u = Update(SyncKind(int(kind)), snap.key, snap.flags, snap.state, snap.timeout,
                       snap.expires - now, snap.dest_key, snap.control_key, snap.in_pkts, old_key)
            per[shard_of(snap.key[1], self.mask, self.count)].append(u)
        for i, ups in enumerate(per):
            if ups:
                self._send_to(i, ("synced", ups))

    def _mirror(self, evs: list[RawEvent], to_feed: bool = True) -> None:
        """A worker's events into the replica (and, while serving sync, into its feed)."""
        serving = self._apply_quiet(_chunks(evs, self.clock()))
        self.mirrored += len(evs)
        if serving and to_feed:
            push = self.table.events.push_raw
            for ev in evs:
                push(ev)

    def _apply_quiet(self, chunks: Iterable[list[Update]]) -> bool:
        """Apply to the replica with its event feed off; returns whether the feed is on (serving sync)."""
        feed = self.table.events
        serving = feed.enabled
        feed.enabled = False
        try:
            for chunk in chunks:
                self.applier.apply(chunk)
        finally:
            feed.enabled = serving
        return serving

    def ask_expires(self, keys: list[Any]) -> None:
        """The sync master's refresh pass found these replica entries not extended (``on_stale``):
        ask their workers for the real deadlines (traffic moves them without events)."""
        per: list[list[Any]] = [[] for _ in range(self.count)]
        pending = self._asked
        for key in keys:
            if key not in pending:
                pending.add(key)
                per[shard_of(key[1], self.mask, self.count)].append(key)
        for i, ks in enumerate(per):
            if ks:
                self._send_to(i, ("expires?", ks))

    def _expires(self, rows: list[tuple[Any, float]], asked: list[Any]) -> None:
        """A worker's answer: extend the replica's entries (no event; the next refresh pass sends
        their REFRESH to the backups)."""
        now = self.clock()
        get, refresh = self.table.get, self.table.refresh
        for key, expires in rows:
            conn = get(key)
            if conn is not None and expires > conn.expires:
                refresh(conn, expires - now)
        self._asked.difference_update(asked)

    def _resync(self, index: int, evs: list[RawEvent]) -> None:
        """Worker ``index`` dropped events (backpressure): its shard in the replica becomes exactly
        ``evs`` (all its entries), and every backup re-snapshots (the feed-overflow path)."""
        keys = {ev[0] for ev in evs}
        stale = [Update(SyncKind.EXPIRE, c.key) for c in self.table
                 if shard_of(c.key[1], self.mask, self.count) == index and c.key not in keys]
        log.warning("worker %d resync: %d entries, %d stale removed", index, len(evs), len(stale))
        serving = self._apply_quiet([stale])
        self._mirror(evs, to_feed=False)
        if serving:
            feed = self.table.events
            feed.overflowed = True  # the sync master sends every backup a snapshot at its next cut
            if feed.on_ready is not None:
                feed.on_ready()

    def _shard_updates(self, index: int) -> list[Update]:
        """Worker ``index``'s share of the replica, as NEW updates with full timeouts (rebuild)."""
        out: list[Update] = []
        for conn in self.table:
            key = conn.key
            if shard_of(key[1], self.mask, self.count) != index:
                continue
            d = conn.dest
            out.append(Update(SyncKind.NEW, key, conn.flags, conn.state, conn.timeout, conn.timeout,
                              d.key if d is not None else None,
                              conn.control.key if conn.control is not None else None, 0))
        out.sort(key=lambda u: not u.key[8])  # templates first: children link to them
        return out

    # -- workers ----------------------------------------------------------------------------------------
    def _send_to(self, index: int, msg: Message) -> None:
        w = self.workers[index]
        if w is not None:
            w.channel.send(msg)

    def _broadcast(self, msg: Message) -> None:
        for w in self.workers:
            if w is not None:
                w.channel.send(msg)

    def _spawn(self, index: int) -> None:
        loop = self._loop
        assert loop is not None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [sys.executable, "-m", "director.workers.worker", "--fd", str(theirs.fileno()),
                "--fence-fd", str(self.fence.fd), "--index", str(index), "--count", str(self.count),
                "--parent", str(os.getpid()),
                "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()]
        proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(), self.fence.fd), close_fds=True)
        theirs.close()
        ch = Channel(mine)
        pidfd = os.pidfd_open(proc.pid)
        w = WorkerProc(proc, ch, pidfd)
        self.workers[index] = w
        ch.on_message = self._on_message
        ch.attach(loop)
        loop.add_reader(pidfd, self._exited, index, proc.pid)
        ch.send(("init", {"core": self.core, "table_bits": self.table_bits,
                          "max_conns": max(1, self.max_conns // self.count),
                          "mask": self.mask, "ext": self.ifnames[0], "int": self.ifnames[1]}))
        if self.config is not None:
            ch.send(("config", *self.config, self.weights))
        if self.active:
            ch.send(("active", True, self.sloppy_until))
        log.info("worker %d started (pid %d)", index, proc.pid)

    def _forget(self, index: int) -> None:
        w = self.workers[index]
        if w is None:
            return
        self.workers[index] = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(w.pidfd)
        os.close(w.pidfd)
        w.channel.close()

    def _exited(self, index: int, pid: int) -> None:
        w = self.workers[index]
        if w is None or w.proc.pid != pid:
            return
        code = w.proc.wait()
        self._forget(index)
        self.per_worker[index] = {}
        self._peers_sent[index] = {}
        self._asked.clear()  # its unanswered questions are asked again by the next refresh pass
        if self._stopping:
            return
        now = time.monotonic()
        self.exits += 1
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
        log.error("worker %d (pid %d) exited with %s: restarting it", index, pid, code)
        self.on_worker("worker_exit", index, {"pid": pid, "code": code})
        if len(self.restarts) > MAX_RESTARTS:
            self.on_fatal(f"{len(self.restarts)} worker restarts within {RESTART_WINDOW:.0f} s")
        delay = 0.0 if len(self.restarts) <= 1 else min(5.0, 0.1 * 2 ** len(self.restarts))
        assert self._loop is not None
        self._loop.call_later(delay, self._respawn, index)

    def _respawn(self, index: int) -> None:
        """Start worker ``index`` again and hand it its shard of the replica."""
        if self._stopping or self.workers[index] is not None:
            return
        self._spawn(index)
        self._send_to(index, ("synced", self._shard_updates(index)))

    def _on_message(self, msg: Message) -> None:
        kind = msg[0]
        if kind == "events":
            self._mirror(msg[2])
        elif kind == "stats":
            self.per_worker[msg[1]] = msg[2]
            self._aggregate()
        elif kind == "ready":
            w = self.workers[msg[1]]
            if w is not None:
                w.ready = True
            self.on_worker("worker_ready", msg[1], {"pid": msg[2]})
        elif kind == "expires":
            self._expires(msg[1], msg[2])
        elif kind == "resync":
            self._resync(msg[1], msg[2])
        elif kind == "random_drop":
            self.on_random_drop(msg[1])

    # -- stats ------------------------------------------------------------------------------------------
    def _aggregate(self) -> None:
        """Sum the workers' counters into the parent's services, dests and drops."""
        reports = [r for r in self.per_worker if r]
        for svc in self.services:
            got = [r["services"][svc.key] for r in reports if svc.key in r["services"]]
            _store(svc.counters, _column_sums([g[0] for g in got]))
            for dest in svc.counted_dests():
                rows = [g[1][dest.key] for g in got if dest.key in g[1]]
                if rows:
                    _store(dest.counters, _column_sums(rows))
        self._exchange_counts(reports)
        drops = self.drops()
        if self.drop_counts is not None and len(drops) == len(self.drop_counts):
            self.drop_counts[:] = drops
        self._write_stats()

    def _exchange_counts(self, reports: list[dict[str, Any]]) -> None:
        """Send every worker the other workers' active/inactive conns per dest, when they changed."""
        total: dict[Any, list[int]] = {}
        for r in reports:
            for key, (a, i) in r.get("own", {}).items():
                acc = total.setdefault(key, [0, 0])
                acc[0] += a
                acc[1] += i
        for index, r in enumerate(self.per_worker):
            own = r.get("own")
            if own is None:
                continue
            peers = {key: (t[0] - own.get(key, (0, 0))[0], t[1] - own.get(key, (0, 0))[1])
                     for key, t in total.items()}
            peers = {k: v for k, v in peers.items() if v != (0, 0)}
            if peers != self._peers_sent[index]:
                self._peers_sent[index] = peers
                self._send_to(index, ("peers", peers))

    def _write_stats(self) -> None:
        now = time.monotonic()
        if not self.stats_path or now - self._last_stats_write < 1.0:
            return
        self._last_stats_write = now
        rows = [{k: v for k, v in r.items() if k not in ("services", "own")} for r in self.per_worker]
        tmp = f"{self.stats_path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"workers": rows, "mask": self.mask, "mirrored": self.mirrored,
                           "replica_conns": self.table.count}, fh)
            os.replace(tmp, self.stats_path)
        except OSError as err:
            log.debug("worker stats file: %s", err)

    def stats(self) -> dict[str, Any]:
        """The node's packet counters in ``DataPlane.stats()``'s shape (a node's ``stats_file``): the
        workers' I/O counters summed, services and drops from the parent's tables (``_aggregate``
        keeps them the workers' sums); ``workers`` has each worker's own figures."""
        rows = [r for r in self.per_worker if r]
        out: dict[str, Any] = {k: sum(r.get(k, 0) for r in rows) for k in _SUMMED}
        for key in ("rx_frames", "neigh_entries"):
            out[key] = [sum(col) for col in zip(*(r.get(key, (0, 0)) for r in rows), strict=True)] or [0, 0]
        neigh: dict[str, int] = {}
        for r in rows:
            for name, n in r.get("neigh", {}).items():
                neigh[name] = neigh.get(name, 0) + n
        drops = self.drops()
        return {**out, "neigh": neigh, "conns": self.table.count, "active": self.active,
                "drops": {d.name.lower(): drops[d] if d < len(drops) else 0 for d in Drop},
                "master_until": self.master_until, "fenced": self.fenced(),
                "services": service_stats(self.services),
                "workers": [{k: v for k, v in r.items() if k not in ("services", "own")}
                            for r in self.per_worker]}

    def drops(self) -> list[int]:
        """Drop counters summed over the workers (by reason index)."""
        rows = [d for r in self.per_worker if (d := r.get("drops"))]
        return [sum(col) for col in zip(*(d for d in rows if len(d) == len(rows[0])), strict=True)]

    def close(self) -> None:
        self.fence.close()


def _chunks(evs: list[RawEvent], now: float) -> Iterator[list[Update]]:
    """Raw events as updates for the applier, cut before an event that touches a key already in the
    chunk (a chunk holds each key once)."""
    chunk: list[Update] = []
    keys: set[Any] = set()
    for ev in evs:
        key = ev[0]
        if key in keys or (ev[9] is not None and ev[9] in keys):
            yield chunk
            chunk, keys = [], set()
        keys.add(key)
        chunk.append(Update(SyncKind(int(ev[8])), key, ev[1], ev[2], ev[3], ev[4] - now, ev[5], ev[6], ev[7],
                            ev[9]))
    if chunk:
        yield chunk


def _column_sums(rows: list[Any]) -> list[int]:
    """The sums of the workers' counter tuples (``_SLOTS`` order); zeros without any."""
    return [sum(col) for col in zip(*rows, strict=True)] if rows else [0] * len(_SLOTS)


def _store(counters: Any, values: list[int]) -> None:
    for name, value in zip(_SLOTS, values, strict=True):
        setattr(counters, name, value)
