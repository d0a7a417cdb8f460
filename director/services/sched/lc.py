"""Least-connection scheduler (Linux ip_vs_lc.c).

Theory of operation
-------------------
Picks the usable dest with the smallest IPVS overhead ``activeconns * 256 + inactconns``
(``ip_vs_dest_conn_overhead``: an active conn costs as much as 256 idle ones). Weights only
matter as "0 = do not use". Ties go to the earliest dest in list order. Nothing to precompute:
the counters change with every conn, so each call is one pass over the dests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK, Stateless
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__


def conn_overhead(dest: Dest) -> int:
    """ip_vs_dest_conn_overhead: active conns weigh 256 times an inactive one."""
    return (dest.activeconns << 8) + dest.inactconns


class LeastConnection(Stateless):
    """lc: fewest (weighted-by-state) conns."""

    name = "lc"

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        least: Dest | None = None
        loh = 0
        for d in dests:
            if d.weight <= 0 or _and(d.flags, USABLE_MASK) != USABLE_OK:
                continue
            doh = (d.activeconns << 8) + d.inactconns
            if least is None or doh < loh:
                least, loh = d, doh
        if least is None:
            log.debug("lc: no destination available")
        return least
