"""Maglev hashing scheduler (Linux ip_vs_mh.c; Eisenbud et al., NSDI 2016).

Theory of operation
-------------------
``update`` builds a lookup table of prime size M (default 65537). Each dest gets a permutation
of the slots from two hashes of (daddr + dport): ``offset = h1 % M`` and ``skip = h2 % (M-1) + 1``
(M prime, so the walk offset, offset+skip, ... visits every slot). Dests take turns claiming
their next free slot until the table is full; in one round a dest claims ``turns`` slots, where
``turns = (last_weight / gcd) >> rshift`` (at least 1 for a non-zero weight) exactly like the
kernel, so slot shares follow the weights. ``rshift`` bounds the turns to ``bit_length(M) // 2``
bits when weights are huge.

``schedule`` hashes the client (caddr, plus cport with the ``port`` option) with h1 to one slot:
an O(1) lookup. If that dest is not usable the answer is "no dest", unless ``fallback`` is set:
then the kernel's probe sequence rehashes with growing offsets until a usable dest turns up.

Properties that matter to a cluster:

* Minimal disruption: removing one of N dests changes only about 1/N of the slots (those it
  owned, plus a small reshuffle), so most clients keep their dest.
* Quiescing a dest (weight 0) keeps its slots: like the kernel the table is built from each
  dest's *last non-zero* weight (``last_weight``), and lookups just skip the unusable dest.
  Such an update does not even rebuild the table (same dests, same last weights: kept as is),
  so a health-check quiesce costs nothing; a real rebuild of 65537 slots takes ~25 ms.
* Determinism across processes: the hash is a fixed integer mixer (murmur3's fmix32 applied to
  the value xor a fixed key; the kernel's hsiphash keys are used as the keys), never Python's
  salted ``hash()``. Dests are walked in canonical (daddr, dport) order rather than list order,
  so two directors given the same dests in any order build identical tables. (Slot contents
  therefore differ from the kernel's table, which uses hsiphash and list order.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from director.services.sched.base import USABLE_MASK, USABLE_OK, fold
from director.services.service import Dest

log = logging.getLogger(__name__)

_and = int.__and__
_M32 = 0xFFFFFFFF
HASH1_KEY = 2654435761
HASH2_KEY = 2654446892
DEFAULT_TABLE_SIZE = 65537
MAX_TABLE_SIZE = 1_000_003


def mix32(v: int, key: int) -> int:
    """A fixed 32-bit hash: murmur3 fmix32 of ``v ^ key`` (a bijection on 32-bit values)."""
    h = (v ^ key) & _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % f for f in range(2, math.isqrt(n) + 1))


def populate(setups: list[tuple[Dest, int, int, int]], size: int) -> list[Dest | None]:
    """ip_vs_mh_populate: ``setups`` are (dest, offset, skip, turns) with turns >= 1."""
    table: list[Dest | None] = [None] * size
    if not setups:
        return table
    perm = [s[1] for s in setups]
    n = 0
    while True:
        for i, (dest, _, skip, turns) in enumerate(setups):
            c = perm[i]
            for _ in range(turns):
                while table[c] is not None:
                    c += skip
                    if c >= size:
                        c -= size
                table[c] = dest
                n += 1
                if n == size:
                    return table
            perm[i] = c


class MaglevHashing:
    """mh: Maglev consistent hashing on the client address (and optionally port)."""

    name = "mh"

    def __init__(self, *, port: bool = False, fallback: bool = False,
                 table_size: int = DEFAULT_TABLE_SIZE) -> None:
        if (not isinstance(table_size, int) or isinstance(table_size, bool)
                or not 3 <= table_size <= MAX_TABLE_SIZE or not is_prime(table_size)):
            raise ValueError(f"table_size: must be a prime in 3..{MAX_TABLE_SIZE}, got {table_size!r}")
        self.opts: dict[str, object] = {"port": bool(port), "fallback": bool(fallback),
                                        "table_size": table_size}
        self._port = bool(port)
        self._fallback = bool(fallback)
        self._size = table_size
        self._tab_bits = table_size.bit_length() // 2
        self._n = 0
        self._last_weight: dict[tuple[int, int], int] = {}
        self._table: list[Dest | None] = [None] * table_size
        self._sig: list[tuple[int, int, int]] | None = None
        self._sig_dests: list[Dest] = []

    @property
    def table(self) -> list[Dest | None]:
        """The lookup table (slot -> dest); read-only use (tests, diagnostics)."""
        return self._table

    def update(self, dests: Sequence[Dest]) -> None:
        self._n = len(dests)
        ds = sorted(dests, key=lambda d: (d.addr, d.port))
        lw = self._update_last_weights(ds)
        sig = [(d.addr, d.port, w) for d, w in zip(ds, lw, strict=True)]
        if sig == self._sig and all(a is b for a, b in zip(ds, self._sig_dests, strict=True)):
            return  # e.g. a quiesce (weight -> 0): last weights unchanged, so is the table
        self._sig, self._sig_dests = sig, ds
        weights = [w for w in lw if w > 0]
        if not weights:
            self._table = [None] * self._size
            return
        gcd = math.gcd(*weights)
        rshift = max(0, (max(weights) // gcd).bit_length() - self._tab_bits)
        setups = []
        for d, w in zip(ds, lw, strict=True):
            turns = ((w // gcd) >> rshift) or (1 if w else 0)
            if turns >= 1:
                v = (d.addr + d.port) & _M32
                offset = mix32(v, HASH1_KEY) % self._size
                skip = mix32(v, HASH2_KEY) % (self._size - 1) + 1
                setups.append((d, offset, skip, turns))
        self._table = populate(setups, self._size)

    def _update_last_weights(self, ds: list[Dest]) -> list[int]:
        """Keep each dest's latest non-zero weight (a dest added at weight 0 has 0)."""
        old = self._last_weight
        new: dict[tuple[int, int], int] = {}
        for d in ds:
            key = (d.addr, d.port)
            new[key] = d.weight if d.weight > 0 or key not in old else old[key]
        self._last_weight = new
        return [new[(d.addr, d.port)] for d in ds]

    def slot(self, caddr: int, cport: int, offset: int = 0) -> int:
        """The kernel's ip_vs_mh_hashkey(...) % M."""
        v = (offset + (cport if self._port else 0) + caddr) & _M32
        return mix32(v, HASH1_KEY) % self._size

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        if caddr > 0xFFFFFFFF:  # IPv6: IPVS's addr_fold
            caddr = fold(caddr)
        if len(dests) != self._n:
            self.update(dests)
        # mix32 inlined: this is the per-new-conn path
        h = ((caddr + (cport if self._port else 0)) ^ HASH1_KEY) & _M32
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & _M32
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & _M32
        ihash = (h ^ (h >> 16)) % self._size
        d = self._table[ihash]
        if d is not None and d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
            return d
        if d is None or not self._fallback:
            log.debug("mh: no destination available")
            return None
        return self._fallback_walk(caddr, cport, ihash)

    def _fallback_walk(self, caddr: int, cport: int, ihash: int) -> Dest | None:
        size, table = self._size, self._table
        for offset in range(size):
            d = table[self.slot(caddr, cport, (offset + ihash) % size)]
            if d is None:
                break
            if d.weight > 0 and _and(d.flags, USABLE_MASK) == USABLE_OK:
                return d
        log.debug("mh: no destination available")
        return None
