"""Never-queue scheduler (Linux ip_vs_nq.c).

Theory of operation
-------------------
Like sed, but an idle dest (no active conns) is taken at once, so a new conn never queues
behind others while some server sits idle. Otherwise the usable dest with the smallest
``(activeconns + 1) / weight`` wins (cross-multiplied as in the kernel; ties to the earliest).
"""

from __future__ import annotations

from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK
from director.services.sched.sed import ShortestExpectedDelay
from director.services.service import Dest

_and = int.__and__


class NeverQueue(ShortestExpectedDelay):
    """nq: first idle dest, else shortest expected delay (sed)."""

    name = "nq"

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        for d in dests:
            if d.activeconns == 0 and d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
                return d
        return super().schedule(dests, caddr, cport)
