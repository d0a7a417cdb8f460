"""The chaos run's judge: pure rules over what independent observers saw.

Theory of operation
-------------------
The nodes' own reports are not evidence: a frozen master cannot say when it really stopped, a node
with a bug may report a config it does not run. The judge therefore takes only

* the **fabric**: per director, the times of every frame it sent from the virtual MAC (the
  `deploy.observer.FabricObserver` captures on the bridges);
* the **clients' own counting** (deploy.traffic under the runner): per fault, streams reset or
  corrupted, sticky sources that moved and from which server;
* what the **writers were told**: every config write acknowledged by the admin API (key, value,
  etcd revision) and every write whose outcome is unknown (the call failed without an explicit
  refusal: it may or may not have been committed);
* what each node **runs** at the end (its running config and its connection table, read through its
  admin API after the load settled) and resource samples of each node process (``/proc``: RSS, fds;
  its table size).

`judge` applies the rules and returns the violations (empty when clean) and per-fault figures:

``overlap``        two directors' forwarding intervals intersect (one frame is enough)
``lost``           a fault cost established connections (resets, EOFs, wrong bytes), except the
                   documented ones (`DOCUMENTED_LOSS`), or traffic never settled after it
``sticky``         a source moved away from its server while that server was up (not within one of
                   its outages, or `STICKY_GRACE_S` after it)
``config``         a node's final config differs from the last acknowledged write of some key (a
                   write of unknown outcome to that key makes its value acceptable too)
``table``          a backup's table of established streams differs from the master's
``growth``         a node process's RSS, fds or table size grew without bound over its life
``outage``         during a fault docs/HA.md says costs no failover (an etcd fault, a cut between a node
                   and etcd or between the master and its backups, anything done to a backup or a
                   real server, a live config change) the fabric fell silent for more than
                   `NO_GAP_MAX_MS`
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from deploy.chaos_schedule import DOCUMENTED_LOSS
from deploy.observer import longest_silence, overlaps

RSS_FACTOR, RSS_SLACK_KB = 1.5, 64 * 1024
FD_SLACK = 64
CONN_FACTOR, CONN_SLACK = 2.0, 2000
GROWTH_LIMITS = (("rss_kb", RSS_FACTOR, RSS_SLACK_KB), ("fds", 1.0, FD_SLACK),
                 ("conns", CONN_FACTOR, CONN_SLACK))
"""(attribute, factor, slack): a life's end (median of its last third) may reach base * factor + slack,
base being the median of its first third."""
NO_GAP_KINDS = frozenset({
    "cut-master-etcd", "cut-backup-etcd", "cut-master-backups", "kill-backup", "freeze-backup",
    "restart-backup", "etcd-kill-leader", "etcd-kill-follower", "etcd-quorum-loss", "etcd-pause",
    "dest-flap", "timeouts"})
"""Faults the master must ride through without a failover (static stability, docs/HA.md)."""
NO_GAP_MAX_MS = 1500.0
"""Longer than any gap of a loaded fabric and than a 1 s lease: a silence this long is an outage."""
STICKY_GRACE_S = 5.0
"""A source makes a request about every second: its move may come this long after the outage."""
MIN_LIFE_S = 60.0
"""A process life shorter than this is not judged for growth (not enough to see a trend)."""


@dataclass
class FaultObs:
    index: int
    kind: str
    target: str
    t0: float
    """Wall-clock time the fault started."""
    t_heal: float
    t_end: float
    """The traffic had settled again (or the runner gave up waiting: ``settled`` False)."""
    lost: int = 0
    """Established streams that ended with a reset, an EOF or wrong bytes in this window."""
    settled: bool = True
    udp_sent: int = 0
    udp_received: int = 0
    max_gap_ms: float = 0.0
    new_failed: int = 0
    """New connections that failed in this window (not a violation: a figure)."""


@dataclass(frozen=True)
class Move:
    t: float
    source: str
    from_server: str
    to_server: str
    port: int = 0
    port_last_server: str | None = None
    """The server the same (address, source port) reached last time, if it was used before."""
    port_last_age_s: float | None = None


@dataclass(frozen=True)
class Write:
    key: str
    value: str
    revision: int
    """The etcd revision the admin API acknowledged; 0 for a write of unknown outcome."""


@dataclass(frozen=True)
class Sample:
    node: str
    pid: int
    t: float
    rss_kb: int
    fds: int
    conns: int


@dataclass
class Observations:
    frames: dict[str, list[float]]
    faults: list[FaultObs]
    moves: list[Move] = field(default_factory=list)
    server_down: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per real server, the (stopped, started again) times of each of its outages (its health check
    fails in between; the end is +inf while it is down)."""
    writes: list[Write] = field(default_factory=list)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per node, its final running config as key -> value (same keys as the writes)."""
    tables: dict[str, frozenset[str]] = field(default_factory=dict)
    master: str = ""
    samples: list[Sample] = field(default_factory=list)


def _v(rule: str, what: str, **figures: Any) -> dict[str, Any]:
    return {"rule": rule, "what": what, **figures}


def judge(obs: Observations) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(violations, per-fault figures)."""
    violations = (_overlap_rule(obs) + _loss_rule(obs) + _sticky_rule(obs) + _config_rule(obs)
                  + _table_rule(obs) + _growth_rule(obs.samples) + _outage_rule(obs))
    return violations, [fault_figures(obs, f) for f in obs.faults]


def fault_of(obs: Observations, t: float) -> str:
    for f in obs.faults:
        if f.t0 <= t <= f.t_end:
            return f"fault {f.index} ({f.kind})"
    return "no fault"


def _overlap_rule(obs: Observations) -> list[dict[str, Any]]:
    return [_v("overlap", f"{a} and {b} forwarded at once for {1000 * s:.1f} ms during "
                          f"{fault_of(obs, lo)}", t=lo, overlap_ms=round(1000 * s, 1))
            for a, b, lo, s in overlaps(obs.frames)]


def _loss_rule(obs: Observations) -> list[dict[str, Any]]:
    out = []
    for f in obs.faults:
        if f.lost and f.kind not in DOCUMENTED_LOSS:
            out.append(_v("lost", f"fault {f.index} ({f.kind} {f.target}) lost {f.lost} connections",
                          fault=f.index, lost=f.lost))
        if not f.settled:
            out.append(_v("lost", f"traffic did not settle after fault {f.index} ({f.kind} {f.target})",
                          fault=f.index))
    return out


def _outage_rule(obs: Observations) -> list[dict[str, Any]]:
    out = []
    for f in obs.faults:
        silence, at = longest_silence(obs.frames, f.t0, f.t_end)
        if f.kind in NO_GAP_KINDS and silence * 1000.0 > NO_GAP_MAX_MS:
            out.append(_v("outage", f"nobody forwarded for {silence * 1000:.0f} ms during fault {f.index} "
                                    f"({f.kind} {f.target}), {at - f.t0:.1f} s after it began",
                          fault=f.index, nobody_forwarding_ms=round(silence * 1000.0, 1)))
    return out


def _sticky_rule(obs: Observations) -> list[dict[str, Any]]:
    out = []
    for m in obs.moves:
        if not any(a <= m.t <= b + STICKY_GRACE_S for a, b in obs.server_down.get(m.from_server, [])):
            reuse = (f"; its source port {m.port} reached {m.port_last_server} {m.port_last_age_s} s earlier"
                     if m.port_last_server is not None else "")
            out.append(_v("sticky", f"{m.source} moved from {m.from_server} (up) to {m.to_server} during "
                                    f"{fault_of(obs, m.t)}{reuse}", t=m.t, port_reuse=m.port_last_server))
    return out


def expected_config(writes: Iterable[Write]) -> dict[str, set[str]]:
    """Per key, the values the final config may hold: the last acknowledged write's, plus those of
    writes of unknown outcome."""
    last: dict[str, Write] = {}
    unknown: dict[str, set[str]] = {}
    for w in writes:
        if w.revision == 0:
            unknown.setdefault(w.key, set()).add(w.value)
        elif w.key not in last or w.revision > last[w.key].revision:
            last[w.key] = w
    return {k: {w.value} | unknown.get(k, set()) for k, w in last.items()}


def _config_rule(obs: Observations) -> list[dict[str, Any]]:
    out = []
    for key, ok in sorted(expected_config(obs.writes).items()):
        for node, cfg in sorted(obs.configs.items()):
            got = cfg.get(key)
            if got not in ok:
                out.append(_v("config", f"{node} runs {key}={got}, the acknowledged writes say "
                                        f"{' or '.join(sorted(ok))}", node=node, key=key))
    return out


def _table_rule(obs: Observations) -> list[dict[str, Any]]:
    master = obs.tables.get(obs.master)
    if master is None:
        return [_v("table", "no master at the end")] if obs.tables else []
    out = []
    for node, table in sorted(obs.tables.items()):
        if node != obs.master and table != master:
            out.append(_v("table", f"{node}'s table differs from the master's: {len(master - table)} "
                                   f"missing, {len(table - master)} extra", node=node))
    return out


def _growth_rule(samples: list[Sample]) -> list[dict[str, Any]]:
    lives: dict[tuple[str, int], list[Sample]] = {}
    for s in sorted(samples, key=lambda s: s.t):
        lives.setdefault((s.node, s.pid), []).append(s)
    out = []
    for (node, pid), ss in sorted(lives.items()):
        if len(ss) < 6 or ss[-1].t - ss[0].t < MIN_LIFE_S:
            continue
        head, tail = ss[: len(ss) // 3], ss[-(len(ss) // 3):]
        for attr, factor, slack in GROWTH_LIMITS:
            base, end = _median(head, attr), _median(tail, attr)
            if end > base * factor + slack:
                out.append(_v("growth", f"{node} (pid {pid}) {attr} grew from {base:.0f} to {end:.0f}",
                              node=node, attr=attr, base=base, end=end))
    return out


def _median(samples: list[Sample], attr: str) -> float:
    return float(statistics.median(getattr(s, attr) for s in samples))


def fault_figures(obs: Observations, f: FaultObs) -> dict[str, Any]:
    window = {k: [t for t in v if f.t0 <= t <= f.t_end] for k, v in obs.frames.items()}
    both = overlaps(window)
    silence, at = longest_silence(obs.frames, f.t0, f.t_end)
    return {
        "index": f.index, "kind": f.kind, "target": f.target, "t": f.t0,
        "heal_s": round(f.t_heal - f.t0, 2), "recovered_s": round(f.t_end - f.t0, 2),
        "nobody_forwarding_ms": round(1000 * silence, 1), "nobody_forwarding_at_s": round(at - f.t0, 3),
        "overlap_ms": round(1000 * sum(o[3] for o in both), 1), "lost_connections": f.lost,
        "documented_loss": f.kind in DOCUMENTED_LOSS, "settled": f.settled,
        "udp_lost": max(0, f.udp_sent - f.udp_received), "max_stall_ms": f.max_gap_ms,
        "new_failed": f.new_failed,
        "moves": sum(1 for m in obs.moves if f.t0 <= m.t <= f.t_end),
    }
