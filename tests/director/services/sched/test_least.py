"""lc / wlc / sed / nq against brute-force references written from the kernel's definitions."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from director.services.sched.base import usable
from director.services.service import Dest
from director.types import DestFlags
from tests.director.services.sched.helpers import make_service

Row = tuple[int, int, int, bool, bool]
STATE = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 600), st.booleans(), st.booleans()),
    min_size=0, max_size=7,
)


def _build(sched: str, state: list[tuple[int, int, int, bool, bool]]) -> list[Dest]:
    svc = make_service(sched, [w for w, *_ in state])
    for d, (_, active, inact, over, gone) in zip(svc.dests, state, strict=True):
        d.activeconns, d.inactconns = active, inact
        if over:
            d.flags |= DestFlags.OVERLOAD
        if gone:
            d.flags &= ~DestFlags.AVAILABLE
    return svc.dests


def _first_min(dests: list[Dest], key: Callable[[Dest], Fraction | int]) -> Dest | None:
    cands = [d for d in dests if usable(d)]
    if not cands:
        return None
    best = min(key(d) for d in cands)
    return next(d for d in cands if key(d) == best)


def _overhead(d: Dest) -> int:
    return d.activeconns * 256 + d.inactconns


@given(STATE)
def test_lc_is_first_least_overhead(state: list[tuple[int, int, int, bool, bool]]) -> None:
    dests = _build("lc", state)
    got = dests[0].svc.scheduler.schedule(dests, 0, 0) if dests else None
    assert got is _first_min(dests, _overhead)


@given(STATE)
def test_wlc_is_first_least_overhead_per_weight(state: list[tuple[int, int, int, bool, bool]]) -> None:
    dests = _build("wlc", state)
    got = dests[0].svc.scheduler.schedule(dests, 0, 0) if dests else None
    assert got is _first_min(dests, lambda d: Fraction(_overhead(d), d.weight))


@given(STATE)
def test_sed_is_first_least_expected_delay(state: list[tuple[int, int, int, bool, bool]]) -> None:
    dests = _build("sed", state)
    got = dests[0].svc.scheduler.schedule(dests, 0, 0) if dests else None
    assert got is _first_min(dests, lambda d: Fraction(d.activeconns + 1, d.weight))


@given(STATE)
def test_nq_takes_first_idle_else_shortest_expected_delay(state: list[Row]) -> None:
    dests = _build("nq", state)
    got = dests[0].svc.scheduler.schedule(dests, 0, 0) if dests else None
    idle = [d for d in dests if usable(d) and d.activeconns == 0]
    want = idle[0] if idle else _first_min(dests, lambda d: Fraction(d.activeconns + 1, d.weight))
    assert got is want


def test_lc_counts_an_active_conn_as_256_inactive() -> None:
    dests = _build("lc", [(1, 1, 0, False, False), (1, 0, 255, False, False)])
    assert dests[0].svc.scheduler.schedule(dests, 0, 0) is dests[1]
    dests[1].inactconns = 257
    assert dests[0].svc.scheduler.schedule(dests, 0, 0) is dests[0]


def test_wlc_prefers_the_heavier_dest_at_equal_load() -> None:
    dests = _build("wlc", [(1, 2, 0, False, False), (3, 2, 0, False, False)])
    assert dests[0].svc.scheduler.schedule(dests, 0, 0) is dests[1]


def test_sed_ignores_inactive_conns_but_wlc_does_not() -> None:
    state = [(1, 1, 0, False, False), (1, 1, 500, False, False)]
    sed = _build("sed", state)
    wlc = _build("wlc", state)
    sed[1].activeconns = 0
    wlc[1].activeconns = 0
    sed[0].activeconns = wlc[0].activeconns = 1
    sed[1].inactconns = wlc[1].inactconns = 300  # 300 > 256: wlc counts it, sed does not
    assert sed[0].svc.scheduler.schedule(sed, 0, 0) is sed[1]
    assert wlc[0].svc.scheduler.schedule(wlc, 0, 0) is wlc[0]


def test_nq_idle_dest_wins_even_with_tiny_weight() -> None:
    dests = _build("nq", [(100, 1, 0, False, False), (1, 0, 0, False, False)])
    assert dests[0].svc.scheduler.schedule(dests, 0, 0) is dests[1]
