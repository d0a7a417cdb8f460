"""Admin call limits: a token bucket per peer and a cap on heavy calls in progress (RESOURCE_EXHAUSTED).

Theory of operation
-------------------
Every admin call first takes its cost in tokens from its peer's bucket (``PeerLimiter``; the peer is
the caller's address without its port, one bucket for the local unix socket). Reads cost 1, a
ListConns page 2, writes 5, ApplyConfig 10; a bucket refills at ``rate`` tokens a second up to
``burst``. The most recently seen ``max_peers`` peers are remembered, so a spoofed-address flood
cannot grow the map. ``AdminLimits.heavy`` also caps the ApplyConfig calls running at once. A refusal
is ``RateLimited`` with a short message; ``bounded`` cuts any error message to ``MAX_MESSAGE``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from director.admin.api import RateLimited

MAX_MESSAGE = 4096
COST = {"ListConns": 2.0, "ApplyConfig": 10.0}
WRITE_COST = 5.0


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` cut to ``limit`` characters (with a note of how much was cut)."""
    if len(message) <= limit:
        return message
    return message[:limit - 40] + f"... ({len(message) - limit + 40} more characters)"


def peer_key(peer: str) -> str:
    """The caller's address without its port ("ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4"); one key for unix."""
    if peer.startswith("unix:"):
        return "unix"
    host, sep, _port = peer.rpartition(":")
    return (host if sep else peer)[:256]


class PeerLimiter:
    """Token buckets by peer: ``rate`` tokens a second, at most ``burst`` saved (``rate`` <= 0: no limit)."""

    def __init__(self, rate: float, burst: float, *, max_peers: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_peers, self.clock = rate, burst, max_peers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refused = 0

    def take(self, peer: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``peer``'s bucket: 0.0 if granted, else the seconds until it would be."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
            self.refused += 1
        self._buckets[peer] = (tokens, now)
        if len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class AdminLimits:
    """The admin server's limits (``AdminServerConfig.limits``)."""

    rate: float = 100.0
    burst: float = 200.0
    heavy_calls: int = 1
    clock: Callable[[], float] = time.monotonic
    limiter: PeerLimiter = field(init=False)
    running: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.limiter = PeerLimiter(self.rate, self.burst, clock=self.clock)

    def check(self, peer: str, method: str, write: bool) -> None:
        """Take the call's cost from its peer's bucket, or raise RateLimited."""
        wait = self.limiter.take(peer_key(peer), COST.get(method, WRITE_COST if write else 1.0))
        if wait:
            raise RateLimited(f"{method}: too many admin calls from this peer ({self.rate:g}/s, burst "
                              f"{self.burst:g}); retry in {wait:.2f} s")

    @contextmanager
    def heavy(self, method: str) -> Iterator[None]:
        """Run one heavy call, or raise RateLimited when ``heavy_calls`` already run."""
        if self.running >= self.heavy_calls:
            raise RateLimited(f"{method}: {self.running} already in progress on this node; retry later")
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


__all__ = ["COST", "MAX_MESSAGE", "AdminLimits", "PeerLimiter", "bounded", "peer_key"]
