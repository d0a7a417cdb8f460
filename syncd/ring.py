"""The master's retention ring: encoded batches kept for backups to resume from (pure, no I/O).

Theory of operation
-------------------
Every batch the master cuts is encoded once and appended here with its seq; a backup session is a
cursor (its last sent seq) into the ring, so any number of backups share one copy of the stream.
The ring is bounded four ways, oldest batches going first: by batch count, by update count, by
encoded bytes and by age (seconds since the batch was cut). A backup whose resume point was
trimmed gets a snapshot instead, so the bounds trade memory for snapshot frequency, never
correctness. ``trim(now)`` is called on every append and periodically (so memory is given back
when the stream goes idle); the newest batch is kept by the count and byte bounds (it is what an
idle backup is at), not by the age bound.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RingLimits:
    batches: int = 65536
    updates: int = 2_000_000
    bytes: int = 64 << 20
    """Encoded bytes held at most (the master's memory for resumable history)."""
    age: float = 60.0
    """Seconds a batch stays resumable; an idle ring empties after this long."""


class RingEntry:
    __slots__ = ("seq", "data", "n", "created")

    def __init__(self, seq: int, data: bytes, n: int, created: float) -> None:
        self.seq = seq
        self.data = data
        self.n = n
        self.created = created


class RetentionRing:
    """Batches with consecutive seqs, oldest first; bounded by count, updates, bytes and age."""

    def __init__(self, limits: RingLimits | None = None) -> None:
        self.limits = limits or RingLimits()
        self._q: deque[RingEntry] = deque()
        self.updates = 0
        self.bytes = 0
        self.trimmed = 0
        """Batches dropped by the bounds so far."""

    def __len__(self) -> int:
        return len(self._q)

    def clear(self) -> None:
        self._q = deque()  # a fresh deque: the old blocks go back to the allocator at once
        self.updates = self.bytes = 0

    def append(self, entry: RingEntry) -> None:
        if self._q and self._q[-1].seq + 1 != entry.seq:
            raise ValueError(f"ring seq {entry.seq} does not follow {self._q[-1].seq}")
        self._q.append(entry)
        self.updates += entry.n
        self.bytes += len(entry.data)

    def trim(self, now: float) -> int:
        """Drop batches beyond the bounds (monotonic `now` for the age bound); returns how many."""
        q, lim = self._q, self.limits
        n = 0
        while q and (len(q) > lim.batches or (len(q) > 1 and (self.updates > lim.updates
                                                                or self.bytes > lim.bytes))
                     or now - q[0].created > lim.age):
            e = q.popleft()
            self.updates -= e.n
            self.bytes -= len(e.data)
            n += 1
        self.trimmed += n
        return n

    def oldest_created(self) -> float | None:
        return self._q[0].created if self._q else None

    def after(self, seq: int, head_seq: int, limit: int) -> list[RingEntry] | None:
        """Up to `limit` batches with seq > `seq`; [] when `seq` is the head; None when seq + 1 is
        no longer (or not) held."""
        if seq >= head_seq:
            return [] if seq == head_seq else None
        q = self._q
        if not q or q[0].seq > seq + 1:
            return None
        start = seq + 1 - q[0].seq
        return [q[i] for i in range(start, min(len(q), start + limit))]


__all__ = ["RetentionRing", "RingEntry", "RingLimits"]
