"""Round-robin scheduler (Linux ip_vs_rr.c).

Theory of operation
-------------------
The scheduler remembers the last dest it picked. ``schedule`` walks the dest list starting just
after it, wrapping around once, and returns the first usable dest (available, weight > 0, not
overloaded). ``update`` copies the list; if the remembered dest was removed, the position falls
back to its nearest surviving predecessor, as the kernel does (``ip_vs_rr_del_dest``), so the
rotation continues where it was instead of restarting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__


class RoundRobin:
    """rr: each usable dest in turn."""

    name = "rr"

    def __init__(self) -> None:
        self.opts: dict[str, object] = {}
        self._dests: list[Dest] = []
        self._pos = -1  # index of the last dest picked; -1 = the list head

    def update(self, dests: Sequence[Dest]) -> None:
        old, pos = self._dests, self._pos
        self._dests = list(dests)
        index = {id(d): i for i, d in enumerate(self._dests)}
        self._pos = -1
        while 0 <= pos < len(old):
            i = index.get(id(old[pos]))
            if i is not None:
                self._pos = i
                break
            pos -= 1

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        if len(dests) != len(self._dests):
            self.update(dests)
        ds = self._dests
        n = len(ds)
        start = self._pos + 1
        for i in range(n):
            j = (start + i) % n
            d = ds[j]
            if d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
                self._pos = j
                return d
        log.debug("rr: no destination available")
        return None
