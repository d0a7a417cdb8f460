"""IPVS defense levels (``update_defense_level``) from the table size and the node's memory.

Theory of operation
-------------------
IPVS runs ``update_defense_level`` once a second: when available memory falls below ``amemthresh``
("no memory") each strategy whose sysctl is 1 (auto) switches itself to 2 (engaged) and back to 1 when
memory is available again; 0 is off and 3 is always on. This module is that step, pure: counts and a
clock in, decisions out. "Memory" is two resources here, each with a threshold (defense starts above
it) and a maximum:

* the conn table: ``conn_threshold`` .. ``max_conns`` entries (``max_conns`` is also a hard bound the
  packet path enforces on its own: a new-conn packet finding the table full is dropped, counted);
* the node's resident memory: ``rss_threshold`` .. ``rss_max`` bytes.

``pressure`` is how far the worse resource is into its band, in (0, 1]; 0 means below both
thresholds ("memory available"). The strategies:

* ``drop_entry``: engaged -> the daemon runs the seed's ``random_drop`` (1/32 of the buckets) this
  second;
* ``drop_packet``: engaged -> drop one in ``drop_rate`` new-conn packets, with IPVS's
  ``drop_rate = amemthresh / (amemthresh - availmem)`` = ``floor(1 / pressure)``; always -> one in
  ``am_droprate``;
* ``secure_tcp``: engaged -> the TCP state machine uses the DoS table (``TCP_STATES_DOS``) and the
  shorter half-open timeouts (``director.table.tcp.TCP_TIMEOUTS_DOS_CAP``).

``DropCounter`` is ``ip_vs_todrop``: the packet path asks it per new-conn packet. Counts of what
each strategy did live in ``DefenseStats``; the caller adds to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Mode(IntEnum):
    """A strategy's setting (the IPVS sysctl values); AUTO becomes ENGAGED under pressure."""

    OFF = 0
    AUTO = 1
    ENGAGED = 2
    ALWAYS = 3


MODE_NAMES = ("off", "auto", "always")
"""Accepted in config; ENGAGED is a state, not a setting."""


def mode_of(name: str) -> Mode:
    """``off`` / ``auto`` / ``always`` -> Mode; ValueError otherwise."""
    if name not in MODE_NAMES:
        raise ValueError(f"defense mode must be one of {', '.join(MODE_NAMES)}, got {name!r}")
    return Mode[name.upper()]


def mode_name(m: Mode) -> str:
    return "auto (engaged)" if m is Mode.ENGAGED else m.name.lower()


@dataclass(frozen=True)
class DefenseSettings:
    drop_entry: Mode = Mode.AUTO
    drop_packet: Mode = Mode.AUTO
    secure_tcp: Mode = Mode.AUTO
    am_droprate: int = 10
    """ALWAYS drop_packet: one new-conn packet in this many is dropped."""
    conn_threshold: int = 500_000
    max_conns: int = 1_000_000
    """Hard bound on the conn table (0: none; then conn pressure is off too)."""
    rss_threshold: int = 0
    """Bytes of resident memory above which defense starts (0: memory not watched)."""
    rss_max: int = 0


@dataclass
class DefenseStats:
    """What the strategies did (monotonic counters) and the last inputs."""

    updates: int = 0
    engaged: int = 0
    """Times the node went from no pressure to pressure."""
    entries_dropped: int = 0
    """Entries marked by random_drop."""
    drop_entry_runs: int = 0
    conns: int = 0
    rss: int = 0
    pressure: float = 0.0
    since: float | None = None
    """Clock time pressure started (None: no pressure now)."""


@dataclass(frozen=True)
class Decision:
    drop_entry: bool
    drop_rate: int
    """0: admit every new-conn packet; n: drop one in n."""
    secure_tcp: bool


def band(used: int, threshold: int, maximum: int) -> float:
    """How far ``used`` is into (threshold, maximum]: 0 at or below the threshold, 1 at the maximum."""
    if maximum <= 0 or used <= threshold:
        return 0.0
    if maximum <= threshold or used >= maximum:
        return 1.0
    return (used - threshold) / (maximum - threshold)


def drop_rate_for(pressure: float) -> int:
    """IPVS: amemthresh / (amemthresh - availmem), i.e. floor(1 / pressure); 0 without pressure."""
    if pressure <= 0.0:
        return 0
    return max(1, int(1.0 / pressure))


def _step(mode: Mode, nomem: bool) -> Mode:
    """One strategy's sysctl after ``update_defense_level``: AUTO <-> ENGAGED follows ``nomem``."""
    if mode in (Mode.AUTO, Mode.ENGAGED):
        return Mode.ENGAGED if nomem else Mode.AUTO
    return mode


class DefensePolicy:
    """The defense levels of one node. ``update`` once a second; read ``decision`` in between."""

    def __init__(self, settings: DefenseSettings) -> None:
        self.settings = settings
        self.drop_entry = settings.drop_entry
        self.drop_packet = settings.drop_packet
        self.secure_tcp = settings.secure_tcp
        self.stats = DefenseStats()
        self.decision = self._decide(0.0)

    def pressure(self, conns: int, rss: int) -> float:
        s = self.settings
        return max(band(conns, s.conn_threshold, s.max_conns), band(rss, s.rss_threshold, s.rss_max))

    def update(self, conns: int, rss: int, now: float) -> Decision:
        """``update_defense_level`` for the table's ``conns`` and the node's ``rss`` bytes at ``now``."""
        p = self.pressure(conns, rss)
        nomem = p > 0.0
        st = self.stats
        st.updates += 1
        st.conns, st.rss, st.pressure = conns, rss, p
        if nomem and st.since is None:
            st.since = now
            st.engaged += 1
        elif not nomem:
            st.since = None
        self.drop_entry = _step(self.drop_entry, nomem)
        self.drop_packet = _step(self.drop_packet, nomem)
        self.secure_tcp = _step(self.secure_tcp, nomem)
        self.decision = self._decide(p)
        return self.decision

    def _decide(self, p: float) -> Decision:
        if self.drop_packet is Mode.ALWAYS:
            rate = max(1, self.settings.am_droprate)
        elif self.drop_packet is Mode.ENGAGED:
            rate = drop_rate_for(p)
        else:
            rate = 0
        return Decision(self.drop_entry in (Mode.ENGAGED, Mode.ALWAYS), rate,
                        self.secure_tcp in (Mode.ENGAGED, Mode.ALWAYS))

    def note_random_drop(self, marked: int) -> None:
        self.stats.drop_entry_runs += 1
        self.stats.entries_dropped += marked


class DropCounter:
    """``ip_vs_todrop``: with rate n > 0, every n-th call says drop (a countdown, no randomness)."""

    __slots__ = ("rate", "_left")

    def __init__(self) -> None:
        self.rate = 0
        self._left = 0

    def set_rate(self, rate: int) -> None:
        if rate != self.rate:
            self.rate = rate
            self._left = rate

    def todrop(self) -> bool:
        if not self.rate:
            return False
        self._left -= 1
        if self._left > 0:
            return False
        self._left = self.rate
        return True


__all__ = [
    "MODE_NAMES", "Decision", "DefensePolicy", "DefenseSettings", "DefenseStats", "DropCounter", "Mode",
    "band", "drop_rate_for", "mode_name", "mode_of",
]
