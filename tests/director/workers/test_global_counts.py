"""Global dest counts with workers: the pool sends each worker the others' share, the worker keeps it
added to its dests' counters, and its scheduler (wlc here) then balances over the node's conns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from director.config.services import parse_config
from director.dataplane.config import CoreConfig
from director.services.service import ServiceTable
from director.table.conn import ConnTable
from director.table.tcp import TcpState
from director.types import ConnFlags
from director.workers.fence import SharedFence
from director.workers.pool import WorkerPool
from director.workers.worker import Worker
from tests.director.table.test_conn_defense import _fill

TEMPLATE = int(ConnFlags.TEMPLATE)
CONFIG = """
services:
  - name: web
    protocol: tcp
    vip: 198.18.0.10
    port: 80
    scheduler: wlc
    forward: nat
    dests:
      - {address: 198.18.1.10, port: 80, healthcheck: {type: tcp}}
      - {address: 198.18.1.11, port: 80, healthcheck: {type: tcp}}
"""


class Sent:
    def __init__(self) -> None:
        self.msgs: list[tuple[Any, ...]] = []

    def send(self, msg: tuple[Any, ...]) -> None:
        self.msgs.append(msg)


@pytest.fixture
def worker() -> Iterator[Worker]:
    fence = SharedFence.create()
    w = Worker(Sent(), fence, 0, 2)  # type: ignore[arg-type]
    w.on_message(("init", {"core": CoreConfig(), "mask": 0xFFFFFFFF, "table_bits": 8, "max_conns": 1000,
                           "ext": "ext", "int": "int"}))
    w.on_message(("config", parse_config(CONFIG), frozenset()))
    yield w
    fence.close()


def test_the_other_workers_share_is_added_replaced_and_taken_out_of_the_own_counts(worker: Worker) -> None:
    assert worker.director is not None
    svc = next(iter(worker.director.services))
    a, b = svc.dests
    worker.on_message(("peers", {a.key: (5, 1)}))
    assert (a.activeconns, a.inactconns, b.activeconns) == (5, 1, 0)
    assert svc.scheduler.schedule(svc.dests, 1, 1) is b  # wlc sees the node's 5 conns on a
    a.activeconns += 1  # this worker's own conn on a
    assert worker._own()[a.key] == (1, 0)
    worker.on_message(("peers", {a.key: (2, 0)}))
    assert (a.activeconns, a.inactconns) == (3, 0)
    worker.on_message(("peers", {}))
    assert (a.activeconns, a.inactconns) == (1, 0)
    assert worker.stats()["own"][a.key] == (1, 0)


def test_the_pool_sends_each_worker_the_others_share_only_when_it_changed() -> None:
    pool = WorkerPool(2, "ext", "int", CoreConfig(), ConnTable(lambda: 0.0, bits=8), ServiceTable(),
                      table_bits=8, max_conns=100)
    sent = [Sent(), Sent()]

    class Proc:
        def __init__(self, ch: Sent) -> None:
            self.channel = ch

    pool.workers = [Proc(sent[0]), Proc(sent[1])]  # type: ignore[list-item]
    key = (6, 1, 80, 0, 2, 80)
    pool.per_worker = [{"own": {key: (3, 0)}}, {"own": {key: (1, 1)}}]
    pool._exchange_counts(pool.per_worker)
    assert sent[0].msgs == [("peers", {key: (1, 1)})]
    assert sent[1].msgs == [("peers", {key: (3, 0)})]
    pool._exchange_counts(pool.per_worker)
    assert len(sent[0].msgs) == len(sent[1].msgs) == 1  # nothing changed: nothing sent
    pool.close()


def test_a_health_down_verdict_invalidates_the_templates_in_the_worker(worker: Worker) -> None:
    """The master's health verdict reaches the templates where they live (the workers' tables)."""
    assert worker.director is not None and worker.table is not None
    svc = next(iter(worker.director.services))
    a, b = svc.dests
    caddr = 0xC6120064
    table = worker.table
    table.events.enabled = False  # no loop here to cut event batches for the parent
    tpl_a = table.new(6, caddr, 0, svc.key[1], 80, a.addr, a.port, TEMPLATE, a, timeout=300)
    tpl_b = table.new(6, caddr + 1, 0, svc.key[1], 80, b.addr, b.port, TEMPLATE, b, timeout=300)
    key_a, key_b = tpl_a.key, tpl_b.key
    worker.on_message(("config", parse_config(CONFIG), frozenset({a.key})))  # the parent's reconcile first
    worker.on_message(("invalidate", frozenset({a.key}), {}))
    assert table.get(key_a) is tpl_a  # a quiesced dest (weight 0) keeps its templates by default
    worker.on_message(("invalidate", frozenset({a.key}), {a.key: True}))  # expire_quiescent_template
    assert table.get(key_a) is None  # no later conn of that scope lands on the dead dest
    assert table.get(key_b) is tpl_b


def test_dynamic_weights_of_misc_checks_reach_the_worker_with_the_config(worker: Worker) -> None:
    """The parent's health sets a misc `dynamic` weight; the worker's dests (where it schedules) get
    it with the config push, and a plain config push (weights gone) puts the configured one back."""
    assert worker.director is not None
    svc = next(iter(worker.director.services))
    a, b = svc.dests
    worker.on_message(("config", parse_config(CONFIG), frozenset(), {a.key: 7}))
    assert (a.weight, b.weight) == (7, 1)
    worker.on_message(("config", parse_config(CONFIG), frozenset(), {}))
    assert (a.weight, b.weight) == (1, 1)


def test_an_engaged_drop_entry_runs_random_drop_in_an_active_worker_and_reports_it(worker: Worker) -> None:
    assert worker.director is not None and worker.table is not None
    sent: Sent = worker.ch  # type: ignore[assignment]
    worker.table.events.enabled = False  # the event feed to the parent is not under test (needs a loop)
    half_open = _fill(worker.table, 400, TcpState.SYN_RECV)
    for _ in range(10):
        worker.on_message(("defense", 0, False, True))
    assert not any(m[0] == "random_drop" for m in sent.msgs), "a backup's shard follows its master's"
    worker.director.active = True
    worker.on_message(("defense", 0, False, False))
    assert not any(m[0] == "random_drop" for m in sent.msgs), "drop_entry not engaged"
    removed = 0
    for _ in range(64):  # once a second, 1/32 of the buckets each time; the table ticks in between
        worker.on_message(("defense", 0, False, True))
        removed += worker.table.tick()
    marked = sum(m[1] for m in sent.msgs if m[0] == "random_drop")
    assert marked >= removed > 0  # (a bucket drawn twice in one call marks its entries twice)
    assert worker.table.count == len(half_open) - removed
