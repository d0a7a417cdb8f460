"""An in-process master and backups (no gRPC) that check backup = master after every applied message.

Each backup ("link") reads its ``BackupSession.stream()`` in a task of this loop, decodes and applies
every message, acks it, then compares its table with the master's table *as it was when that batch
was cut* (the master's emissions are recorded). The driver mutates the master only between
``settle()`` calls, so every emission sees a quiet table and the recorded views are exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from director.services.service import ServiceTable
from director.table.conn import Conn, ConnTable
from director.types import LOCAL_CONN_FLAGS, ConnFlags
from syncd.apply import BackupApplier
from syncd.convert import decode_sync_message
from syncd.master import MasterConfig, SyncMaster
from syncd.model import AckMsg, BatchMsg, SnapshotEndMsg, SyncMsg
from syncd.packed import Packer
from syncd.session import BackupSession
from tests.syncd.helpers import FakeClock, make_services

_LOCAL = int(LOCAL_CONN_FLAGS)
_INACTIVE = int(ConnFlags.INACTIVE)


def entry_view(c: Conn) -> tuple[Any, ...]:
    """Everything that must be equal on a backup (timers are checked apart). INACTIVE of an unbound
    conn is history-dependent (set_state moves it only while bound) and means nothing without a dest."""
    flags = c.flags & ~_LOCAL
    if c.dest is None:
        flags &= ~_INACTIVE
    return (flags, c.state, c.timeout, c.dest.key if c.dest is not None else None,
            c.control.key if c.control is not None else None, c.n_control)


class View:
    """A table as the backups must hold it: entries by key, deadlines, dest counters."""

    def __init__(self, table: ConnTable, services: ServiceTable) -> None:
        self.at = table._clock()
        self.entries = {c.key: entry_view(c) for c in table}
        self.expires = {c.key: c.expires for c in table}
        self.count = len(table)
        self.counters = {d.key: (d.activeconns, d.inactconns, d.persistconns)
                         for s in services for d in s.dests}


class Mismatch(AssertionError):
    pass


def compare(want: View, table: ConnTable, services: ServiceTable, slack: float, margin: float) -> None:
    """Raise Mismatch unless `table` holds exactly `want`. Timers: a backup copy may lag a silent
    extension on the master (traffic) until the entry comes within the refresh margin, and then by
    at most `slack` (refresh pass interval + master stall)."""
    now = want.at
    got = View(table, services)
    if want.count != len(want.entries):
        raise Mismatch(f"master holds {want.count} entries under {len(want.entries)} keys")
    missing = [k for k in want.entries if k not in got.entries]
    extra = [k for k in got.entries if k not in want.entries]
    differ = [(k, want.entries[k], got.entries[k]) for k in want.entries
              if k in got.entries and want.entries[k] != got.entries[k]]
    if missing or extra or differ or got.count != want.count:
        raise Mismatch(f"missing {missing[:3]} extra {extra[:3]} differ {differ[:3]} "
                       f"({len(missing)}/{len(extra)}/{len(differ)}; count {got.count} vs {want.count})")
    short = [(k, m, got.expires[k]) for k, m in want.expires.items()
             if got.expires[k] < min(m, now + margin) - slack]
    if short:
        raise Mismatch(f"backup timers short: {short[:3]} at {now}")
    common = {k: v for k, v in got.counters.items() if k in want.counters}
    if common != {k: want.counters[k] for k in common}:
        raise Mismatch(f"dest counters {got.counters} vs {want.counters}")


class Link:
    """One backup following the master through a session stream in this loop."""

    def __init__(self, cluster: Exact, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.services = make_services()
        self.table = ConnTable(cluster.clock)
        self.applier = BackupApplier(self.table, self.services)
        self.session: BackupSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.checks = 0
        self.failure: BaseException | None = None

    def connect(self) -> None:
        m = self.cluster.master
        self.session = BackupSession(m, self.applier.hello(self.node_id), f"test:{self.node_id}")
        m.sessions.add(self.session)
        self.task = asyncio.get_running_loop().create_task(self._pump())

    def cut(self, stop_following: bool = False) -> None:
        """The stream breaks (either side) and the backup reconnects within the master's heartbeat
        deadline (timers stay held), or it stops following (`stop_following`: its own timers)."""
        if self.session is not None:
            self.session.close("test cut", "stopped")
            self.cluster.master.sessions.discard(self.session)
        if self.task is not None:
            self.task.cancel()
        self.session = self.task = None
        if stop_following:
            self.applier.stream_lost()
        else:
            self.applier.stream_ended()

    async def _pump(self) -> None:
        assert self.session is not None
        session = self.session
        try:
            async for data in session.stream():
                msg = decode_sync_message(data)
                self.applier.handle(msg)
                session.on_ack(AckMsg(self.applier.applied_seq, self.caught_up_state()))
                self._check(msg)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed check: reported by settle()
            self.failure = exc

    def caught_up_state(self) -> bool:
        return self.applier.live and not self.applier.in_snapshot

    def caught_up(self) -> bool:
        m, a, s = self.cluster.master, self.applier, self.session
        return (s is not None and not s.needs_snapshot and not s.in_snapshot and s.sent_seq == m.head_seq
                and a.applied_seq == m.head_seq and a.incarnation == m.incarnation and not a.in_snapshot)

    def _check(self, msg: SyncMsg) -> None:
        if self.applier.in_snapshot or not isinstance(msg, BatchMsg | SnapshotEndMsg):
            return
        want = self.cluster.views.get((self.cluster.master.incarnation, self.applier.applied_seq))
        if want is None:
            return  # a batch split off a bigger emission: its state is not a table state
        c = self.cluster
        compare(want, self.table, self.services, c.slack, c.margin)
        self.checks += 1


class Exact:
    """Master (a SyncMaster on a ConnTable) + backup links, everything on one FakeClock."""

    def __init__(self, clock: FakeClock, cfg: MasterConfig | None = None, max_stall: float = 0.5) -> None:
        self.clock = clock
        self.services = make_services()
        self.table = ConnTable(clock)
        self.master = SyncMaster(self.table, clock, 1, cfg or MasterConfig(max_batch=64))
        self.margin = self.master.cfg.policy.refresh_min_margin
        self.step = self.master.cfg.refresh_interval
        self.slack = max_stall + self.margin + self.step + 0.01
        self.max_stall = max_stall
        self.views: dict[tuple[int, int], View] = {}
        self.links: list[Link] = []
        emit_packed = self.master.emit_packed

        def recording_packed(rows: Packer, first_ns: int) -> None:
            emit_packed(rows, first_ns)
            if len(rows):
                self.record()

        self.master.emit_packed = recording_packed  # type: ignore[method-assign]

    def record(self) -> None:
        self.views[(self.master.incarnation, self.master.head_seq)] = View(self.table, self.services)

    def start(self, n: int) -> None:
        self.master.start()
        self.record()  # the empty table at seq 0 (what a first snapshot ends at)
        for i in range(n):
            self.add(f"b{i}")

    def add(self, node_id: str) -> Link:
        link = Link(self, node_id)
        self.links.append(link)
        link.connect()
        return link

    def set_epoch(self, epoch: int) -> None:
        self.master.set_epoch(epoch)
        self.record()

    async def settle(self, timeout: float = 30.0, churn: Callable[[], None] | None = None) -> None:
        """Cut pending events and let every connected link apply everything (raises a check failure).
        `churn` (mutations of the master table) runs between loop turns while a snapshot is being
        sent, each run followed by a cut, so snapshots are taken mid-churn."""
        self.master.cut_batch()
        deadline = time.monotonic() + timeout
        spins = 0
        while not all(lk.caught_up() for lk in self.links if lk.session is not None):
            self._raise_failures()
            snapshotting = any(lk.session is not None and lk.session.in_snapshot for lk in self.links)
            if churn is not None and snapshotting:
                churn()
                self.master.cut_batch()
            if time.monotonic() > deadline:
                raise AssertionError("backups did not catch up")
            spins += 1
            await asyncio.sleep(0 if spins < 200 else 0.001)
        self._raise_failures()

    def _raise_failures(self) -> None:
        for lk in self.links:
            if lk.failure is not None:
                raise lk.failure

    def check_now(self) -> None:
        """Every connected, caught-up backup equals the master now."""
        want = View(self.table, self.services)
        for lk in self.links:
            if lk.session is not None and lk.caught_up():
                compare(want, lk.table, lk.services, self.slack, self.margin)

    def tick_backups(self) -> None:
        for lk in self.links:
            lk.table.tick()

    def advance(self, dt: float) -> None:
        """Time passes with both loops running: refresh passes every ``refresh_interval``."""
        while dt > 1e-9:
            step = min(dt, self.step)
            dt -= step
            self.clock.advance(step)
            self.tick_backups()
            self.table.tick()
            self.master.cut_batch()
            self.master.run_refresh()

    def stall(self, dt: float) -> None:
        """The master's loop stalls `dt` seconds (no tick, no refresh, no batch) while the backups'
        timers run on, then it catches up."""
        assert dt <= self.max_stall
        self.clock.advance(dt)
        self.tick_backups()
        self.table.tick()
        self.master.cut_batch()
        self.master.run_refresh()

    async def close(self) -> None:
        for lk in self.links:
            lk.cut(stop_following=True)
        self.master.stop()
        await asyncio.sleep(0)
