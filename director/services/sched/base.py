"""The scheduler interface: pick a dest for a new connection of a virtual service.

Theory of operation
-------------------
A scheduler is created per virtual service (``registry.create(name)``). The service calls
``update(dests)`` whenever its dest list, a weight or a dest's availability changes, so a
scheduler may precompute (wrr's sequence, sh/dh buckets, mh's Maglev lookup table). On every
new connection the packet path calls ``schedule(dests, caddr, cport)``; it returns a dest or
``None`` when no dest is usable. Every scheduler skips dests that are overloaded
(``DestFlags.OVERLOAD``), unavailable, or have weight 0. Schedulers do no I/O and keep no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from director.services.service import Dest, Scheduler
from director.types import DestFlags

__all__ = ["USABLE_MASK", "USABLE_OK", "Scheduler", "Stateless", "fold", "usable"]


USABLE_MASK = int(DestFlags.AVAILABLE | DestFlags.OVERLOAD)
USABLE_OK = int(DestFlags.AVAILABLE)
"""``flags & USABLE_MASK == USABLE_OK``: the inline form of `usable()` the schedulers' loops use
(IntFlag arithmetic costs ~1 us; plain ints ~60 ns)."""


class Stateless:
    """Base of schedulers that keep no state between calls (lc, wlc, sed, nq): nothing to rebuild."""

    name = ""

    def __init__(self) -> None:
        self.opts: dict[str, object] = {}

    def update(self, dests: Sequence[Dest]) -> None:
        """Nothing precomputed: each call looks at the live counters."""


def usable(dest: Dest) -> bool:
    """A dest a scheduler may pick: available, weight > 0, not overloaded."""
    mask = DestFlags.AVAILABLE | DestFlags.OVERLOAD
    return dest.weight > 0 and (dest.flags & mask) == DestFlags.AVAILABLE


def fold(addr: int) -> int:
    """An IPv6 client address folded to 32 bits for the hashing schedulers (sh, dh, mh), as IPVS's
    ``addr_fold = ip6[0] ^ ip6[1] ^ ip6[2] ^ ip6[3]``; an IPv4 address is itself."""
    return (addr ^ addr >> 32 ^ addr >> 64 ^ addr >> 96) & 0xFFFFFFFF
