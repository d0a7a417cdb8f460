"""Weighted round-robin scheduler (Linux ip_vs_wrr.c).

Theory of operation
-------------------
The kernel's interleaved WRR: ``mw`` is the largest weight minus (gcd - 1), ``di`` the gcd of
the weights, ``cw`` the current weight threshold and ``cl`` the position in the dest list.
Each call walks on from ``cl`` and returns the next usable dest whose weight is >= ``cw``; at the
end of the list ``cw`` drops by ``di`` (wrapping to ``mw``). Over one full cycle a dest of weight
w is picked w/gcd times, interleaved with the others. ``update`` recomputes ``mw``/``di``,
resets ``cl`` to the head and adjusts ``cw`` exactly like ``ip_vs_wrr_dest_changed``. The
``last_pass``/``stop`` bookkeeping guarantees the walk ends after every dest was tried at
weight >= 1, so overloaded dests cannot make it loop forever.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__


class WeightedRoundRobin:
    """wrr: dests in turn, each in proportion to its weight."""

    name = "wrr"

    def __init__(self) -> None:
        self.opts: dict[str, object] = {}
        self._dests: list[Dest] = []
        self._cl = -1  # current list position; -1 = head
        self._cw = 0   # current weight
        self._mw = 0   # max weight - (gcd - 1)
        self._di = 1   # gcd of the weights

    def update(self, dests: Sequence[Dest]) -> None:
        self._dests = list(dests)
        weights = [d.weight for d in self._dests if d.weight > 0]
        self._di = math.gcd(*weights) if weights else 1
        self._mw = (max(weights) if weights else 0) - (self._di - 1)
        self._cl = -1
        if self._cw > self._mw or self._cw == 0:
            self._cw = self._mw
        elif self._di > 1:
            self._cw = (self._cw // self._di) * self._di + 1

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        if len(dests) != len(self._dests):
            self.update(dests)
        d = self._walk() if self._mw > 0 else None
        if d is None:
            log.debug("wrr: no destination available")
        return d

    def _walk(self) -> Dest | None:
        ds = self._dests
        n = len(ds)
        last = self._cl
        pos = last
        stop = -2  # index after which the walk gives up (-2 = no stop yet)
        last_pass = restarted = False
        while True:
            for j in range(pos + 1, n):
                d = ds[j]
                if d.weight >= self._cw and _and(d.flags, USABLE_MASK) == USABLE_OK:
                    self._cl = j
                    return d
                if j == stop:
                    return None
            pos = -1
            self._cw -= self._di
            if self._cw <= 0:
                self._cw = self._mw
                if last_pass or last == -1:
                    return None
                restarted = True
            last_pass = self._cw <= self._di
            if last_pass and restarted and last != -1:
                stop = last
