"""Exactness as an invariant: after every batch a backup applies, its table is the master's.

A randomized workload (creates with and without templates, state changes, traffic refreshes, dest
changes, re-keys, template invalidations - two landing on one key included -, timers, flushes)
runs on the master while faults are injected: traffic late in an entry's timeout, master loop
stalls of 50-500 ms, and up to 1 s (backups keep ticking), ``random_drop``, snapshots requested mid-churn,
epoch changes (every backup re-snapshots), streams cut and resumed. Two backups follow; each checks
keys, dest, control links, ``n_control``, flags, state, timeout, dest counters and timers after
every batch it applies (tests/syncd/exact.py), against the master's table as it was when that batch
was cut.
"""

from __future__ import annotations

import random

import pytest

from director.table.entry import INVALID_PORT
from director.types import ConnFlags
from syncd.master import MasterConfig
from tests.syncd.exact import Exact
from tests.syncd.helpers import FakeClock, run
from tests.syncd.workload import Workload

TEMPLATE = int(ConnFlags.TEMPLATE)


class Faults:
    def __init__(self, ex: Exact, work: Workload, rng: random.Random) -> None:
        self.ex = ex
        self.work = work
        self.rng = rng
        self.epoch = 1
        self.seen: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1

    def late_traffic(self) -> None:
        """Traffic on entries in the last second of their timer (emits no event)."""
        now = self.ex.clock()
        late = [c for c in self.ex.table if 0 < c.expires - now < 1.0 and not c.flags & TEMPLATE]
        for c in late:
            self.ex.table.refresh(c)
        self._count("late_traffic")

    def inject(self) -> None:
        r = self.rng.random()
        ex = self.ex
        if r < 0.15:
            self.late_traffic()
        elif r < 0.25:
            ex.stall(self.rng.uniform(0.05, ex.max_stall))
            self._count("stall")
        elif r < 0.29:
            ex.table.random_drop(self.rng)
            ex.table.tick()
            self._count("random_drop")
        elif r < 0.33:
            lk = self.rng.choice(ex.links)
            if lk.session is not None:
                lk.session.request_snapshot("test: snapshot mid-churn")
                self._count("snapshot")
        elif r < 0.35:
            self.epoch += 1
            ex.set_epoch(self.epoch)
            self._count("epoch")
        elif r < 0.38:
            lk = self.rng.choice(ex.links)
            lk.cut()
            self._churn()
            lk.connect()
            self._count("cut")

    def _churn(self) -> None:
        for _ in range(self.rng.randint(1, 6)):
            self.work.step()


async def _drive(seed: int, rounds: int, max_stall: float = 0.5) -> dict[str, int]:
    clock = FakeClock()
    ex = Exact(clock, MasterConfig(max_batch=16, snapshot_chunk=8), max_stall=max_stall)
    ex.start(2)
    rng = random.Random(seed)
    work = Workload(ex.table, ex.services, clock, seed=seed, max_entries=150, advance=ex.advance)
    faults = Faults(ex, work, rng)
    try:
        for _ in range(rounds):
            for _ in range(rng.randint(1, 10)):
                work.step()
            faults.inject()
            await ex.settle(churn=faults._churn)
            faults.seen["invalidated"] = faults.seen.get("invalidated", 0) + sum(
                1 for c in ex.table if c.flags & TEMPLATE and c.vport == INVALID_PORT)
        await ex.settle()
        ex.check_now()
        faults.seen["checks"] = min(lk.checks for lk in ex.links)
        faults.seen["snapshots"] = min(lk.applier.stats["snapshots"] for lk in ex.links)
        assert all(lk.applier.stats["apply_errors"] == 0 for lk in ex.links)
        return faults.seen
    finally:
        await ex.close()


@pytest.mark.parametrize(("seed", "max_stall"), [(3, 0.5), (17, 1.0)])
def test_backups_equal_master_after_every_batch_under_faults(seed: int, max_stall: float) -> None:
    seen = run(_drive(seed, 500, max_stall))
    assert seen["checks"] > 300
    assert seen["snapshots"] >= 3  # first follow, epoch changes / requests mid-churn
    for what in ("late_traffic", "stall", "random_drop", "epoch", "cut", "invalidated"):
        assert seen.get(what, 0) > 0, what
