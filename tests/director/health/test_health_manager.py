"""The pure rise/fall state machine, verdict application on real tables, and a live drill with the
asyncio runner against real loopback servers that are stopped and started again."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from director.health.manager import (
    HealthManager,
    HealthRunner,
    Transition,
    apply_verdict,
    decode_verdict,
    dest_id,
    encode_verdict,
    parse_dest_id,
    targets_from,
    verdict_key,
)
from director.health.service import HealthService
from director.health.spec import CheckResult, HealthSpec
from director.services.sched import registry
from director.services.service import Dest, DestKey, ServiceTable, VirtualService
from director.table.conn import ConnTable
from director.types import ConnFlags, DestFlags, Proto, SvcFlags
from tests.director.health.servers import HttpServer

OK, BAD = CheckResult(True, "ok"), CheckResult(False, "refused")
KEY: DestKey = (6, 1, 80, 0, 2, 8080)
SPEC = HealthSpec(kind="tcp", interval=2.0, timeout=1.0, rise=2, fall=3)


def manager(spec: HealthSpec = SPEC, now: float = 0.0) -> HealthManager:
    m = HealthManager()
    m.configure({KEY: ("198.18.1.2", 8080, spec)}, now)
    return m


def probe_at(m: HealthManager, now: float, result: CheckResult) -> Transition | None:
    probes = m.due(now)
    assert [p.key for p in probes] == [KEY]
    return m.report(KEY, result, now)


def test_fall_then_rise() -> None:
    m = manager()
    assert m.verdicts() == {KEY: True}  # unknown starts up (no black-holing while checks start)
    assert probe_at(m, 0, BAD) is None and probe_at(m, 2, BAD) is None
    t = probe_at(m, 4, BAD)
    assert t == Transition(KEY, False, 4, "refused") and m.verdicts() == {KEY: False}
    assert probe_at(m, 6, BAD) is None  # stays down, no repeated transition
    assert probe_at(m, 8, OK) is None
    t = probe_at(m, 10, OK)
    assert t is not None and t.up and m.verdicts() == {KEY: True}
    assert probe_at(m, 12, OK) is None


def test_first_verdict_is_announced_once() -> None:
    m = manager()
    assert probe_at(m, 0, OK) is None
    t = probe_at(m, 2, OK)  # `rise` good probes: the first verdict ("up") is published
    assert t is not None and t.up and m.get(KEY).known  # type: ignore[union-attr]
    assert probe_at(m, 4, OK) is None
    m2 = HealthManager()
    m2.seed({KEY: True})  # a seeded verdict is already known: nothing to announce
    m2.configure({KEY: ("198.18.1.2", 8080, SPEC)}, 0)
    assert probe_at(m2, 0, OK) is None and probe_at(m2, 2, OK) is None


def test_a_success_resets_the_failure_streak() -> None:
    m = manager()
    for now, res in ((0, BAD), (2, BAD), (4, OK), (6, BAD), (8, BAD)):
        assert probe_at(m, now, res) is None
    assert probe_at(m, 10, BAD) is not None


def test_due_respects_interval_and_in_flight() -> None:
    m = manager()
    assert len(m.due(0.0)) == 1
    assert m.due(5.0) == []  # still in flight: never probed twice at once
    assert m.next_deadline() is None
    m.report(KEY, OK, 0.5)
    assert m.next_deadline() == 2.0 and m.due(1.9) == [] and len(m.due(2.0)) == 1


def test_configure_keeps_state_of_unchanged_dests_and_seed() -> None:
    m = manager()
    for now in (0, 2, 4):
        probe_at(m, now, BAD)
    m.configure({KEY: ("198.18.1.2", 8080, SPEC)}, 5)
    assert m.verdicts() == {KEY: False}
    other: DestKey = (6, 1, 80, 0, 3, 8080)
    m2 = HealthManager()
    m2.seed({other: False})
    m2.configure({other: ("198.18.1.3", 8080, SPEC)}, 0)
    assert m2.verdicts() == {other: False}  # a new master starts from the published verdict
    m.configure({}, 6)
    assert len(m) == 0 and m.report(KEY, OK, 7) is None


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 4), st.integers(1, 4))
def test_verdict_matches_the_rise_fall_rule(results: list[bool], rise: int, fall: int) -> None:
    m = manager(HealthSpec(rise=rise, fall=fall, interval=1.0))
    up, known, ok_run, bad_run = True, False, 0, 0
    for i, ok in enumerate(results):
        t = probe_at(m, float(i), OK if ok else BAD)
        ok_run, bad_run = (ok_run + 1, 0) if ok else (0, bad_run + 1)
        announce = None
        if (up or not known) and bad_run >= fall:
            announce = False
        elif (not up or not known) and ok_run >= rise:
            announce = True
        if announce is not None:
            up, known = announce, True
        assert (t is None) == (announce is None) and (t is None or t.up == up)
        assert m.verdicts()[KEY] == up
    assert m.get(KEY) is not None and m.get(KEY).checks == len(results)  # type: ignore[union-attr]


def test_spec_from_dict_names_the_field() -> None:
    spec = HealthSpec.from_dict({"type": "http", "path": "/h", "expect_status": [200, 204], "fall": 2})
    assert (spec.kind, spec.expect_status, spec.fall, spec.rise) == ("http", (200, 204), 2, 2)
    assert HealthSpec.from_dict(spec.as_dict()) == spec
    for bad, field in (({"fall": 0}, "health.fall"), ({"type": "icmp"}, "health.type"),
                       ({"expect_body": "("}, "health.expect_body"), ({"bogus": 1}, "health.bogus"),
                       ({"on_failure": "kill"}, "health.on_failure"), ({"path": "x"}, "health.path")):
        try:
            HealthSpec.from_dict(bad)
        except ValueError as exc:
            assert str(exc).startswith(field), exc
        else:
            raise AssertionError(f"{bad} accepted")


def test_verdict_codec_and_key() -> None:
    key: DestKey = (6, 3323068426, 80, 0, 3323068674, 8080)
    assert parse_dest_id(dest_id(key)) == key
    assert verdict_key("/lbd/", "lab", key) == f"/lbd/lab/health/{dest_id(key)}"
    v = decode_verdict(encode_verdict(False, since=12.5, node="d1", epoch=4, detail="refused"))
    assert (v["up"], v["epoch"], v["node"]) == (False, 4, "d1")
    for bad in ('{"up": 1, "epoch": 1}', "[]", '{"up": true}'):
        try:
            decode_verdict(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


# ---- verdicts applied to the real tables ------------------------------------------------------


def tables(persistent: bool = True) -> tuple[ServiceTable, ConnTable, VirtualService, float]:
    now = [100.0]
    services = ServiceTable()
    svc = VirtualService(int(Proto.TCP), 1, 80, registry.create("rr"),
                         flags=SvcFlags.PERSISTENT if persistent else SvcFlags(0))
    for addr in (2, 3):
        svc.add_dest(Dest(svc, addr, 8080, weight=5))
    services.add(svc)
    return services, ConnTable(lambda: now[0]), svc, now[0]


def test_quiesce_sets_weight_zero_and_recovery_restores() -> None:
    services, table, svc, _ = tables()
    dead = svc.dests[0]
    ct = table.new(6, 10, 0, 1, 80, dead.addr, 8080, int(ConnFlags.TEMPLATE), dead, timeout=300)
    conn = table.new(6, 10, 5555, 1, 80, dead.addr, 8080, 0, dead)
    ct_key = ct.key
    apply_verdict(services, table, dead.key, False, on_failure="quiesce", expire_quiescent_template=False)
    assert dead.weight == 0 and dead in svc.dests
    assert all(svc.scheduler.schedule(svc.dests, 20 + i, 1000) is not dead for i in range(20))
    assert table.get(ct.key) is ct and table.get(conn.key) is conn  # existing conns/templates live on
    apply_verdict(services, table, dead.key, False, on_failure="quiesce", expire_quiescent_template=True)
    # template invalidated by check_template: rehashed as vport = dport = 65535, never matches again
    assert table.get(ct_key) is None and (ct.vport, ct.dport) == (65535, 65535)
    assert table.ct_in_get(6, 10, 0, 1, 80) is None
    apply_verdict(services, table, dead.key, True, on_failure="quiesce", configured=Dest(svc, 2, 8080, 5))
    assert dead.weight == 5
    assert any(svc.scheduler.schedule(svc.dests, 20 + i, 1000) is dead for i in range(20))


def test_remove_unlinks_and_recovery_relinks() -> None:
    services, table, svc, _ = tables()
    dead = svc.dests[1]
    ct = table.new(6, 11, 0, 1, 80, dead.addr, 8080, int(ConnFlags.TEMPLATE), dead, timeout=300)
    ct_key = ct.key
    apply_verdict(services, table, dead.key, False, on_failure="remove")
    assert dead not in svc.dests and not dead.flags & DestFlags.AVAILABLE
    assert table.get(ct_key) is None and ct.vport == 65535  # an unavailable dest's template is invalidated
    back = apply_verdict(services, table, dead.key, True, on_failure="remove", configured=dead)
    assert back is dead and dead in svc.dests and dead.flags & DestFlags.AVAILABLE
    assert apply_verdict(services, table, (6, 9, 9, 0, 2, 8080), False, on_failure="remove") is None


# ---- a live drill: real servers, the asyncio runner, verdicts applied as the watch would ------


def test_drill_stop_server_quiesced_then_restored() -> None:
    asyncio.run(_drill())


async def _drill() -> None:
    servers = [await HttpServer({"/healthz": (200, b"ok")}).start() for _ in range(2)]
    services = ServiceTable()
    svc = VirtualService(int(Proto.TCP), 1, 80, registry.create("wrr"))
    for s in servers:
        svc.add_dest(Dest(svc, 0x7F000001, s.port, weight=3))  # both on 127.0.0.1, told apart by port
    services.add(svc)
    spec = HealthSpec(kind="http", path="/healthz", expect_body="ok", interval=0.1, timeout=0.5, rise=2,
                      fall=3)
    specs = {d.key: spec for d in svc.dests}
    configured = {d.key: Dest(svc, d.addr, d.port, weight=3) for d in svc.dests}
    m = HealthManager()
    m.configure(targets_from(services, specs, lambda a: "127.0.0.1"), time.monotonic())
    flips: list[Transition] = []
    table = ConnTable(time.monotonic)
    victim = svc.dests[0]
    existing = table.new(6, 0xC6120301, 40000, 1, 80, victim.addr, victim.port, 0, victim, timeout=900)

    async def publish(t: Transition) -> None:  # master writes to etcd; every node applies it
        flips.append(t)
        apply_verdict(services, table, t.key, t.up, on_failure="quiesce", configured=configured[t.key])

    runner = HealthRunner(m, time.monotonic, publish)
    runner.start()
    try:
        await _until(lambda: len(flips) == 2)  # both dests announce their first verdict: up
        assert {(f.key, f.up) for f in flips} == {(k, True) for k in specs} and victim.weight == 3
        flips.clear()
        await servers[0].stop()
        stopped = time.monotonic()
        await _until(lambda: victim.weight == 0)
        took = flips[0].at - stopped
        h = m.get(victim.key)
        assert h is not None and flips[0].up is False and h.fail_streak == spec.fall
        # quiesced after exactly `fall` failed probes, one per interval: within fall x interval (+ timeout)
        print(f"quiesced {took:.3f}s after stop (fall x interval = {spec.fall * spec.interval:.1f}s)")
        picks = [svc.scheduler.schedule(svc.dests, 1000 + i, 2000) for i in range(30)]
        assert all(p is svc.dests[1] for p in picks)  # no new connection to the dead dest
        assert table.get(existing.key) is existing and existing.dest is victim  # quiesce keeps existing
        servers[0].port = victim.port
        await servers[0].start()
        await _until(lambda: victim.weight == 3)
        h = m.get(victim.key)
        assert [f.up for f in flips] == [False, True] and h is not None and h.ok_streak >= spec.rise
        assert svc.dests[1].weight == 3 and all(f.key == victim.key for f in flips)
    finally:
        await runner.stop()
        for s in servers:
            if s.server is not None:
                await s.stop()


async def _until(cond: object, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def test_dynamic_weight_is_announced_when_it_changes() -> None:
    spec = HealthSpec(kind="misc", command=("x",), dynamic=True, rise=1, fall=1)
    m = manager(spec)
    t = probe_at(m, 0, CheckResult(True, "exit 7", weight=5))
    assert t == Transition(KEY, True, 0, "exit 7", 5)
    assert probe_at(m, 2, CheckResult(True, "exit 7", weight=5)) is None  # same weight: nothing new
    assert probe_at(m, 4, CheckResult(True, "exit 3", weight=1)) == Transition(KEY, True, 4, "exit 3", 1)
    assert probe_at(m, 6, CheckResult(True, "exit 0")) == Transition(KEY, True, 6, "exit 0", None)
    assert probe_at(m, 8, CheckResult(False, "exit 1")) == Transition(KEY, False, 8, "exit 1", None)
    assert (m.stats.probes, m.stats.failures, m.stats.killed) == (5, 1, 0)
    m2 = HealthManager()
    m2.seed({KEY: True}, {KEY: 5})
    m2.configure({KEY: ("198.18.1.2", 8080, spec)}, 0)
    assert probe_at(m2, 0, CheckResult(True, "exit 7", weight=5)) is None  # the new master agrees


def test_verdict_weight_codec_and_application() -> None:
    text = encode_verdict(True, since=1.0, node="d1", epoch=3, detail="exit 7", weight=5)
    assert decode_verdict(text)["weight"] == 5
    assert "weight" not in decode_verdict(encode_verdict(True, since=1.0, node="d1", epoch=3))
    for bad in ('{"up": true, "epoch": 1, "weight": -1}', '{"up": true, "epoch": 1, "weight": true}'):
        with pytest.raises(ValueError, match="bad weight"):
            decode_verdict(bad)
    services, _table, svc, _ = tables()
    dest = svc.dests[0]
    dest.weight = 3
    spec = HealthSpec(kind="misc", command=("x",), dynamic=True)
    hs = HealthService("d1")
    hs.specs = {KEY: spec}
    hs.apply_event(dest_id(KEY), text.encode())
    assert hs.weights() == {KEY: 5} and hs.apply_weights(services) == 1 and dest.weight == 5
    assert hs.apply_weights(services) == 0
    hs.apply_event(dest_id(KEY), encode_verdict(False, since=2.0, node="d1", epoch=3, weight=5).encode())
    assert hs.weights() == {}  # a down dest is quiesced by the config, not weighted


def test_first_probes_of_dests_added_together_are_spread_over_the_interval() -> None:
    keys = [(6, 1, 80, 0, d, 8080) for d in (5, 2, 4, 3)]
    m = HealthManager()
    m.configure({k: ("198.18.1.2", 8080, SPEC) for k in keys}, 10.0)  # SPEC.interval is 2
    started = {t: [p.key[4] for p in m.due(t)] for t in (10.0, 10.4, 10.5, 11.0, 11.5)}
    assert started == {10.0: [2], 10.4: [], 10.5: [3], 11.0: [4], 11.5: [5]}
    later = (6, 1, 80, 0, 9, 8080)
    m.configure({**{k: ("198.18.1.2", 8080, SPEC) for k in keys}, later: ("198.18.1.9", 8080, SPEC)}, 12.0)
    assert [p.key for p in m.due(12.0)] == [later]  # one new dest: probed at once; the others keep their turn
