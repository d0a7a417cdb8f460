"""What to sync and when (pure: no I/O, no clock reads; times are passed in).

Theory of operation
-------------------
``SyncPolicy`` holds the knobs and ``should_sync(snap)`` is the IPVS-style predicate "is this entry
worth sending?" (complete sync by default; optionally skip half-open TCP entries like IPVS does).

``RefreshTracker`` is the answer to IPVS's sync_threshold/refresh_period: for every entry the
backups hold it remembers when their copy would expire (the master-clock deadline that was sent).
``due(now)`` yields the entries whose backup copy enters the refresh margin; the master then sends a
REFRESH with the remaining time if (and only if) its own entry lives longer. An entry kept alive by
traffic (``ConnTable.refresh`` emits no event) or a template held by its children therefore never
expires on a backup first. A heap with lazy invalidation keeps it O(log n) per sent entry.

``TokenBucket`` is the rate limit used for Follow attempts and acks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from director.table.entry import S_SYN_RECV, S_SYNACK, TCP
from syncd.model import ConnKey, SnapshotLike


@dataclass
class SyncPolicy:
    sync_syn_recv: bool = True
    """Send half-open TCP entries (SYN_RECV / SYNACK). IPVS never does; complete sync does."""
    sync_templates: bool = True
    refresh_margin: float = 2.0
    """Refresh a backup's copy when it would expire within this many seconds (capped at half the
    entry's timeout so short-lived entries are not refreshed continuously)."""
    refresh_min_margin: float = 0.25
    """Lower bound of the per-entry margin (must exceed batch window + lag)."""

    @property
    def sync_all(self) -> bool:
        """True when nothing is filtered (the fast path skips should_sync)."""
        return self.sync_syn_recv and self.sync_templates

    def should_sync(self, snap: SnapshotLike) -> bool:
        return self.should_sync_key(snap.key, snap.state)

    def should_sync_key(self, key: ConnKey, state: int) -> bool:
        """``should_sync`` of an entry with this key and state."""
        if key[8]:
            return self.sync_templates
        if key[0] == TCP and state in (S_SYN_RECV, S_SYNACK):
            return self.sync_syn_recv
        return True

    def margin(self, timeout: float) -> float:
        return max(self.refresh_min_margin, min(self.refresh_margin, timeout * 0.5))


class RefreshTracker:
    """Backup-copy deadlines (master clock) of every entry sent, ordered by when to look at them."""

    def __init__(self, policy: SyncPolicy) -> None:
        self.policy = policy
        self._deadline: dict[ConnKey, float] = {}
        self._heap: list[tuple[float, float, ConnKey]] = []
        self._peak = 0

    def __len__(self) -> int:
        return len(self._deadline)

    def sent(self, key: ConnKey, deadline: float, timeout: float) -> None:
        """The backups were told `key` expires at `deadline` (master clock)."""
        d = self._deadline
        d[key] = deadline
        if len(d) > self._peak:
            self._peak = len(d)
        p = self.policy
        margin = timeout * 0.5
        if margin > p.refresh_margin:
            margin = p.refresh_margin
        if margin < p.refresh_min_margin:
            margin = p.refresh_min_margin
        heapq.heappush(self._heap, (deadline - margin, deadline, key))

    def sent_many(self, items: list[tuple[ConnKey, float, float]]) -> None:
        """``sent`` of each (key, deadline, timeout), in order (one call per master window)."""
        d, heap, push = self._deadline, self._heap, heapq.heappush
        top, bottom = self.policy.refresh_margin, self.policy.refresh_min_margin
        for key, deadline, timeout in items:
            d[key] = deadline
            margin = timeout * 0.5
            if margin > top:
                margin = top
            if margin < bottom:
                margin = bottom
            push(heap, (deadline - margin, deadline, key))
        if len(d) > self._peak:
            self._peak = len(d)

    def ensure(self, key: ConnKey, deadline: float, timeout: float) -> None:
        """A snapshot sent `key` with `deadline`: track the earlier of it and what batches sent (each
        backup must be refreshed before *its* copy runs out)."""
        known = self._deadline.get(key)
        if known is None or deadline < known:
            self.sent(key, deadline, timeout)

    def recheck(self, key: ConnKey, deadline: float, at: float) -> None:
        """Look at `key` again at `at` (its backup deadline is unchanged)."""
        self._deadline[key] = deadline
        heapq.heappush(self._heap, (at, deadline, key))

    def forget(self, key: ConnKey) -> None:
        self._deadline.pop(key, None)

    def clear(self) -> None:
        self._deadline = {}  # new containers: a drained dict or list keeps its peak size
        self._heap = []
        self._peak = 0

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float, limit: int = 65536) -> list[tuple[ConnKey, float]]:
        """Pop entries whose backup copy enters its margin by `now`: [(key, deadline sent)]."""
        out: list[tuple[ConnKey, float]] = []
        heap, deadlines = self._heap, self._deadline
        while heap and heap[0][0] <= now and len(out) < limit:
            _, deadline, key = heapq.heappop(heap)
            if deadlines.get(key) == deadline:
                del deadlines[key]
                out.append((key, deadline))
        if len(heap) > 4 * len(deadlines) + 1024 or self._peak > 4 * len(deadlines) + 1024:
            self._compact()
        return out

    def _compact(self) -> None:
        """Drop stale heap items and copy the dict: memory goes back once most entries are gone
        (a dict never shrinks by deletion)."""
        live = [(d - m, d, k) for (_, d, k), m in self._live_margins()]
        heapq.heapify(live)
        self._heap = live
        self._deadline = dict(self._deadline)
        self._peak = len(self._deadline)

    def _live_margins(self) -> Iterable[tuple[tuple[float, float, ConnKey], float]]:
        deadlines = self._deadline
        for item in self._heap:
            if deadlines.get(item[2]) == item[1]:
                yield item, item[1] - item[0]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; take() is False when empty."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._t: float | None = None

    def take(self, now: float, n: float = 1.0) -> bool:
        if self._t is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False
