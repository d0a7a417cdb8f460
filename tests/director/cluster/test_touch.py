"""Touches: the master rewrites its leader key every window/3 and forwards only within `touch_window`
of its last acknowledged touch; a backup whose promise lapsed deletes a key nobody touched for the
window (+ margin) in a txn guarded by the revision it saw. Pure machine, explicit clock."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.cluster.election import Act, Action, ElectionMachine, ElectionParams, LeaderRecord, Role, Why

LEASE = 0x2001
EPOCH = 40


def acts(actions: list[Action]) -> list[Act]:
    return [a.act for a in actions]


def master(t: float = 0.0, ttl: float = 1.0) -> ElectionMachine:
    m = ElectionMachine(ElectionParams(ttl=ttl, node_id="m", touch=0.6))
    m.leader_observed(t, None)
    m.set_ready(t, True)
    m.lease_granted(t, LEASE, ttl, t)
    out = m.txn_won(t, LEASE, EPOCH)
    assert acts(out) == [Act.START_FORWARDING, Act.TOUCH]  # the first touch right away
    return m


def touched(node: str = "m", revision: int = 100, window: float = 0.6) -> LeaderRecord:
    return LeaderRecord(node, "198.18.0.2:7000", "", EPOCH, LEASE, 0, window, revision)


def backup(t: float = 0.0, rec: LeaderRecord | None = None) -> ElectionMachine:
    b = ElectionMachine(ElectionParams(ttl=1.0, node_id="b", touch=0.6))
    b.set_ready(t, True)
    assert b.leader_observed(t, rec or touched()) == []
    return b


def test_master_fence_is_bounded_by_its_last_acknowledged_touch() -> None:
    m = master(0.0)
    w = m.touch_window()
    assert w == pytest.approx(0.6)
    assert m.forward_until() == pytest.approx(0.6)  # the create counts as the first touch
    m.touch_ok(0.02, LEASE, 0.01)
    assert m.forward_until() == pytest.approx(0.61)
    assert m.next_deadline() == pytest.approx(0.01 + w / 3)
    assert acts(m.tick(0.21)) == [Act.TOUCH]
    m.touch_ok(0.25, LEASE, 0.21)
    assert m.forward_until() == pytest.approx(0.8)  # now the lease's step-down time is earlier...
    m.renew_ok(0.4, LEASE, 0.34, 1.0)
    assert m.forward_until() == pytest.approx(0.81)  # ...and after a renewal the touch bounds it again


def test_master_whose_touches_fail_steps_down_even_with_a_live_lease() -> None:
    m = master(0.0)
    m.touch_failed(0.05, LEASE)
    assert m.lease.next_touch_at == pytest.approx(0.05 + m.params.retry)
    m.renew_ok(0.4, LEASE, 0.34, 1.0)  # keepalives work, touches do not
    out = m.tick(0.6)
    assert Act.STOP_FORWARDING in acts(out)
    assert m.role is Role.STEPPED_DOWN and m.why is Why.UNCERTAIN and m.forward_until() is None
    # a touch gets through again: verify the key, then resume with the same epoch
    verify = m.touch_ok(0.7, LEASE, 0.65)
    assert acts(verify) == [Act.VERIFY]
    out = m.leader_observed(0.71, touched(revision=120))
    assert acts(out)[0] is Act.START_FORWARDING and m.role is Role.MASTER and m.epoch == EPOCH


def test_master_whose_touch_finds_another_key_stops_at_once() -> None:
    m = master(0.0)
    out = m.touch_lost(0.05, LEASE, LeaderRecord("b", "", "", EPOCH + 9, LEASE + 1, 0, 0.6, 200))
    assert acts(out)[0] is Act.STOP_FORWARDING
    assert m.role is Role.BACKUP and m.forward_until() is None


def test_backup_deletes_a_key_untouched_for_its_window_with_the_revision_it_saw() -> None:
    b = backup(0.0)
    assert b.next_deadline() == pytest.approx(0.7)  # window 0.6 + stale margin 0.1
    assert b.tick(0.5) == []
    b.leader_observed(0.5, touched(revision=101))  # a touch: the clock restarts
    assert b.tick(1.1) == []
    out = b.tick(1.21)
    assert out == [Action(Act.DELETE_STALE, revision=101, timeout=1.0)]
    assert b.tick(1.3) == []  # one at a time
    assert b.stale_done(1.31, False) == []  # failed (the key moved): retry later, not in a loop
    assert b.tick(1.35) == []
    assert acts(b.tick(1.42)) == [Act.DELETE_STALE]
    b.stale_done(1.43, True)
    assert b.stale_deleted == 1
    assert acts(b.leader_observed(1.44, None)) == [Act.GRANT_LEASE]  # then the normal campaign


def test_backup_never_deletes_while_its_promise_binds_or_for_a_record_without_touches() -> None:
    b = backup(0.0)
    b.promise_held(0.0, 5.0, EPOCH)
    assert b.tick(4.9) == []
    assert acts(b.tick(5.0)) == [Act.DELETE_STALE]  # the promise lapsed: now it may
    old = backup(0.0, touched(window=0.0))  # an older master declares no window: wait for the lease
    assert old.tick(100.0) == [] and old.next_deadline() is None


def test_a_fresh_read_after_a_watch_outage_grants_a_ttl_of_grace() -> None:
    b = backup(0.0)
    b.leader_observed(5.0, touched(revision=100), fresh=True)  # same revision, read after an outage
    assert b.tick(5.7) == []
    assert b.tick(6.69) == []
    assert acts(b.tick(6.71)) == [Act.DELETE_STALE]


@pytest.mark.parametrize("raw, want", [
    (0.6, 0.6), (1e9, 600.0), (0.001, 0.05), (math.nan, 0.0), (-1, 0.0), ("0.5", 0.0), (True, 0.0),
    (None, 0.0)])
def test_leader_record_touch_window_is_parsed_defensively(raw: object, want: float) -> None:
    body = {"node_id": "m", "touch_window": raw}
    rec = LeaderRecord.from_json(json.dumps(body), epoch=3, lease=4, revision=9)
    assert rec.touch_window == want and rec.revision == 9
    again = LeaderRecord.from_json(rec.to_json(), epoch=3, lease=4, revision=10)
    assert again == rec  # the revision is not part of a record's identity


@settings(max_examples=300, deadline=None)
@given(touch_sends=st.lists(st.floats(0.0, 0.19), min_size=1, max_size=20),
       commit=st.floats(0.0, 0.3), watch=st.floats(0.0, 0.3), crash=st.floats(0.0, 3.0))
def test_a_backup_never_deletes_before_the_master_stopped_forwarding(
        touch_sends: list[float], commit: float, watch: float, crash: float) -> None:
    """Master touches at increasing times (each acknowledged `commit` later, seen by the backup
    `commit + watch` later) until it freezes at `crash`; the backup's delete may only come after
    the master's fence."""
    m = master(0.0)
    b = backup(0.0, touched(revision=1))
    t, rev = 0.0, 1
    for gap in touch_sends:
        t += gap + 0.01
        if t >= crash:
            break
        rev += 1
        m.touch_ok(t + commit, LEASE, t)
        b.leader_observed(t + commit + watch, touched(revision=rev))
    fence = m.forward_until()
    assert fence is not None
    now = max(crash, t)
    while True:
        out = b.tick(now)
        if Act.DELETE_STALE in acts(out):
            break
        nxt = b.next_deadline()
        assert nxt is not None and nxt > now
        now = nxt
    assert now > fence


def test_no_key_is_stale_while_the_watch_is_down_and_a_fresh_read_restarts_the_clock() -> None:
    b = backup(0.0)
    b.watch_lost(0.3)  # etcd restarts: touches may be missed
    assert b.tick(50.0) == [] and b.next_deadline() is None
    b.leader_observed(50.0, touched(revision=100), fresh=True)
    assert b.tick(51.69) == []
    assert acts(b.tick(51.71)) == [Act.DELETE_STALE]


def test_a_lost_campaign_starts_the_clock_on_the_winners_record() -> None:
    b = ElectionMachine(ElectionParams(ttl=1.0, node_id="b"))
    b.leader_observed(0.0, None)
    b.set_ready(0.0, True)
    b.lease_granted(0.0, LEASE + 5, 1.0, 0.0)
    b.txn_lost(0.01, LEASE + 5, touched(revision=300))
    assert b.tick(0.5) == []  # not stale from time 0: it was first seen at 0.01
    assert b.tick(0.72) == [Action(Act.DELETE_STALE, revision=300, timeout=1.0)]
