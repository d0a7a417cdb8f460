"""The sync service over gRPC (grpc.aio): Follow streams, acks, serving state, limits, status.

Theory of operation
-------------------
``create_sync_server`` builds a ``grpc.aio`` server (TLS/mTLS when given files) with one
generic handler for ``lbd.sync.v1.Sync/Follow`` whose (de)serializers move raw bytes: batches are
encoded once by the master and written as-is to every backup, and parsing happens in convert.py
where garbage is caught and answered with a status instead of an exception in gRPC internals.

Every node runs the server; only the master serves: ``start_serving()`` starts a new master
incarnation on the table's event feed, ``stop_serving()`` ends it and closes every stream
(UNAVAILABLE); a backup answers Follow with FAILED_PRECONDITION.

*Admission* (so idle or unauthenticated streams cannot lock a real backup out):

* Follow attempts are rate-limited per peer host (token bucket);
* a stream must say hello within ``hello_timeout`` and a host may have at most
  ``max_pending_per_host`` streams waiting to say it;
* sessions are capped per host (``max_backups_per_host``) and in all (``max_backups``). When a cap
  is reached, the oldest session that has never acknowledged anything although it had
  ``hello_timeout`` to do so (an idle squatter: a real backup acks right after its first message)
  is evicted for the newcomer; otherwise the newcomer is refused (RESOURCE_EXHAUSTED);
* backup messages are capped in size (gRPC limit), acks are rate-limited per stream and an ack
  beyond what was sent ends the stream.

A backup's first message must be a hello of a known version (else INVALID_ARGUMENT /
FAILED_PRECONDITION); later messages are acks. Every refusal is counted in ``refused`` (by kind)
and logged rate-limited (the 1st, 2nd, 4th, 8th... of each kind, with the count).

Status codes: FAILED_PRECONDITION = not master or unknown version; INVALID_ARGUMENT = undecodable
or out-of-order backup message; RESOURCE_EXHAUSTED = limits; UNAVAILABLE = master stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from director.services.service import ServiceTable
from director.types import Clock
from syncd.convert import decode_backup_message, identity
from syncd.master import MasterConfig, SyncMaster
from syncd.model import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    AckMsg,
    FollowHello,
    LogLimiter,
    ProtocolError,
    TableLike,
)
from syncd.policy import TokenBucket
from syncd.session import BackupSession
from syncd.tls import TlsFilesLike, server_credentials

log = logging.getLogger(__name__)

SERVICE = "lbd.sync.v1.Sync"
FOLLOW_METHOD = f"/{SERVICE}/Follow"


@dataclass
class ServerConfig:
    max_send_message: int = 16 << 20
    max_backup_message: int = 64 << 10
    follow_rate: float = 10.0
    """Follow attempts per second per peer host, with `follow_burst` saved."""
    follow_burst: float = 20.0
    max_backups: int = 64
    max_backups_per_host: int = 4
    max_pending_per_host: int = 8
    """Streams of one host that have not said hello yet."""
    ack_rate: float = 5000.0
    ack_burst: float = 10000.0
    hello_timeout: float = 3.0
    """Seconds a stream has to say hello, and a session to send its first ack before it may be evicted."""
    master: MasterConfig = field(default_factory=MasterConfig)


class BackupStatus(NamedTuple):
    node_id: str
    peer: str
    state: str
    """"snapshot" while a snapshot is being sent, else "live"."""
    in_sync: bool
    sent_seq: int
    acked_seq: int
    lag_seqs: int
    lag_ms: float
    snapshots: int
    connected_at: float


class SyncServer:
    """One node's sync endpoint; master role toggled with start_serving / stop_serving."""

    def __init__(self, table: TableLike, services: ServiceTable | None = None, epoch: int = 0, *,
                 clock: Clock | None = None, cfg: ServerConfig | None = None) -> None:
        self.cfg = cfg or ServerConfig()
        self.table = table
        self.services = services
        clk: Clock = clock or getattr(table, "clock", None) or table._clock  # type: ignore[attr-defined]
        self.master = SyncMaster(table, clk, epoch, self.cfg.master)
        self.grpc_server: Any = None
        self.port = 0
        self._follow_rates: dict[str, TokenBucket] = {}
        self._pending: dict[str, int] = {}
        self.sessions: set[BackupSession] = set()
        self._logs = LogLimiter()
        self.refused: dict[str, int] = {}

    # --- role ------------------------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        return self.master.running

    @property
    def epoch(self) -> int:
        return self.master.epoch

    def set_epoch(self, epoch: int) -> None:
        self.master.set_epoch(epoch)

    def start_serving(self) -> None:
        """Become the sync master (call from the loop; the table's events are consumed from now)."""
        self.master.start()

    def stop_serving(self) -> None:
        """Stop being master: close every backup stream, stop consuming the table's events."""
        self.master.stop()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Send what is pending now and wait until every backup acked it (graceful handover)."""
        return await self.master.flush(timeout)

    def promises(self) -> dict[str, float]:
        """node id -> monotonic time until which that backup promised not to campaign (master's view;
        only backups with a live stream: a closed stream's promise is void here at once)."""
        out: dict[str, float] = {}
        for s in self.sessions:
            if not s.closed:
                out[s.node_id] = max(out.get(s.node_id, 0.0), s.promise_until)
        return out

    def backups(self) -> list[BackupStatus]:
        head = self.master.head_seq
        out = []
        for s in self.sessions:
            out.append(BackupStatus(
                s.node_id, s.peer, "snapshot" if s.in_snapshot or s.needs_snapshot else "live", s.in_sync,
                s.sent_seq, s.acked_seq, max(0, head - s.acked_seq), s.lag_seconds() * 1000.0, s.snapshots,
                s.connected_at))
        return sorted(out, key=lambda f: f.node_id)

    async def stop(self, grace: float | None = 0.5) -> None:
        self.stop_serving()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)

    # --- gRPC ------------------------------------------------------------------------------------

    def handler(self) -> grpc.GenericRpcHandler:
        follow = grpc.stream_stream_rpc_method_handler(
            self._follow, request_deserializer=identity, response_serializer=identity)
        return grpc.method_handlers_generic_handler(SERVICE, {"Follow": follow})

    def _follow_bucket(self, host: str) -> TokenBucket:
        """Per-host Follow rate limit: a flood from one host does not lock the others out."""
        bucket = self._follow_rates.get(host)
        if bucket is None:
            if len(self._follow_rates) >= 4096:
                self._follow_rates.pop(next(iter(self._follow_rates)))
            bucket = self._follow_rates[host] = TokenBucket(self.cfg.follow_rate, self.cfg.follow_burst)
        return bucket

    def _refuse(self, what: str, peer: str, detail: str) -> None:
        self.refused[what] = self.refused.get(what, 0) + 1
        if self._logs.should_log(what):
            log.warning("sync: refused %s from %s: %s (#%d)", what, peer, detail, self.refused[what])

    async def _follow(self, request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        peer = context.peer()
        host = peer_host(peer)
        if not self._follow_bucket(host).take(time.monotonic()):
            self._refuse("follow_rate", peer, "Follow rate limit")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "Follow rate limit exceeded")
        if not self.master.running:
            self._refuse("not_master", peer, "this node is not the sync master")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not the sync master")
        hello = await self._pending_hello(request_iterator, context, peer, host)
        if not self._admit(host, peer):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many backups")
        session = BackupSession(self.master, hello, peer)
        self.sessions.add(session)
        self.master.sessions.add(session)
        reader = asyncio.get_running_loop().create_task(self._read_acks(request_iterator, session))
        try:
            async for data in session.stream():
                yield data
        finally:
            reader.cancel()
            self._drop(session)
            self.master.acked()
        log.info("backup %s (%s) stream ended: %s", session.node_id, peer, session.close_reason)
        if session.close_kind == "gone" or context.cancelled():
            return  # nobody left to tell
        code = _CLOSE_CODES.get(session.close_kind, grpc.StatusCode.UNAVAILABLE)
        await context.abort(code, session.close_reason)

    def _drop(self, session: BackupSession) -> None:
        self.sessions.discard(session)
        self.master.sessions.discard(session)

    async def _pending_hello(self, request_iterator: AsyncIterator[bytes], context: Any, peer: str,
                             host: str) -> FollowHello:
        """The hello, within ``hello_timeout``, counting this stream among its host's pending ones."""
        if self._pending.get(host, 0) >= self.cfg.max_pending_per_host:
            self._refuse("pending", peer, "too many streams without hello from this host")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many streams without hello")
        self._pending[host] = self._pending.get(host, 0) + 1
        try:
            return await self._hello(request_iterator, context, peer)
        finally:
            left = self._pending[host] - 1
            if left:
                self._pending[host] = left
            else:
                del self._pending[host]

    def _admit(self, host: str, peer: str) -> bool:
        """Room for one more session of `host`, evicting an idle squatter if a cap is reached."""
        now = time.monotonic()
        return (self._room([s for s in self.sessions if s.host == host], self.cfg.max_backups_per_host,
                           "max_backups_per_host", peer, now)
                and self._room(list(self.sessions), self.cfg.max_backups, "max_backups", peer, now))

    def _room(self, scope: list[BackupSession], cap: int, what: str, peer: str, now: float) -> bool:
        if len(scope) < cap:
            return True
        victim = self._squatter(scope, now)
        if victim is None:
            self._refuse(what, peer, f"{len(scope)} sessions, none evictable")
            return False
        idle_for = now - victim.connected_mono
        self._refuse("evicted", victim.peer, f"no ack in {idle_for:.1f} s, room for {peer}")
        victim.close("evicted: never acknowledged", "rate")
        self._drop(victim)
        return True

    def _squatter(self, sessions: list[BackupSession], now: float) -> BackupSession | None:
        """The oldest session that never acked although it had ``hello_timeout`` to."""
        idle = [s for s in sessions if s.acks == 0 and now - s.connected_mono >= self.cfg.hello_timeout]
        return min(idle, key=lambda s: s.connected_mono) if idle else None

    async def _hello(self, request_iterator: AsyncIterator[bytes], context: Any, peer: str) -> FollowHello:
        try:
            async with asyncio.timeout(self.cfg.hello_timeout):
                data = await anext(request_iterator)
            msg = decode_backup_message(data)
        except (StopAsyncIteration, TimeoutError):
            self._refuse("no_hello", peer, "no hello")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected a hello")
            raise AssertionError("unreachable") from None
        except ProtocolError as exc:
            self._refuse("garbage", peer, str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        if not isinstance(msg, FollowHello):
            self._refuse("no_hello", peer, "first message is not a hello")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be a hello")
            raise AssertionError("unreachable")
        if msg.version not in SUPPORTED_VERSIONS:
            self._refuse("version", peer, f"version {msg.version}")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"unsupported sync version {msg.version} (speaking {PROTOCOL_VERSION})")
        if not msg.node_id or len(msg.node_id) > 256:
            self._refuse("bad_hello", peer, "node id")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_id must be 1..256 characters")
        return msg

    async def _read_acks(self, request_iterator: AsyncIterator[bytes], session: BackupSession) -> None:
        bucket = TokenBucket(self.cfg.ack_rate, self.cfg.ack_burst)
        try:
            async for data in request_iterator:
                try:
                    msg = decode_backup_message(data)
                except ProtocolError as exc:
                    self._refuse("garbage", session.peer, str(exc))
                    session.close(f"undecodable backup message: {exc}", "bad_input")
                    return
                if not isinstance(msg, AckMsg):
                    self._refuse("bad_ack", session.peer, "hello after hello")
                    session.close("unexpected hello", "bad_input")
                    return
                if not bucket.take(time.monotonic()):
                    self._refuse("ack_rate", session.peer, "ack rate limit")
                    session.close("ack rate limit exceeded", "rate")
                    return
                if not session.on_ack(msg):
                    self._refuse("ack_beyond_sent", session.peer,
                                 f"acked seq {msg.applied_seq} beyond sent {session.sent_seq}")
                    session.close("ack beyond what was sent", "bad_input")
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the backup went away (stream reset, cancelled)
            log.debug("backup %s ack stream: %s", session.node_id, exc)
        session.close("backup closed its stream", "gone")


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string ("ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4")."""
    return peer.rsplit(":", 1)[0]


_CLOSE_CODES = {
    "bad_input": grpc.StatusCode.INVALID_ARGUMENT,
    "rate": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "stopped": grpc.StatusCode.UNAVAILABLE,
}


def server_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_backup_message),
        ("grpc.max_send_message_length", cfg.max_send_message),
        ("grpc.max_concurrent_streams", cfg.max_backups + 8),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


async def create_sync_server(addr: str, table: TableLike, services: ServiceTable | None = None,
                             epoch: int = 0, tls: TlsFilesLike | None = None, *, clock: Clock | None = None,
                             cfg: ServerConfig | None = None) -> tuple[SyncServer, int]:
    """Build and start the gRPC server on `addr` ("host:port", port 0 = any); not serving yet."""
    sync = SyncServer(table, services, epoch, clock=clock, cfg=cfg)
    server = grpc.aio.server(options=server_options(sync.cfg))
    server.add_generic_rpc_handlers((sync.handler(),))
    if tls is not None:
        port = server.add_secure_port(addr, server_credentials(tls))
    else:
        port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"cannot listen on {addr}")
    await server.start()
    sync.grpc_server = server
    sync.port = port
    log.info("sync server on %s (port %d, %s)", addr, port, "mTLS" if tls is not None else "plaintext")
    return sync, port
