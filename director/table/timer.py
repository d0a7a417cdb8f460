"""Lazy timing wheel for conn timers, driven by an injected clock.

Theory of operation
-------------------
Time is cut into slots of ``1/hz`` seconds (default 1/16 s, a power of two so whole-second
deadlines are exact). An entry armed for deadline ``e`` is appended to slot ``ceil(e * hz)``
and remembers that slot in its ``_tslot`` attribute. A slot fires when ``now >= slot / hz``,
so an entry never fires early and at most ``1/hz`` late.

Refreshing is O(1) and never touches the wheel: the owner just moves ``entry.expires``
forward. When the slot fires, each entry is checked: if ``_tslot`` is no longer this slot the
list item is stale (the entry was re-armed elsewhere or disarmed) and is skipped; if its
``expires`` moved past ``now`` it is re-slotted; otherwise it is due. Moving a deadline
*earlier* than its slot needs a re-slot (``arm``), which leaves a stale item behind in the old
slot; stale items are dropped when that slot fires.

Horizon: an entry is never slotted more than ``horizon`` seconds (default 32) ahead of the
``now`` it was armed at; a longer deadline takes several hops. This bounds how long a stale
item can keep a removed entry alive (a TCP conn armed for 900 s in ESTABLISHED that closes
and goes after 10 s would otherwise stay in memory for 900 s), at the price of one re-slot per
``horizon`` seconds of a long timeout (1M conns at 900 s: ~31k re-slots/s). It also bounds the
number of live slots to ``horizon * hz``.

Slots live in a dict keyed by slot number plus a heap of slot numbers, so ``collect(now)``
costs O(due slots + items in them) and never scans idle entries. ``arm_now`` puts an entry on
an "immediate" slot that fires at the next ``collect`` (``ip_vs_conn_expire_now``).
"""

from __future__ import annotations

import heapq
import math

DEFAULT_HZ = 16
"""Slots per second. A power of two keeps whole-second deadlines exact."""
DEFAULT_HORIZON = 32.0
"""Furthest an entry is slotted ahead of now (seconds); longer deadlines hop."""


class Timed:
    """Base for entries the wheel can hold: ``expires`` (absolute) and the slot holding it."""

    __slots__ = ("expires", "_tslot")

    def __init__(self) -> None:
        self.expires = 0.0
        self._tslot: _Slot | None = None

    @property
    def armed(self) -> bool:
        return self._tslot is not None


class _Slot(list[Timed]):
    __slots__ = ("deadline",)

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline


class Wheel:
    """Slots of ``1/hz`` s; ``arm`` / ``arm_now`` / ``disarm`` / ``collect``."""

    __slots__ = ("hz", "horizon", "swept", "_slots", "_heap", "_now_slot", "_now_at", "_ceil")

    def __init__(self, hz: int = DEFAULT_HZ, horizon: float = DEFAULT_HORIZON) -> None:
        if hz <= 0 or not horizon > 0:
            raise ValueError("hz and horizon must be positive")
        self.hz = hz
        self.horizon = horizon
        self.swept = 0
        """Items examined by ``collect`` so far (shows the cost is O(due), not O(table))."""
        self._slots: dict[int, _Slot] = {}
        self._heap: list[int] = []
        self._now_slot = _Slot(-math.inf)
        self._now_at: float | None = None
        self._ceil = math.ceil

    def arm(self, entry: Timed, when: float, now: float) -> None:
        """Set ``entry.expires = when`` and slot it (at most ``horizon`` after ``now``)."""
        entry.expires = when
        cap = now + self.horizon
        k = self._ceil((when if when < cap else cap) * self.hz)
        slot = self._slots.get(k)
        if slot is None:
            slot = self._slots[k] = _Slot(k / self.hz)
            heapq.heappush(self._heap, k)
        slot.append(entry)
        entry._tslot = slot

    def rearm(self, entry: Timed, when: float, now: float) -> None:
        """Set a new deadline: O(1) when later than the current slot, a re-slot when earlier."""
        entry.expires = when
        ts = entry._tslot
        if ts is None or when < ts.deadline:
            self.arm(entry, when, now)

    def arm_now(self, entry: Timed, now: float) -> None:
        """Fire at the next ``collect`` (unless ``expires`` is moved past it meanwhile)."""
        entry.expires = now
        self._now_slot.append(entry)
        entry._tslot = self._now_slot
        if self._now_at is None:
            self._now_at = now

    @staticmethod
    def disarm(entry: Timed) -> None:
        entry._tslot = None

    def next_deadline(self) -> float | None:
        """Earliest time ``collect`` may return something (stale slots may make it early)."""
        if self._now_at is not None:
            return self._now_at
        if self._heap:
            return self._heap[0] / self.hz
        return None

    def collect(self, now: float) -> list[Timed]:
        """Disarm and return entries due at ``now``; re-slot those whose deadline moved."""
        due: list[Timed] = []
        if self._now_at is not None:
            slot, self._now_slot, self._now_at = self._now_slot, _Slot(-math.inf), None
            self._sweep(slot, now, due)
        kmax = math.floor(now * self.hz)
        heap, slots = self._heap, self._slots
        while heap and heap[0] <= kmax:
            self._sweep(slots.pop(heapq.heappop(heap)), now, due)
        return due

    def _sweep(self, slot: _Slot, now: float, due: list[Timed]) -> None:
        arm = self.arm
        self.swept += len(slot)
        for e in slot:
            if e._tslot is not slot:
                continue  # stale: re-armed elsewhere or disarmed
            if e.expires <= now:
                e._tslot = None
                due.append(e)
            else:
                arm(e, e.expires, now)

    def __len__(self) -> int:
        """Items held, stale ones included (a memory figure, not the number of armed entries)."""
        return len(self._now_slot) + sum(len(s) for s in self._slots.values())


__all__ = ["DEFAULT_HZ", "Timed", "Wheel"]
