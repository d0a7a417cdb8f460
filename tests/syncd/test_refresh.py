"""Long-lived entries never expire on a backup first (the refresh policy), with an injected clock."""

from __future__ import annotations

from director.table.tcp import TcpState
from director.types import ConnFlags
from syncd.master import MasterConfig
from syncd.policy import SyncPolicy
from tests.syncd.helpers import CLIENT_NET, VIP, Cluster, FakeClock, run, wait_until

EST = int(TcpState.ESTABLISHED)


def test_long_lived_entries_outlive_several_backup_timeouts() -> None:
    async def body() -> None:
        clock = FakeClock()
        cluster = Cluster(clock, MasterConfig(batch_window=0.001, policy=SyncPolicy(refresh_margin=2.0)))
        await cluster.start(1)
        t, b = cluster.table, cluster.backup_tables[0]
        d = next(iter(cluster.services)).dests[0]
        try:
            # a busy flow (traffic refreshes it, which emits no event) with a 10 s timeout
            busy = t.new(6, CLIENT_NET + 1, 1111, VIP, 80, d.addr, d.port, 0, d)
            t.set_state(busy, EST, 10.0)
            # a persistence template (10 s) held by an idle established child (900 s)
            tpl = t.new(6, CLIENT_NET + 2, 0, VIP, 80, d.addr, d.port, int(ConnFlags.TEMPLATE), d,
                        timeout=10.0)
            child = t.new(6, CLIENT_NET + 2, 2222, VIP, 80, d.addr, d.port, 0, d, control=tpl)
            t.set_state(child, EST, 900.0)
            # an idle flow that must go away on both sides when the master expires it
            idle = t.new(6, CLIENT_NET + 3, 3333, VIP, 80, d.addr, d.port, 0, d)
            t.set_state(idle, EST, 10.0)
            await cluster.synced()
            assert b.get(idle.key) is not None
            for _ in range(15):  # 45 s: four and a half backup timeouts of the 10 s entries
                clock.advance(3.0)
                t.refresh(busy)
                t.tick()
                await cluster.synced()  # runs a refresh pass and waits for the backup to apply it
                b.tick()
                assert b.get(busy.key) is not None
                assert b.get(tpl.key) is not None and b.get(child.key) is not None
                assert b.get(tpl.key).n_control == 1
                assert b.get(busy.key).expires > clock() + 1.0
            assert t.get(idle.key) is None
            await wait_until(lambda: b.get(idle.key) is None, 10.0, "idle entry expired on the backup")
            assert cluster.server.master.stats["refreshes"] >= 5
        finally:
            await cluster.close()
    run(body())
