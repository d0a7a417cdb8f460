"""The parent's replica: worker events applied with syncd's applier make it the union of the shards,
the raw events reach the sync master's feed only while it serves, and synced entries are routed to
the worker owning their client."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from director.config.model import Config
from director.dataplane.config import CoreConfig
from director.dataplane.io.shard import shard_of
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import Conn, ConnTable
from director.table.entry import snapshot
from director.table.events import EventKind, cook
from director.types import ConnFlags, FwdMethod, Proto, SvcFlags
from director.workers.pool import WorkerPool
from syncd.master import SyncMaster
from tests.syncd.helpers import FakeClock

TCP = int(Proto.TCP)
VIP = int(ipaddress.IPv4Address("198.18.0.10"))
RS = int(ipaddress.IPv4Address("198.18.1.10"))
CLIENTS = [int(ipaddress.IPv4Address("198.18.0.100")) + i for i in range(6)]


class FirstDest:
    name = "first"

    def update(self, dests: Any) -> None:
        pass

    def schedule(self, dests: Any, caddr: int, cport: int) -> Dest | None:
        return dests[0] if dests else None


def services() -> tuple[ServiceTable, Dest]:
    table = ServiceTable()
    svc = VirtualService(TCP, VIP, 80, FirstDest())
    dest = Dest(svc, RS, 80, weight=1, fwd=FwdMethod.NAT)
    svc.add_dest(dest)
    table.add(svc)
    return table, dest


def view(table: ConnTable) -> set[tuple[Any, ...]]:
    out = set()
    for c in table:
        out.add((c.key, c.state, c.dest.key if c.dest else None, c.control.key if c.control else None))
    return out


class Sent:
    def __init__(self) -> None:
        self.msgs: list[tuple[Any, ...]] = []

    def send(self, msg: tuple[Any, ...]) -> None:
        self.msgs.append(msg)


@pytest.fixture
def pool() -> Any:
    svcs, _dest = services()
    replica = ConnTable(time.monotonic, bits=8)
    p = WorkerPool(2, "ext", "int", CoreConfig(), replica, svcs, table_bits=8, max_conns=1000)
    yield p
    p.close()


def worker_table() -> tuple[ConnTable, Dest]:
    svcs, dest = services()
    t = ConnTable(time.monotonic, bits=8)
    t.events.enabled = True
    return t, dest


def test_the_replica_follows_a_worker_table_and_feeds_sync_only_while_serving(pool: WorkerPool) -> None:
    w, dest = worker_table()
    tpl = w.new(TCP, CLIENTS[0], 0, VIP, 80, RS, 80, int(ConnFlags.TEMPLATE), dest, timeout=300)
    conns: list[Conn] = [w.new(TCP, c, 40000 + i, VIP, 80, RS, 80, 0, dest, state=1, timeout=60,
                               control=tpl if i == 0 else None) for i, c in enumerate(CLIENTS)]
    w.set_state(conns[1], 4, 120)
    w.expire_now(conns[2])
    w.tick()
    pool._mirror(w.events.drain_raw(1 << 20))
    assert view(pool.table) == view(w)
    assert len(pool.table.events) == 0  # not serving: nothing for the sync master

    pool.table.events.enabled = True  # the sync master started
    w.set_state(conns[3], 5, 10)
    raw = w.events.drain_raw(1 << 20)
    pool._mirror(raw)
    assert view(pool.table) == view(w)
    assert pool.table.events.drain_raw(1 << 20) == raw  # exactly what an in-process master would see


def test_synced_entries_and_a_rebuild_go_to_the_worker_owning_the_client(pool: WorkerPool) -> None:
    sent = [Sent(), Sent()]

    class Proc:
        def __init__(self, ch: Sent) -> None:
            self.channel = ch

    pool.workers = [Proc(sent[0]), Proc(sent[1])]  # type: ignore[list-item]
    w, dest = worker_table()
    for i, c in enumerate(CLIENTS):
        w.new(TCP, c, 40000 + i, VIP, 80, RS, 80, 0, dest, state=1, timeout=60)
    pool._mirror(w.events.drain_raw(1 << 20))
    for index in (0, 1):
        keys = {u.key for u in pool._shard_updates(index)}
        assert keys == {c.key for c in w if shard_of(c.key[1], pool.mask, 2) == index}
        assert keys  # the lab's clients fall into both shards
    w.events.enabled = True
    for c in list(w)[:3]:
        w.set_state(c, 4, 120)
    pool.route_synced([cook(ev) for ev in w.events.drain_raw(1 << 20)])
    for index, ch in enumerate(sent):
        for msg in ch.msgs:
            assert msg[0] == "synced"
            assert all(shard_of(u.key[1], pool.mask, 2) == index for u in msg[1])
    assert sum(len(m[1]) for ch in sent for m in ch.msgs) == 3


def test_a_resync_replaces_one_shard_and_makes_the_backups_resnapshot(pool: WorkerPool) -> None:
    w, dest = worker_table()
    conns = [w.new(TCP, c, 40000 + i, VIP, 80, RS, 80, 0, dest, state=1, timeout=60)
             for i, c in enumerate(CLIENTS)]
    pool._mirror(w.events.drain_raw(1 << 20))
    owner = {c.key: shard_of(c.key[1], pool.mask, 2) for c in conns}
    # worker 0 lost events: one of its entries is gone meanwhile; a new one appeared
    gone = next(c for c in conns if owner[c.key] == 0)
    w.expire_now(gone)
    w.tick()
    fresh = w.new(TCP, next(c for c in CLIENTS if shard_of(c, pool.mask, 2) == 0), 50000, VIP, 80, RS, 80, 0,
                  dest, state=1, timeout=60)
    w.events.drain_raw(1 << 20)  # dropped: never reached the parent
    pool.table.events.enabled = True  # serving sync
    rows = [(*snapshot(c), EventKind.NEW, None) for c in w if shard_of(c.key[1], pool.mask, 2) == 0]
    pool._resync(0, rows)
    assert view(pool.table) == view(w)
    assert pool.table.get(gone.key) is None and pool.table.get(fresh.key) is not None
    assert pool.table.events.overflowed  # every backup gets a snapshot at the next cut
    assert len(pool.table.events) == 0  # no stream of partial events: the snapshot covers them


def test_a_replica_entry_extended_by_traffic_in_its_worker_is_refreshed_to_the_backups() -> None:
    """Traffic moves a worker's deadline without an event: the sync master's refresh pass finds the
    replica's copy not extended, the pool asks the worker, and the next pass sends the REFRESH."""
    clock = FakeClock(1000.0)
    svcs, _ = services()
    replica = ConnTable(clock, bits=8)
    pool = WorkerPool(2, "ext", "int", CoreConfig(), replica, svcs, table_bits=8, max_conns=100, clock=clock)
    sent = [Sent(), Sent()]

    class Proc:
        def __init__(self, ch: Sent) -> None:
            self.channel = ch

    pool.workers = [Proc(sent[0]), Proc(sent[1])]  # type: ignore[list-item]
    w = ConnTable(clock, bits=8)
    w.events.enabled = True
    _, dest = services()
    conn = w.new(TCP, CLIENTS[0], 40000, VIP, 80, RS, 80, 0, dest, state=1, timeout=60)
    pool._mirror(w.events.drain_raw(1 << 20))
    master = SyncMaster(replica, clock)
    master.on_stale = pool.ask_expires
    master.tracker.sent(conn.key, replica.get(conn.key).expires, 60)  # type: ignore[union-attr]
    clock.advance(30)
    w.refresh(conn)  # traffic: the worker's deadline moves to 1090, silently
    clock.advance(28.5)  # the backup copy (1060) enters the 2 s refresh margin
    assert master.run_refresh() == 0  # the replica still says 1060
    owner = sent[shard_of(conn.key[1], pool.mask, 2)]
    assert owner.msgs == [("expires?", [conn.key])]
    pool._expires([(conn.key, conn.expires)], [conn.key])  # the worker's answer
    assert replica.get(conn.key).expires == conn.expires  # type: ignore[union-attr]
    clock.advance(1)
    assert master.run_refresh() == 1  # REFRESH with the worker's deadline
    pool.close()


def test_ipv6_persistence_netmasks_leave_the_ipv4_shard_mask_alone(pool: WorkerPool) -> None:
    """The shard filter hashes IPv4 clients only: a v6 service's /64 must not widen their scope."""
    slash64 = int(ipaddress.IPv6Network("::/64").hostmask) ^ (1 << 128) - 1
    vip6 = int(ipaddress.IPv6Address("fd00::10"))
    v6 = VirtualService(TCP, vip6, 80, FirstDest(), flags=SvcFlags.PERSISTENT, netmask=slash64)
    pool.services.add(v6)
    pool.push_config(Config(), frozenset())
    assert pool.mask == 0xFFFFFFFF
    v4 = VirtualService(TCP, VIP, 443, FirstDest(), flags=SvcFlags.PERSISTENT, netmask=0xFFFFFF00)
    pool.services.add(v4)
    pool.push_config(Config(), frozenset())
    assert pool.mask == 0xFFFFFF00
