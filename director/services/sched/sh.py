"""Source hashing scheduler (Linux ip_vs_sh.c).

Theory of operation
-------------------
A table of ``2**tab_bits`` buckets (default 256) is filled once per ``update``: walking the
dests in a canonical order, each dest takes ``weight`` consecutive buckets (at least one, even
at weight 0) and the walk repeats until the table is full. A client is hashed with the
kernel's ``hash_32(caddr + cport, tab_bits)`` (golden-ratio multiply; cport only with the
``port`` option, else 0) to one bucket. If that dest is not usable the answer is "no dest",
unless ``fallback`` is set: then the kernel's probe sequence walks the other buckets and the
first usable dest wins.

Difference from the kernel, on purpose: the kernel fills buckets in dest-list order, so two
directors whose lists were built in a different order disagree. Here the walk is over the dests
sorted by (daddr, dport), so any two instances given the same dests (in any order, same weights)
map every client to the same dest. That is what lets a backup that takes over pick the same
dest for a mid-flow packet it has no entry for. The hash is a fixed integer function (no salt),
so it is the same in every process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK, fold
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__
GOLDEN_RATIO_32 = 0x61C88647


def fill_buckets(dests: Sequence[Dest], size: int, weighted: bool) -> list[Dest | None]:
    """Assign ``size`` buckets round-robin over ``dests`` in canonical (daddr, dport) order.

    With ``weighted`` a dest keeps the next buckets until it holds ``weight`` of them in this
    round (ip_vs_sh_reassign); without, one bucket per dest per round (ip_vs_dh_reassign).
    """
    ds = sorted(dests, key=lambda d: (d.addr, d.port))
    if not ds:
        return [None] * size
    buckets: list[Dest | None] = []
    i = taken = 0
    multi = len(ds) > 1
    for _ in range(size):
        d = ds[i]
        buckets.append(d)
        taken += 1
        if not (weighted and multi and taken < d.weight):
            taken = 0
            i = (i + 1) % len(ds)
    return buckets


class SourceHashing:
    """sh: a client address (and optionally port) always maps to the same dest."""

    name = "sh"

    def __init__(self, *, port: bool = False, fallback: bool = False, tab_bits: int = 8) -> None:
        if not isinstance(tab_bits, int) or isinstance(tab_bits, bool) or not 1 <= tab_bits <= 20:
            raise ValueError(f"tab_bits: must be an integer in 1..20, got {tab_bits!r}")
        self.opts: dict[str, object] = {"port": bool(port), "fallback": bool(fallback), "tab_bits": tab_bits}
        self._port = bool(port)
        self._fallback = bool(fallback)
        self._size = 1 << tab_bits
        self._shift = 32 - tab_bits
        self._n = 0
        self._buckets: list[Dest | None] = [None] * self._size

    def update(self, dests: Sequence[Dest]) -> None:
        self._n = len(dests)
        self._buckets = fill_buckets(dests, self._size, weighted=True)

    def bucket(self, caddr: int, cport: int) -> int:
        """The kernel's ip_vs_sh_hashkey with offset 0."""
        v = (caddr + (cport if self._port else 0)) & 0xFFFFFFFF
        return ((v * GOLDEN_RATIO_32) & 0xFFFFFFFF) >> self._shift

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        if caddr > 0xFFFFFFFF:  # IPv6: IPVS's addr_fold
            caddr = fold(caddr)
        if len(dests) != self._n:
            self.update(dests)
        ihash = self.bucket(caddr, cport)
        d = self._buckets[ihash]
        if d is not None and d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
            return d
        if d is None or not self._fallback:
            log.debug("sh: no destination available")
            return None
        return self._fallback_walk(ihash)

    def _fallback_walk(self, ihash: int) -> Dest | None:
        size, buckets = self._size, self._buckets
        for offset in range(size):
            roffset = (offset + ihash) % size
            d = buckets[(roffset + ihash) & (size - 1)]
            if d is None:
                break
            if d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
                return d
        log.debug("sh: no destination available")
        return None
