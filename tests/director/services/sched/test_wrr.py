from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from director.services.sched.base import Scheduler
from director.services.sched.registry import create
from director.services.service import Dest
from tests.director.services.sched.helpers import make_service, overload


def _fresh(weights: list[int]) -> tuple[list[Dest], Scheduler]:
    """Dests first, then one update: the scheduler starts at cw = max weight, like a new service."""
    svc = make_service("rr", weights)
    sched = create("wrr")
    sched.update(svc.dests)
    return svc.dests, sched


def test_wrr_interleaves_like_the_lvs_documentation() -> None:
    # The LVS docs' example: weights A=4, B=3, C=2 give the cycle AABABCABC.
    dests, sched = _fresh([4, 3, 2])
    seq = "".join("ABC"[dests.index(sched.schedule(dests, 0, 0))] for _ in range(18))  # type: ignore[arg-type]
    assert seq == "AABABCABC" * 2


@given(st.lists(st.integers(0, 12), min_size=1, max_size=8))
def test_wrr_full_cycle_is_exactly_proportional(weights: list[int]) -> None:
    dests, sched = _fresh(weights)
    live = [w for w in weights if w > 0]
    if not live:
        assert sched.schedule(dests, 0, 0) is None
        return
    g = math.gcd(*live)
    cycle = sum(w // g for w in live)
    counts = Counter(id(sched.schedule(dests, 0, 0)) for _ in range(3 * cycle))
    assert {d.weight: counts[id(d)] for d in dests} == {w: 3 * w // g for w in weights}


@given(st.lists(st.integers(0, 6), min_size=1, max_size=6), st.lists(st.booleans(), min_size=6, max_size=6))
def test_wrr_never_picks_unusable_and_terminates(weights: list[int], over: list[bool]) -> None:
    dests, sched = _fresh(weights)
    for d, o in zip(dests, over, strict=False):
        if o:
            overload(d)
    usable = [d for d, o in zip(dests, over, strict=False) if d.weight > 0 and not o]
    for _ in range(20):
        got = sched.schedule(dests, 0, 0)
        if usable:
            assert got in usable
        else:
            assert got is None


def test_wrr_overload_keeps_the_others_proportional() -> None:
    svc = make_service("wrr", [3, 1, 2])
    overload(svc.dests[0])
    counts = Counter(id(svc.scheduler.schedule(svc.dests, 0, 0)) for _ in range(300))
    assert counts[id(svc.dests[0])] == 0
    assert counts[id(svc.dests[2])] == 2 * counts[id(svc.dests[1])]


def test_wrr_weight_edit_changes_the_shares() -> None:
    svc = make_service("wrr", [1, 1])
    svc.edit_dest(svc.dests[1], weight=4)
    counts = Counter(id(svc.scheduler.schedule(svc.dests, 0, 0)) for _ in range(500))
    assert counts[id(svc.dests[1])] == 4 * counts[id(svc.dests[0])]
