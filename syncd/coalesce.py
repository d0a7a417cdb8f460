"""One batch window's events coalesced per entry (pure; used by the master).

Theory of operation
-------------------
Within a window only the latest state of each entry matters, so events are folded per key into
``[first kind, last kind, last snapshot, key the backups know]``. Rules:

* created and removed within the window: nothing is sent (snapshot chunks are read right after a
  cut, so no chunk can have carried it);
* removed, then a *new* entry with the same key (key reuse): the removal is sent in an earlier
  batch than the new entry (``early``), so a backup never merges two lives of one key;
* re-keyed (``old_key`` on an UPDATE: ``fill_cport``, template invalidation): the history moves to
  the new key and the update carries the key the backups know (``old_key``), and children whose
  snapshot (taken before the re-key) names the template's old key are pointed at the new one.
"""

from __future__ import annotations

from typing import Any

from syncd.model import ConnKey, SnapshotLike, SyncKind, Update
from syncd.policy import RefreshTracker, SyncPolicy

NEW, UPDATE, EXPIRE = SyncKind.NEW, SyncKind.UPDATE, SyncKind.EXPIRE
_KIND = {int(k): k for k in SyncKind}


class Window:
    """Coalesces the events of one window; `updates()` turns them into updates to send."""

    def __init__(self) -> None:
        self.pending: dict[ConnKey, list[Any]] = {}
        self.early: list[ConnKey] = []
        self.events = 0

    def add(self, kind: int, snap: SnapshotLike, old_key: ConnKey | None = None) -> None:
        self.events += 1
        key = snap.key
        pending = self.pending
        p: list[Any] | None
        if old_key is not None and old_key != key:
            self._retire(key)
            p = self._rekeyed(old_key, key)
            if key[8]:
                self._repoint(old_key, key)
        else:
            p = pending.get(key)
            if p is not None and p[1] == EXPIRE and kind == NEW:
                self._retire(key)
                p = None
        if p is None:
            pending[key] = [kind, kind, snap, None]
        else:
            p[1] = kind
            p[2] = snap

    def _retire(self, key: ConnKey) -> None:
        """An entry under `key` is gone for good: backups that knew it must drop it first."""
        p = self.pending.get(key)
        if p is None or p[1] != EXPIRE:
            return
        del self.pending[key]
        self.early.append(p[3] if p[3] is not None else key)  # harmless if followers never saw it

    def _rekeyed(self, old_key: ConnKey, new_key: ConnKey) -> list[Any]:
        prev = self.pending.pop(old_key, None)
        if prev is None:
            p: list[Any] = [UPDATE, UPDATE, None, old_key]
        elif prev[0] == NEW:
            p = [NEW, NEW, None, old_key]  # unknown to backups; old_key only re-points children
        else:
            p = [prev[0], prev[1], None, prev[3] if prev[3] is not None else old_key]
        self.pending[new_key] = p
        return p

    def _repoint(self, old_key: ConnKey, new_key: ConnKey) -> None:
        """Snapshots taken before a template was re-keyed name it by its old key: fix them."""
        for p in self.pending.values():
            snap = p[2]
            if snap is not None and snap.control_key == old_key:
                p[2] = snap._replace(control_key=new_key)

    def updates(self, now: float, policy: SyncPolicy, tracker: RefreshTracker) -> list[Update]:
        """The window's updates in sending order: removals of conns, of templates (a template goes
        only once its children are gone, even if a batch is split), then the upserts."""
        gone: list[Update] = []
        gone_tpl: list[Update] = []
        for k in self.early:
            tracker.forget(k)
            (gone_tpl if k[8] else gone).append(Update(EXPIRE, k))
        out: list[Update] = []
        append, sent, should_sync = out.append, tracker.sent, policy.should_sync
        filtering = not policy.sync_all
        for key, (first, last, snap, old_key) in self.pending.items():
            if last == EXPIRE:
                if first == NEW:
                    continue  # created and removed within the window
                tracker.forget(key)
                (gone_tpl if key[8] else gone).append(Update(EXPIRE, key if old_key is None else old_key))
                continue
            kind = NEW if first == NEW else _KIND[last]
            if old_key is not None:
                tracker.forget(old_key)
            if filtering and not should_sync(snap):
                continue
            append(Update(kind, key, snap.flags, snap.state, snap.timeout, snap.expires - now, snap.dest_key,
                          snap.control_key, snap.in_pkts, old_key))
            sent(key, snap.expires, snap.timeout)
        if gone or gone_tpl:
            return gone + gone_tpl + out
        return out
