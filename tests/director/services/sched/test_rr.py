from __future__ import annotations

from director.types import DestFlags
from tests.director.services.sched.helpers import make_service, overload


def test_rr_rotates_in_list_order() -> None:
    svc = make_service("rr", [1, 1, 1])
    picks = [svc.scheduler.schedule(svc.dests, 0, 0) for _ in range(7)]
    assert picks == [svc.dests[i % 3] for i in range(7)]


def test_rr_skips_weight0_overloaded_and_unavailable() -> None:
    svc = make_service("rr", [1, 0, 1, 1, 1])
    overload(svc.dests[2])
    svc.dests[3].flags &= ~DestFlags.AVAILABLE
    picks = {svc.scheduler.schedule(svc.dests, 0, 0) for _ in range(10)}
    assert picks == {svc.dests[0], svc.dests[4]}


def test_rr_none_when_nothing_usable() -> None:
    svc = make_service("rr", [0, 0])
    assert svc.scheduler.schedule(svc.dests, 0, 0) is None
    empty = make_service("rr", [])
    assert empty.scheduler.schedule(empty.dests, 0, 0) is None


def test_rr_removing_last_picked_continues_with_its_successor() -> None:
    svc = make_service("rr", [1, 1, 1, 1])
    a, b, c, _ = svc.dests
    assert svc.scheduler.schedule(svc.dests, 0, 0) is a
    assert svc.scheduler.schedule(svc.dests, 0, 0) is b
    svc.remove_dest(b)
    assert svc.scheduler.schedule(svc.dests, 0, 0) is c


def test_rr_weight_edit_is_seen() -> None:
    svc = make_service("rr", [1, 1])
    svc.edit_dest(svc.dests[0], weight=0)
    assert {svc.scheduler.schedule(svc.dests, 0, 0) for _ in range(4)} == {svc.dests[1]}
