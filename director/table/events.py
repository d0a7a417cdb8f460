"""The conn table's event feed for the sync daemon: NEW / UPDATE / EXPIRE with snapshots.

Theory of operation
-------------------
Every change to an entry's existence, state, flags, dest or control link produces one
``ConnEvent`` holding an immutable ``ConnSnapshot`` taken at that moment (templates
included). Events go into a bounded FIFO that never blocks the producer (the packet path):

* ``enabled`` False (no consumer yet): events are not even built, nothing is stored;
* full: the event is dropped, ``overflowed`` is set and ``dropped`` counted, and a warning is
  logged once per overflow episode - the consumer must resynchronise from a table snapshot
  (iterate the table) and then call ``clear_overflow()``;
* ``on_ready`` (if set) is called once each time the queue goes from empty to non-empty, so
  an asyncio consumer can be woken cheaply (e.g. ``event.set``).

An entry whose key changes (``fill_cport``, template invalidation) is reported as an UPDATE
whose ``old_key`` names the key it had before; other events carry ``old_key=None``.

*Raw events.* The table (the packet path) pushes each event as one flat tuple, a ``RawEvent``:
the eight ``ConnSnapshot`` fields followed by kind and old_key. ``drain()`` turns them into
``ConnEvent(kind, ConnSnapshot, old_key)``; a consumer that cares about speed (the sync master)
takes them as they are with ``drain_raw()`` - one object per event instead of three, so the packet
path builds less and the garbage collector sees less.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

from director.services.service import DestKey

log = logging.getLogger(__name__)

ConnKey = tuple[int, int, int, int, int, int, int, int, bool]
"""(protocol, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_template)."""


class EventKind(IntEnum):
    NEW = 1
    UPDATE = 2
    EXPIRE = 3


class ConnSnapshot(NamedTuple):
    key: ConnKey
    flags: int
    state: int
    timeout: float
    expires: float
    dest_key: DestKey | None
    control_key: ConnKey | None
    in_pkts: int


class ConnEvent(NamedTuple):
    kind: EventKind
    snap: ConnSnapshot
    old_key: ConnKey | None = None


RawEvent = tuple[Any, ...]
"""(key, flags, state, timeout, expires, dest_key, control_key, in_pkts, kind, old_key): a
``ConnSnapshot``'s fields, then the event kind and old_key (see ``RAW_KIND`` / ``RAW_OLD_KEY``)."""
RAW_KIND, RAW_OLD_KEY = 8, 9

_tuple_new = tuple.__new__  # NamedTuple without its Python-level __new__ (hot path)


def cook(ev: RawEvent) -> ConnEvent:
    """The ConnEvent of a raw event."""
    return _tuple_new(ConnEvent, (ev[8], _tuple_new(ConnSnapshot, ev[:8]), ev[9]))


class EventFeed:
    """Bounded FIFO of ``ConnEvent``; never blocks, signals overflow."""

    __slots__ = ("capacity", "enabled", "overflowed", "dropped", "on_ready", "tap", "_q")

    def __init__(self, capacity: int = 65536) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.enabled = False
        self.overflowed = False
        self.dropped = 0
        self.on_ready: Callable[[], None] | None = None
        self.tap: Callable[[list[RawEvent]], None] | None = None
        """Sees every drained batch after the consumer took it (admin event watchers); must not raise."""
        self._q: deque[RawEvent] = deque()

    def push(self, kind: EventKind, snap: ConnSnapshot, old_key: ConnKey | None = None) -> None:
        if self.enabled:
            self.push_raw((*snap, kind, old_key))

    def push_raw(self, ev: RawEvent) -> None:
        """Queue one ``RawEvent`` (the caller checked ``enabled``)."""
        q = self._q
        if len(q) >= self.capacity:
            if not self.overflowed:
                log.warning("conn event feed full (%d): dropping events, consumer must resync",
                            self.capacity)
            self.overflowed = True
            self.dropped += 1
            return
        q.append(ev)
        if len(q) == 1 and self.on_ready is not None:
            self.on_ready()

    def drain(self, max_n: int = 4096) -> list[ConnEvent]:
        """Remove and return up to ``max_n`` events, oldest first."""
        return [cook(ev) for ev in self.drain_raw(max_n)]

    def drain_raw(self, max_n: int = 4096) -> list[RawEvent]:
        """``drain`` without building ConnEvents: the ``RawEvent`` tuples as queued."""
        q = self._q
        if len(q) <= max_n:
            out = list(q)
            q.clear()
        else:
            popleft = q.popleft
            out = [popleft() for _ in range(max_n)]
        if self.tap is not None and out:
            self.tap(out)
        return out

    def clear_overflow(self) -> None:
        """Called by the consumer once it has resynchronised."""
        self.overflowed = False

    def clear(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


__all__ = ["RAW_KIND", "RAW_OLD_KEY", "ConnEvent", "ConnKey", "ConnSnapshot", "EventFeed", "EventKind",
           "RawEvent", "cook"]
