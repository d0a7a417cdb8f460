"""Regression tests for the backup-state defects of issue 10 (in-process master and backups).

1. a backup dropped live entries refreshed by traffic late in their timeout (master stalls made it
   worse); 2. the snapshot after an epoch change left stale templates and control links;
6. two invalidated templates with one key were one on the backup, and a template's deferred
   expiry (60 s while it controls conns) was not evented.
"""

from __future__ import annotations

from director.table.conn import Conn
from director.table.entry import INVALID_PORT
from director.types import ConnFlags
from syncd.master import MasterConfig
from tests.syncd.exact import Exact
from tests.syncd.helpers import CLIENT_NET, VIP, FakeClock, run

TEMPLATE = int(ConnFlags.TEMPLATE)
UDP, TCP = 17, 6


def _missing(ex: Exact, keys: list[object]) -> list[object]:
    return [k for lk in ex.links for k in keys if lk.table.get(k) is None]  # type: ignore[arg-type]


def test_traffic_late_in_the_timeout_never_loses_a_backup_copy() -> None:
    """320 UDP entries (5 s) touched 1.2 s before their backup deadline, master stalling 250 ms
    now and then: none may ever be missing on either backup (issue 10, defect 1)."""
    async def body() -> None:
        clock = FakeClock()
        ex = Exact(clock, MasterConfig(max_batch=512))
        ex.start(2)
        d = next(iter(ex.services)).dests[0]
        try:
            conns = [ex.table.new(UDP, CLIENT_NET + i, 2000 + i, VIP, 80, d.addr, d.port, 0, d, timeout=5.0)
                     for i in range(320)]
            keys: list[object] = [c.key for c in conns]
            await ex.settle()
            t0, touched, step = clock(), False, 0
            while clock() < t0 + 10.0:  # the backups' deadline is t0 + 5; traffic at t0 + 3.8
                step += 1
                if not touched and clock() >= t0 + 3.8:
                    touched = True
                    for c in conns:
                        ex.table.refresh(c)
                if step % 20 == 10:
                    ex.stall(0.25)
                else:
                    ex.advance(0.05)
                await ex.settle()
                if ex.table.get(conns[0].key) is not None:
                    assert _missing(ex, keys) == []
            assert ex.table.get(conns[0].key) is None  # the master expired them at last...
            assert all(lk.table.get(conns[0].key) is None for lk in ex.links)  # ...and so did the backups
        finally:
            await ex.close()
    run(body())


def _persistent(ex: Exact, i: int, dest_index: int = 0) -> tuple[Conn, Conn]:
    d = next(iter(ex.services)).dests[dest_index]
    tpl = ex.table.new(TCP, CLIENT_NET + i, 0, VIP, 80, d.addr, d.port, TEMPLATE, d, timeout=300.0)
    child = ex.table.new(TCP, CLIENT_NET + i, 3000 + i, VIP, 80, d.addr, d.port, 0, d, control=tpl)
    ex.table.set_state(child, 1, 900.0)
    return tpl, child


def test_snapshot_after_epoch_change_replaces_templates_and_links_exactly() -> None:
    """Templates invalidated (re-keyed) in batches the backup never sees, then the snapshot of the
    new epoch: the backup must end with the master's keys, links and n_control (defect 2)."""
    async def body() -> None:
        clock = FakeClock()
        ex = Exact(clock, MasterConfig(snapshot_chunk=4))
        ex.start(2)
        svc = next(iter(ex.services))
        try:
            pairs = [_persistent(ex, i) for i in range(12)]
            await ex.settle()
            svc.remove_dest(svc.dests[0])  # the dest goes: its templates are invalidated
            for tpl, _ in pairs:
                assert not ex.table.check_template(tpl, False)
            ex.set_epoch(2)       # takeover: a new incarnation...
            ex.master.cut_batch()  # ...whose first batch (the re-keys) precedes every snapshot begin
            await ex.settle()
            ex.check_now()
            for lk in ex.links:
                tpls = [c for c in lk.table if c.flags & TEMPLATE]
                assert len(tpls) == 12 and all(c.vport == INVALID_PORT and c.n_control == 1 for c in tpls)
                assert all(c.control is not None and c.control.vport == INVALID_PORT
                           for c in lk.table if not c.flags & TEMPLATE)
                assert lk.applier.stats["snapshots"] == 2
        finally:
            await ex.close()
    run(body())


def test_two_invalidated_templates_with_one_key_are_two_on_the_backup() -> None:
    """Two templates of one client and VIP to one real server (ports 80 and 81) invalidate to the
    same key on the seed's rule; the backup must still hold both with their children (defect 6)."""
    async def body() -> None:
        clock = FakeClock()
        ex = Exact(clock)
        ex.start(1)
        svc = next(iter(ex.services))
        d = svc.dests[0]
        try:
            t80 = ex.table.new(TCP, CLIENT_NET, 0, VIP, 80, d.addr, d.port, TEMPLATE, d, timeout=300.0)
            t81 = ex.table.new(TCP, CLIENT_NET, 0, VIP, 81, d.addr, d.port + 1, TEMPLATE, d, timeout=300.0)
            for i, tpl in enumerate((t80, t81)):
                ex.table.new(TCP, CLIENT_NET, 4000 + i, VIP, tpl.vport, d.addr, tpl.dport, 0, d, control=tpl)
            await ex.settle()
            svc.remove_dest(d)
            assert not ex.table.check_template(t80, False) and not ex.table.check_template(t81, False)
            assert t80.vport == t81.vport == INVALID_PORT and t80.key != t81.key
            await ex.settle()
            ex.check_now()
            tpls = [c for c in ex.links[0].table if c.flags & TEMPLATE]
            assert sorted(c.n_control for c in tpls) == [1, 1]
        finally:
            await ex.close()
    run(body())


def test_deferred_template_expiry_reaches_the_backups() -> None:
    """A template whose timer fires while it controls a conn waits 60 s more (ip_vs_conn_expire):
    the backups must learn the new timeout and deadline (defect 6)."""
    async def body() -> None:
        clock = FakeClock()
        ex = Exact(clock)
        ex.start(1)
        d = next(iter(ex.services)).dests[0]
        try:
            tpl = ex.table.new(TCP, CLIENT_NET, 0, VIP, 80, d.addr, d.port, TEMPLATE, d, timeout=3.0)
            child = ex.table.new(TCP, CLIENT_NET, 5000, VIP, 80, d.addr, d.port, 0, d, control=tpl)
            ex.table.set_state(child, 1, 900.0)
            await ex.settle()
            ex.advance(3.5)  # the template's timer fired: deferred, timeout 60 s
            await ex.settle()
            assert tpl.timeout == 60.0 and ex.table.get(tpl.key) is tpl
            b = ex.links[0].table.get(tpl.key)
            assert b is not None and b.timeout == 60.0
            assert -0.01 < b.expires - tpl.expires < 0.51  # the backup applied it up to 0.5 s later
            ex.check_now()
        finally:
            await ex.close()
    run(body())
