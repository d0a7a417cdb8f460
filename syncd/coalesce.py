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

Snapshots are handled as plain tuples (``SnapTuple``: a ConnSnapshot, or the table's RawEvent
whose first eight fields are a snapshot's), so the master can feed raw events in unchanged.
``updates()`` yields ``Update`` records; ``encode()`` yields the same updates already encoded as
ConnEntry bytes (``convert.entry_body``) without building records, and ``encode_packed()`` as packed
rows (``syncd.packed``, wire version 2) - the master's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd import wire
from syncd.convert import entry_body
from syncd.model import ConnKey, SnapTuple, SyncKind, Update
from syncd.packed import Packer
from syncd.policy import RefreshTracker, SyncPolicy

NEW, UPDATE, EXPIRE = SyncKind.NEW, SyncKind.UPDATE, SyncKind.EXPIRE
_KIND = {int(k): k for k in SyncKind}
KEY, STATE, TIMEOUT, EXPIRES, CONTROL_KEY = 0, 2, 3, 4, 6  # SnapTuple fields


class Window:
    """Coalesces the events of one window; `updates()` / `encode()` turn them into what to send."""

    def __init__(self) -> None:
        self.pending: dict[ConnKey, list[Any]] = {}
        self.early: list[ConnKey] = []
        self.events = 0

    def add(self, kind: int, snap: SnapTuple, old_key: ConnKey | None = None) -> None:
        self.events += 1
        key = snap[KEY]
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
        self.early.append(p[3] if p[3] is not None else key)  # harmless if backups never saw it

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
            if snap is not None and snap[CONTROL_KEY] == old_key:
                p[2] = snap[:CONTROL_KEY] + (new_key,) + snap[CONTROL_KEY + 1:]

    def updates(self, now: float, policy: SyncPolicy, tracker: RefreshTracker) -> list[Update]:
        """The window's updates in sending order: removals of conns, of templates (a template goes
        only once its children are gone, even if a batch is split), then the upserts."""
        def upsert(kind: int, key: ConnKey, snap: SnapTuple, now: float, old_key: ConnKey | None) -> Update:
            return Update(_KIND[kind], key, snap[1], snap[2], snap[3], snap[4] - now, snap[5], snap[6],
                          snap[7], old_key)
        return self._walk(now, policy, tracker, lambda k: Update(EXPIRE, k), upsert)

    def encode(self, now: float, policy: SyncPolicy, tracker: RefreshTracker) -> list[bytes]:
        """``updates()`` as encoded ConnEntry bodies (``convert.entry_body`` of each): same entries,
        same order, same tracker calls, no records built."""
        return self._walk(now, policy, tracker, _expire_body, _upsert_body)

    def encode_packed(self, now: float, policy: SyncPolicy, tracker: RefreshTracker, out: Packer) -> None:
        """``encode()`` as packed rows into `out` (syncd.packed): an update a row cannot hold goes as
        its ConnEntry body. Same updates, same order, same tracker calls (the master's hot path)."""
        expire_row, snap_row = out.expire, out.snap_row

        def gone_item(k: ConnKey) -> Any:
            row = expire_row(k)
            return row if row is not None else (_expire_body(k),)

        def upsert_item(kind: int, key: ConnKey, snap: SnapTuple, now: float, old_key: ConnKey | None) -> Any:
            row = snap_row(kind, key, snap, now) if old_key is None and snap[CONTROL_KEY] is None else None
            return row if row is not None else (_upsert_body(kind, key, snap, now, old_key),)

        out.add(self._walk(now, policy, tracker, gone_item, upsert_item))

    def _walk(self, now: float, policy: SyncPolicy, tracker: RefreshTracker,
              gone_of: Callable[[ConnKey], Any],
              upsert: Callable[[int, ConnKey, SnapTuple, float, ConnKey | None], Any]) -> list[Any]:
        gone: list[Any] = []
        gone_tpl: list[Any] = []
        for k in self.early:
            tracker.forget(k)
            (gone_tpl if k[8] else gone).append(gone_of(k))
        out: list[Any] = []
        sent: list[tuple[ConnKey, float, float]] = []
        append, sent_append, should_sync = out.append, sent.append, policy.should_sync_key
        filtering = not policy.sync_all
        for key, (first, last, snap, old_key) in self.pending.items():
            if last == EXPIRE:
                if first == NEW:
                    continue  # created and removed within the window
                tracker.forget(key)
                (gone_tpl if key[8] else gone).append(gone_of(key if old_key is None else old_key))
                continue
            if old_key is not None:
                tracker.forget(old_key)
            if filtering and not should_sync(key, snap[STATE]):
                continue
            append(upsert(NEW if first == NEW else last, key, snap, now, old_key))
            sent_append((key, snap[EXPIRES], snap[TIMEOUT]))
        tracker.sent_many(sent)  # the tracker told in one call
        if gone or gone_tpl:
            return gone + gone_tpl + out
        return out


def _expire_body(key: ConnKey) -> bytes:
    return entry_body(Update(EXPIRE, key))


def _upsert_body(kind: int, key: ConnKey, snap: SnapTuple, now: float, old_key: ConnKey | None) -> bytes:
    try:
        return wire.upsert_snap(kind, key, snap, now, old_key)
    except (ValueError, OverflowError):  # out-of-range values: upb encodes them or raises the same way
        return entry_body(Update(_KIND[kind], key, snap[1], snap[2], snap[3], snap[4] - now, snap[5], snap[6],
                                 snap[7], old_key))
