"""Never-queue scheduler (Linux ip_vs_nq.c).

Theory of operation
-------------------
Like sed, but an idle dest (no active conns) is taken at once, so a new conn never queues
behind others while some server sits idle. Otherwise the usable dest with the smallest
``(activeconns + 1) / weight`` wins (cross-multiplied as in the kernel; ties to the earliest).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.sched.base import USABLE_MASK, USABLE_OK, Stateless
from director.service import Dest

log = logging.getLogger(__name__)

_MASK, _OK = USABLE_MASK, USABLE_OK
_and = int.__and__


class NeverQueue(Stateless):
    """nq: first idle dest, else shortest expected delay."""

    name = "nq"

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        least: Dest | None = None
        loh = lw = 0
        for d in dests:
            w = d.weight
            if w <= 0 or _and(d.flags, _MASK) != _OK:
                continue
            if d.activeconns == 0:
                return d
            doh = d.activeconns + 1
            if least is None or loh * w > doh * lw:
                least, loh, lw = d, doh, w
        if least is None:
            log.debug("nq: no destination available")
        return least
