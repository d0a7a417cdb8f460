"""The chaos run's fault schedule: a pure function of (seed, minutes).

Theory of operation
-------------------
`make_schedule` draws, from ``random.Random(seed)`` only, an ordered list of `Fault` records until
the planned time (each fault's hold, an allowance for the recovery the runner waits for, and a calm
gap) fills the run. Nothing here reads a clock, a file or the lab: the same seed gives the same
schedule on every machine, so a run that found something is replayed with ``--seed``.

A fault names *roles*, not nodes ("the master", "a backup", "the etcd leader"): the runner resolves
them when the fault starts (``pick`` chooses among several candidates, modulo their number). Faults
run one after the other; the two concurrent config writers run throughout, independently of the
schedule. Kinds and what they do (``hold``: seconds the fault lasts before it is healed):

=========================== =====================================================================
kill-master / kill-backup   kill -9 the node's process group, the exit hook runs (systemd's
                            ``ExecStopPost=``); the node restarts after ``hold`` and resyncs
freeze-master / -backup     SIGSTOP for ``hold`` seconds, then SIGCONT
cut-master-etcd             nftables in the master's namespace drops its etcd traffic
cut-backup-etcd             the same for a backup
cut-master-backups          the master's sync traffic to and from every backup is dropped
restart-backup              a backup is stopped gracefully (SIGTERM) and started again
etcd-kill-leader / -follower SIGKILL that etcd member; restarted with its data after ``hold``
etcd-quorum-loss            two members stopped (SIGTERM), restarted with their data after ``hold``
etcd-pause                  SIGSTOP a member (``pick``: leader or follower) for ``hold`` seconds
dest-flap                   the flapping real server's processes stop; restarted after ``hold``
timeouts                    ``SetTimeouts`` through the admin API (tcp/udp values in ``params``)
master-dies-in-quorum-loss  quorum lost, then kill -9 the master: the documented outage (no lease
                            can be granted until etcd is back); connections may be lost
=========================== =====================================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KINDS: dict[str, float] = {
    "kill-master": 3.0, "kill-backup": 1.5, "freeze-master": 2.0, "freeze-backup": 1.0,
    "cut-master-etcd": 1.5, "cut-backup-etcd": 1.0, "cut-master-backups": 1.5, "restart-backup": 1.0,
    "etcd-kill-leader": 1.5, "etcd-kill-follower": 1.0, "etcd-quorum-loss": 1.0, "etcd-pause": 1.0,
    "dest-flap": 1.5, "timeouts": 1.0, "master-dies-in-quorum-loss": 0.5,
}
"""Every fault kind and its relative weight in the draw."""

HOLD_S: dict[str, tuple[float, float]] = {
    "kill-master": (2.0, 5.0), "kill-backup": (1.0, 4.0), "freeze-master": (2.0, 5.0),
    "freeze-backup": (1.0, 4.0), "cut-master-etcd": (3.0, 8.0), "cut-backup-etcd": (2.0, 6.0),
    "cut-master-backups": (2.0, 6.0), "restart-backup": (0.0, 0.0), "etcd-kill-leader": (2.0, 6.0),
    "etcd-kill-follower": (2.0, 6.0), "etcd-quorum-loss": (3.0, 8.0), "etcd-pause": (2.0, 6.0),
    "dest-flap": (2.0, 5.0), "timeouts": (0.0, 0.0), "master-dies-in-quorum-loss": (3.0, 6.0),
}
DOCUMENTED_LOSS = frozenset({"master-dies-in-quorum-loss"})
"""Faults during which established connections may be lost (docs/HA.md: the master dies while etcd
has no quorum: nobody can take over until it is back)."""

RECOVERY_ALLOWANCE_S = 12.0
"""What the planner assumes a fault's recovery (restart, resync, traffic settling) takes."""
TCP_TIMEOUTS = (600.0, 900.0, 1200.0)
UDP_TIMEOUTS = (120.0, 300.0)


@dataclass(frozen=True)
class Fault:
    index: int
    at_s: float
    """Planned start, seconds after the load started (the runner starts late if a fault overran)."""
    kind: str
    hold_s: float
    pick: int
    """Chooses among several candidates (backups, etcd followers), modulo their number."""
    gap_s: float
    """Calm seconds after the fault recovered, before the next one."""
    params: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "at_s": self.at_s, "kind": self.kind, "hold_s": self.hold_s,
                "pick": self.pick, "gap_s": self.gap_s, "params": dict(self.params)}


def make_schedule(seed: int, minutes: float, kinds: dict[str, float] | None = None) -> list[Fault]:
    """The faults of a run of `minutes` minutes drawn from `seed` (pure: same inputs, same list)."""
    rng = random.Random(seed)
    weights = dict(kinds or KINDS)
    names = sorted(weights)
    budget, t = minutes * 60.0, 5.0
    out: list[Fault] = []
    while True:
        kind = rng.choices(names, weights=[weights[k] for k in names])[0]
        lo, hi = HOLD_S[kind]
        hold = round(rng.uniform(lo, hi), 1)
        gap = round(rng.uniform(2.0, 6.0), 1)
        params: dict[str, float] = {}
        if kind == "timeouts":
            params = {"tcp": rng.choice(TCP_TIMEOUTS), "udp": rng.choice(UDP_TIMEOUTS)}
        if kind == "etcd-pause":
            params = {"leader": float(rng.random() < 0.5)}
        pick = rng.randrange(100)
        if t + hold + RECOVERY_ALLOWANCE_S > budget:
            return out
        out.append(Fault(len(out), round(t, 1), kind, hold, pick, gap, params))
        t += hold + RECOVERY_ALLOWANCE_S + gap


def describe(schedule: list[Fault]) -> str:
    return "\n".join(f"{f.index:3d} +{f.at_s:6.1f}s {f.kind:<27} hold {f.hold_s:4.1f}s" for f in schedule)
