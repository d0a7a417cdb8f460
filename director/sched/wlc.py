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

from director.service import Dest
from director.types import DestFlags

log = logging.getLogger(__name__)

_MASK = int(DestFlags.AVAILABLE | DestFlags.OVERLOAD)
_OK = int(DestFlags.AVAILABLE)
_and = int.__and__


class WeightedLeastConnection:
    """wlc: fewest conns relative to weight."""

    name = "wlc"

    def __init__(self) -> None:
        self.opts: dict[str, object] = {}

    def update(self, dests: Sequence[Dest]) -> None:
        pass

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        least: Dest | None = None
        loh = lw = 0
        for d in dests:
            w = d.weight
            if w <= 0 or _and(d.flags, _MASK) != _OK:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if least is None or loh * w > doh * lw:
                least, loh, lw = d, doh, w
        if least is None:
            log.debug("wlc: no destination available")
        return least
