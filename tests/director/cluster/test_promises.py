"""Static stability in the pure election machine: forwarding on the backups' promises."""

from __future__ import annotations

import pytest

from director.cluster.election import Act, Action, ElectionMachine, ElectionParams, Role
from director.cluster.promises import ORPHAN_MARGIN, Promises
from tests.director.cluster.test_election import LEASE, acts, leader_machine, record, role_of

NEW_LEASE = LEASE + 7


def published(m: ElectionMachine, members: frozenset[str] = frozenset({"b1"})) -> ElectionMachine:
    """The master published its member list for its epoch (what MemberPublisher does)."""
    m.promises.required, m.promises.required_epoch = members, m.epoch
    return m


def test_master_forwards_past_its_lease_while_every_member_promised() -> None:
    m = published(leader_machine(t=0.0))  # lease deadline 0.8 (ttl 1, margin 0.2)
    m.promises_granted(0.5, 3.0, frozenset({"b1"}))
    assert m.forward_until() == 3.0
    assert Act.STOP_FORWARDING not in acts(m.tick(1.0))
    assert m.role is Role.MASTER  # no keepalive since 0, yet still master on promises
    out = m.tick(3.0)  # promises lapsed too: fence closes
    assert Act.STOP_FORWARDING in acts(out) and m.forward_until() is None


def test_promises_extend_forwarding_for_at_most_max_static() -> None:
    p = Promises(max_static=10.0)
    p.granted_until = 1e9
    assert p.master_deadline(5.0) == 15.0
    p.granted_until = 2.0
    assert p.master_deadline(5.0) == 5.0  # never shorter than the lease


def test_lease_gone_on_promises_wins_the_key_back_without_stopping() -> None:
    m = published(leader_machine(t=0.0, epoch=10))
    m.promises_granted(0.1, 30.0, frozenset({"b1"}))
    out = m.leader_observed(2.0, None)  # etcd expired our lease while we could not reach it
    assert acts(out) == [Act.GRANT_LEASE] and m.role is Role.MASTER and m.reacquiring
    assert m.forward_until() == 30.0  # still fenced open by the promises
    assert acts(m.lease_granted(2.1, NEW_LEASE, 1.0, 2.05)) == [Act.CAMPAIGN]
    out = m.txn_won(2.2, NEW_LEASE, 55)
    assert out[0] == Action(Act.START_FORWARDING, NEW_LEASE, 55)  # new epoch: sync re-announces it
    assert Act.STOP_FORWARDING not in acts(out)
    assert m.epoch == 55 and not m.reacquiring and role_of(m) is Role.MASTER


def test_winning_back_fails_when_someone_else_holds_the_key() -> None:
    m = published(leader_machine(t=0.0))
    m.promises_granted(0.1, 30.0, frozenset({"b1"}))
    m.leader_observed(2.0, None)
    m.lease_granted(2.1, NEW_LEASE, 1.0, 2.05)
    out = m.txn_lost(2.2, NEW_LEASE, record("intruder", epoch=60))
    assert Act.STOP_FORWARDING in acts(out) and m.forward_until() is None


def test_promises_do_not_count_before_the_member_list_of_this_epoch_is_published() -> None:
    m = leader_machine(t=0.0, epoch=10)
    m.promises_granted(0.1, 30.0, frozenset())
    assert m.forward_until() == pytest.approx(0.8)  # lease only: an older list may name others
    published(m, frozenset())
    assert m.forward_until() == 30.0


def test_a_grant_that_misses_a_required_member_is_void() -> None:
    m = published(leader_machine(t=0.0), frozenset({"b1", "b2"}))
    m.promises_granted(0.1, 30.0, frozenset({"b1"}))
    assert m.forward_until() == pytest.approx(0.8)


def test_without_promises_a_lost_key_stops_forwarding_at_once() -> None:
    m = leader_machine(t=0.0)
    out = m.leader_observed(0.3, None)
    assert Act.STOP_FORWARDING in acts(out)


def _backup(t: float = 0.0, node: str = "b1") -> ElectionMachine:
    m = ElectionMachine(ElectionParams(node_id=node))
    m.leader_observed(t, record("m", epoch=10))
    m.set_ready(t, True)
    return m


def test_a_backup_keeps_its_promise_even_when_the_key_is_gone() -> None:
    m = _backup()
    m.promise_held(0.5, 1.5, 10)
    assert m.leader_observed(1.0, None) == []  # key gone, ready, but promised until 1.5
    assert m.role is Role.BACKUP
    assert m.next_deadline() == pytest.approx(1.5)
    assert acts(m.tick(1.5)) == [Act.GRANT_LEASE]


def test_a_released_master_frees_the_promise_at_once() -> None:
    m = _backup()
    m.promise_held(0.5, 100.0, 10)
    assert m.leader_observed(1.0, None) == []
    assert acts(m.members_observed(1.1, ("b1",), released=10)) == [Act.GRANT_LEASE]


def test_an_older_release_does_not_free_a_newer_promise() -> None:
    m = _backup()
    m.promise_held(0.5, 100.0, 10)
    m.leader_observed(1.0, None)
    assert m.members_observed(1.1, ("b1",), released=9) == []


def test_a_node_missing_from_the_member_list_waits_out_the_orphan_period() -> None:
    m = _backup(node="newcomer")
    m.members_observed(0.0, ("b1",), released=0)
    assert m.leader_observed(1.0, None) == []
    wait = m.promises.orphan_after
    assert wait == m.promises.max_static + ORPHAN_MARGIN
    assert m.tick(wait - 1.0) == []
    assert acts(m.tick(wait + 0.01)) == [Act.GRANT_LEASE]


def test_resign_announces_the_release_with_the_revoke() -> None:
    m = leader_machine(t=0.0, epoch=10)
    out = m.resign(0.2)
    assert Action(Act.REVOKE, LEASE, 10) in out and Act.STOP_FORWARDING in acts(out)
    assert m.promises_granted(0.3, 9.0, frozenset()) == []
    assert m.forward_until() is None
