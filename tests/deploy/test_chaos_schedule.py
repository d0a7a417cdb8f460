"""The chaos schedule is a pure function of (seed, minutes): replayable, and it covers every kind."""

from __future__ import annotations

from collections import Counter

from deploy.chaos_schedule import HOLD_S, KINDS, make_schedule


def test_same_seed_same_schedule_and_another_seed_another() -> None:
    a, b = make_schedule(42, 15), make_schedule(42, 15)
    assert [f.as_dict() for f in a] == [f.as_dict() for f in b]
    assert [f.as_dict() for f in make_schedule(43, 15)] != [f.as_dict() for f in a]


def test_a_long_run_draws_every_kind_within_its_hold_range_and_fits_the_time() -> None:
    faults = make_schedule(1, 120)
    assert set(Counter(f.kind for f in faults)) == set(KINDS)
    for f in faults:
        lo, hi = HOLD_S[f.kind]
        assert lo <= f.hold_s <= hi and 0 <= f.pick < 100
        assert f.at_s + f.hold_s <= 120 * 60
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    assert all(set(f.params) == {"tcp", "udp"} for f in faults if f.kind == "timeouts")


def test_a_shorter_run_of_a_seed_replays_the_start_of_a_longer_one() -> None:
    short, long = make_schedule(9, 2), make_schedule(9, 15)
    assert 1 <= len(short) < len(long) and short == long[:len(short)]
    assert {f.kind for f in make_schedule(9, 5, {"kill-master": 1.0})} == {"kill-master"}
