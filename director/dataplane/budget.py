"""Per-second budgets for what the director originates itself (ICMP errors, echo replies)."""

from __future__ import annotations


class PerSecond:
    """At most ``limit`` events per one-second window (the window starts at the first event after
    the previous one ended, like the IPv4 code's ``icmp_ratelimit`` always did)."""

    __slots__ = ("limit", "_window", "_used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window = float("-inf")
        self._used = 0

    def take(self, now: float) -> bool:
        """Spend one event at ``now``; False when this second's budget is gone."""
        if now - self._window >= 1.0:
            self._window = now
            self._used = 0
        if self._used >= self.limit:
            return False
        self._used += 1
        return True


__all__ = ["PerSecond"]
