"""The pure election state machine, driven by hand with an explicit clock (no etcd)."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from director.cluster.election import (
    Act,
    Action,
    ElectionMachine,
    ElectionParams,
    LeaderRecord,
    Role,
    Why,
)

LEASE = 0x1001
OTHER = LEASE + 1


def acts(actions: list[Action]) -> list[Act]:
    return [a.act for a in actions]


def role_of(m: ElectionMachine) -> Role:
    return m.role  # defeats mypy's narrowing across calls that change the role


def record(node: str = "other", epoch: int = 7, lease: int = OTHER, priority: int = 0) -> LeaderRecord:
    return LeaderRecord(node, f"{node}:7000", "", epoch, lease, priority)


def leader_machine(t: float = 0.0, ttl: float = 1.0, epoch: int = 10, **params: object) -> ElectionMachine:
    """A machine that won an election with lease LEASE granted at time t (touches off unless
    `touch` is given: these tests are about the lease; test_touch.py covers touches)."""
    params.setdefault("touch", 0.0)
    m = ElectionMachine(ElectionParams(ttl=ttl, **params))  # type: ignore[arg-type]
    assert acts(m.leader_observed(t, None)) == []  # not ready yet
    assert acts(m.set_ready(t, True)) == [Act.GRANT_LEASE]
    assert acts(m.lease_granted(t, LEASE, ttl, t)) == [Act.CAMPAIGN]
    out = m.txn_won(t, LEASE, epoch)
    assert out[0] == Action(Act.START_FORWARDING, LEASE, epoch)
    assert m.role is Role.MASTER
    return m


def test_campaign_waits_for_first_observation_and_readiness() -> None:
    m = ElectionMachine()
    assert m.set_ready(0.0, True) == []  # the leader key was never read
    assert m.role is Role.BACKUP
    m2 = ElectionMachine()
    assert m2.leader_observed(0.0, None) == []
    assert m2.waiting_for_ready
    assert acts(m2.set_ready(0.1, True)) == [Act.GRANT_LEASE]
    assert m2.role is Role.CANDIDATE


def test_no_campaign_while_a_leader_exists_then_campaign_when_it_goes() -> None:
    m = ElectionMachine()
    m.set_ready(0.0, True)
    assert m.leader_observed(0.0, record()) == []
    assert m.tick(5.0) == []
    assert m.role is Role.BACKUP
    assert acts(m.leader_observed(5.1, None)) == [Act.GRANT_LEASE]


def test_lost_campaign_revokes_the_fresh_lease_and_follows_the_winner() -> None:
    m = ElectionMachine()
    m.leader_observed(0.0, None)
    m.set_ready(0.0, True)
    m.lease_granted(0.0, LEASE, 1.0, 0.0)
    out = m.txn_lost(0.01, LEASE, record())
    assert out[0] == Action(Act.REVOKE, LEASE)
    assert m.role is Role.BACKUP
    assert m.master == record()


def test_leader_renews_every_third_of_the_ttl_and_moves_its_deadline() -> None:
    m = leader_machine(t=0.0, ttl=3.0)
    assert m.tick(0.5) == []
    out = m.tick(1.0)
    assert acts(out) == [Act.RENEW]
    assert m.tick(1.1) == []  # one keepalive in flight at a time
    m.renew_ok(1.2, LEASE, sent_at=1.0, ttl=3.0)
    assert m.lease.step_down_at == 1.0 + 3.0 - m.params.margin
    assert m.next_deadline() == 2.0


def test_step_down_at_once_when_no_renewal_succeeds() -> None:
    m = leader_machine(t=0.0, ttl=1.0)
    m.tick(0.34)
    m.renew_failed(0.4, LEASE)
    assert m.tick(0.45) == []  # retry not due yet
    assert acts(m.tick(0.5)) == [Act.RENEW]
    deadline = m.next_deadline()
    assert deadline is not None and deadline <= m.lease.step_down_at
    out = m.tick(m.lease.step_down_at)
    assert out[0].act is Act.STOP_FORWARDING
    assert (m.role, m.why) == (Role.STEPPED_DOWN, Why.UNCERTAIN)
    assert m.stepped_down_at is not None and m.stepped_down_at < m.lease.last_ok_sent + m.lease.ttl


def test_lease_that_survived_is_reclaimed_with_the_same_epoch() -> None:
    m = leader_machine(t=0.0, ttl=1.0, epoch=42)
    m.tick(m.lease.step_down_at)
    assert m.role is Role.STEPPED_DOWN
    m.pending.discard(Act.RENEW)
    out = m.renew_ok(2.0, LEASE, sent_at=1.9, ttl=1.0)
    assert acts(out) == [Act.VERIFY]
    out = m.leader_observed(2.01, record("me", epoch=42, lease=LEASE))
    assert out[0] == Action(Act.START_FORWARDING, LEASE, 42)
    assert role_of(m) is Role.MASTER


def test_stepped_down_node_whose_lease_is_gone_campaigns_with_a_new_lease() -> None:
    m = leader_machine(t=0.0, ttl=1.0)
    m.tick(m.lease.step_down_at)
    m.pending.discard(Act.RENEW)
    out = m.renew_ok(3.0, LEASE, sent_at=2.9, ttl=0)
    assert m.lease.lease_id == 0
    assert acts(out) == [Act.GRANT_LEASE]  # it was ready and no leader is known


def test_leader_that_sees_its_key_gone_stops_forwarding_and_revokes() -> None:
    m = leader_machine(t=0.0)
    out = m.leader_observed(0.1, record("thief", epoch=99))
    assert acts(out)[:2] == [Act.STOP_FORWARDING, Act.REVOKE]
    assert m.role is Role.BACKUP


def test_resign_hands_over_and_holds_off() -> None:
    m = leader_machine(t=0.0, resign_holdoff=2.0)
    out = m.resign(0.5)
    assert acts(out) == [Act.STOP_FORWARDING, Act.REVOKE]
    assert (m.role, m.why) == (Role.STEPPED_DOWN, Why.RESIGNED)
    assert m.leader_observed(0.5, None) == []  # key deleted, but we hold off
    assert m.tick(1.0) == []
    assert acts(m.tick(2.5)) == [Act.GRANT_LEASE]  # nobody else took over


def test_resigned_node_follows_a_new_leader() -> None:
    m = leader_machine(t=0.0, resign_holdoff=2.0)
    m.resign(0.5)
    m.leader_observed(0.6, record("b", epoch=20))
    assert m.role is Role.BACKUP
    assert m.tick(5.0) == []


def test_hold_off_ends_when_another_leader_appears() -> None:
    """The resigner must not wait out its hold-off when the leader it handed over to dies."""
    m = leader_machine(t=0.0, resign_holdoff=2.0)
    m.resign(0.5)
    m.set_ready(0.55, True)
    m.leader_observed(0.6, record("b", epoch=20))
    assert acts(m.leader_observed(0.7, None)) == [Act.GRANT_LEASE]  # well before 0.5 + 2.0


def test_stale_results_are_ignored() -> None:
    m = leader_machine(t=0.0)
    before = m.lease.step_down_at
    assert m.renew_ok(0.5, OTHER, sent_at=0.5, ttl=1.0) == []
    assert m.lease.step_down_at == before
    assert acts(m.lease_granted(0.6, OTHER, 1.0, 0.6)) == [Act.REVOKE]
    assert m.txn_won(0.6, OTHER, 50) == [Action(Act.REVOKE, OTHER)]
    assert m.role is Role.MASTER and m.epoch == 10


def test_failed_txn_is_retried_with_the_same_lease_and_a_hidden_win_is_detected() -> None:
    m = ElectionMachine(ElectionParams(ttl=1.0, retry=0.1))
    m.leader_observed(0.0, None)
    m.set_ready(0.0, True)
    m.lease_granted(0.0, LEASE, 1.0, 0.0)
    assert m.txn_failed(0.05, LEASE) == []
    assert m.tick(0.1) == []
    assert acts(m.tick(0.16)) == [Act.CAMPAIGN]
    out = m.txn_lost(0.2, LEASE, record("me", epoch=3, lease=LEASE))  # the first txn had succeeded
    assert out[0] == Action(Act.START_FORWARDING, LEASE, 3)


def test_candidate_gives_up_a_lease_that_may_expire_before_it_wins() -> None:
    m = ElectionMachine(ElectionParams(ttl=1.0, retry=0.1))
    m.leader_observed(0.0, None)
    m.set_ready(0.0, True)
    m.lease_granted(0.0, LEASE, 1.0, 0.0)
    m.txn_failed(0.1, LEASE)
    out = m.tick(0.9)
    assert out[0] == Action(Act.REVOKE, LEASE)


def test_late_win_does_not_start_forwarding() -> None:
    m = ElectionMachine(ElectionParams(ttl=1.0))
    m.leader_observed(0.0, None)
    m.set_ready(0.0, True)
    m.lease_granted(0.0, LEASE, 1.0, 0.0)
    out = m.txn_won(0.95, LEASE, 5)
    assert Act.START_FORWARDING not in acts(out)
    assert m.role is Role.STEPPED_DOWN


def test_priority_preemption() -> None:
    backup = ElectionMachine(ElectionParams(priority=5, preempt=True, node_id="hi"))
    backup.set_ready(0.0, True)
    assert backup.leader_observed(0.0, record("lo", priority=1)) == []  # not in lo's member list yet
    backup.members_observed(0.0, ("hi", "late"), released=0)
    out = backup.leader_observed(0.0, record("lo", priority=1))
    assert acts(out) == [Act.REQUEST_HANDOVER]
    assert backup.set_ready(0.05, True) == []  # asked once per leader term
    late = ElectionMachine(ElectionParams(priority=5, preempt=True, node_id="late"))
    late.members_observed(0.0, ("hi", "late"), released=0)
    late.leader_observed(0.0, record("lo", priority=1))
    assert acts(late.set_ready(0.1, True)) == [Act.REQUEST_HANDOVER]  # asks once it is synced
    leader = leader_machine(t=0.0, preempt=True, priority=1)
    assert acts(leader.handover_requested(0.1, "hi", 5)) == [Act.STOP_FORWARDING, Act.REVOKE]
    bystander = ElectionMachine(ElectionParams(priority=3, node_id="mid"))
    bystander.set_ready(0.0, True)
    bystander.leader_observed(0.0, record("lo", priority=1))
    bystander.handover_requested(0.1, "hi", 5)
    assert bystander.leader_observed(0.2, None) == []  # lets "hi" win
    assert acts(backup.leader_observed(0.2, None)) == [Act.GRANT_LEASE]


def test_no_preemption_by_default() -> None:
    leader = leader_machine(t=0.0)
    assert leader.handover_requested(0.1, "hi", 100) == []
    backup = ElectionMachine(ElectionParams(priority=5))
    backup.set_ready(0.0, True)
    assert backup.leader_observed(0.0, record(priority=1)) == []


def test_stop_revokes_and_ignores_everything_after() -> None:
    m = leader_machine(t=0.0)
    assert acts(m.stop(0.2)) == [Act.STOP_FORWARDING, Act.REVOKE]
    assert m.role is Role.STOPPED
    assert m.tick(10.0) == [] and m.leader_observed(10.0, None) == []


# ---------------------------------------------------------------------------- safety property
Outcome = tuple[str, float]  # ("ok" | "fail" | "hang", round-trip seconds)


def run_leader(outcomes: list[Outcome], ttl: float, margin: float,
               check: Callable[[ElectionMachine, float, float], None]) -> ElectionMachine:
    """Drive a leader through keepalives with the given outcomes; `check(m, now, bound)` after
    each step, where `bound` is the earliest moment etcd could have expired the lease."""
    m = leader_machine(t=0.0, ttl=ttl, margin=margin)
    bound = ttl  # granted at time 0
    queue: list[tuple[float, int, str, float]] = []  # (arrival, seq, outcome, sent_at)
    now, seq, it = 0.0, 0, iter(outcomes)
    while m.role is Role.MASTER or queue:
        nd = m.next_deadline()
        nxt = min([q[0] for q in queue] + ([nd] if nd is not None else []), default=None)
        if nxt is None or nxt > 30:
            break
        now = max(now, nxt)
        if queue and queue[0][0] <= now:
            _, _, kind, sent = heapq.heappop(queue)
            if kind == "ok":
                bound = max(bound, sent + ttl)
                out = m.renew_ok(now, LEASE, sent, ttl)
            else:
                out = m.renew_failed(now, LEASE)
        else:
            out = m.tick(now)
        check(m, now, bound)
        for a in out:
            if a.act is Act.RENEW:
                kind, rtt = next(it, ("hang", 99.0))
                if kind == "ok" and rtt <= a.timeout:
                    heapq.heappush(queue, (now + rtt, seq, "ok", now))
                else:  # an error after rtt, or the deadline passes
                    heapq.heappush(queue, (now + min(rtt, a.timeout), seq, "fail", now))
                seq += 1
        if m.role is not Role.MASTER:
            break
    return m


@settings(max_examples=300, deadline=None)
@given(
    outcomes=st.lists(st.tuples(st.sampled_from(["ok", "ok", "ok", "fail", "hang"]),
                                st.floats(0.0, 1.5)), max_size=40),
    ttl=st.sampled_from([1.0, 2.0, 5.0]),
    margin=st.floats(0.05, 0.4),
)
def test_a_leader_never_forwards_once_etcd_could_have_expired_its_lease(
    outcomes: list[Outcome], ttl: float, margin: float
) -> None:
    def check(m: ElectionMachine, now: float, bound: float) -> None:
        if m.role is Role.MASTER:
            assert now < bound - margin + 1e-9
    m = run_leader(outcomes, ttl, margin, check)
    assert m.role in (Role.MASTER, Role.STEPPED_DOWN)
