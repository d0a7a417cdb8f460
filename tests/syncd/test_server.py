"""The SyncServer API the daemon uses: roles, flush, backup status, master switch, rebinding."""

from __future__ import annotations

from director.services.service import Dest
from director.table.conn import ConnTable
from director.table.tcp import TcpState
from syncd.backup import BackupConfig, SyncBackup
from syncd.master import MasterConfig
from syncd.policy import SyncPolicy
from syncd.server import create_sync_server
from tests.syncd.helpers import (
    CLIENT_NET,
    RIPS,
    VIP,
    Cluster,
    FakeClock,
    dest_counters,
    make_services,
    run,
    table_view,
    wait_until,
)

FAST = BackupConfig(reconnect_min=0.02, reconnect_max=0.1)


def _fill(table: ConnTable, dest: Dest, n: int, base: int = 0) -> None:
    for i in range(base, base + n):
        c = table.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, dest.addr, dest.port, 0, dest)
        table.set_state(c, int(TcpState.ESTABLISHED), 900.0)


def test_flush_waits_for_every_follower_and_status_lists_them() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock(), MasterConfig(batch_window=5.0))  # a window that never closes by itself
        await cluster.start(2)
        d = next(iter(cluster.services)).dests[0]
        try:
            await cluster.synced()
            _fill(cluster.table, d, 50)
            assert await cluster.server.flush(timeout=20.0)
            head = cluster.server.master.head_seq
            pairs = zip(cluster.backups, cluster.backup_tables, strict=True)
            assert all(f.applied_seq == head and len(t) == 50 for f, t in pairs)
            status = cluster.server.backups()
            assert [s.node_id for s in status] == ["b0", "b1"]
            assert all(s.acked_seq == head and s.lag_seqs == 0 and s.state == "live" for s in status)
        finally:
            await cluster.close()
    run(body())


def test_takeover_new_master_serves_and_stale_master_is_refused() -> None:
    async def body() -> None:
        clock = FakeClock()
        a = Cluster(clock, epoch=1, backup_cfg=FAST)
        await a.start(1)
        fb = a.backups[0]
        table_b, services_b = a.backup_tables[0], a.backup_services[0]
        _fill(a.table, next(iter(a.services)).dests[0], 30)
        try:
            await a.synced()
            # node B wins the election (epoch 2): it stops following and serves its synced table
            fb.set_master(None)
            server_b, port_b = await create_sync_server("127.0.0.1:0", table_b, services_b, 2, clock=clock)
            server_b.start_serving()
            table_c = ConnTable(clock)
            fc = SyncBackup(f"127.0.0.1:{port_b}", "c", table_c, make_services(), cfg=FAST)
            fc.start()
            await wait_until(lambda: fc.in_sync and len(table_c) == 30, 20, "C follows B")
            assert table_view(table_c) == table_view(a.table)
            # the old master (epoch 1) still serves: C, told the election is at epoch 2, refuses it
            fc.set_master(a.target, 2)
            await wait_until(lambda: fc.applier.stats["refused"] >= 1, 20, "stale master refused")
            assert fc.applier.epoch == 2 and len(table_c) == 30
            # and goes back to the real master, which resumes it
            fc.set_master(f"127.0.0.1:{port_b}", 2)
            _fill(table_b, next(iter(services_b)).dests[0], 5, base=100)
            await wait_until(lambda: fc.in_sync and len(table_c) == 35, 20, "C back on B")
            # B resigns: its backups are told, and a backup refuses Follow
            assert await server_b.flush(5.0)
            server_b.stop_serving()
            await wait_until(lambda: not fc.in_sync and fc.stats["stream_errors"] >= 2, 20, "C cut off")
            assert "FAILED_PRECONDITION" in fc.last_error or "UNAVAILABLE" in fc.last_error
            await fc.stop()
            await server_b.stop(0)
        finally:
            await a.close()
    run(body())


def test_unknown_dest_stays_unbound_until_it_appears() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(0)
        svcs_b = make_services(RIPS[:1])  # the backup does not know dest RIPS[1] yet
        f = cluster.add_backup("b0", svcs_b)
        d1 = next(iter(cluster.services)).dests[1]
        try:
            _fill(cluster.table, d1, 10)
            await cluster.synced()
            table_b = cluster.backup_tables[0]
            assert len(table_b) == 10 and all(c.dest is None for c in table_b)
            assert f.applier.pending_dests == 10
            svc_b = next(iter(svcs_b))
            svc_b.add_dest(Dest(svc_b, RIPS[1], 8080))
            assert f.rebind_pending() == 10
            assert table_view(table_b) == table_view(cluster.table)
            master_counters = dest_counters(cluster.services)
            assert all(master_counters[k] == v for k, v in dest_counters(svcs_b).items())
        finally:
            await cluster.close()
    run(body())


def test_policy_can_leave_half_open_entries_out() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock(), MasterConfig(policy=SyncPolicy(sync_syn_recv=False)))
        await cluster.start(1)
        d = next(iter(cluster.services)).dests[0]
        t, b = cluster.table, cluster.backup_tables[0]
        try:
            half = t.new(6, CLIENT_NET, 5000, VIP, 80, d.addr, d.port, 0, d)
            t.set_state(half, int(TcpState.SYN_RECV), 30.0)
            est = t.new(6, CLIENT_NET + 1, 5001, VIP, 80, d.addr, d.port, 0, d)
            t.set_state(est, int(TcpState.ESTABLISHED), 900.0)
            await cluster.synced()
            assert b.get(half.key) is None and b.get(est.key) is not None
            t.set_state(half, int(TcpState.ESTABLISHED), 900.0)
            await cluster.synced()
            assert table_view(b) == table_view(t)
        finally:
            await cluster.close()
    run(body())
