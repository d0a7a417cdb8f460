"""Backup side over gRPC: follow the master's stream, apply it, ack it, reconnect when it breaks.

Theory of operation
-------------------
A ``SyncBackup`` runs one task on the node's loop. It dials the current master address (from the
election record via ``set_master``, or node config), sends a hello with its resume point
(incarnation, last applied seq, epoch seen) and reads SyncMessages: each is decoded (convert.py),
validated and applied by ``BackupApplier``; a second task writes acks (the latest applied seq,
coalesced: one in flight at a time). Any refusal - garbage, unknown version, stale epoch,
sequence gap, oversize message (gRPC limit), heartbeat silence - ends the stream *before* the
offending message touches the table; the backup logs it (rate-limited) and reconnects after a
backoff of ``reconnect_min``..``reconnect_max`` seconds (doubling, reset after progress), resuming
from its last applied seq (the master answers with the missing batches or a snapshot).

A message with a field out of range (``FieldRangeError``, checked at decode) is refused as a whole
and counted per field in ``refused_fields``; the backup resumes from its last applied seq, and if
the same resume point is refused again it asks for a snapshot instead.

While a stream is live the applier holds the table's synced timers (a synced entry never expires on
this node's clock). They are released when no message came from the master for
``heartbeat_timeout`` (a stream cut and resumed within that loses nothing), at ``set_master`` to
another master or to none (takeover), and at ``stop``.

``set_master(addr, epoch)`` switches masters at once (the running stream is cancelled and the
timers released) and raises the epoch floor so the old master is refused even if it is still
streaming. ``on_applied`` (constructor argument or attribute) sees the conn events applied from
sync (``BackupApplier``), e.g. to publish them to admin watchers. ``in_sync`` is True while
connected, with a snapshot applied (or a resume accepted) and no snapshot in progress.
Lag samples (wall clock from the master seeing a batch's first event to applying it here; the
nodes' clocks must be NTP-synced for cross-host figures) feed p50/p99 for the admin API and
benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from director.services.service import ServiceTable
from director.table.events import ConnEvent
from syncd.apply import BackupApplier
from syncd.convert import decode_sync_message, encode_ack, encode_hello, identity
from syncd.memory import HeapTrimmer
from syncd.model import AckMsg, BatchMsg, FieldRangeError, HeartbeatMsg, LogLimiter, SyncError, TableLike
from syncd.server import FOLLOW_METHOD
from syncd.tls import TlsFilesLike, channel_credentials, channel_options

log = logging.getLogger(__name__)


@dataclass
class BackupConfig:
    reconnect_min: float = 0.2
    reconnect_max: float = 1.0
    heartbeat_timeout: float = 3.5
    """Silence (no batch, chunk or heartbeat) after which the master is presumed gone."""
    max_message: int = 16 << 20
    lag_samples: int = 8192
    """Recent lag samples kept for the percentiles (bounded: a backup's memory stays flat)."""
    promise_ms: int = 1000
    """Asked by its master, this backup promises not to campaign for this long after the request
    arrived (static stability, docs/HA.md); 0: never promise (the master then keeps its lease only)."""


class SyncBackup:
    """Follows one master at a time and keeps `table` a copy of its table."""

    def __init__(self, target: str | None, node_id: str, table: TableLike,
                 services: ServiceTable | None = None, epoch_source: Callable[[], int] | None = None,
                 *, tls: TlsFilesLike | None = None, cfg: BackupConfig | None = None,
                 on_applied: Callable[[list[ConnEvent]], None] | None = None) -> None:
        self.target = target
        self.node_id = node_id
        self.tls = tls
        self.cfg = cfg or BackupConfig()
        self._epoch_source = epoch_source or (lambda: 0)
        self._epoch_hint = 0
        self.applier = BackupApplier(table, services, self._epoch_floor, on_applied)
        self.connected = False
        self.synced_epoch = 0
        """The epoch of the master whose stream ended while this backup was in sync with it."""
        self.lags_ms: deque[float] = deque(maxlen=self.cfg.lag_samples)
        self.stats = {"connects": 0, "stream_errors": 0, "refused": 0, "messages": 0}
        self.refused_fields: dict[str, int] = {}
        self._refused_at: int | None = None
        self._last_msg = 0.0
        self._trimmer = HeapTrimmer()
        self._release: asyncio.TimerHandle | None = None
        self.last_error = ""
        self._logs = LogLimiter()
        self._task: asyncio.Task[None] | None = None
        self._session: asyncio.Task[bool] | None = None
        self._changed = asyncio.Event()
        self._ack_needed = asyncio.Event()
        self.promise: tuple[float, int] = (0.0, 0)
        """(monotonic time, epoch): no campaign before that time, promised to the master of epoch."""
        self.on_promise: Callable[[float, int], None] | None = None
        self._promise_token = 0

    # --- public ----------------------------------------------------------------------------------

    @property
    def in_sync(self) -> bool:
        a = self.applier
        return self.connected and a.live and not a.in_snapshot

    def fit_for(self, epoch: int) -> bool:
        """In sync with the master of `epoch`, or was when its stream ended (it died or we lost it):
        the table is that master's up to the break, which is what a takeover needs."""
        return self.in_sync or (epoch > 0 and self.synced_epoch == epoch)

    @property
    def applied_seq(self) -> int:
        return self.applier.applied_seq

    @property
    def on_applied(self) -> Callable[[list[ConnEvent]], None] | None:
        """Called with the conn events of each applied message (see ``BackupApplier``)."""
        return self.applier.on_applied

    @on_applied.setter
    def on_applied(self, hook: Callable[[list[ConnEvent]], None] | None) -> None:
        self.applier.on_applied = hook

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name=f"sync-backup-{self.node_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected = False
        self.applier.stream_lost()

    def set_master(self, addr: str | None, epoch: int = 0) -> None:
        """Follow `addr` from now on (None: follow nobody); messages below `epoch` are refused."""
        self._epoch_hint = max(self._epoch_hint, epoch)
        if addr == self.target:
            return
        log.info("sync: following %s (epoch %d) instead of %s", addr, epoch, self.target)
        self.target = addr
        self._changed.set()
        if self._session is not None:
            self._session.cancel()  # it applies nothing more: cancelled at its next await
        self.connected = False
        self.applier.stream_lost()  # our own timers from now on (takeover, or a new master to follow)

    def rebind_pending(self) -> int:
        return self.applier.rebind_pending()

    def lag_percentile(self, p: float) -> float:
        """p-th percentile (0..100) of the recent lag samples in ms (0 if none)."""
        if not self.lags_ms:
            return 0.0
        data = sorted(self.lags_ms)
        return data[min(len(data) - 1, int(len(data) * p / 100.0))]

    def status(self) -> dict[str, Any]:
        a = self.applier
        return {"target": self.target, "connected": self.connected, "in_sync": self.in_sync,
                "applied_seq": a.applied_seq, "head_seq": a.head_seq, "epoch": a.epoch,
                "in_snapshot": a.in_snapshot, "pending_dests": a.pending_dests,
                "lag_p50_ms": self.lag_percentile(50), "lag_p99_ms": self.lag_percentile(99),
                "last_error": self.last_error, "refused_fields": dict(self.refused_fields),
                "timers_held": a.holding,
                **self.stats, **{f"apply_{k}": v for k, v in a.stats.items()}}

    # --- loop ------------------------------------------------------------------------------------

    def _epoch_floor(self) -> int:
        return max(self._epoch_hint, self._epoch_source())

    async def _run(self) -> None:
        delay = self.cfg.reconnect_min
        while True:
            target = self.target
            if target is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._changed.clear()
            self._session = asyncio.get_running_loop().create_task(self._follow_once(target))
            progressed = False
            try:
                await asyncio.wait({self._session})
                progressed = self._session_result(self._session, target)
            finally:
                session, self._session = self._session, None
                if not session.done():
                    session.cancel()
                    with contextlib.suppress(BaseException):
                        await session  # never two streams applying at once
                if self.in_sync:  # its table is that master's up to the break: fit to take over
                    self.synced_epoch = self.applier.epoch
                self.connected = False
                self.applier.stream_ended()
                self._release_later()
            if progressed:
                delay = self.cfg.reconnect_min
            if self.target != target:
                continue  # switched masters: dial the new one at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.8, 1.2)):
                    await self._changed.wait()
            delay = min(self.cfg.reconnect_max, delay * 2)

    def _release_later(self) -> None:
        """Release the held timers once the master's heartbeat deadline passed with no new stream."""
        if self._release is not None:
            self._release.cancel()
        loop = asyncio.get_running_loop()
        self._release = loop.call_at(self._last_msg + self.cfg.heartbeat_timeout, self._release_if_idle)

    def _release_if_idle(self) -> None:
        self._release = None
        if not self.connected:
            self.applier.release_timers()

    def _session_result(self, task: asyncio.Task[bool], target: str) -> bool:
        if task.cancelled():
            return True
        exc = task.exception()
        if exc is None:
            return task.result()
        self.stats["stream_errors"] += 1
        progressed = getattr(exc, "progressed", False)
        if isinstance(exc, SyncError):
            self.stats["refused"] += 1
            what = type(exc).__name__
            if isinstance(exc, FieldRangeError):
                self._field_refused(exc)
                what = f"{what}({exc.field})"
        elif isinstance(exc, grpc.aio.AioRpcError):
            what = str(exc.code())
            log.debug("stream error detail: %s", exc.debug_error_string())
            exc = f"{exc.code()}: {exc.details()}"  # type: ignore[assignment]
        elif isinstance(exc, TimeoutError):
            what = "heartbeat"
            exc = f"no message for {self.cfg.heartbeat_timeout} s"  # type: ignore[assignment]
        else:
            what = type(exc).__name__
            log.error("sync backup of %s failed", target, exc_info=exc)
        self.last_error = f"{what}: {exc}"
        if self._logs.should_log(what):
            log.warning("sync stream from %s ended: %s (%s #%d)", target, exc, what, self._logs.counts[what])
        return bool(progressed)

    def _field_refused(self, exc: FieldRangeError) -> None:
        """Count it; a second refusal at the same resume point asks for a snapshot instead."""
        self.refused_fields[exc.field] = self.refused_fields.get(exc.field, 0) + 1
        at = self.applier.applied_seq
        if self._refused_at == at:
            self.applier.want_snapshot = True
        self._refused_at = at

    def _channel(self, target: str) -> Any:
        opts: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", self.cfg.max_message),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.initial_reconnect_backoff_ms", int(self.cfg.reconnect_min * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(self.cfg.reconnect_max * 1000)),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self.tls is None:
            return grpc.aio.insecure_channel(target, options=opts)
        opts += channel_options(self.tls)
        return grpc.aio.secure_channel(target, channel_credentials(self.tls), options=opts)

    async def _follow_once(self, target: str) -> bool:
        """One stream; returns whether it applied anything (raises on refusal/transport errors)."""
        progressed = False
        async with self._channel(target) as channel:
            call = channel.stream_stream(FOLLOW_METHOD, request_serializer=identity,
                                         response_deserializer=identity)()
            acker = asyncio.get_running_loop().create_task(self._ack_loop(call))
            try:
                await call.write(encode_hello(self.applier.hello(self.node_id)))
                self.stats["connects"] += 1
                while True:
                    async with asyncio.timeout(self.cfg.heartbeat_timeout):
                        data = await call.read()
                    if data is grpc.aio.EOF:
                        code = await call.code()
                        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                                   details=await call.details())
                    self._handle(data)
                    progressed = True
            except BaseException as exc:
                if progressed and not isinstance(exc, asyncio.CancelledError):
                    exc.progressed = True  # type: ignore[attr-defined]
                raise
            finally:
                acker.cancel()
                call.cancel()

    def _handle(self, data: bytes) -> None:
        msg = decode_sync_message(data)
        self.applier.handle(msg)
        self._last_msg = now = asyncio.get_running_loop().time()
        self._trimmer.observe(len(self.applier.table), now)
        self.connected = True
        self.stats["messages"] += 1
        if isinstance(msg, BatchMsg) and msg.first_event_ns:
            self.lags_ms.append((time.time_ns() - msg.first_event_ns) / 1e6)
        elif isinstance(msg, HeartbeatMsg) and msg.promise_token and self.cfg.promise_ms > 0:
            self._promise(msg)
        self._ack_needed.set()

    def _promise(self, msg: HeartbeatMsg) -> None:
        """Promise not to campaign for promise_ms from now (after the receipt: never early)."""
        until = time.monotonic() + self.cfg.promise_ms / 1000.0
        until_before, epoch_before = self.promise
        if msg.epoch > epoch_before or until > until_before:
            self.promise = (until if msg.epoch > epoch_before else max(until, until_before), msg.epoch)
        self._promise_token = msg.promise_token
        if self.on_promise is not None:
            try:
                self.on_promise(*self.promise)
            except Exception:  # never let the hook break the stream
                log.exception("promise hook failed")

    async def _ack_loop(self, call: Any) -> None:
        sent: tuple[int, bool] | None = None
        try:
            while True:
                await self._ack_needed.wait()
                self._ack_needed.clear()
                now = (self.applier.applied_seq, self.in_sync)
                token, self._promise_token = self._promise_token, 0
                if token:  # the promise itself was recorded in _promise, before this ack leaves
                    await call.write(encode_ack(AckMsg(*now, token, self.cfg.promise_ms)))
                    sent = now
                elif now != sent:
                    await call.write(encode_ack(AckMsg(*now)))
                    sent = now
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError) as exc:
            log.debug("ack stream closed: %s", exc)  # the read side reports why
