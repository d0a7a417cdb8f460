"""etcd access for the cluster: key layout, config text, raw lease/txn/watch calls.

Theory of operation
-------------------
Everything the cluster keeps in etcd lives under ``/<prefix>/<cluster>/``::

    config/services/<name>   one virtual service, YAML text (director.config.services parses it)
    config/timeouts          protocol timeouts, YAML text
    leader                   the master's record (JSON), held with the master's lease
    nodes/<id>               membership record (JSON), held with the node's own lease

`EtcdStore` talks to etcd through the generated etcd v3 API shipped with aetcd
(``aetcd.rpc``: stubs and messages) on one grpc.aio channel whose reconnect backoff is
200 ms - 1 s.  We use the stubs directly rather than `aetcd.Client` because every call
here needs its own deadline (a keepalive must give up before the lease could expire) and
because aetcd's watcher neither resumes after an etcd restart nor shows the revision
boundaries of a watch response.  Every call raises `EtcdError` subclasses only.

The config layer is text-based on purpose: values are YAML strings, validation belongs to
`director.config.services` (and `director.config.watch` turns this watch into validated updates).
Keys and values are decoded with ``surrogateescape``: bytes that are not UTF-8 are neither fatal
here nor silently "repaired", the config loader refuses them by name.
`read_config()` returns all config with the revision it was read at;
`watch_config()` yields a fresh `ConfigSnapshot` after each change, re-watching from the
last revision + 1 after any error (etcd restart, timeout) and re-reading everything when
the revision was compacted, so a consumer never misses a change and never needs to know.
Config writes are linearizable. `update_config(store, edit)` reads a snapshot, computes
``edit(snapshot)`` (a `ConfigEdit`: puts, deletes, timeouts) and commits it in one transaction
that is a compare-and-swap on that snapshot (`EtcdStore.commit`): it fails if any config key was
created or modified after the snapshot's revision, or if a key the edit touches was deleted since;
then it reads again and re-applies the *intent* (calls `edit` on the fresh snapshot). A write
computed from a stale read therefore never reverts or resurrects another writer's change.
`apply()` is that for "make etcd hold these texts"; with ``prune`` it deletes what the operator's
file dropped relative to ``base_revision`` (the revision they diffed against), never a service
another writer added since.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import Any

import grpc
from aetcd import rpc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
RECONNECT_MIN = 0.2
RECONNECT_MAX = 1.0
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", int(RECONNECT_MIN * 1000)),
    ("grpc.min_reconnect_backoff_ms", int(RECONNECT_MIN * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(RECONNECT_MAX * 1000)),
    # etcd refuses client pings more often than --grpc-keepalive-min-time (5 s default)
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
)


# ---------------------------------------------------------------------------- errors
class EtcdError(Exception):
    """Any failure talking to etcd.

    EtcdError
     +-- EtcdUnavailable   cannot reach etcd, or the deadline passed (retry later)
     +-- EtcdCompacted     a watch asked for a revision etcd has compacted away
     +-- EtcdConflict      an optimistic transaction kept losing its race
    """


class EtcdUnavailable(EtcdError):
    pass


class EtcdCompacted(EtcdError):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted below {compact_revision}")
        self.compact_revision = compact_revision


class EtcdConflict(EtcdError):
    pass


_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}


def _wrap(err: grpc.aio.AioRpcError) -> EtcdError:
    cls = EtcdUnavailable if err.code() in _UNAVAILABLE else EtcdError
    return cls(f"{err.code().name}: {err.details()}")


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KV:
        return cls(kv.key.decode("utf-8", "surrogateescape"), bytes(kv.value), kv.create_revision,
                   kv.mod_revision, kv.version, kv.lease)


class EventKind(Enum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True)
class WatchEvent:
    kind: EventKind
    kv: KV


@dataclass(frozen=True)
class WatchBatch:
    """One watch response: events in revision order, and the store revision it saw."""

    header_revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True)
class ConfigSnapshot:
    """All config text at one revision: service name -> YAML, timeouts YAML or None."""

    revision: int
    services: Mapping[str, str] = field(default_factory=dict)
    timeouts: str | None = None

    def same_config(self, other: ConfigSnapshot) -> bool:
        return dict(self.services) == dict(other.services) and self.timeouts == other.timeouts


class Backoff:
    """Doubling delay with jitter between `lo` and `hi` seconds."""

    def __init__(self, lo: float = RECONNECT_MIN, hi: float = RECONNECT_MAX) -> None:
        self.lo, self.hi = lo, hi
        self._cur = lo

    def reset(self) -> None:
        self._cur = self.lo

    def next(self) -> float:
        delay = self._cur * random.uniform(0.8, 1.2)
        self._cur = min(self.hi, self._cur * 2)
        return min(self.hi, delay)


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) cover every key starting with prefix."""
    b = bytearray(prefix)
    for i in reversed(range(len(b))):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


def _target(endpoints: str | Sequence[str]) -> str:
    eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    eps = [e.removeprefix("http://").removeprefix("https://") for e in eps]
    if not eps:
        raise ValueError("no etcd endpoints")
    return eps[0] if len(eps) == 1 else "ipv4:" + ",".join(eps)


# ---------------------------------------------------------------------------- the store
class EtcdStore:
    """One connection to etcd plus this cluster's key layout."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        prefix: str = "lbd",
        cluster: str = "default",
        timeout: float = DEFAULT_TIMEOUT,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = _target(endpoints)
        self.credentials = credentials  # TLS: grpc.ssl_channel_credentials(ca, key, cert)
        self.timeout = timeout
        self.root = f"/{prefix.strip('/')}/{cluster}"
        self.config_prefix = f"{self.root}/config/"
        self.services_prefix = f"{self.root}/config/services/"
        self.timeouts_key = f"{self.root}/config/timeouts"
        self.leader_key = f"{self.root}/leader"
        self.nodes_prefix = f"{self.root}/nodes/"
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch: Any = None

    def service_key(self, name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"bad service name {name!r}")
        return self.services_prefix + name

    def node_key(self, node_id: str) -> str:
        return self.nodes_prefix + node_id

    # -- connection ------------------------------------------------------------------
    async def connect(self) -> None:
        if self._channel is not None:
            return
        if self.credentials is not None:
            self._channel = grpc.aio.secure_channel(self.target, self.credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None

    async def __aenter__(self) -> EtcdStore:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _dl(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # -- KV --------------------------------------------------------------------------
    async def get(self, key: str, timeout: float | None = None) -> tuple[KV | None, int]:
        """The key (or None) and the store revision of the read."""
        req = rpc.RangeRequest(key=_b(key))
        resp = await self._call(self._kv.Range, req, timeout)
        kv = KV.from_pb(resp.kvs[0]) if resp.kvs else None
        return kv, int(resp.header.revision)

    async def get_prefix(self, prefix: str, timeout: float | None = None, *, revision: int = 0
                         ) -> tuple[list[KV], int]:
        """Every key under `prefix` (at `revision`, 0: now) and the revision of the read."""
        p = _b(prefix)
        req = rpc.RangeRequest(key=p, range_end=prefix_end(p), revision=revision)
        resp = await self._call(self._kv.Range, req, timeout)
        return [KV.from_pb(kv) for kv in resp.kvs], int(resp.header.revision)

    async def put(self, key: str, value: bytes | str, lease: int = 0, timeout: float | None = None) -> int:
        val = _b(value) if isinstance(value, str) else value
        resp = await self._call(self._kv.Put, rpc.PutRequest(key=_b(key), value=val, lease=lease),
                                timeout)
        return int(resp.header.revision)

    async def delete(self, key: str, timeout: float | None = None) -> int:
        resp = await self._call(self._kv.DeleteRange, rpc.DeleteRangeRequest(key=_b(key)), timeout)
        return int(resp.header.revision)

    async def txn(self, compare: Sequence[Any], success: Sequence[Any], failure: Sequence[Any] = (),
                  timeout: float | None = None) -> Any:
        """Raw transaction with `rpc.Compare` / `rpc.RequestOp` lists; returns the TxnResponse."""
        req = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self._call(self._kv.Txn, req, timeout)

    async def compact(self, revision: int, timeout: float | None = None) -> None:
        """Discard history before `revision` (watches from older revisions get EtcdCompacted)."""
        await self._call(self._kv.Compact, rpc.CompactionRequest(revision=revision, physical=True), timeout)

    # -- leases ----------------------------------------------------------------------
    async def lease_grant(self, ttl: int, timeout: float | None = None) -> tuple[int, int]:
        """Grant a lease; returns (id, granted TTL) -- etcd may round the TTL up."""
        resp = await self._call(self._lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl), timeout)
        if resp.error:
            raise EtcdError(resp.error)
        return int(resp.ID), int(resp.TTL)

    async def lease_revoke(self, lease_id: int, timeout: float | None = None) -> None:
        try:
            await self._call(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id), timeout)
        except EtcdError as err:
            if "not found" not in str(err):
                raise

    async def lease_keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        """One keepalive round trip; returns the new TTL (0: the lease no longer exists)."""
        if self._lease is None:
            raise EtcdUnavailable("not connected")
        call = self._lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                                          timeout=self._dl(timeout))
        try:
            async for resp in call:
                return int(resp.TTL)
        except grpc.aio.AioRpcError as err:
            raise _wrap(err) from None
        finally:
            call.cancel()
        raise EtcdUnavailable("keepalive stream closed without a reply")

    async def lease_ttl(self, lease_id: int, timeout: float | None = None) -> tuple[int, int]:
        """(remaining TTL, granted TTL); remaining -1 when the lease is gone."""
        resp = await self._call(self._lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=lease_id),
                                timeout)
        return int(resp.TTL), int(resp.grantedTTL)

    async def _call(self, method: Any, req: Any, timeout: float | None) -> Any:
        if self._channel is None:
            raise EtcdUnavailable("not connected")
        try:
            return await method(req, timeout=self._dl(timeout))
        except grpc.aio.AioRpcError as err:
            raise _wrap(err) from None

    # -- watch -----------------------------------------------------------------------
    async def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0
                    ) -> AsyncIterator[WatchBatch]:
        """Raw watch: yields batches until an error, which it raises (no resume here).

        The first batch is the (empty) "created" confirmation, so a caller knows the watch
        is in place.  Raises EtcdCompacted if `start_revision` is compacted.
        """
        if self._watch is None:
            raise EtcdUnavailable("not connected")
        k = _b(key)
        create = rpc.WatchCreateRequest(key=k, range_end=prefix_end(k) if prefix else b"",
                                        start_revision=start_revision)
        done = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield rpc.WatchRequest(create_request=create)
            await done.wait()

        call = self._watch.Watch(requests())
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise EtcdCompacted(int(resp.compact_revision))
                if resp.canceled:
                    raise EtcdUnavailable(f"watch canceled: {resp.cancel_reason}")
                yield _batch(resp)
        except grpc.aio.AioRpcError as err:
            raise _wrap(err) from None
        finally:
            done.set()
            call.cancel()
        raise EtcdUnavailable("watch stream ended")

    # -- config ----------------------------------------------------------------------
    async def read_config(self, timeout: float | None = None, *, revision: int = 0) -> ConfigSnapshot:
        """All config now, or as it was at `revision` (EtcdCompacted if etcd no longer has it)."""
        try:
            kvs, rev = await self.get_prefix(self.config_prefix, timeout, revision=revision)
        except EtcdError as err:
            if revision and "compacted" in str(err):
                raise EtcdCompacted(revision) from None
            raise
        return self._snapshot_from(kvs, revision or rev)

    def _snapshot_from(self, kvs: Iterable[KV], rev: int) -> ConfigSnapshot:
        services: dict[str, str] = {}
        timeouts: str | None = None
        for kv in kvs:
            if kv.key == self.timeouts_key:
                timeouts = _text(kv.value)
            elif kv.key.startswith(self.services_prefix):
                services[kv.key[len(self.services_prefix):]] = _text(kv.value)
        return ConfigSnapshot(rev, services, timeouts)

    def _apply_events(self, snap: ConfigSnapshot, events: Iterable[WatchEvent]) -> ConfigSnapshot:
        services = dict(snap.services)
        timeouts, rev = snap.timeouts, snap.revision
        for ev in events:
            rev = max(rev, ev.kv.mod_revision)
            text = _text(ev.kv.value) if ev.kind is EventKind.PUT else None
            if ev.kv.key == self.timeouts_key:
                timeouts = text
            elif ev.kv.key.startswith(self.services_prefix):
                name = ev.kv.key[len(self.services_prefix):]
                if text is None:
                    services.pop(name, None)
                else:
                    services[name] = text
        return ConfigSnapshot(rev, services, timeouts)

    async def watch_config(self, snapshot: ConfigSnapshot | None = None) -> AsyncIterator[ConfigSnapshot]:
        """Yield the config now (unless `snapshot` is given), then after every change. Never ends.

        Survives etcd restarts and outages (re-watch from last revision + 1 with backoff)
        and compaction (re-read everything; yields only if the config differs).
        """
        backoff = Backoff()
        if snapshot is None:
            snapshot = await self._retry(self.read_config, backoff)
            yield snapshot
        while True:
            try:
                async for batch in self.watch(self.config_prefix, prefix=True,
                                              start_revision=snapshot.revision + 1):
                    backoff.reset()
                    if not batch.events:
                        continue
                    snapshot = self._apply_events(snapshot, batch.events)
                    yield snapshot
            except EtcdCompacted as err:
                log.warning("config watch: %s; re-reading all config", err)
                fresh = await self._retry(self.read_config, backoff)
                changed = not fresh.same_config(snapshot)
                snapshot = fresh
                if changed:
                    yield snapshot
            except EtcdError as err:
                delay = backoff.next()
                log.info("config watch interrupted (%s); re-watching from %d in %.2fs",
                         err, snapshot.revision + 1, delay)
                await asyncio.sleep(delay)

    async def _retry(self, fn: Any, backoff: Backoff) -> Any:
        while True:
            try:
                return await fn()
            except EtcdError as err:
                delay = backoff.next()
                log.info("etcd: %s; retrying in %.2fs", err, delay)
                await asyncio.sleep(delay)

    async def put_services(self, put: Mapping[str, str], delete: Iterable[str] = (),
                           timeouts: str | None = None, *, guard_revision: int | None = None) -> int:
        """One unconditional txn: put services (and timeouts if given), delete others; its revision.

        With `guard_revision`, only if no config key was created or modified after it (EtcdConflict).
        Prefer `commit` / `update_config`, which also notice a touched key deleted concurrently."""
        base = None if guard_revision is None else ConfigSnapshot(guard_revision)
        return await self.commit(ConfigEdit(put, tuple(delete), timeouts), base)

    async def commit(self, edit: ConfigEdit, base: ConfigSnapshot | None) -> int:
        """Write `edit` in one txn, as a compare-and-swap on `base` (the snapshot it was computed
        from; None: unconditional). Returns the txn's revision; EtcdConflict if any config key was
        created or modified after ``base.revision``, or a key the edit touches that `base` had is gone."""
        ops = [_put_op(self.service_key(n), text) for n, text in edit.put.items()]
        ops += [_del_op(self.service_key(n)) for n in edit.delete]
        if edit.timeouts is not None:
            ops.append(_put_op(self.timeouts_key, edit.timeouts))
        compare = []
        if base is not None:
            p = _b(self.config_prefix)
            compare.append(rpc.Compare(key=p, range_end=prefix_end(p), target=rpc.Compare.MOD,
                                       result=rpc.Compare.LESS, mod_revision=base.revision + 1))
            had = [self.service_key(n) for n in (*edit.put, *edit.delete) if n in base.services]
            if edit.timeouts is not None and base.timeouts is not None:
                had.append(self.timeouts_key)
            compare += [rpc.Compare(key=_b(k), target=rpc.Compare.VERSION, result=rpc.Compare.GREATER,
                                    version=0) for k in had]
        resp = await self.txn(compare, ops)
        if not resp.succeeded:
            raise EtcdConflict(f"config changed after revision {base.revision if base else 0}")
        return int(resp.header.revision)


@dataclass(frozen=True)
class ConfigEdit:
    """A change to the config texts: services to put (name -> YAML) and delete, timeouts (None: keep)."""

    put: Mapping[str, str] = field(default_factory=dict)
    delete: Sequence[str] = ()
    timeouts: str | None = None

    def against(self, snap: ConfigSnapshot) -> ConfigEdit:
        """Only what changes `snap`: no identical puts, no deletes of absent services."""
        gone = sorted(n for n in set(self.delete) if n in snap.services and n not in self.put)
        return ConfigEdit({n: t for n, t in self.put.items() if snap.services.get(n) != t}, tuple(gone),
                          None if self.timeouts == snap.timeouts else self.timeouts)

    def __bool__(self) -> bool:
        return bool(self.put or self.delete or self.timeouts is not None)


def _b(text: str) -> bytes:
    """Keys and values as bytes; the inverse of reading them with ``surrogateescape``."""
    return text.encode("utf-8", "surrogateescape")


def _text(value: bytes) -> str:
    """A config value as text. Bytes that are not UTF-8 survive as lone surrogates
    (``surrogateescape``), which the config loader refuses by name instead of guessing."""
    return value.decode("utf-8", "surrogateescape")


def _put_op(key: str, value: str | bytes, lease: int = 0) -> Any:
    val = _b(value) if isinstance(value, str) else value
    return rpc.RequestOp(request_put=rpc.PutRequest(key=_b(key), value=val, lease=lease))


def _del_op(key: str) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=_b(key)))


def _batch(resp: Any) -> WatchBatch:
    events = tuple(
        WatchEvent(EventKind.DELETE if ev.type == rpc.Event.DELETE else EventKind.PUT, KV.from_pb(ev.kv))
        for ev in resp.events
    )
    return WatchBatch(int(resp.header.revision), events)


async def update_config(store: EtcdStore, edit: Callable[[ConfigSnapshot], ConfigEdit], *,
                        attempts: int = 30, offload: bool = False) -> int:
    """Read-modify-write of the config, linearizable: read a snapshot, compute ``edit(snapshot)``,
    commit it as a compare-and-swap on that snapshot; when another write got in between, read
    again and re-apply the *intent* (call `edit` on the fresh snapshot), with jittered backoff.

    `edit` must be a pure function of the snapshot (it may raise to refuse, e.g. ConfigError or
    NotFound; that propagates). With `offload` it runs in a worker thread (it may parse and
    validate the whole config). Returns the revision that holds the result (the read's revision
    when there was nothing to change); EtcdConflict after `attempts` lost races.
    """
    backoff = Backoff(0.005, 0.25)
    for _ in range(attempts):
        snap = await store.read_config()
        change = (await asyncio.to_thread(edit, snap) if offload else edit(snap)).against(snap)
        if not change:
            return snap.revision
        try:
            rev = await store.commit(change, snap)
        except EtcdConflict:
            await asyncio.sleep(backoff.next())
            continue
        log.info("config written at revision %d (read at %d): %d put, %d deleted%s", rev, snap.revision,
                 len(change.put), len(change.delete), ", timeouts" if change.timeouts is not None else "")
        return rev
    raise EtcdConflict(f"config kept changing; gave up after {attempts} attempts")


async def apply(store: EtcdStore, services: Mapping[str, str], timeouts: str | None, prune: bool,
                attempts: int = 30, *, base_revision: int | None = None) -> int:
    """Make etcd hold `services` (name -> YAML text) and `timeouts` (None: leave as is), linearizably.

    Unchanged services are not rewritten (no spurious watch events). With `prune`, services
    missing from `services` are deleted: those etcd had at `base_revision` (the revision the
    operator diffed against), so a service another writer added since is kept; without
    `base_revision`, those of the fresh read. Returns the revision the config is at afterwards.
    """
    dropped: set[str] | None = None
    if prune and base_revision is not None:
        dropped = set((await store.read_config(revision=base_revision)).services) - set(services)

    def edit(snap: ConfigSnapshot) -> ConfigEdit:
        gone = (dropped if dropped is not None else set(snap.services) - set(services)) if prune else ()
        return ConfigEdit(dict(services), tuple(gone), timeouts)

    return await update_config(store, edit, attempts=attempts)
