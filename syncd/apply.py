"""Backup side: decoded sync messages -> checks -> a local ConnTable (no I/O).

Theory of operation
-------------------
``BackupApplier.handle(msg)`` first validates a message as a whole and raises before touching the
table when it must be refused:

* epoch below the highest epoch known (the election record via ``epoch_floor`` or an earlier
  message) -> ``StaleEpochError``;
* not of the current incarnation (only ``snapshot_begin`` may start a new one) -> ``ProtocolError``;
* a batch whose seq is not ``applied_seq + 1``, or a heartbeat announcing a seq we never saw
  -> ``SequenceGapError`` (the backup reconnects and asks to resume from ``applied_seq``).

Application is idempotent: NEW/UPDATE upsert, REFRESH extends the timer, EXPIRE of an unknown key
is a no-op. Inside one message expirations go first, conns before templates (a template only goes
away once its children are gone; the master puts at most one update per key in a batch, except an
EXPIRE before a NEW when a key is reused), then the upserts in order. Entries are created with the
SYNC flag and bound to the local dest found by ``DestKey`` (``ServiceTable.find_dest``, cached per
message); runs of plain upserts go to the table in bulk (``ConnTable.new_synced``, see ``apply``).
An unknown dest leaves the entry unbound and remembered, ``rebind_pending()`` binds it once the dest
exists. A
child whose template has not arrived yet (same batch, later snapshot chunk) waits in
``_waiting_ctl`` and is linked with ``control_add`` (so ``n_control`` is right) the moment its
template appears.

Every upsert makes the entry exactly the master's: state and timeout, dest, control link (re-linked
or unlinked when the master's differs, not only set when missing), key (a re-key moves the entry
with ``ConnTable.rekey``) and timer. A snapshot marks every key it mentions (chunks and the live
batches interleaved with it); at ``snapshot_end`` every entry not mentioned is removed, children
first, and a stale template still controlling entries is detached from them first: the table is
then the master's, links and ``n_control`` included.

*Expiry rule.* While it follows a live stream (from the first accepted message until
``release_timers``: the caller's heartbeat deadline passed without a stream, master switched,
takeover, stopped) the applier holds the table's synced timers (``ConnTable.hold_synced``): a synced
entry is never expired on the backup's own clock, only by the master's EXPIRE (or a snapshot sweep).
When it stops following, the table's own timers take over (held entries get a full timeout).
docs/CONTRACTS.md states the rule.

*Watching.* ``on_applied`` (optional) receives the conn events this applier caused, after each
message: ``ConnEvent(kind, snapshot, old_key)`` of the backup's entry (NEW / UPDATE / EXPIRE;
REFRESH, a timer extension, is not an event, as on the master). The snapshot's flags carry
``SYNC``. It must not raise (errors are logged and swallowed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from director.services.service import DestKey, ServiceTable
from director.table.entry import snapshot
from director.table.events import ConnEvent, EventKind
from director.types import LOCAL_CONN_FLAGS, ConnFlags
from syncd.model import (
    BatchMsg,
    ConnKey,
    FollowHello,
    HeartbeatMsg,
    ProtocolError,
    SequenceGapError,
    SnapshotBeginMsg,
    SnapshotChunkMsg,
    SnapshotEndMsg,
    StaleEpochError,
    SyncKind,
    SyncMsg,
    TableLike,
    Update,
)

log = logging.getLogger(__name__)

_LOCAL = int(LOCAL_CONN_FLAGS)
_SYNC = int(ConnFlags.SYNC)
_INACTIVE = int(ConnFlags.INACTIVE)


class BackupApplier:
    """Applies one master's stream to a local table; remembers where to resume."""

    def __init__(self, table: TableLike, services: ServiceTable | None = None,
                 epoch_floor: Callable[[], int] | None = None,
                 on_applied: Callable[[list[ConnEvent]], None] | None = None) -> None:
        self.table = table
        self.on_applied = on_applied
        self.wants_events: Callable[[], bool] | None = None
        """If set and false at a message, its events are not even built (``on_applied`` only feeds
        watchers that may not be there: building an event per entry costs ~30% of the apply rate)."""
        self.holding = False
        """True while the table's synced timers are held (following a live stream)."""
        self.want_snapshot = False
        """Ask for a snapshot on the next hello (after repeated refusals at one point)."""
        self._events: list[ConnEvent] | None = None
        self.services = services
        self.epoch_floor = epoch_floor or (lambda: 0)
        self.epoch = 0
        self.incarnation = 0
        self.applied_seq = 0
        self.head_seq = 0
        self.in_snapshot = False
        self.live = False
        """True once a snapshot was applied (or a resume accepted) on the current stream."""
        self._seen: set[ConnKey] = set()
        self._pending_dest: dict[ConnKey, DestKey] = {}
        self._waiting_ctl: dict[ConnKey, ConnKey] = {}
        self._children_of: dict[ConnKey, set[ConnKey]] = {}
        self._dest_cache: dict[DestKey, Any] = {}
        self.stats = {"batches": 0, "updates": 0, "snapshots": 0, "snapshot_entries": 0, "swept": 0,
                      "apply_errors": 0, "refused": 0}

    # --- stream state ----------------------------------------------------------------------------

    def hello(self, node_id: str) -> FollowHello:
        """The resume point to present to the master on (re)connect."""
        inc = 0 if self.in_snapshot or self.want_snapshot else self.incarnation
        return FollowHello(node_id, self.applied_seq, self.epoch, inc)

    def stream_lost(self) -> None:
        """We stopped following (takeover, master switched, stopped): ``stream_ended`` and
        ``release_timers``."""
        self.stream_ended()
        self.release_timers()

    def stream_ended(self) -> None:
        """The stream ended: a snapshot in progress is void and we are no longer live. The timers
        stay held (the caller releases them once the master's heartbeat deadline has passed without
        a new stream, so a quick reconnect-and-resume loses nothing)."""
        self.live = False
        if self.in_snapshot:
            self.in_snapshot = False
            self._seen = set()
            self.incarnation = 0

    def release_timers(self) -> None:
        """The table's own timers take over (entries held past their deadline are armed again)."""
        if self.holding:
            self.holding = False
            n = self.table.hold_synced(False)
            if n:
                log.info("stopped following: %d synced entries held past their deadline armed again", n)
        self._prune()

    def _following(self) -> None:
        if not self.holding:
            self.holding = True
            self.table.hold_synced(True)

    def _prune(self) -> None:
        """Forget dest/template waits of entries that are gone (removed by the table's own timers)."""
        get = self.table.get
        for key in [k for k in self._pending_dest if get(k) is None]:
            del self._pending_dest[key]
        for key in [k for k in self._waiting_ctl if get(k) is None]:
            self._forget_waiting(key)
        if not self._pending_dest:
            self._pending_dest = {}
        if not self._waiting_ctl:
            self._waiting_ctl, self._children_of = {}, {}

    @property
    def pending_dests(self) -> int:
        return len(self._pending_dest)

    @property
    def waiting_children(self) -> int:
        return len(self._waiting_ctl)

    def handle(self, msg: SyncMsg) -> int:
        """Validate then apply one message; returns the number of entries it applied."""
        if self.on_applied is None or (self.wants_events is not None and not self.wants_events()):
            return self._handle(msg)
        self._events = []
        try:
            return self._handle(msg)
        finally:
            events, self._events = self._events, None
            if events:
                try:
                    self.on_applied(events)
                except Exception:
                    log.exception("on_applied hook failed")

    def _handle(self, msg: SyncMsg) -> int:
        floor = max(self.epoch, self.epoch_floor())
        if msg.epoch < floor:
            self.stats["refused"] += 1
            raise StaleEpochError(f"message epoch {msg.epoch} < known epoch {floor}")
        if isinstance(msg, SnapshotBeginMsg):
            self._following()
            self._begin(msg)
            return 0
        if msg.incarnation != self.incarnation or self.incarnation == 0:
            self.stats["refused"] += 1
            raise ProtocolError(f"message of incarnation {msg.incarnation:x}, following {self.incarnation:x}")
        self._following()
        self.epoch = msg.epoch
        if isinstance(msg, BatchMsg):
            return self._batch(msg)
        if isinstance(msg, SnapshotChunkMsg):
            if not self.in_snapshot:
                raise ProtocolError("snapshot chunk outside a snapshot")
            n = self.apply(msg.updates)
            self._seen.update(u.key for u in msg.updates)
            self.stats["snapshot_entries"] += n
            return n
        if isinstance(msg, SnapshotEndMsg):
            self._end()
            return 0
        return self._heartbeat(msg)

    def _begin(self, msg: SnapshotBeginMsg) -> None:
        log.info("snapshot begins: incarnation %x epoch %d after seq %d (~%d entries)", msg.incarnation,
                 msg.epoch, msg.after_seq, msg.entries_estimate)
        self.epoch = msg.epoch
        self.incarnation = msg.incarnation
        self.applied_seq = msg.after_seq
        self.head_seq = max(self.head_seq, msg.after_seq)
        self.in_snapshot = True
        self.want_snapshot = False
        self.live = False
        self._seen = set()
        self.stats["snapshots"] += 1

    def _batch(self, msg: BatchMsg) -> int:
        if msg.seq != self.applied_seq + 1:
            self.stats["refused"] += 1
            raise SequenceGapError(f"batch seq {msg.seq} after applied seq {self.applied_seq}")
        n = self.apply(msg.updates)
        if self.in_snapshot:
            self._seen.update(u.key for u in msg.updates)
        else:
            self.live = True
        self.applied_seq = msg.seq
        self.head_seq = max(self.head_seq, msg.seq)
        self.stats["batches"] += 1
        return n

    def _heartbeat(self, msg: HeartbeatMsg) -> int:
        if msg.last_seq > self.applied_seq:
            self.stats["refused"] += 1
            raise SequenceGapError(f"heartbeat says seq {msg.last_seq} was sent, applied {self.applied_seq}")
        self.head_seq = max(self.head_seq, msg.head_seq)
        if not self.in_snapshot:
            self.live = True
        return 0

    def _end(self) -> None:
        if not self.in_snapshot:
            raise ProtocolError("snapshot end outside a snapshot")
        seen = self._seen
        stale = [c for c in self.table if c.key not in seen]
        self._remove_all(stale)
        self.stats["swept"] += len(stale)
        self.in_snapshot = False
        self.live = True
        self._seen = set()
        self._prune()
        if self._waiting_ctl:
            log.warning("snapshot applied with %d conns whose template is unknown", len(self._waiting_ctl))
        log.info("snapshot applied: %d entries, %d stale removed, %d unbound (dest unknown)",
                 len(self.table), len(stale), len(self._pending_dest))

    # --- application -----------------------------------------------------------------------------

    def apply(self, updates: Sequence[Update]) -> int:
        """Apply updates: expirations first (conns before templates), then upserts in order. Runs of
        plain upserts (no control link, no re-key, dest known) while nothing waits for a dest or a
        template go to the table in bulk (``ConnTable.new_synced``): new keys are created there, the
        others updated one by one right after, before any later update."""
        table = self.table
        self._dest_cache = {}  # the service table does not change while a message is applied
        expire, refresh = SyncKind.EXPIRE, SyncKind.REFRESH
        victims = [c for c in (table.get(u.key) for u in updates if u.kind is expire) if c is not None]
        n = self._remove_all(victims) if victims else 0
        rows: list[tuple[ConnKey, int, int, float, float, Any]] = []
        run: list[Update] = []
        find_dest = self._find_dest
        for u in updates:
            kind = u.kind
            if kind is expire:
                continue
            if (kind is not refresh and u.control_key is None and u.old_key is None and not self._pending_dest
                    and not self._waiting_ctl):
                dk = u.dest_key
                dest = find_dest(dk) if dk is not None else None
                if dk is None or dest is not None:
                    rem = u.remaining
                    rows.append((u.key, (u.flags & ~_LOCAL) | _SYNC, u.state, u.timeout,
                                 rem if rem > 0.001 else 0.001, dest))
                    run.append(u)
                    continue
            if run:
                n += self._apply_run(rows, run)
                rows, run = [], []
            n += self._apply_one(u)
        if run:
            n += self._apply_run(rows, run)
        self.stats["updates"] += n
        return n

    def _apply_one(self, u: Update) -> int:
        try:
            if u.kind == SyncKind.REFRESH:
                self._refresh(u)
            else:
                self._upsert(u)
            return 1
        except Exception:
            self.stats["apply_errors"] += 1
            log.exception("applying %s for %s failed", u.kind.name, u.key)
            return 0

    def _apply_run(self, rows: list[tuple[ConnKey, int, int, float, float, Any]], run: list[Update]) -> int:
        """Plain upserts in bulk: new keys created by the table, known ones upserted one by one."""
        try:
            created = self.table.new_synced(rows)
        except Exception:  # upserts are idempotent: apply the run again, one by one
            self.stats["apply_errors"] += 1
            log.exception("bulk insert of %d synced entries failed", len(rows))
            return sum(self._apply_one(u) for u in run)
        events = self._events
        n = 0
        for u, conn in zip(run, created, strict=True):
            if conn is None:
                n += self._apply_one(u)
                continue
            n += 1
            if events is not None:
                events.append(ConnEvent(EventKind.NEW, snapshot(conn), None))
        return n

    def _refresh(self, u: Update) -> None:
        conn = self.table.get(u.key)
        if conn is None:
            return
        if u.timeout and conn.timeout != u.timeout:  # e.g. a template waiting for its children (60 s)
            self.table.set_state(conn, conn.state, u.timeout)
        self.table.refresh(conn, max(u.remaining, 0.001))

    def _upsert(self, u: Update) -> None:
        table = self.table
        if u.old_key is not None and u.old_key != u.key:
            self._rekey(u)
            self._repoint_children(u.old_key, u.key)
        conn = table.get(u.key)
        dest = self._find_dest(u.dest_key)
        if conn is None:
            self._insert(u, dest)
            return
        if u.dest_key is not None:  # bind first, so the state change moves the dest's counters
            self._sync_dest(conn, u.dest_key, dest)
            self._sync_state(conn, u)
        else:  # change state while still bound (INACTIVE follows), then unbind
            self._sync_state(conn, u)
            self._sync_dest(conn, u.dest_key, dest)
        if (conn.flags ^ u.flags) & _INACTIVE and conn.dest is not None and not u.key[8]:
            # the master's activity flag is history-dependent (its state changed while unbound)
            # and no table operation reproduces it: take the conn again (it controls nothing)
            self._remove_all([conn])
            conn = self._create(u, dest)
        table.refresh(conn, max(u.remaining, 0.001))
        self._links(u, conn, dest, EventKind.UPDATE)

    def _insert(self, u: Update, dest: Any) -> None:
        """An entry new to this table (the common case: kept lean)."""
        conn = self._create(u, dest)
        if (u.control_key is not None or (u.dest_key is not None and dest is None) or self._pending_dest
                or self._waiting_ctl or self._events is not None):
            self._links(u, conn, dest, EventKind.NEW)

    def _links(self, u: Update, conn: Any, dest: Any, kind: EventKind) -> None:
        """Pending dest, control link, waiting children, watch event of an upserted entry."""
        if u.dest_key is not None and dest is None:
            self._pending_dest[u.key] = u.dest_key
        else:
            self._pending_dest.pop(u.key, None)
        self._sync_control(u.key, conn, u.control_key)
        adopted = self._adopt_children(u.key, conn) if u.key[8] and u.key in self._children_of else ()
        if self._events is not None:
            self._events.append(ConnEvent(kind, snapshot(conn), u.old_key))
            for child in adopted:  # their own events went out before their template existed
                self._events.append(ConnEvent(EventKind.UPDATE, snapshot(child), None))

    def _create(self, u: Update, dest: Any) -> Any:
        proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, _ = u.key
        flags = (u.flags & ~_LOCAL) | _SYNC
        return self.table.new(proto, caddr, cport, vaddr, vport, daddr, dport, flags, dest, fwmark,
                              state=u.state, timeout=u.timeout, remaining=max(u.remaining, 0.001))

    def _sync_state(self, conn: Any, u: Update) -> None:
        if conn.state != u.state or conn.timeout != u.timeout:
            self.table.set_state(conn, u.state, u.timeout)

    def _rekey(self, u: Update) -> None:
        """The master re-keyed an entry (fill_cport, check_template): move ours to the new key."""
        assert u.old_key is not None
        table = self.table
        old = table.get(u.old_key)
        if old is None:
            return
        squatter = table.get(u.key)
        if squatter is not None:  # an entry the master no longer has under that key
            self._remove_all([squatter])
        if table.rekey(old, u.key):
            self._moved(u.old_key, u.key)
        else:
            self._remove_all([old])

    def _moved(self, old: ConnKey, new: ConnKey) -> None:
        if old in self._pending_dest:
            self._pending_dest[new] = self._pending_dest.pop(old)
        if old in self._waiting_ctl:
            ctl = self._waiting_ctl.pop(old)
            self._waiting_ctl[new] = ctl
            kids = self._children_of.get(ctl)
            if kids is not None:
                kids.discard(old)
                kids.add(new)

    def _repoint_children(self, old: ConnKey, new: ConnKey) -> None:
        """Children waiting for a template under its old key now wait for its new key."""
        kids = self._children_of.pop(old, None)
        if not kids:
            return
        self._children_of.setdefault(new, set()).update(kids)
        for k in kids:
            self._waiting_ctl[k] = new

    def _find_dest(self, dest_key: DestKey | None) -> Any:
        if dest_key is None or self.services is None:
            return None
        cache = self._dest_cache
        if dest_key in cache:
            return cache[dest_key]
        dest = cache[dest_key] = self.services.find_dest(dest_key)
        return dest

    def _sync_dest(self, conn: Any, dest_key: DestKey | None, dest: Any) -> None:
        cur = conn.dest
        if dest_key is None:
            if cur is not None:
                self.table.unbind_dest(conn)
            return
        if cur is not None and cur.key == dest_key:
            return
        if dest is None:
            return  # stays as is until the dest appears (rebind_pending)
        if cur is not None:
            self.table.unbind_dest(conn)
        self.table.bind_dest(conn, dest)

    def _sync_control(self, key: ConnKey, conn: Any, control_key: ConnKey | None) -> None:
        """Make the entry's control link the master's: keep, re-link, unlink, or wait for the template."""
        cur = conn.control
        if cur is not None and control_key is not None and cur.key == control_key:
            self._forget_waiting(key)
            return
        if cur is not None:
            self.table.control_del(conn)
        if control_key is None:
            self._forget_waiting(key)
            return
        tpl = self.table.get(control_key)
        if tpl is not None and tpl is not conn:
            self._forget_waiting(key)
            self.table.control_add(conn, tpl)
            return
        if self._waiting_ctl.get(key) != control_key:
            self._forget_waiting(key)
            self._waiting_ctl[key] = control_key
            self._children_of.setdefault(control_key, set()).add(key)

    def _adopt_children(self, key: ConnKey, tpl: Any) -> list[Any]:
        """Link the entries waiting for template ``key``; returns those linked now."""
        kids = self._children_of.pop(key, None)
        adopted: list[Any] = []
        for child_key in kids or ():
            self._waiting_ctl.pop(child_key, None)
            child = self.table.get(child_key)
            if child is None or child.control is tpl:
                continue
            if child.control is not None:
                self.table.control_del(child)
            self.table.control_add(child, tpl)
            adopted.append(child)
        return adopted

    def _remove_all(self, conns: list[Any]) -> int:
        """Remove entries now: conns first, then templates; a template still controlling entries
        that are not being removed is detached from them first (the master no longer links them)."""
        conns.sort(key=lambda c: bool(c.key[8]))
        n = 0
        for conn in conns:
            key = conn.key
            if conn.n_control:
                self._detach_children(conn)
            self._forget(key)
            try:
                snap = snapshot(conn) if self._events is not None else None
                if self.table.expire(conn):
                    n += 1
                    if self._events is not None and snap is not None:
                        self._events.append(ConnEvent(EventKind.EXPIRE, snap, None))
                else:
                    log.debug("entry %s not removed (n_control=%d)", key, conn.n_control)
            except Exception:
                self.stats["apply_errors"] += 1
                log.exception("removing %s failed", key)
        return n

    def _detach_children(self, tpl: Any) -> None:
        """Unlink every entry `tpl` controls (one table walk; only on a stale template, rare)."""
        for c in [c for c in self.table if c.control is tpl]:
            self.table.control_del(c)

    def _forget(self, key: ConnKey) -> None:
        self._pending_dest.pop(key, None)
        self._forget_waiting(key)

    def _forget_waiting(self, key: ConnKey) -> None:
        ctl = self._waiting_ctl.pop(key, None)
        if ctl is not None:
            kids = self._children_of.get(ctl)
            if kids is not None:
                kids.discard(key)
                if not kids:
                    del self._children_of[ctl]

    def rebind_pending(self) -> int:
        """Bind unbound synced entries whose dest now exists (call after a config change)."""
        bound = 0
        self._dest_cache = {}
        for key, dest_key in list(self._pending_dest.items()):
            conn = self.table.get(key)
            if conn is None:
                del self._pending_dest[key]
                continue
            dest = self._find_dest(dest_key)
            if dest is None:
                continue
            self._sync_dest(conn, dest_key, dest)
            del self._pending_dest[key]
            bound += 1
        if bound:
            log.info("bound %d synced entries to dests that appeared", bound)
        return bound
