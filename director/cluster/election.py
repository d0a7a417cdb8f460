"""Master election: a pure role state machine, and `Elector`, its etcd adapter.

Theory of operation
-------------------
The master holds the key ``/<prefix>/<cluster>/leader`` attached to a lease it keeps
alive.  `ElectionMachine` decides everything and does no I/O: the adapter feeds it
inputs (time, readiness, RPC results, observations of the leader key) and executes the
`Action`s it returns.  Every RPC result carries the lease it was about, so stale answers
are ignored.

    BACKUP --(no leader, ready, not held off)--> CANDIDATE: GRANT_LEASE (fresh lease)
    CANDIDATE --granted--> CAMPAIGN: txn "create leader key if absent" with that lease
    CANDIDATE --won--> MASTER: START_FORWARDING(epoch = revision of the create)
    CANDIDATE --lost--> BACKUP: REVOKE the unused lease, follow the winner's record
    MASTER: RENEW every TTL/3 (a keepalive, its deadline bounded by the step-down time),
            TOUCH every window/3 (txn: rewrite the key if it still has our lease and epoch)
    BACKUP --master's record untouched for its window + margin, promise lapsed-->
            DELETE_STALE (txn: delete the key if its mod revision is still the one seen)
    MASTER --no renewal for TTL - margin--> STEPPED_DOWN(uncertain): STOP_FORWARDING
    MASTER --key gone / held by another lease / lease gone--> BACKUP: STOP_FORWARDING
    STEPPED_DOWN(uncertain) --renewal ok + key still ours--> MASTER (same epoch)
    STEPPED_DOWN(uncertain) --lease or key gone--> BACKUP (campaign again with a new lease)
    MASTER --resign()--> STEPPED_DOWN(resigned): STOP_FORWARDING, REVOKE; holds off
                         campaigning until another master appears or `resign_holdoff` passes

Safety: etcd refreshes a lease at some moment *after* our keepalive was sent, so the
lease lives at least until ``send time + TTL``.  The deadline ``send time of the last
successful keepalive + TTL - margin`` therefore passes, on our clock, before etcd can
expire the lease and let another node win, as long as the two clocks' rates agree
within the margin.  A node that stepped down only because it could not reach etcd
keeps trying to renew the same lease; if etcd answers that it is still alive (etcd
restarted: leases are extended when it comes back) and the key still carries our lease
and epoch, it resumes with the same epoch instead of starting an election.

Touches (fast takeover when a master host is lost): etcd expires a lease up to 0.5 s late (its
lessor scans twice a second), so waiting for the key to vanish makes host-loss takeover TTL + 0..0.5 s.
Instead the master declares a ``touch_window`` W in its record and rewrites the key every W/3; it
forwards only until ``send time of its last acknowledged touch + W`` (and its lease, and promises).
A backup that saw no new mod revision for W + `stale_margin` on its own clock (the touch it saw was
sent before it saw it) and whose own promise lapsed deletes the key in a txn guarded by that revision:
if the master touched in between, the txn fails; if not, the master's window has passed, and its next
touch fails its compare. Then the normal campaign runs. A record without ``touch_window`` (an older
master) is never deleted this way. See docs/HA.md.

Readiness gate: a node campaigns only when `set_ready(True)` was fed (the daemon says
so when its table has applied the current master's snapshot, or no master ever existed).
Priority preemption (off by default): a ready backup with a higher priority than the
master's record in the leader key asks for a handover (REQUEST_HANDOVER); a preempt-enabled master seeing a
request from a higher priority resigns; other backups hold off for `resign_holdoff` so
the requester wins.

The adapter `Elector` (and `NodeInfo`, `RoleChange`, `Membership`) lives in
`director.cluster.elector`, which imports this module (never the other way round).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from director.cluster.leader import Act, Action, ElectionParams, LeaderRecord, LeaseState, Role, Why
from director.cluster.promises import Promises

__all__ = ["Act", "Action", "ElectionMachine", "ElectionParams", "LeaderRecord", "Role", "Why"]

log = logging.getLogger(__name__)


@dataclass
class ElectionMachine:
    """The role state machine.  Every input takes `now` and returns actions to run in order."""

    params: ElectionParams = field(default_factory=ElectionParams)
    role: Role = Role.BACKUP
    why: Why = Why.NONE
    master: LeaderRecord | None = None
    observed: bool = False  # the leader key has been read at least once
    ready: bool = False
    epoch: int = 0
    lease: LeaseState = field(default_factory=LeaseState)
    not_before: float = 0.0  # no campaign before this time
    retry_at: float = 0.0  # CANDIDATE: retry the txn at this time
    stepped_down_at: float | None = None  # when forwarding last stopped (for safety checks)
    pending: set[Act] = field(default_factory=set)
    handover_to: str | None = None  # a pending preemption request names this node
    handover_asked: int = 0  # epoch of the master we last asked to hand over to us
    promises: Promises = field(default_factory=Promises)
    reacquiring: bool = False  # MASTER on promises whose lease is gone: winning the key back
    seen_revision: int = 0  # backup: the leader key's mod revision last observed ...
    seen_at: float = 0.0  # ... and when it was first seen
    stale_retry_at: float = 0.0  # backup: no DELETE_STALE before this (the last one failed)
    stale_deleted: int = 0  # stale leader keys this node deleted

    def __post_init__(self) -> None:
        self.promises.node_id = self.params.node_id

    # -- time and readiness ----------------------------------------------------------
    def tick(self, now: float) -> list[Action]:
        if self.role is Role.MASTER:
            until = self.forward_until()
            if until is not None and now >= until:
                return self._step_down_uncertain(now)
            if self.reacquiring:
                return self._reacquire_tick(now)
            return self._maybe_renew(now)
        if self.role is Role.STEPPED_DOWN:
            if self.why is Why.UNCERTAIN:
                return self._maybe_renew(now)
            if now >= self.not_before:
                self._to_backup()
        if self.role is Role.CANDIDATE:
            return self._candidate_tick(now)
        if self.role is Role.BACKUP:
            return self._maybe_campaign(now)
        return []

    def set_ready(self, now: float, ready: bool) -> list[Action]:
        self.ready = ready
        if self.role is Role.BACKUP:
            return self._maybe_campaign(now) + self._maybe_preempt()
        return []

    def next_deadline(self) -> float | None:
        """The next time `tick` has something to do (None: only inputs can wake it)."""
        times: list[float] = []
        if self.role is Role.MASTER:
            times.append(self.forward_until() or 0.0)
            if self.reacquiring and self.lease.lease_id and Act.CAMPAIGN not in self.pending:
                times.append(self.retry_at)
        if self.role in (Role.MASTER, Role.STEPPED_DOWN) and self.lease.lease_id \
                and Act.RENEW not in self.pending:
            times.append(self.lease.next_renew_at)
        if self._touching() and Act.TOUCH not in self.pending:
            times.append(self.lease.next_touch_at)
        if self.role is Role.STEPPED_DOWN and self.why is Why.RESIGNED:
            times.append(self.not_before)
        if self.role is Role.BACKUP and self._could_campaign():
            times.append(max(self.not_before, self.promises.next_change(self.not_before) or 0.0))
        elif self.role is Role.BACKUP and (stale := self._stale_at()) is not None \
                and Act.DELETE_STALE not in self.pending:
            times.append(max(self.not_before, stale, self.stale_retry_at,
                             self.promises.next_change(self.not_before) or 0.0))
        if self.role is Role.CANDIDATE and self.lease.lease_id and Act.CAMPAIGN not in self.pending:
            times += [self.retry_at, self.lease.step_down_at]
        return min(times) if times else None

    def forward_until(self) -> float | None:
        """The fencing deadline: while MASTER, forwarding is safe until this monotonic time: the
        step-down time (the last keepalive's send time + TTL - margin), extended by the backups'
        promises (static stability); None when not master. The packet path checks it before every
        batch, so a stalled node cannot forward past it."""
        if self.role is not Role.MASTER:
            return None
        if self.promises.required_epoch != self.epoch:  # our member list is not published yet
            return self._lease_deadline()
        return self.promises.master_deadline(self._lease_deadline())

    def _lease_deadline(self) -> float:
        """The current lease's step-down time, bounded by the touch window; while winning the key
        back, the last one we had."""
        ls = self.lease
        if not ls.lease_id:
            return self.promises.last_lease_deadline
        w = self.touch_window()
        return min(ls.step_down_at, ls.touch_ok_sent + w) if w else ls.step_down_at

    def touch_window(self) -> float:
        """Seconds a master forwards after the send time of its last acknowledged touch (the
        promise its leader record declares); 0 when touching is off."""
        return self.params.touch * (self.lease.ttl or self.params.ttl)

    # -- promises (static stability, see director.cluster.promises) ---------------------
    def promises_granted(self, now: float, until: float, required: frozenset[str]) -> list[Action]:
        """Master side: the earliest promise over the members in `required` (node-computed); void
        unless `required` covers every member the master published (`promises.required`)."""
        p = self.promises
        if not p.required <= required:  # computed without a member we now wait for: void
            until = 0.0
        p.granted_until, p.granted_for = until, required
        return self.tick(now) if self.role is Role.MASTER else []

    def promise_held(self, now: float, until: float, epoch: int) -> list[Action]:
        """Backup side: we promised the master of `epoch` not to campaign before `until`."""
        p = self.promises
        if epoch > p.hold_epoch:
            p.hold_epoch, p.hold_until = epoch, until
        elif epoch == p.hold_epoch:
            p.hold_until = max(p.hold_until, until)
        return self._maybe_campaign(now) if self.role is Role.BACKUP else []

    def promise_void(self, now: float) -> list[Action]:
        """Backup side: our promise no longer binds (its master is known to be gone)."""
        self.promises.hold_until = 0.0
        return self._maybe_campaign(now) if self.role is Role.BACKUP else []

    def members_observed(self, now: float, members: tuple[str, ...] | None, released: int) -> list[Action]:
        """The last master's member list (None: never written) and the newest released epoch."""
        self.promises.members = members
        self.promises.released_epoch = max(self.promises.released_epoch, released)
        return self._maybe_campaign(now) if self.role is Role.BACKUP else []

    @property
    def waiting_for_ready(self) -> bool:
        return self.role is Role.BACKUP and self.observed and self.master is None and not self.ready

    # -- campaign results ------------------------------------------------------------
    def lease_granted(self, now: float, lease_id: int, ttl: float, sent_at: float) -> list[Action]:
        self.pending.discard(Act.GRANT_LEASE)
        fresh = LeaseState(lease_id, ttl, sent_at, sent_at, sent_at + ttl - self.params.margin,
                           sent_at + ttl / 3, touch_ok_sent=sent_at)
        if self.role is Role.MASTER and self.reacquiring and not self.lease.lease_id:
            self.lease = fresh
            return self._campaign(now)
        if self.role is not Role.CANDIDATE or self.lease.lease_id:
            return [Action(Act.REVOKE, lease_id)]
        self.lease = fresh
        if self.master is not None:
            return self._abandon_candidacy(now)
        return self._campaign(now)

    def lease_failed(self, now: float) -> list[Action]:
        self.pending.discard(Act.GRANT_LEASE)
        if self.role is Role.MASTER and self.reacquiring:
            self.retry_at = now + self.params.retry
            return []
        if self.role is Role.CANDIDATE and not self.lease.lease_id:
            self._to_backup()
            self.not_before = now + self.params.retry
        return []

    def txn_won(self, now: float, lease_id: int, epoch: int) -> list[Action]:
        self.pending.discard(Act.CAMPAIGN)
        if lease_id != self.lease.lease_id:
            return [Action(Act.REVOKE, lease_id)]
        if self.role is Role.MASTER and self.reacquiring:
            self.reacquiring = False
            self.epoch = epoch
            log.info("key won back while forwarding on promises: epoch %d", epoch)
            return [Action(Act.START_FORWARDING, lease_id, epoch)] + self._maybe_renew(now)
        if self.role is not Role.CANDIDATE:
            return []
        return self._win(now, epoch)

    def txn_lost(self, now: float, lease_id: int, record: LeaderRecord | None) -> list[Action]:
        self.pending.discard(Act.CAMPAIGN)
        self.observed = True
        if lease_id == self.lease.lease_id and self.role is Role.MASTER and self.reacquiring:
            if record is not None and record.lease == lease_id:
                return self.txn_won(now, lease_id, record.epoch)
            if record is not None:
                self._see(now, record)
            self.master = record
            return self._lose(now)  # someone else holds the key: stop at once
        if lease_id != self.lease.lease_id or self.role is not Role.CANDIDATE:
            return []
        if record is not None and record.lease == lease_id:
            return self._win(now, record.epoch)  # an earlier attempt of ours had won
        if record is not None:
            self._see(now, record)
        self.master = record
        return self._abandon_candidacy(now)

    def txn_failed(self, now: float, lease_id: int) -> list[Action]:
        self.pending.discard(Act.CAMPAIGN)
        if lease_id == self.lease.lease_id and self.role in (Role.CANDIDATE, Role.MASTER):
            self.retry_at = now + self.params.retry  # same lease: a retry also detects a hidden win
        return []

    # -- lease renewal ---------------------------------------------------------------
    def renew_ok(self, now: float, lease_id: int, sent_at: float, ttl: float) -> list[Action]:
        self.pending.discard(Act.RENEW)
        if lease_id != self.lease.lease_id or not lease_id:
            return []
        if ttl <= 0:
            return self.lease_gone(now, lease_id)
        ls = self.lease
        ls.last_ok_sent = max(ls.last_ok_sent, sent_at)
        ls.step_down_at = max(ls.step_down_at, sent_at + ttl - self.params.margin)
        ls.next_renew_at = max(ls.next_renew_at, sent_at + ls.ttl / 3)
        return self._maybe_verify(now)

    def _maybe_verify(self, now: float) -> list[Action]:
        """STEPPED_DOWN(uncertain) and the lease and touches are fresh again: read the key to resume."""
        if self.role is Role.STEPPED_DOWN and self.why is Why.UNCERTAIN and now < self._lease_deadline() \
                and Act.VERIFY not in self.pending:
            self.pending.add(Act.VERIFY)
            return [Action(Act.VERIFY, self.lease.lease_id)]
        return []

    # -- touches (master) and stale keys (backup) ------------------------------------------
    def touch_ok(self, now: float, lease_id: int, sent_at: float) -> list[Action]:
        """Our touch txn committed: the key still carries our lease and epoch."""
        self.pending.discard(Act.TOUCH)
        ls = self.lease
        if lease_id != ls.lease_id or not lease_id:
            return []
        ls.touch_ok_sent = max(ls.touch_ok_sent, sent_at)
        ls.next_touch_at = max(ls.next_touch_at, sent_at + self.touch_window() / 3)
        return self._maybe_verify(now)

    def touch_failed(self, now: float, lease_id: int) -> list[Action]:
        self.pending.discard(Act.TOUCH)
        if lease_id == self.lease.lease_id:
            self.lease.next_touch_at = now + self.params.retry
        return []

    def touch_lost(self, now: float, lease_id: int, record: LeaderRecord | None) -> list[Action]:
        """The touch txn's compare failed: the key is gone or someone else's."""
        self.pending.discard(Act.TOUCH)
        if lease_id != self.lease.lease_id:
            return []
        return self.leader_observed(now, record)

    def watch_lost(self, now: float) -> list[Action]:
        """Our view of the leader key is interrupted (watch error): we may miss touches, so no key
        counts as stale until a fresh read."""
        self.seen_at = math.inf
        return []

    def _see(self, now: float, record: LeaderRecord, fresh: bool = False) -> None:
        unknown = fresh or self.seen_at == math.inf  # we may have missed touches: a TTL of grace
        if unknown or record.revision != self.seen_revision:
            self.seen_revision = record.revision
            self.seen_at = now + (self.params.ttl if unknown else 0.0)

    def stale_done(self, now: float, deleted: bool) -> list[Action]:
        """Our DELETE_STALE txn finished (the watch reports what the key is now)."""
        self.pending.discard(Act.DELETE_STALE)
        if deleted:
            self.stale_deleted += 1
        else:
            self.stale_retry_at = now + self.params.retry
        return self._maybe_campaign(now) if self.role is Role.BACKUP else []

    def _touching(self) -> bool:
        return (self.role in (Role.MASTER, Role.STEPPED_DOWN) and bool(self.lease.lease_id)
                and bool(self.epoch) and not self.reacquiring and self.touch_window() > 0)

    def _maybe_touch(self, now: float) -> list[Action]:
        if not self._touching() or Act.TOUCH in self.pending or now < self.lease.next_touch_at:
            return []
        self.pending.add(Act.TOUCH)
        return [Action(Act.TOUCH, self.lease.lease_id, self.epoch, timeout=self.touch_window() / 2)]

    def _stale_at(self) -> float | None:
        """Backup: when the current master's record goes stale (its touch promise lapsed), if it
        declared one and we could take its place then."""
        m = self.master
        if m is None or not m.touch_window or not self.ready or not self.observed or self.seen_at == math.inf:
            return None
        return self.seen_at + m.touch_window + self.params.stale_margin

    def _maybe_delete_stale(self, now: float) -> list[Action]:
        stale = self._stale_at()
        if stale is None or now < max(stale, self.not_before, self.stale_retry_at) \
                or Act.DELETE_STALE in self.pending \
                or not self.promises.may_campaign(now):
            return []
        assert self.master is not None
        log.warning("leader key of %s untouched for %.2fs (its window %.2fs): deleting it",
                    self.master.node_id, now - self.seen_at, self.master.touch_window)
        self.pending.add(Act.DELETE_STALE)
        return [Action(Act.DELETE_STALE, revision=self.seen_revision, timeout=max(0.5, self.params.ttl))]

    def renew_failed(self, now: float, lease_id: int) -> list[Action]:
        self.pending.discard(Act.RENEW)
        if lease_id == self.lease.lease_id:
            self.lease.next_renew_at = now + self.params.retry
        return []

    def lease_gone(self, now: float, lease_id: int) -> list[Action]:
        """etcd says the lease no longer exists."""
        if lease_id != self.lease.lease_id or not lease_id:
            return []
        if self._on_promises(now):
            return self._start_reacquire(now)
        acts = self._stop_forwarding(now) if self.role is Role.MASTER else []
        if self.master is not None and self.master.lease == lease_id:
            self.master = None
        self.lease = LeaseState()
        self._to_backup()
        return acts + self._maybe_campaign(now)

    def verify_failed(self, now: float) -> list[Action]:
        self.pending.discard(Act.VERIFY)
        return []

    # -- observations of the leader key ----------------------------------------------
    def leader_observed(self, now: float, record: LeaderRecord | None, *,
                        fresh: bool = False) -> list[Action]:
        """The leader key as read or watched. `fresh`: a (re)read after the watch was down, so we
        may have missed touches: its staleness counts from now, plus a TTL of grace."""
        self.pending.discard(Act.VERIFY)
        self.observed = True
        ours = record is not None and bool(self.lease.lease_id) and record.lease == self.lease.lease_id
        if record is not None:
            self.promises.leader_seen_at = now
            self._see(now, record, fresh)
        if self.role is Role.MASTER and record is None and (self.reacquiring or self._on_promises(now)):
            self.master = None
            return [] if self.reacquiring else self._start_reacquire(now)
        self.master = record
        if record is not None and record.node_id != self.params.node_id:
            # a resign / handover hold-off lasts only until another master appears: when that one
            # dies, this node must campaign at once, not wait out the rest of the hold-off
            self.not_before = 0.0
        if self.role is Role.MASTER:
            return [] if ours else self._lose(now)
        if self.role is Role.STEPPED_DOWN and self.why is Why.UNCERTAIN:
            return self._reclaim_or_lose(now, ours)
        if self.role is Role.CANDIDATE:
            return self._win(now, record.epoch) if ours and record else []
        if self.role is Role.STEPPED_DOWN and record is not None:
            self._to_backup()
        if self.role is Role.BACKUP:
            return self._maybe_campaign(now) + self._maybe_preempt()
        return []

    def handover_requested(self, now: float, node_id: str, priority: int) -> list[Action]:
        """Someone asks the master to hand over (priority preemption)."""
        self.handover_to = node_id or None
        if node_id and node_id != self.params.node_id and self.role is Role.BACKUP:
            self.not_before = max(self.not_before, now + self.params.resign_holdoff)
        if self.role is Role.MASTER and self.params.preempt and priority > self.params.priority:
            log.info("handing over to higher-priority node %s", node_id)
            return self.resign(now)
        return []

    # -- operator / shutdown ---------------------------------------------------------
    def resign(self, now: float) -> list[Action]:
        """Give up mastership (or candidacy) now and hold off campaigning."""
        if self.role is Role.STOPPED:
            return []
        was_master = self.role is Role.MASTER
        acts = self._stop_forwarding(now) if was_master else []
        if self.lease.lease_id:  # epoch set: also announce `leader-released` (backups drop their promise)
            acts.append(Action(Act.REVOKE, self.lease.lease_id, self.epoch if was_master else 0))
        self.reacquiring = False
        if self.master is not None and self.master.lease == self.lease.lease_id:
            self.master = None
        self.lease = LeaseState()
        self.pending.clear()
        self.role, self.why = Role.STEPPED_DOWN, Why.RESIGNED
        self.not_before = now + self.params.resign_holdoff
        return acts

    def stop(self, now: float) -> list[Action]:
        acts = self.resign(now)
        self.role, self.why = Role.STOPPED, Why.NONE
        return acts

    # -- internals -------------------------------------------------------------------
    def _could_campaign(self) -> bool:
        return self.observed and self.master is None and self.ready

    def _maybe_campaign(self, now: float) -> list[Action]:
        if self.master is not None:
            return self._maybe_delete_stale(now)
        if not self._could_campaign() or now < self.not_before or Act.GRANT_LEASE in self.pending:
            return []
        if not self.promises.may_campaign(now):
            return []
        self.role, self.why = Role.CANDIDATE, Why.NONE
        self.lease = LeaseState()
        self.pending.add(Act.GRANT_LEASE)
        return [Action(Act.GRANT_LEASE, timeout=max(self.params.ttl, 0.5))]

    def _maybe_preempt(self) -> list[Action]:
        ldr = self.master
        if not self.params.preempt or ldr is None or not self.ready or self.handover_to:
            return []
        if self.params.priority <= ldr.priority or self.handover_asked == ldr.epoch:
            return []
        if self.promises.members is None or self.params.node_id not in self.promises.members:
            return []  # not listed yet: we could not campaign when the master hands over
        self.handover_asked = ldr.epoch  # once per master term
        return [Action(Act.REQUEST_HANDOVER, epoch=ldr.epoch)]

    def _campaign(self, now: float) -> list[Action]:
        # the create is a write backups see: as good as a touch sent now (the adapter sends at once)
        self.lease.touch_ok_sent = max(self.lease.touch_ok_sent, now)
        self.pending.add(Act.CAMPAIGN)
        return [Action(Act.CAMPAIGN, self.lease.lease_id, timeout=self._rpc_timeout())]

    def _candidate_tick(self, now: float) -> list[Action]:
        if not self.lease.lease_id:
            return []
        if now >= self._lease_deadline() and Act.CAMPAIGN not in self.pending:
            return self._abandon_candidacy(now)  # too slow: the lease may be gone by the time we win
        if Act.CAMPAIGN not in self.pending and now >= self.retry_at:
            return self._campaign(now)
        return []

    def _abandon_candidacy(self, now: float) -> list[Action]:
        acts = [Action(Act.REVOKE, self.lease.lease_id)] if self.lease.lease_id else []
        self.lease = LeaseState()
        self._to_backup()
        return acts + self._maybe_campaign(now)

    def _win(self, now: float, epoch: int) -> list[Action]:
        self.epoch = epoch
        if now >= self._lease_deadline():
            self.role, self.why = Role.STEPPED_DOWN, Why.UNCERTAIN
            return self._maybe_renew(now)
        self.role, self.why = Role.MASTER, Why.NONE
        self.handover_to = None
        log.info("elected master, epoch %d", epoch)
        return [Action(Act.START_FORWARDING, self.lease.lease_id, epoch)] + self._maybe_renew(now)

    def _on_promises(self, now: float) -> bool:
        """MASTER and still covered by the backups' promises."""
        p = self.promises
        if self.role is not Role.MASTER or p.required_epoch != self.epoch:
            return False
        return now < min(p.granted_until, self._lease_deadline() + p.max_static)

    def _start_reacquire(self, now: float) -> list[Action]:
        """Our lease is gone but every member promised: keep forwarding, win the key back."""
        log.warning("lease gone while forwarding on promises; winning the leader key back")
        self.reacquiring = True
        self.promises.last_lease_deadline = self._lease_deadline()
        self.lease = LeaseState()
        self.pending.discard(Act.RENEW)
        self.pending.add(Act.GRANT_LEASE)
        return [Action(Act.GRANT_LEASE, timeout=max(self.params.ttl, 0.5))]

    def _reacquire_tick(self, now: float) -> list[Action]:
        if not self.lease.lease_id:
            if Act.GRANT_LEASE in self.pending or now < self.retry_at:
                return []
            self.pending.add(Act.GRANT_LEASE)
            return [Action(Act.GRANT_LEASE, timeout=max(self.params.ttl, 0.5))]
        if Act.CAMPAIGN not in self.pending and now >= self.retry_at:
            return self._campaign(now)
        return self._maybe_renew(now)

    def _lose(self, now: float) -> list[Action]:
        self.reacquiring = False
        log.warning("leader key lost (now %s); stepping down", self.master)
        acts = self._stop_forwarding(now)
        if self.lease.lease_id:
            acts.append(Action(Act.REVOKE, self.lease.lease_id))
        self.lease = LeaseState()
        self._to_backup()
        return acts + self._maybe_campaign(now)

    def _reclaim_or_lose(self, now: float, ours: bool) -> list[Action]:
        if not ours:
            acts = [Action(Act.REVOKE, self.lease.lease_id)] if self.lease.lease_id else []
            self.lease = LeaseState()
            self._to_backup()
            return acts + self._maybe_campaign(now)
        if now < self._lease_deadline() and self.master is not None and self.master.epoch == self.epoch:
            log.info("lease survived; resuming mastership, epoch %d", self.epoch)
            self.role, self.why = Role.MASTER, Why.NONE
            return [Action(Act.START_FORWARDING, self.lease.lease_id, self.epoch)] + self._maybe_renew(now)
        return []

    def _step_down_uncertain(self, now: float) -> list[Action]:
        log.warning("no lease renewal since %.3f (ttl %.1fs): stepping down", self.lease.last_ok_sent,
                    self.lease.ttl)
        acts = self._stop_forwarding(now)
        self.role, self.why = Role.STEPPED_DOWN, Why.UNCERTAIN
        return acts + self._maybe_renew(now)

    def _stop_forwarding(self, now: float) -> list[Action]:
        self.stepped_down_at = now
        return [Action(Act.STOP_FORWARDING, self.lease.lease_id, self.epoch)]

    def _maybe_renew(self, now: float) -> list[Action]:
        return self._renew(now) + self._maybe_touch(now)

    def _renew(self, now: float) -> list[Action]:
        ls = self.lease
        if not ls.lease_id or Act.RENEW in self.pending or now < ls.next_renew_at:
            return []
        self.pending.add(Act.RENEW)
        return [Action(Act.RENEW, ls.lease_id, timeout=self._renew_timeout(now))]

    def _renew_timeout(self, now: float) -> float:
        left = self.lease.step_down_at - now
        return max(0.05, min(self.lease.ttl / 3, left) if left > 0 else self.lease.ttl / 3)

    def _rpc_timeout(self) -> float:
        return max(0.5, self.lease.ttl or self.params.ttl)

    def _to_backup(self) -> None:
        self.role, self.why = Role.BACKUP, Why.NONE
        self.pending.discard(Act.CAMPAIGN)
        self.pending.discard(Act.RENEW)
        self.pending.discard(Act.VERIFY)

