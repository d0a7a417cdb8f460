"""HeapTrimmer: the heap is trimmed once the load went, not during it, and not too often."""

from __future__ import annotations

from syncd.memory import MIN_PEAK, HeapTrimmer


def test_trims_once_the_size_fell_to_a_quarter_of_its_peak_rate_limited() -> None:
    calls: list[int] = []
    t = HeapTrimmer(min_interval=30.0, trim=lambda pad: calls.append(pad) or 1)
    assert not t.observe(100, 0.0) and not t.observe(MIN_PEAK * 8, 1.0)  # growing: never
    assert not t.observe(MIN_PEAK * 3, 2.0)                              # still above a quarter
    assert t.observe(MIN_PEAK * 2, 3.0) and calls == [0]                 # a quarter of the peak
    assert not t.observe(0, 4.0)                                          # not within 30 s again
    assert t.observe(0, 40.0) and len(calls) == 2                         # the rest went later
    assert not t.observe(0, 100.0)                                        # nothing new to give back
    small = HeapTrimmer(trim=lambda pad: calls.append(pad) or 1)
    assert not small.observe(MIN_PEAK - 1, 0.0) and not small.observe(0, 100.0)  # too small to bother
    assert HeapTrimmer().observe(0, 0.0) is False  # the real malloc_trim is loadable or skipped
