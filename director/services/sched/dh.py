"""Destination hashing scheduler (Linux ip_vs_dh.c), keyed on the client address here.

Theory of operation
-------------------
A table of ``2**tab_bits`` buckets (default 256) is filled round-robin, one bucket per dest per
round, ignoring weights (as ip_vs_dh_reassign). A key is hashed with the kernel's
``(key * 2654435761) & mask`` to one bucket; if that dest is not usable the answer is "no
dest": dh has no fallback, in the kernel or here.

The kernel hashes the packet's destination address. This project's services have one VIP, so
that key would be constant and every conn would land on one dest; the scheduler interface does
not pass the vaddr either. So dh here hashes the **client** address (caddr), i.e. it is sh
with dh's unweighted buckets, dh's hash function and no fallback. As with sh the buckets are
filled in canonical (daddr, dport) order so independent instances agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK, fold
from director.services.sched.sh import fill_buckets
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__
KNUTH = 2654435761


class DestinationHashing:
    """dh: a key address always maps to the same dest; unweighted, no fallback."""

    name = "dh"

    def __init__(self, *, tab_bits: int = 8) -> None:
        if not isinstance(tab_bits, int) or isinstance(tab_bits, bool) or not 1 <= tab_bits <= 20:
            raise ValueError(f"tab_bits: must be an integer in 1..20, got {tab_bits!r}")
        self.opts: dict[str, object] = {"tab_bits": tab_bits}
        self._mask = (1 << tab_bits) - 1
        self._n = 0
        self._buckets: list[Dest | None] = [None] * (1 << tab_bits)

    def update(self, dests: Sequence[Dest]) -> None:
        self._n = len(dests)
        self._buckets = fill_buckets(dests, self._mask + 1, weighted=False)

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        if caddr > 0xFFFFFFFF:  # IPv6: IPVS's addr_fold
            caddr = fold(caddr)
        if len(dests) != self._n:
            self.update(dests)
        d = self._buckets[(caddr * KNUTH) & self._mask]
        if d is not None and d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
            return d
        log.debug("dh: no destination available")
        return None
