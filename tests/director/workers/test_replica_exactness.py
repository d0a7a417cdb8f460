"""Exactness of the replica: after every step of a randomized workload on two worker shards (creates
with and without templates, state changes, traffic, timers, forced expiry, dest changes, re-keys,
template invalidation, flushes), the parent's replica (worker events applied by the pool) holds
exactly the union of the shards: keys, flags, state, timeout, dest, control links, n_control and
dest counters. With tests/syncd/test_exactness.py (a master's table -> its backups) this covers the
chain worker shards -> replica -> backups.
"""

from __future__ import annotations

import random

import pytest

from director.dataplane.config import CoreConfig
from director.dataplane.io.shard import shard_of
from director.table.conn import ConnTable
from director.workers.pool import WorkerPool
from tests.syncd.exact import Mismatch, View, entry_view
from tests.syncd.helpers import CLIENT_NET, FakeClock, make_services
from tests.syncd.workload import Workload


class ShardWorkload(Workload):
    """The workload of one worker: only clients of its shard."""

    index = 0

    def _client(self) -> tuple[int, int]:
        while True:
            caddr = CLIENT_NET + self.rng.randrange(64)
            if shard_of(caddr, 0xFFFFFFFF, 2) == self.index:
                return caddr, self.rng.randrange(1024, 65535)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_replica_is_the_union_of_the_shards_after_every_step(seed: int) -> None:
    clock = FakeClock()
    tables = [ConnTable(clock, bits=8) for _ in range(2)]
    services = [make_services() for _ in range(2)]
    replica_services = make_services()
    replica = ConnTable(clock, bits=8)
    pool = WorkerPool(2, "ext", "int", CoreConfig(), replica, replica_services, table_bits=8,
                      max_conns=10_000, clock=clock)

    def advance(dt: float) -> None:
        clock.advance(dt)
        for t in tables:
            t.tick()

    works = []
    for i, (t, svcs) in enumerate(zip(tables, services, strict=True)):
        t.events.enabled = True
        w = ShardWorkload(t, svcs, clock, seed * 10 + i, max_entries=150, advance=advance)
        w.index = i
        works.append(w)
    rng = random.Random(seed)
    try:
        for step in range(1000):
            rng.choice(works).step()
            for t in tables:
                pool._mirror(t.events.drain_raw(1 << 20))
            want = {c.key: entry_view(c) for t in tables for c in t}
            got = View(replica, replica_services)
            if got.entries != want or got.count != sum(len(t) for t in tables):
                missing = [k for k in want if k not in got.entries]
                extra = [k for k in got.entries if k not in want]
                differ = [(k, want[k], got.entries[k]) for k in want
                          if k in got.entries and want[k] != got.entries[k]]
                raise Mismatch(f"step {step}: missing {missing[:2]} extra {extra[:2]} differ {differ[:2]}")
            sums: dict[object, list[int]] = {}
            for svcs in services:
                for s in svcs:
                    for d in s.dests:
                        a = sums.setdefault(d.key, [0, 0, 0])
                        a[0] += d.activeconns
                        a[1] += d.inactconns
                        a[2] += d.persistconns
            assert {k: list(v) for k, v in got.counters.items()} == sums, f"step {step}"
        assert len(replica) > 0
    finally:
        pool.close()
