"""Random-drop defense under memory pressure (``ip_vs_random_dropentry`` / ``todrop_entry``).

Theory of operation
-------------------
Each call visits 1/32 of the buckets chosen at random. Templates are never dropped. TCP entries
in SYN_RECV / SYNACK (half-open) are always dropped, ESTABLISHED ones subject to
``todrop_entry``, other TCP states kept; other protocols are subject to ``todrop_entry``. A
dropped entry is only marked (``expire_now``), with its controlling template: both go at the
next ``tick``. ``todrop_entry`` keeps entries refreshed within the last 60 s
(``now + timeout < expires + 60``) and entries with ``in_pkts`` outside 1..8; of the others it
drops one in ``in_pkts`` (a countdown per value, owned by the table).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from director.table.entry import F_TEMPLATE, S_ESTABLISHED, S_SYN_RECV, S_SYNACK, TCP, TODROP_RATE, Conn

KEEP_YOUNGER_THAN = 60.0
"""Entries refreshed less than this many seconds ago are never dropped by todrop_entry."""


def random_drop(tab: Sequence[dict[int, Conn]], bits: int, now: float, counter: list[int],
                expire_now: Callable[[Conn], None], rng: random.Random) -> int:
    """Mark droppable entries of 1/32 of the ``2**bits`` buckets ``tab`` (and their templates) with
    ``expire_now``; returns how many."""
    n = 0
    for _ in range(len(tab) >> 5):
        for head in tab[rng.getrandbits(bits)].values():
            c: Conn | None = head
            while c is not None:
                if droppable(c, now, counter):
                    expire_now(c)
                    if c.control is not None:
                        expire_now(c.control)
                    n += 1
                c = c._next
    return n


def droppable(c: Conn, now: float, counter: list[int]) -> bool:
    if c.flags & F_TEMPLATE:
        return False
    if (c._key >> 16) & 0xFF == TCP:
        s = c.state
        if s in (S_SYN_RECV, S_SYNACK):
            return True
        if s == S_ESTABLISHED:
            return todrop_entry(c, now, counter)
        return False
    return todrop_entry(c, now, counter)


def todrop_entry(c: Conn, now: float, counter: list[int]) -> bool:
    """Seed ``todrop_entry`` with the per-``in_pkts`` countdowns in ``counter``."""
    if now + c.timeout < c.expires + KEEP_YOUNGER_THAN:
        return False
    i = c.in_pkts
    if i > 8 or i < 0 or not TODROP_RATE[i]:
        return False
    counter[i] -= 1
    if counter[i] > 0:
        return False
    counter[i] = TODROP_RATE[i]
    return True


__all__ = ["KEEP_YOUNGER_THAN", "droppable", "random_drop", "todrop_entry"]
