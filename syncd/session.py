"""One backup's stream on the master: resume from the ring, or snapshot interleaved with live batches.

Theory of operation
-------------------
A session is a cursor (``sent_seq``) into the master's retention ring plus the backup's last ack.
``stream()`` is an async generator of encoded SyncMessages that the gRPC layer writes out:

* live: every retained batch after ``sent_seq``; when idle, a heartbeat each heartbeat interval;
* snapshot (first follow, resume impossible, queue overflow, feed overflow, epoch change):
  ``snapshot_begin{after_seq = head}``, then the table in chunks of ``snapshot_chunk`` entries.
  Before each chunk the master's pending events are cut into a batch and the chunk is read at
  once; the batches up to that cut are sent before the chunk and later ones after it, so the
  backup sees a single linear history. Then ``snapshot_end``. The table is walked lazily (its
  iterator tolerates changes between buckets) one chunk at a time with a yield to the loop in
  between: the packet path never pauses for it. Entries removed meanwhile are skipped; entries
  created meanwhile come through the live batches (or a later chunk: upserts are idempotent).

Promises (static stability, docs/HA.md): every ``promise_interval`` the stream carries a heartbeat
with a fresh token, even under load; the backup's ack on that token is a promise not to campaign for
``promise_ms``. The session counts it from the time it *queued* the token (never later than the
send, so earlier than the backup's receipt) minus ``promise_margin``: its ``promise_until`` ends
before the backup's own promise. A closed session's promise is gone with it.

A backup that said hello with an older wire version (1) is sent every message converted to that
version (``convert.downgrade``: packed rows become full entries); the ring keeps one encoding.

Being slow is never the master's problem: the generator only advances when gRPC took the previous
message. If the backup falls more than ``backup_max_lag`` batches behind, or out of the ring,
the session restarts with a snapshot.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from syncd.convert import (
    downgrade,
    encode_heartbeat,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
)
from syncd.model import PROTOCOL_VERSION, AckMsg, FollowHello, TableLike, Update
from syncd.ring import RingEntry

log = logging.getLogger(__name__)

_LIVE_SLICE = 64


class SessionKnobs(Protocol):
    """The master settings a session reads (syncd.master.MasterConfig)."""

    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def backup_max_lag(self) -> int: ...
    @property
    def snapshot_chunk(self) -> int: ...
    @property
    def promise_interval(self) -> float: ...
    @property
    def promise_margin(self) -> float: ...


class MasterLike(Protocol):
    """What a session needs of its master (syncd.master.SyncMaster); no import, no cycle."""

    epoch: int
    incarnation: int
    head_seq: int
    stats: dict[str, int]
    promising: bool

    @property
    def cfg(self) -> SessionKnobs: ...
    @property
    def table(self) -> TableLike: ...
    def clock(self) -> float: ...
    def cut_batch(self) -> int: ...
    def batches_after(self, seq: int, limit: int) -> list[RingEntry] | None: ...
    def retained(self, seq: int) -> bool: ...
    def snapshot_update(self, conn: Any, now: float) -> Update | None: ...
    def acked(self) -> None: ...
    def promised(self) -> None: ...


class BackupSession:
    """State of one connected backup (also what the admin API lists)."""

    def __init__(self, master: MasterLike, hello: FollowHello, peer: str) -> None:
        self.master = master
        self.node_id = hello.node_id
        self.version = hello.version
        """The wire version the backup speaks: an older one is sent messages of its version."""
        self.peer = peer
        self.host = peer.rsplit(":", 1)[0]
        self.connected_at = time.time()
        self.connected_mono = time.monotonic()
        self.acks = 0
        self.waiting = False
        """True while the stream has sent everything and waits for the next batch (an idle stream)."""
        self.sent_seq = hello.last_applied_seq
        self.acked_seq = hello.last_applied_seq
        self.incarnation_acked = hello.incarnation
        self.in_sync = False
        self.snapshots = 0
        self.bytes_sent = 0
        self.messages_sent = 0
        self.closed = False
        self.close_reason = ""
        self.close_kind = ""
        self.snapshot_reason = ""
        self.in_snapshot = False
        self.promise_until = 0.0
        """Monotonic time until which this backup promised not to campaign (master's view)."""
        self._tokens: dict[int, float] = {}
        self._next_token = 1
        self._promise_due = 0.0
        self._wake = asyncio.Event()
        resumable = (hello.incarnation == master.incarnation and hello.epoch_seen == master.epoch
                     and master.retained(hello.last_applied_seq))
        self.needs_snapshot = not resumable
        if not resumable:
            self.snapshot_reason = "first follow" if hello.incarnation == 0 else "resume point not retained"
        log.info("backup %s (%s) from seq %d: %s", self.node_id, peer, hello.last_applied_seq,
                 "resume" if resumable else f"snapshot ({self.snapshot_reason})")

    # --- control ---------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def close(self, reason: str, kind: str = "stopped") -> None:
        """End the stream; `kind` (stopped, bad_input, rate, gone) picks the status the server returns."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.close_kind = kind
            self._wake.set()

    def request_snapshot(self, reason: str) -> None:
        self.needs_snapshot = True
        self.snapshot_reason = reason
        self._wake.set()

    def on_ack(self, ack: AckMsg) -> bool:
        """Take an ack; False (and nothing taken) if it claims more than was sent (the caller counts,
        logs rate-limited and closes)."""
        if ack.applied_seq > self.sent_seq:
            return False
        self.acks += 1
        self.acked_seq = ack.applied_seq
        self.in_sync = ack.in_sync
        if ack.in_sync:
            self.incarnation_acked = self.master.incarnation
        if ack.promise_token:
            self._take_promise(ack.promise_token, ack.promise_ms)
        self.master.acked()
        return True

    def _take_promise(self, token: int, promise_ms: int) -> None:
        sent = self._tokens.pop(token, None)
        if sent is None:
            return  # unknown or answered twice: no promise taken
        for old in [t for t in self._tokens if t < token]:  # answers arrive in order
            del self._tokens[old]
        until = sent + promise_ms / 1000.0 - self.master.cfg.promise_margin
        if until > self.promise_until:
            self.promise_until = until
            self.master.promised()

    def _promise_request(self) -> bytes | None:
        """A heartbeat with a fresh token when a promise request is due, else None."""
        m = self.master
        now = time.monotonic()
        if not m.promising or m.cfg.promise_interval <= 0 or now < self._promise_due:
            return None
        self._promise_due = now + m.cfg.promise_interval
        token, self._next_token = self._next_token, self._next_token + 1
        self._tokens[token] = now
        if len(self._tokens) > 64:  # a backup that never answers: keep the newest only
            del self._tokens[min(self._tokens)]
        return encode_heartbeat(m.epoch, m.incarnation, self.sent_seq, m.head_seq, time.time_ns(), token)

    def lag_seconds(self) -> float:
        """Age of the oldest batch the backup has not acknowledged (0 when caught up)."""
        if self.acked_seq >= self.master.head_seq:
            return 0.0
        entries = self.master.batches_after(self.acked_seq, 1)
        if not entries:
            return 0.0
        return max(0.0, time.monotonic() - entries[0].created)

    # --- the stream ------------------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[bytes]:
        """The encoded messages for this backup, forever (until closed)."""
        old = self.version < PROTOCOL_VERSION
        async for data in self._stream():
            if old:
                data = downgrade(data)
            self.bytes_sent += len(data)
            self.messages_sent += 1
            yield data

    async def _stream(self) -> AsyncIterator[bytes]:
        m = self.master
        hb = m.cfg.heartbeat_interval
        if not self.needs_snapshot:  # resumed: confirm at once (the backup is live from here)
            yield encode_heartbeat(m.epoch, m.incarnation, self.sent_seq, m.head_seq, time.time_ns())
        while not self.closed:
            if self.needs_snapshot:
                async for data in self._snapshot():
                    yield data
                continue
            sent = False
            for data in self._live():
                yield data
                sent = True
            if (req := self._promise_request()) is not None:
                yield req
            if sent or self.needs_snapshot or self.closed:
                continue
            self._wake.clear()
            wait = hb
            if m.cfg.promise_interval > 0:
                wait = min(hb, max(0.001, self._promise_due - time.monotonic()))
            self.waiting = True
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                if (req := self._promise_request()) is not None:
                    yield req
                elif wait >= hb:
                    yield encode_heartbeat(m.epoch, m.incarnation, self.sent_seq, m.head_seq, time.time_ns())
            finally:
                self.waiting = False

    def _live(self, upto: int | None = None) -> list[bytes]:
        """Next retained batches (seq <= upto) for this backup, or [] and a snapshot request if it
        fell behind."""
        m = self.master
        if m.head_seq - self.sent_seq > m.cfg.backup_max_lag:
            self.request_snapshot(f"{m.head_seq - self.sent_seq} batches behind")
            return []
        entries = m.batches_after(self.sent_seq, _LIVE_SLICE)
        if entries is None:
            self.request_snapshot("fell out of the retention ring")
            return []
        if upto is not None:
            entries = [e for e in entries if e.seq <= upto]
        if entries:
            self.sent_seq = entries[-1].seq
        return [e.data for e in entries]

    async def _snapshot(self) -> AsyncIterator[bytes]:
        m = self.master
        self.needs_snapshot = False
        self.in_snapshot = True
        self.in_sync = False
        self.snapshots += 1
        m.stats["snapshots"] += 1
        log.info("snapshot for backup %s (%s): %d entries after seq %d", self.node_id,
                 self.snapshot_reason, len(m.table), m.head_seq)
        epoch, inc = m.epoch, m.incarnation
        conns = iter(m.table)
        self.sent_seq = m.head_seq
        yield encode_snapshot_begin(epoch, inc, self.sent_seq, len(m.table))
        step = m.cfg.snapshot_chunk
        n_chunks = n_entries = 0
        more = True
        while more:
            # Every event so far goes into a batch that is sent *before* the chunk, and the chunk is
            # read at once, so batches sent after it only hold later events: the backup sees one
            # linear history (a re-key or removal can never arrive before the entry it concerns).
            m.cut_batch()
            upto = m.head_seq
            updates, more = self._chunk(conns, step)
            while self.sent_seq < upto and not self.needs_snapshot:
                for data in self._live(upto):
                    yield data
            if self.needs_snapshot or self.closed or m.incarnation != inc:
                self.in_snapshot = False
                return  # restart (or stop): what was sent so far is harmless, the next begin resets it
            if updates:
                yield encode_snapshot_chunk(epoch, inc, n_chunks, updates)
                n_chunks += 1
                n_entries += len(updates)
            if (req := self._promise_request()) is not None:  # promises go on during a snapshot
                yield req
            await asyncio.sleep(0)
        if self.needs_snapshot or self.closed or m.incarnation != inc:
            self.in_snapshot = False
            return
        yield encode_snapshot_end(epoch, inc, n_chunks, n_entries)
        self.in_snapshot = False
        log.info("snapshot for backup %s sent: %d entries in %d chunks", self.node_id, n_entries, n_chunks)

    def _chunk(self, conns: Iterator[Any], step: int) -> tuple[list[Update], bool]:
        """Next `step` live entries of the table walk; (updates, whether the walk goes on)."""
        m = self.master
        now = m.clock()
        out: list[Update] = []
        taken = 0
        for conn in itertools.islice(conns, step):
            taken += 1
            u = m.snapshot_update(conn, now)
            if u is not None:
                out.append(u)
        return out, taken == step
