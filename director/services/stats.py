"""Rate estimators for the traffic counters (``ipvsadm --rate``), like IPVS's ``ip_vs_est.c``.

Theory of operation
-------------------
The packet path only increments plain counters (:class:`director.services.service.Counters`: conns,
inpkts, outpkts, inbytes, outbytes) per service and per dest. Rates are derived off the hot path:
the daemon calls :meth:`StatsEstimator.update` periodically (IPVS: every 2 s) with the clock's
time. For each counter set the estimator takes the increase since the previous call divided by
the elapsed time, and folds it into an exponentially weighted moving average with weight 1/4 per
interval, exactly IPVS's ``avg += (rate - avg) >> 2``. Rates are per second: connections,
packets, and bytes (ipvsadm's "BPS" columns are bytes per second).

The estimator finds the services and dests to track itself: each ``update`` walks the service
table, starts an estimator for every new counter set (its first sample only records a baseline)
and forgets those whose service or dest is gone. Totals over all services are tracked as well.
Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from director.services.service import Counters, VirtualService

_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


class Rates(NamedTuple):
    cps: float
    inpps: float
    outpps: float
    inbps: float
    outbps: float


ZERO_RATES = Rates(0.0, 0.0, 0.0, 0.0, 0.0)


class RateEstimator:
    """EWMA rates of one :class:`Counters` set."""

    __slots__ = ("counters", "last", "last_time", "avg", "weight")

    def __init__(self, counters: Counters, now: float, weight: float = 0.25) -> None:
        self.counters = counters
        self.last = self._sample()
        self.last_time = now
        self.avg = [0.0] * len(_FIELDS)
        self.weight = weight

    def _sample(self) -> list[int]:
        c = self.counters
        return [c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes]

    def update(self, now: float) -> None:
        """Fold the rates since the previous call into the averages (no-op if no time passed)."""
        dt = now - self.last_time
        if dt <= 0:
            return
        cur = self._sample()
        w = self.weight
        avg = self.avg
        for i, (new, old) in enumerate(zip(cur, self.last, strict=True)):
            # A counter that went down was zeroed: restart from the new value.
            rate = (new - old) / dt if new >= old else new / dt
            avg[i] += (rate - avg[i]) * w
        self.last = cur
        self.last_time = now

    def rates(self) -> Rates:
        return Rates(*self.avg)


class StatsEstimator:
    """Rates for every service, every dest and the totals; driven by ``update(services, now)``."""

    def __init__(self, interval: float = 2.0, weight: float = 0.25) -> None:
        self.interval = interval
        self.weight = weight
        self.totals = Counters()
        self._total_est: RateEstimator | None = None
        self._est: dict[int, RateEstimator] = {}
        self.last_update: float | None = None

    def due(self, now: float) -> bool:
        """True when ``update`` should run (``interval`` seconds since the last one)."""
        return self.last_update is None or now - self.last_update >= self.interval

    def update(self, services: Iterable[VirtualService], now: float) -> None:
        seen: dict[int, Counters] = {}
        totals = [0] * len(_FIELDS)
        for svc in services:
            seen[id(svc.counters)] = svc.counters
            c = svc.counters
            for i, v in enumerate((c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes)):
                totals[i] += v
            for dest in svc.dests:
                seen[id(dest.counters)] = dest.counters
        t = self.totals
        t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes = totals
        for key in [k for k in self._est if k not in seen]:
            del self._est[key]
        for key, counters in seen.items():
            est = self._est.get(key)
            if est is None or est.counters is not counters:
                self._est[key] = RateEstimator(counters, now, self.weight)
            else:
                est.update(now)
        if self._total_est is None:
            self._total_est = RateEstimator(self.totals, now, self.weight)
        else:
            self._total_est.update(now)
        self.last_update = now

    def rates(self, counters: Counters) -> Rates:
        """Rates of a service's or dest's counters (zeros until tracked for one interval)."""
        est = self._est.get(id(counters))
        if est is None or est.counters is not counters:
            return ZERO_RATES
        return est.rates()

    def total_rates(self) -> Rates:
        return self._total_est.rates() if self._total_est is not None else ZERO_RATES


__all__ = ["ZERO_RATES", "RateEstimator", "Rates", "StatsEstimator"]
