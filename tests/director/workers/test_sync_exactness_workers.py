"""Sync exactness with two packet workers on each side (issue 12, point 3).

The chain a `workers: 2` pair runs, in process and on one fake clock: a randomized workload on the
master's two worker shards -> the master's replica (``WorkerPool._mirror``) -> its ``SyncMaster`` ->
a backup (tests/syncd/exact.py: after every batch it applies, the backup's table must equal the
master's table as it was when that batch was cut) -> the backup's pool routing what it applied to
its own two workers (``WorkerPool.route_synced``), each applying its share as a worker does
(``BackupApplier`` on a held table). After every step the backup's two shards together hold exactly
the backup's table, each shard only its own clients; epoch changes (re-snapshots) and stream cuts
are mixed in.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from director.dataplane.config import CoreConfig
from director.dataplane.io.shard import shard_of
from director.table.conn import ConnTable
from director.workers.pool import WorkerPool
from syncd.apply import BackupApplier
from tests.director.workers.test_replica_exactness import ShardWorkload
from tests.syncd.exact import Exact, Link, Mismatch, entry_view
from tests.syncd.helpers import FakeClock, make_services, run

N = 2


class BackupShards:
    """A backup node's packet workers in process: what its pool sends each worker is applied to that
    worker's table as director.workers.worker does (``_synced``)."""

    def __init__(self, clock: FakeClock, link: Link) -> None:
        self.tables = [ConnTable(clock, bits=8) for _ in range(N)]
        self.appliers = []
        for t in self.tables:
            t.hold_synced(True)
            self.appliers.append(BackupApplier(t, make_services()))
        self.pool = WorkerPool(N, "ext", "int", CoreConfig(), link.table, link.services, table_bits=8,
                               max_conns=10_000, clock=clock)
        self.pool.workers = [_Proc(self, i) for i in range(N)]  # type: ignore[list-item]
        link.applier.on_applied = self.pool.synced_router(lambda _events: None)

    def receive(self, index: int, msg: tuple[Any, ...]) -> None:
        if msg[0] == "synced":
            self.appliers[index].apply(msg[1])

    def check(self, link: Link, step: int) -> None:
        want = {c.key: entry_view(c) for c in link.table}
        got: dict[Any, Any] = {}
        for index, t in enumerate(self.tables):
            for c in t:
                if shard_of(c.key[1], self.pool.mask, N) != index:
                    raise Mismatch(f"step {step}: {c.key} in shard {index}")
                got[c.key] = entry_view(c)
        if got != want:
            missing = [k for k in want if k not in got]
            extra = [k for k in got if k not in want]
            differ = [(k, want[k], got[k]) for k in want if k in got and want[k] != got[k]]
            raise Mismatch(f"step {step}: missing {missing[:2]} extra {extra[:2]} differ {differ[:2]}")


class _Proc:
    """A worker process as the pool sees it: its channel."""

    def __init__(self, shards: BackupShards, index: int) -> None:
        self.channel = self
        self.shards, self.index = shards, index
        self.ready = True

    def send(self, msg: tuple[Any, ...]) -> None:
        self.shards.receive(self.index, msg)


async def _drive(seed: int, steps: int) -> tuple[int, int]:
    clock = FakeClock()
    ex = Exact(clock)
    masters = [ConnTable(clock, bits=8) for _ in range(N)]
    master_pool = WorkerPool(N, "ext", "int", CoreConfig(), ex.table, ex.services, table_bits=8,
                             max_conns=10_000, clock=clock)
    backup_shards: BackupShards | None = None

    def advance(dt: float) -> None:
        clock.advance(dt)
        for t in masters:
            t.tick()
        if backup_shards is not None:
            for t in backup_shards.tables:
                t.tick()  # held synced entries stay: only the master's EXPIREs remove them

    works = []
    for i, t in enumerate(masters):
        t.events.enabled = True
        w = ShardWorkload(t, make_services(), clock, seed * 10 + i, max_entries=150, advance=advance)
        w.index = i
        works.append(w)
    rng = random.Random(seed)
    ex.start(0)
    link = ex.add("b0")
    backup_shards = BackupShards(clock, link)
    epoch = 1
    peak = [0] * N
    try:
        for step in range(steps):
            rng.choice(works).step()
            for t in masters:
                master_pool._mirror(t.events.drain_raw(1 << 20))
            roll = rng.random()
            if roll < 0.01:
                epoch += 1
                ex.set_epoch(epoch)  # a takeover elsewhere: the backup re-snapshots
            elif roll < 0.02:
                link.cut()
                link.connect()  # resumed within the heartbeat deadline
            await ex.settle()
            ex.check_now()
            backup_shards.check(link, step)
            peak = [max(p, len(t)) for p, t in zip(peak, backup_shards.tables, strict=True)]
        return link.checks, min(peak)
    finally:
        await ex.close()
        master_pool.close()
        backup_shards.pool.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_workers_on_each_side_keep_the_backups_shards_equal_to_the_masters(seed: int) -> None:
    checks, least_peak = run(_drive(seed, 1000))
    assert checks > 100 and least_peak > 10  # both backup workers held a share of the entries
