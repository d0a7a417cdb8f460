"""Giving freed heap memory back to the OS after a load peak (glibc ``malloc_trim``).

Theory of operation
-------------------
When a table of a hundred thousand entries drains, CPython frees the objects, but much of the
memory stays with the process: glibc keeps freed heap blocks (dict tables, lists, large bytes) for
reuse and only returns the top of the heap. ``malloc_trim(0)`` gives every free page back. It is
cheap enough to call now and then, so ``HeapTrimmer.observe(size, now)`` - fed the number of
entries a node holds (table + retained history) by the master's refresh loop and the backup's
message loop - calls it when that number fell to a quarter of its peak since the last trim (and at
most once per ``min_interval`` seconds). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_PEAK = 4096
"""Peaks below this many entries are not worth a trim."""


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return fn


class HeapTrimmer:
    """Trims the heap once the observed size fell to a quarter of its peak (rate-limited)."""

    def __init__(self, min_interval: float = 30.0, trim: Callable[[int], int] | None = None) -> None:
        self.min_interval = min_interval
        self._trim = trim if trim is not None else _malloc_trim()
        self._peak = 0
        self._last = -math.inf
        self.trims = 0

    def observe(self, size: int, now: float) -> bool:
        """Note the current size (entries); True if the heap was trimmed now."""
        if size > self._peak:
            self._peak = size
            return False
        if self._peak < MIN_PEAK or size * 4 > self._peak or now - self._last < self.min_interval:
            return False
        self._last = now
        self._peak = size
        self.trims += 1
        if self._trim is not None:
            self._trim(0)
            log.debug("heap trimmed after the load went (%d entries left)", size)
        return True


__all__ = ["MIN_PEAK", "HeapTrimmer"]
