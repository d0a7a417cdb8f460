"""Static stability: the backups' promises not to campaign, as seen by the election machine.

Theory of operation
-------------------
etcd decides who is master, but a healthy master must not stop forwarding because etcd is down or
out of its reach. So the master may forward past its etcd lease while it holds an unexpired
*promise* from every member backup: "I will not campaign before time T". The full argument and
the case table are in docs/HA.md; this module is the bookkeeping both sides feed into
`ElectionMachine` (pure: times and lists in, verdicts out).

Master side: the node computes ``granted_until``, the earliest promise deadline over the members
the master requires (``required``), each measured conservatively from the *send* time of the
request the backup answered; the machine forwards until ``max(lease deadline, granted_until)``.
The master learns ``required`` first and only then publishes it in etcd (``leader-members``), so
a backup listed there is always one whose promise the master waits for.

Backup side: ``hold_until`` is the backup's own promise (from the *receipt* time of the request it
answered) to the master of ``hold_epoch``. It campaigns only when that promise lapsed, or when
that master is known to have stopped for good (``released_epoch >= hold_epoch``: its exit hook or
its resign wrote ``leader-released``), and only if it is listed in the last master's member list
(``members``; None when no master ever wrote one). A node that is not listed waits until no
master can still be forwarding on promises: ``orphan_after`` past the last time it saw a leader
key (a master forwards on promises for at most ``max_static`` after its last etcd contact; the
orphan wait is longer by a margin).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_STATIC = 600.0
"""Seconds a master may forward on promises alone after its lease deadline (etcd unreachable)."""
ORPHAN_MARGIN = 30.0


@dataclass
class Promises:
    node_id: str = ""
    max_static: float = MAX_STATIC
    # master side
    granted_until: float = 0.0
    required: frozenset[str] = field(default_factory=frozenset)
    granted_for: frozenset[str] = field(default_factory=frozenset)
    required_epoch: int = 0  # the epoch whose member list `required` is (promises count only then)
    last_lease_deadline: float = 0.0  # while winning the key back: the lease deadline we had
    # backup side
    hold_until: float = 0.0
    hold_epoch: int = 0
    released_epoch: int = 0
    members: tuple[str, ...] | None = None
    leader_seen_at: float = 0.0

    @property
    def orphan_after(self) -> float:
        return self.max_static + ORPHAN_MARGIN

    def master_deadline(self, lease_deadline: float) -> float:
        """How long a master may forward: its lease, extended by promises for at most max_static."""
        if self.granted_until <= lease_deadline:
            return lease_deadline
        return min(self.granted_until, lease_deadline + self.max_static)

    def holding(self, now: float) -> bool:
        """Our own promise still binds us (and its master has not announced it stopped)."""
        return now < self.hold_until and self.hold_epoch > self.released_epoch

    def listed(self, now: float) -> bool:
        """May this node campaign as far as membership goes?"""
        if self.members is None or self.node_id in self.members:
            return True
        return now >= self.leader_seen_at + self.orphan_after

    def may_campaign(self, now: float) -> bool:
        return not self.holding(now) and self.listed(now)

    def next_change(self, now: float) -> float | None:
        """When `may_campaign` may flip to True by the passing of time alone."""
        times = []
        if self.holding(now):
            times.append(self.hold_until)
        if not self.listed(now):
            times.append(self.leader_seen_at + self.orphan_after)
        return max(times) if times else None
