"""Weighted least-connection scheduler (Linux ip_vs_wlc.c).

Theory of operation
-------------------
Picks the usable dest with the smallest overhead / weight, where overhead is the IPVS
``activeconns * 256 + inactconns``. The comparison is done by cross-multiplication, exactly as
the kernel (``loh * dest.weight > doh * least.weight``), so there is no division and no
rounding; ties go to the earliest dest in list order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK, Stateless
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__


class WeightedLeastConnection(Stateless):
    """wlc: fewest conns relative to weight."""

    name = "wlc"

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        least: Dest | None = None
        loh = lw = 0
        for d in dests:
            w = d.weight
            if w <= 0 or _and(d.flags, USABLE_MASK) != USABLE_OK:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if least is None or loh * w > doh * lw:
                least, loh, lw = d, doh, w
        if least is None:
            log.debug("wlc: no destination available")
        return least
