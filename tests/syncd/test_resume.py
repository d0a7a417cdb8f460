"""Stream cuts resume exactly (no loss, no duplicates); a backup too far behind gets a snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from syncd.master import MasterConfig
from tests.syncd.helpers import Cluster, FakeClock, run, table_view, wait_until
from tests.syncd.workload import Workload


async def _work(work: Workload, steps: int) -> None:
    for i in range(steps):
        work.step()
        if i % 10 == 0:
            await asyncio.sleep(0.001)  # real time passes: batches flow, backups reconnect


async def _work_until(work: Workload, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Keep the workload running until `cond` holds (generous deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "timed out"
        await _work(work, 20)


async def _equal(cluster: Cluster) -> None:
    await cluster.synced()
    await wait_until(lambda: all(table_view(b) == table_view(cluster.table) for b in cluster.backup_tables),
                     20.0, "backups equal to the master")


def test_cut_streams_resume_without_loss_or_duplicates() -> None:
    async def body() -> None:
        clock = FakeClock()
        cluster = Cluster(clock, MasterConfig(batch_window=0.001, max_batch=32))
        await cluster.start(1)
        f = cluster.backups[0]
        try:
            await cluster.synced()
            base = f.applier.applied_seq
            work = Workload(cluster.table, cluster.services, clock, seed=7)
            await _work(work, 300)
            for s in list(cluster.server.master.sessions):  # the master drops the connection
                s.close("test: connection cut", "stopped")
            await _work(work, 300)
            await _work_until(work, lambda: f.stats["connects"] >= 2 and f.in_sync)
            await f.stop()  # the sync daemon of the backup is killed...
            await _work(work, 300)
            f.start()  # ...and restarted (the node kept its table)
            await _work_until(work, lambda: f.stats["connects"] >= 3 and f.in_sync)
            await _equal(cluster)
            head = cluster.server.master.head_seq
            assert f.stats["connects"] >= 3
            assert f.applier.stats["snapshots"] == 1  # only the first follow: the cuts resumed
            assert f.applier.stats["refused"] == 0
            assert f.applier.stats["batches"] == head - base  # every batch applied exactly once
        finally:
            await cluster.close()
    run(body())


def test_follower_out_of_retention_gets_snapshot() -> None:
    async def body() -> None:
        clock = FakeClock()
        cluster = Cluster(clock, MasterConfig(batch_window=0.001, retention_batches=8))
        await cluster.start(1)
        f = cluster.backups[0]
        master = cluster.server.master
        try:
            work = Workload(cluster.table, cluster.services, clock, seed=8)
            await _work(work, 100)
            await _equal(cluster)
            await f.stop()
            start = master.head_seq
            while master.head_seq < start + 20:
                work.step()
                master.cut_batch()
            assert not master.retained(f.applier.applied_seq)
            f.start()
            await _equal(cluster)
            assert f.applier.stats["snapshots"] == 2
        finally:
            await cluster.close()
    run(body())


def test_slow_follower_queue_overflow_gets_snapshot_others_unaffected() -> None:
    async def body() -> None:
        clock = FakeClock()
        cluster = Cluster(clock, MasterConfig(batch_window=0.001, backup_max_lag=4))
        await cluster.start(1)
        master = cluster.server.master
        try:
            work = Workload(cluster.table, cluster.services, clock, seed=9)
            await _work(work, 100)
            await _equal(cluster)
            before = cluster.backups[0].applier.stats["snapshots"]
            for _ in range(10):  # more batches than the backup's queue holds, before it can run
                for _ in range(5):
                    work.step()
                master.cut_batch()
            await _equal(cluster)
            assert cluster.backups[0].applier.stats["snapshots"] == before + 1
            assert cluster.backups[0].applier.stats["refused"] == 0
        finally:
            await cluster.close()
    run(body())


def test_event_feed_overflow_resyncs_every_backup() -> None:
    async def body() -> None:
        clock = FakeClock()
        cluster = Cluster(clock, MasterConfig(batch_window=0.001), event_capacity=16)
        await cluster.start(2)
        master = cluster.server.master
        try:
            work = Workload(cluster.table, cluster.services, clock, seed=10)
            await _equal(cluster)
            for _ in range(200):  # no yield: the feed (16 events) overflows
                work.step()
            assert cluster.table.events.overflowed
            await _equal(cluster)
            assert master.stats["feed_overflows"] == 1
            assert all(f.applier.stats["snapshots"] == 2 for f in cluster.backups)
        finally:
            await cluster.close()
    run(body())
