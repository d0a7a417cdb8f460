"""Shortest expected delay scheduler (Linux ip_vs_sed.c).

Theory of operation
-------------------
The expected delay of a dest is ``(activeconns + 1) / weight``: the conn we are about to add
waits behind the active ones, served at a rate proportional to the weight. As in the kernel
(``ip_vs_sed_dest_overhead``) only active conns count here, not the ``* 256 + inactconns``
overhead of lc/wlc. Compared by cross-multiplication; ties go to the earliest dest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK, Stateless
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__


class ShortestExpectedDelay(Stateless):
    """sed: minimise (active + 1) / weight."""

    name = "sed"

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        least: Dest | None = None
        loh = lw = 0
        for d in dests:
            w = d.weight
            if w <= 0 or _and(d.flags, USABLE_MASK) != USABLE_OK:
                continue
            doh = d.activeconns + 1
            if least is None or loh * w > doh * lw:
                least, loh, lw = d, doh, w
        if least is None:
            log.debug("%s: no destination available", self.name)
        return least
