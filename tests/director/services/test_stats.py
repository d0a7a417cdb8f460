"""Rate estimators (ipvsadm --rate): EWMA of per-second rates driven by an explicit clock."""

from __future__ import annotations

import pytest

from director.services.sched import registry
from director.services.service import Counters, Dest, ServiceTable, VirtualService
from director.services.stats import RateEstimator, StatsEstimator


def test_rate_estimator_converges_to_a_steady_rate() -> None:
    c = Counters()
    est = RateEstimator(c, now=0.0)
    t = 0.0
    for _ in range(40):
        t += 2.0
        c.conns += 20      # 10 conn/s
        c.inpkts += 2000   # 1000 pkt/s
        c.outbytes += 3000  # 1500 B/s
        est.update(t)
    r = est.rates()
    assert r.cps == pytest.approx(10.0, rel=1e-3)
    assert r.inpps == pytest.approx(1000.0, rel=1e-3)
    assert r.outbps == pytest.approx(1500.0, rel=1e-3)
    assert r.outpps == 0.0 and r.inbps == 0.0


def test_rate_estimator_moves_a_quarter_per_interval_and_survives_zeroing() -> None:
    c = Counters()
    est = RateEstimator(c, now=0.0)
    c.inpkts = 400
    est.update(2.0)  # rate 200/s, average moves 1/4 of the way
    assert est.rates().inpps == pytest.approx(50.0)
    est.update(2.0)  # no time passed: no change
    assert est.rates().inpps == pytest.approx(50.0)
    c.zero()
    c.inpkts = 40
    est.update(4.0)  # counter went down: rate from the new value, never negative
    assert est.rates().inpps == pytest.approx(50.0 + (20.0 - 50.0) / 4)


def test_stats_estimator_tracks_services_dests_and_totals() -> None:
    services = ServiceTable()
    svc = VirtualService(protocol=6, addr=1, port=80, scheduler=registry.create("rr"))
    d1, d2 = Dest(svc, 10, 80), Dest(svc, 11, 80)
    svc.add_dest(d1)
    svc.add_dest(d2)
    services.add(svc)
    st = StatsEstimator(interval=2.0)
    assert st.due(0.0)
    st.update(services, 0.0)
    assert not st.due(1.0) and st.due(2.0)
    for t in (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0):
        d1.counters.inpkts += 200
        svc.counters.inpkts += 200
        st.update(services, t)
    assert st.rates(d1.counters).inpps == pytest.approx(100.0, rel=0.05)
    assert st.rates(d2.counters).inpps == 0.0
    assert st.rates(svc.counters).inpps == pytest.approx(100.0, rel=0.05)
    assert st.total_rates().inpps == pytest.approx(100.0, rel=0.05)
    assert st.totals.inpkts == svc.counters.inpkts
    svc.remove_dest(d1)
    st.update(services, 26.0)
    assert st.rates(d1.counters).inpps == 0.0  # forgotten with its dest
    assert st.rates(Counters()).cps == 0.0
