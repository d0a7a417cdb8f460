"""A backup reports the conn events it applied from sync (issue 10, deliverable 8: WatchEvents on a
backup), through ``SyncBackup.on_applied``."""

from __future__ import annotations

from director.table.events import ConnEvent, EventKind
from director.table.tcp import TcpState
from director.types import ConnFlags
from tests.syncd.helpers import CLIENT_NET, VIP, Cluster, FakeClock, run, wait_until

SYNC = int(ConnFlags.SYNC)


def test_backup_reports_applied_conn_events_marked_synced() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(1)
        seen: list[ConnEvent] = []
        backup = cluster.backups[0]
        backup.on_applied = seen.extend
        t = cluster.table
        d = next(iter(cluster.services)).dests[0]
        try:
            await cluster.synced()
            c = t.new(6, CLIENT_NET + 1, 0, VIP, 80, d.addr, d.port, 0, d)  # NO_CPORT: re-keyed below
            await cluster.synced()
            t.set_state(c, int(TcpState.ESTABLISHED), 900.0)
            await cluster.synced()
            old = c.key
            t.fill_cport(c, 4242)
            await cluster.synced()
            t.expire(c)
            await cluster.synced()
            await wait_until(lambda: len(seen) >= 4, 10, "four events")
            want = [(EventKind.NEW, old), (EventKind.UPDATE, old), (EventKind.UPDATE, c.key),
                    (EventKind.EXPIRE, c.key)]
            assert [(e.kind, e.snap.key) for e in seen] == want
            assert seen[1].snap.state == int(TcpState.ESTABLISHED)
            assert seen[2].old_key == old
            assert all(e.snap.flags & SYNC for e in seen)  # what marks them as synced
        finally:
            await cluster.close()
    run(body())


def test_a_failing_hook_does_not_stop_sync() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(1)

        def broken(events: list[ConnEvent]) -> None:
            raise RuntimeError("watcher bug")

        cluster.backups[0].on_applied = broken
        d = next(iter(cluster.services)).dests[0]
        try:
            for i in range(5):
                cluster.table.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, d)
            await cluster.synced()
            assert len(cluster.backup_tables[0]) == 5
            assert cluster.backups[0].applier.stats["apply_errors"] == 0
        finally:
            await cluster.close()
    run(body())


def test_no_events_are_built_while_nobody_wants_them_and_the_table_is_the_same() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(1)
        seen: list[ConnEvent] = []
        backup = cluster.backups[0]
        backup.on_applied = seen.extend
        watching = [False]
        backup.applier.wants_events = lambda: watching[0]
        t = cluster.table
        d = next(iter(cluster.services)).dests[0]
        try:
            await cluster.synced()
            t.new(6, CLIENT_NET + 1, 1000, VIP, 80, d.addr, d.port, 0, d)
            await cluster.synced()
            assert seen == [] and backup.applier.table.count == 1  # applied, no event built
            watching[0] = True
            t.new(6, CLIENT_NET + 2, 1001, VIP, 80, d.addr, d.port, 0, d)
            await cluster.synced()
            await wait_until(lambda: len(seen) == 1, 10, "the watched event")
            assert seen[0].kind is EventKind.NEW and backup.applier.table.count == 2
        finally:
            await cluster.close()
    run(body())
