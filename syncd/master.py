"""Master side: table events -> coalesced, numbered batches in a retention ring; refreshes.

Theory of operation
-------------------
The conn table pushes events into its bounded ``EventFeed`` and calls ``on_ready`` on the first
event after the feed was empty. That hook (cheap, called from the packet path) arms one timer of
``batch_window`` seconds; when it fires ``cut_batch`` drains the feed, keeps only the latest state
per entry (``coalesce.Window``), filters with ``SyncPolicy.should_sync``, and encodes the result
once into ``max_batch``-sized batch messages with seq = previous + 1. The feed is read as raw
event tuples and the window's updates go straight to packed rows (``syncd.packed``, wire version 2;
an update a row cannot hold as its ConnEntry bytes, ``syncd.wire``) without intermediate records:
this path runs on the packet path's loop, so it is kept lean.
Encoded batches go into a retention ring (``syncd.ring``: bounded by batch count, update count,
bytes and age) shared by every backup session: a session is just a cursor into the ring, so a slow
backup costs nothing but ring space, never blocks the packet path or the other backups, and when it
falls out of the ring (or more than ``backup_max_lag`` batches behind) it is switched to a snapshot
(see session.py; the master sees sessions only through ``SessionLike``).

*When to cut.* An event on an idle stream goes out at once: the first event after a cut schedules
the next cut for the next loop turn (every event the packet path produces in that turn rides
along). Under load - the last cut drained at least ``load_events`` events and some backup stream
is still busy sending - the next cut comes ``batch_window`` after it, so batches grow with the
load instead of the message count (and the packet path pays for few batches).

A refresh task looks at ``RefreshTracker`` every ``refresh_interval`` seconds (real time; the
deadlines themselves are on the table's clock) and emits REFRESH updates for entries whose backup
copy is about to expire while the master's entry lives on. An entry not (yet) longer-lived is
looked at again after half its remaining backup time (at least one interval), so traffic late in
its timeout is still refreshed before the backup deadline; backups do not rely on it for
presence anyway (they never expire a synced entry on their own clock while following, see
apply.py), only for their timers to be right when they take over. The same task trims the ring
by age.

Sequence numbers belong to an *incarnation* (random, new on every ``start()``): a backup may
resume only within the same incarnation. Changing the epoch starts a new incarnation too, so every
message of an incarnation carries the same epoch and backups can check epochs monotonically.
If the event feed overflows, events were lost: every backup is sent a new snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from director.types import Clock
from syncd import wire
from syncd.coalesce import Window
from syncd.convert import encode_batch_packed, pack_updates
from syncd.memory import HeapTrimmer
from syncd.model import SyncKind, TableLike, Update, update_from_conn
from syncd.packed import ROW_SIZE, Packer
from syncd.policy import RefreshTracker, SyncPolicy
from syncd.ring import RetentionRing, RingEntry, RingLimits

log = logging.getLogger(__name__)


@dataclass
class MasterConfig:
    batch_window: float = 0.005
    """Spacing of cuts under load (an event on an idle stream is cut at the next loop turn)."""
    load_events: int = 32
    """A cut that drained at least this many events means load: the next one waits ``batch_window``."""
    max_batch: int = 2048
    """Updates per batch message (bigger windows are split into several batches)."""
    retention_batches: int = 65536
    retention_updates: int = 2_000_000
    retention_bytes: int = 64 << 20
    """Encoded bytes of history kept for resuming backups."""
    retention_age: float = 60.0
    """Seconds a batch stays resumable (an idle master gives its ring memory back after this)."""
    backup_max_lag: int = 16384
    """Batches a backup may be behind (its queue bound) before it is switched to a snapshot."""
    snapshot_chunk: int = 1024
    heartbeat_interval: float = 1.0
    promise_interval: float = 0.1
    """How often each backup is asked to promise not to campaign (0: never; docs/HA.md)."""
    promise_margin: float = 0.1
    """Subtracted from every promise on the master's side (clock-rate and scheduling slack)."""
    refresh_interval: float = 0.05
    policy: SyncPolicy = field(default_factory=SyncPolicy)

    def ring_limits(self) -> RingLimits:
        return RingLimits(self.retention_batches, self.retention_updates, self.retention_bytes,
                          self.retention_age)


class SessionLike(Protocol):
    """What the master needs of a backup session (syncd.session.BackupSession)."""

    @property
    def closed(self) -> bool: ...
    @property
    def acked_seq(self) -> int: ...
    @property
    def incarnation_acked(self) -> int: ...
    @property
    def waiting(self) -> bool: ...
    def wake(self) -> None: ...
    def request_snapshot(self, reason: str) -> None: ...
    def close(self, reason: str, kind: str = "stopped") -> None: ...


_NEW = int(SyncKind.NEW)


class SyncMaster:
    """Turns one table's event feed into numbered batches; owns the backup sessions."""

    def __init__(self, table: TableLike, clock: Clock, epoch: int = 0,
                 cfg: MasterConfig | None = None) -> None:
        self.on_promise: Callable[[], None] | None = None
        self.promising = True
        """Ask the backups for promises (off while the node is stepped down but keeps the stream:
        a node that does not forward must not hold its backups off)."""
        self.on_stale: Callable[[list[Any]], None] | None = None
        """Called with the keys a refresh pass found not extended. A table that is a replica (directord
        with packet workers) cannot see traffic extend its entries: its owner asks the workers and
        refreshes them (director.workers.pool); the next pass then sends their REFRESH."""
        self.table = table
        self.clock = clock
        self.cfg = cfg or MasterConfig()
        self.epoch = epoch
        self.incarnation = 0
        self.head_seq = 0
        self.ring = RetentionRing(self.cfg.ring_limits())
        self.tracker = RefreshTracker(self.cfg.policy)
        self.sessions: set[SessionLike] = set()
        self.running = False
        self._timer: asyncio.Handle | None = None
        self._last_cut = 0.0
        self._last_events = 0
        self._first_ns = 0
        self._refresh_task: asyncio.Task[None] | None = None
        self._ack_waiters: list[Callable[[], None]] = []
        self.trimmer = HeapTrimmer()
        self.stats = {"batches": 0, "updates": 0, "refreshes": 0, "coalesced": 0, "feed_overflows": 0,
                      "snapshots": 0}

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin a new incarnation: consume the feed from now on (earlier events are unknown)."""
        if self.running:
            return
        self._new_incarnation()
        feed = self.table.events
        feed.drain_raw(1 << 30)
        feed.clear_overflow()
        feed.on_ready = self._on_ready
        feed.enabled = True
        self.running = True
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())
        log.info("sync master started: epoch %d incarnation %x", self.epoch, self.incarnation)

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        feed = self.table.events
        feed.on_ready = None
        feed.enabled = False
        feed.drain_raw(1 << 30)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            self._refresh_task = None
        for s in list(self.sessions):
            s.close("master stopped", "stopped")
        log.info("sync master stopped at seq %d", self.head_seq)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        log.info("sync epoch %d -> %d: new incarnation, backups resnapshot", self.epoch, epoch)
        self.epoch = epoch
        if self.running:
            self._new_incarnation()
            for s in self.sessions:
                s.request_snapshot("epoch changed")

    def _new_incarnation(self) -> None:
        self.incarnation = random.getrandbits(63) | 1
        self.head_seq = 0
        self.ring.clear()
        self.tracker.clear()

    # --- batching --------------------------------------------------------------------------------

    def _on_ready(self) -> None:
        """First event after a cut: cut at the next loop turn, or under load ``batch_window`` after the
        last cut."""
        if self._timer is None and self.running:
            self._first_ns = time.time_ns()
            loop = asyncio.get_running_loop()
            wait = 0.0
            if self._last_events >= self.cfg.load_events and not self._streams_idle():
                wait = self._last_cut + self.cfg.batch_window - time.monotonic()
            if wait > 0:
                self._timer = loop.call_later(wait, self._window_closed)
            else:
                self._timer = loop.call_soon(self._window_closed)

    def _streams_idle(self) -> bool:
        """Every backup stream has sent everything and waits: nothing to batch behind."""
        sessions = self.sessions
        return bool(sessions) and all(s.waiting for s in sessions)

    def _window_closed(self) -> None:
        self._timer = None
        try:
            self.cut_batch()
        except Exception:  # a bug here must not kill the loop's timer machinery
            log.exception("cutting a sync batch failed")

    def cut_batch(self) -> int:
        """Drain the feed now and emit its coalesced updates; returns the number of updates sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        first_ns = self._first_ns or time.time_ns()
        self._first_ns = 0
        self._last_cut = time.monotonic()
        window = self._drain()
        self._last_events = window.events
        feed = self.table.events
        if feed.overflowed:
            feed.clear_overflow()
            self.stats["feed_overflows"] += 1
            log.warning("conn event feed overflowed: every backup gets a snapshot")
            for s in self.sessions:
                s.request_snapshot("event feed overflow")
        rows = Packer(wire.dest_ref)
        window.encode_packed(self.clock(), self.cfg.policy, self.tracker, rows)
        self.emit_packed(rows, first_ns)
        return len(rows)

    def _drain(self) -> Window:
        window = Window()
        drain = self.table.events.drain_raw
        add, pending = window.add, window.pending
        n = 0
        while True:
            events = drain(8192)
            if not events:
                break
            n += len(events)
            for ev in events:  # RawEvent: snapshot fields, kind, old_key
                key = ev[0]
                p = pending.get(key)
                if ev[9] is None:  # the common cases inline: a first event, a repeat (Window.add)
                    kind = ev[8]
                    if p is None:
                        pending[key] = [kind, kind, ev, None]
                        continue
                    if kind != _NEW:
                        p[1] = kind
                        p[2] = ev
                        continue
                add(ev[8], ev, ev[9])
        window.events = n
        self.stats["coalesced"] += window.events - len(window.pending)
        return window

    def emit(self, updates: list[Update], first_ns: int) -> None:
        """Append `updates` to the stream as one or more batches and wake the backups."""
        self.emit_packed(pack_updates(updates), first_ns)

    def emit_packed(self, rows: Packer, first_ns: int) -> None:
        """``emit`` of updates already packed (``syncd.packed``): one batch per ``max_batch`` rows."""
        if not rows.rows:
            return
        created = time.monotonic()
        for part, fulls in rows.parts(self.cfg.max_batch):
            self.head_seq += 1
            data = encode_batch_packed(self.epoch, self.incarnation, self.head_seq, first_ns, fulls, part,
                                       rows.dests)
            n = len(part) // ROW_SIZE
            self.ring.append(RingEntry(self.head_seq, data, n, created))
            self.stats["batches"] += 1
            self.stats["updates"] += n
        self.ring.trim(created)
        for s in self.sessions:
            s.wake()

    def batches_after(self, seq: int, limit: int) -> list[RingEntry] | None:
        """Up to `limit` retained batches with seq > `seq`; None if seq+1 is no longer retained."""
        return self.ring.after(seq, self.head_seq, limit)

    def retained(self, seq: int) -> bool:
        return self.batches_after(seq, 0) is not None

    # --- refresh ---------------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.refresh_interval)
            try:
                self.run_refresh()
                now = time.monotonic()
                self.ring.trim(now)
                self.trimmer.observe(len(self.table) + self.ring.updates, now)
            except Exception:
                log.exception("sync refresh pass failed")

    def run_refresh(self) -> int:
        """Send REFRESH for entries whose backup copy is about to expire before the master's."""
        now = self.clock()
        tracker, table = self.tracker, self.table
        out: list[Update] = []
        on_stale = self.on_stale
        stale: list[Any] = []
        for key, deadline in tracker.due(now):
            conn = table.get(key)
            if conn is None:
                continue  # its EXPIRE is (or was) in the stream
            if conn.expires > deadline + 1e-3:
                out.append(Update(SyncKind.REFRESH, key, conn.flags, timeout=conn.timeout,
                                  remaining=conn.expires - now))
                tracker.sent(key, conn.expires, conn.timeout)
            else:  # not longer-lived (yet): look again after half the time left (traffic may come)
                tracker.recheck(key, deadline, now + max(self.cfg.refresh_interval, (deadline - now) / 2))
                if on_stale is not None:
                    stale.append(key)
        if stale and on_stale is not None:
            on_stale(stale)
        self.stats["refreshes"] += len(out)
        self.emit(out, time.time_ns())
        return len(out)

    # --- snapshots and acks ----------------------------------------------------------------------

    def snapshot_update(self, conn: Any, now: float) -> Update | None:
        """The NEW update a snapshot chunk carries for a live entry (None if gone or filtered)."""
        key = conn.key
        if self.table.get(key) is not conn:
            return None
        if not self.cfg.policy.should_sync(conn):
            return None
        u = update_from_conn(SyncKind.NEW, conn, now)
        self.tracker.ensure(key, u.remaining + now, u.timeout)
        return u

    def promised(self) -> None:
        """A backup's promise moved (see BackupSession): tell the node, which tells the election."""
        if self.on_promise is not None:
            self.on_promise()

    def acked(self) -> None:
        waiters, self._ack_waiters = self._ack_waiters, []
        for w in waiters:
            w()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Cut pending events now and wait until every backup applied them; False on timeout."""
        if self.running:
            self.cut_batch()
        target = self.head_seq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(s.acked_seq < target or s.incarnation_acked != self.incarnation
                  for s in self.sessions if not s.closed):
            left = deadline - loop.time()
            if left <= 0:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self._ack_waiters.append(lambda f=fut: f.done() or f.set_result(None))  # type: ignore[misc]
            try:
                async with asyncio.timeout(left):
                    await fut
            except TimeoutError:
                return False
        return True
