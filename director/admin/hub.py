"""Fan-out of admin-visible events (`NodeEvent`) to watchers: publish never blocks.

Each watcher holds one bounded `Subscription`; when it falls behind, its queue is cleared and the next
`get()` returns one ``overflow`` event, so a slow `directorctl watch` never slows the node.
"""

from __future__ import annotations

import asyncio
import collections

from director.admin.api import NodeEvent


class Subscription:
    """One consumer's bounded queue of events. Overflow drops the oldest and queues one 'overflow'."""

    def __init__(self, hub: EventHub, capacity: int) -> None:
        self._hub = hub
        self._q: collections.deque[NodeEvent] = collections.deque()
        self._capacity = capacity
        self._wake = asyncio.Event()
        self._overflowed = False
        self.closed = False

    def push(self, ev: NodeEvent) -> None:
        if len(self._q) >= self._capacity:
            self._q.clear()
            self._overflowed = True
        self._q.append(ev)
        self._wake.set()

    async def get(self) -> NodeEvent:
        while not self._q and not self._overflowed:
            self._wake.clear()
            await self._wake.wait()
        if self._overflowed:
            self._overflowed = False
            return NodeEvent(kind="overflow", time=self._q[0].time if self._q else 0.0,
                             message="events were dropped: consumer too slow")
        return self._q.popleft()

    def close(self) -> None:
        self.closed = True
        self._hub.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Fan-out of NodeEvents to admin watchers; publish never blocks."""

    def __init__(self, capacity: int = 10000) -> None:
        self._subs: set[Subscription] = set()
        self._capacity = capacity

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._capacity)
        self._subs.add(sub)
        return sub

    def discard(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def watchers(self) -> int:
        return len(self._subs)

    def publish(self, ev: NodeEvent) -> None:
        for sub in self._subs:
            sub.push(ev)
