"""A randomized workload on the master; at quiescence every backup's table equals the master's."""

from __future__ import annotations

import asyncio

import pytest

from director.table.conn import ConnTable
from director.types import ConnFlags
from syncd.backup import BackupConfig
from syncd.master import MasterConfig
from tests.syncd.helpers import Cluster, FakeClock, dest_counters, run, table_view, wait_until
from tests.syncd.workload import Workload


def _diff(a: dict[object, object], b: dict[object, object]) -> str:
    only_a = [k for k in a if k not in b][:3]
    only_b = [k for k in b if k not in a][:3]
    differ = [(a[k], b[k]) for k in a if k in b and a[k] != b[k]][:3]
    return f"only master: {only_a} only backup: {only_b} differ: {differ}"


def _timers_bad(master: ConnTable, backup: ConnTable, now: float) -> list[object]:
    """A backup copy never expires before the master's entry (unless both are within the refresh
    margin) and a conn copy never holds on longer than a full timeout (a silent shortening on the
    master - `refresh(conn, shorter)`, a template's deferred expiry re-armed at 60 s - is only learnt
    when the master's timer fires and sends EXPIRE)."""
    bad: list[object] = []
    for c in master:
        b = backup.get(c.key)
        if b is None:
            bad.append(c.key)
            continue
        m_rem, b_rem = c.expires - now, b.expires - now
        # traffic may refresh with a custom timeout (the workload uses up to 5 s): a REFRESH then
        # carries more than the state's timeout, and a later silent shortening is learnt at expiry
        upper = float("inf") if c.flags & ConnFlags.TEMPLATE else max(m_rem, c.timeout, 5.0) + 0.01
        if not (min(m_rem, 0.25) - 0.01 <= b_rem <= upper):
            bad.append((c, c.timeout, m_rem, b_rem))
    return bad


async def _quiesce(cluster: Cluster, clock: FakeClock) -> None:
    await cluster.synced()
    clock.advance(1.0)  # let the refresher see entries whose master timer moved silently
    master = cluster.table

    def equal() -> bool:
        view = table_view(master)
        now = clock()
        return all(table_view(b) == view and not _timers_bad(master, b, now) for b in cluster.backup_tables)

    try:
        await wait_until(equal, 20.0, "backup tables equal to the master's")
    except AssertionError:
        for b in cluster.backup_tables:
            print(_diff(table_view(master), table_view(b)))
            print(_timers_bad(master, b, clock())[:5])
        raise
    for svcs in cluster.backup_services:
        assert dest_counters(svcs) == dest_counters(cluster.services)


@pytest.mark.parametrize("seed", [4, 11, 23])
def test_randomized_workload_two_backups_equal_master(seed: int) -> None:
    async def body() -> None:
        clock = FakeClock()
        cluster = Cluster(clock, MasterConfig(batch_window=0.002, max_batch=64),
                          BackupConfig(reconnect_min=0.05, reconnect_max=0.2))
        await cluster.start(2)
        try:
            work = Workload(cluster.table, cluster.services, clock, seed=seed)
            peak = templates = 0
            for _ in range(6):
                for _ in range(400):
                    work.step()
                    peak = max(peak, len(cluster.table))
                    if work.ops % 25 == 0:
                        await asyncio.sleep(0)  # let batches flow mid-workload
                templates += sum(1 for c in cluster.table if c.flags & ConnFlags.TEMPLATE)
                await _quiesce(cluster, clock)
            assert peak > 50 and templates > 0  # the workload exercised something
            assert cluster.server.master.stats["batches"] > 10
            assert all(f.applier.stats["refused"] == 0 for f in cluster.backups)
        finally:
            await cluster.close()
    run(body())
