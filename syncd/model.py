"""Plain records of the sync protocol, free of protobuf: what convert.py produces and consumes.

Theory of operation
-------------------
The master turns table events into ``Update`` records, convert.py encodes them into the wire
messages of proto/sync.proto, and the backup decodes the wire back into these records before
applying them. Nothing outside convert.py sees a protobuf object, so the master and backup logic
can be tested with plain tuples. Errors raised on bad input form one small tree::

    SyncError
     +-- ProtocolError      garbage, unknown version, missing fields, wrong message in a state
     |    +-- FieldRangeError  a field outside its range (port 70000, protocol 300, ...)
     +-- StaleEpochError    a message from a master older than the newest epoch known
     +-- SequenceGapError   a batch that does not follow the last one applied
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

from director.services.service import DestKey
from director.table.events import ConnKey as ConnKey
from director.table.events import EventKind

PROTOCOL_VERSION = 2
"""Version this code speaks: 2 adds packed rows to batches and snapshot chunks (syncd.packed)."""
SUPPORTED_VERSIONS = (1, 2)
"""Versions a backup decodes and a master serves (a version-1 backup is sent version-1 messages)."""


class SyncKind(IntEnum):
    """Update kinds on the wire: the table's EventKind values, plus REFRESH (sync only)."""

    NEW = int(EventKind.NEW)
    UPDATE = int(EventKind.UPDATE)
    EXPIRE = int(EventKind.EXPIRE)
    REFRESH = max(int(k) for k in EventKind) + 1


class Update(NamedTuple):
    """One entry's new state (NEW/UPDATE), its removal (EXPIRE) or a timer extension (REFRESH)."""

    kind: SyncKind
    key: ConnKey
    flags: int = 0
    state: int = 0
    timeout: float = 0.0
    remaining: float = 0.0
    dest_key: DestKey | None = None
    control_key: ConnKey | None = None
    in_pkts: int = 0
    old_key: ConnKey | None = None
    """The key the backup knows the entry by, when the master re-keyed it (UPDATE only)."""


class BatchMsg(NamedTuple):
    epoch: int
    incarnation: int
    seq: int
    first_event_ns: int
    updates: list[Update]


class SnapshotBeginMsg(NamedTuple):
    epoch: int
    incarnation: int
    after_seq: int
    entries_estimate: int


class SnapshotChunkMsg(NamedTuple):
    epoch: int
    incarnation: int
    chunk_index: int
    updates: list[Update]


class SnapshotEndMsg(NamedTuple):
    epoch: int
    incarnation: int
    chunks: int
    entries: int


class HeartbeatMsg(NamedTuple):
    epoch: int
    incarnation: int
    last_seq: int
    head_seq: int
    sent_ns: int
    promise_token: int = 0


SyncMsg = BatchMsg | SnapshotBeginMsg | SnapshotChunkMsg | SnapshotEndMsg | HeartbeatMsg


class FollowHello(NamedTuple):
    node_id: str
    last_applied_seq: int
    epoch_seen: int
    incarnation: int
    version: int = PROTOCOL_VERSION


class AckMsg(NamedTuple):
    applied_seq: int
    in_sync: bool
    promise_token: int = 0
    promise_ms: int = 0


MAX_PROMISE_MS = 60_000
"""A promise longer than this is refused as hostile input (the default is 1 s)."""


class SyncError(Exception):
    """Base of every error syncd raises on bad input from a peer."""


class ProtocolError(SyncError):
    """Undecodable or out-of-contract message."""


class StaleEpochError(SyncError):
    """A message from a master whose epoch is older than the newest known."""


class SequenceGapError(SyncError):
    """A batch that does not directly follow the last applied one."""


class FieldRangeError(ProtocolError):
    """A decoded field outside its range (``field`` names it): the whole message is refused."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


# --- what syncd needs of director.table.conn (structural, so syncd type-checks on its own) -----------------

class SnapshotLike(Protocol):
    @property
    def key(self) -> ConnKey: ...
    @property
    def flags(self) -> int: ...
    @property
    def state(self) -> int: ...
    @property
    def timeout(self) -> float: ...
    @property
    def expires(self) -> float: ...
    @property
    def dest_key(self) -> DestKey | None: ...
    @property
    def control_key(self) -> ConnKey | None: ...
    @property
    def in_pkts(self) -> int: ...


class EventLike(Protocol):
    """director.table.events.ConnEvent: (kind, snap, old_key)."""

    def __iter__(self) -> Iterator[Any]: ...


SnapTuple = tuple[Any, ...]
"""A conn snapshot as a plain tuple: (key, flags, state, timeout, expires, dest_key, control_key,
in_pkts), possibly followed by more fields - director.table.events.ConnSnapshot or RawEvent."""


class FeedLike(Protocol):
    enabled: bool
    overflowed: bool
    on_ready: Callable[[], None] | None

    def drain(self, max_n: int = 4096) -> Sequence[EventLike]: ...
    def drain_raw(self, max_n: int = 4096) -> list[SnapTuple]:
        """director.table.events.RawEvent tuples: the snapshot fields, then kind and old_key."""
        ...
    def clear_overflow(self) -> None: ...


class TableLike(Protocol):
    """The subset of director.table.conn.ConnTable syncd uses (master and backup side)."""

    @property
    def events(self) -> FeedLike: ...
    def get(self, key: ConnKey) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def new(self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int, daddr: int, dport: int,
            flags: int, dest: Any, fwmark: int = 0, *, state: int = 0, timeout: float = 3.0,
            remaining: float | None = None) -> Any: ...
    def set_state(self, conn: Any, state: int, timeout: float) -> None: ...
    def refresh(self, conn: Any, timeout: float | None = None) -> None: ...
    def control_add(self, conn: Any, template: Any) -> None: ...
    def control_del(self, conn: Any) -> None: ...
    def rekey(self, conn: Any, key: ConnKey) -> bool: ...
    def hold_synced(self, hold: bool) -> int: ...
    def new_synced(self, rows: list[tuple[ConnKey, int, int, float, float, Any]]) -> list[Any]: ...
    def bind_dest(self, conn: Any, dest: Any) -> None: ...
    def unbind_dest(self, conn: Any) -> None: ...
    def expire(self, conn: Any) -> bool: ...
    def fill_cport(self, conn: Any, cport: int) -> None: ...
    def check_template(self, ct: Any, expire_quiescent_template: bool) -> bool: ...


def update_from_conn(kind: SyncKind, conn: Any, now: float) -> Update:
    """An Update carrying a live entry's current state (snapshot chunks, refreshes)."""
    dest = conn.dest
    control = conn.control
    return Update(kind, conn.key, conn.flags, conn.state, conn.timeout, conn.expires - now,
                  dest.key if dest is not None else None, control.key if control is not None else None,
                  conn.in_pkts)


class LogLimiter:
    """Rate-limited logging of repeated peer errors: the 1st, 2nd, 4th, 8th... of each kind."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def should_log(self, what: str) -> bool:
        n = self.counts.get(what, 0) + 1
        self.counts[what] = n
        return n & (n - 1) == 0
