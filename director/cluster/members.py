"""Cluster membership: each node's ``nodes/<id>`` record, and the master's member list.

Theory of operation
-------------------
`Membership` keeps ``nodes/<id>`` (JSON info) alive with the node's own lease and re-registers when
it is lost. `MemberPublisher` runs on the master's election thread while it is master: it watches
``nodes/`` and keeps ``leader-members`` (JSON ``{"epoch": E, "nodes": [...]}``, every registered node
but the master) equal to it, written in a transaction that holds only while the leader key is still
the master's. Before each write it tells the election machine the new *required* set, so a node
listed in etcd is always one whose promise the master waits for (static stability, docs/HA.md).
``leader-members`` is not tied to the lease: it outlives a master, so a node that joined while the
master was cut off from etcd is not listed and cannot campaign on the strength of a lease expiry.
``leader-released`` (the epoch of a master that stopped for good: its resign, or its exit hook) is
written by `release_epoch`; backups drop their promise to that master when they see it.
Both keys start with ``leader``, so the elector's watch of that prefix sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aetcd import rpc

from director.cluster.store import Backoff, EtcdError, EtcdStore, EventKind

log = logging.getLogger(__name__)


def members_key(store: EtcdStore) -> str:
    return store.leader_key + "-members"


def released_key(store: EtcdStore) -> str:
    return store.leader_key + "-released"


def parse_members(value: bytes | str) -> tuple[str, ...] | None:
    """The node ids of a ``leader-members`` value; None when it is unreadable (treated as absent)."""
    try:
        obj = json.loads(value)
        nodes = obj["nodes"]
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            return None
        return tuple(nodes)
    except (ValueError, KeyError, TypeError):
        return None


def parse_released(value: bytes | str) -> int:
    try:
        return max(0, int(json.loads(value)["epoch"]))
    except (ValueError, KeyError, TypeError):
        return 0


async def release_epoch(store: EtcdStore, epoch: int, timeout: float = 1.0) -> None:
    """Announce that the master of `epoch` stopped forwarding for good (only ever raises it)."""
    kv, _ = await store.get(released_key(store), timeout=timeout)
    if kv is not None and parse_released(kv.value) >= epoch:
        return
    await store.put(released_key(store), json.dumps({"epoch": epoch}), timeout=timeout)


class MemberPublisher:
    """While master: publish the registered nodes as ``leader-members``; see the module docstring."""

    def __init__(self, store: EtcdStore, node_id: str,
                 on_required: Callable[[frozenset[str], int], None]) -> None:
        self.store = store
        self.node_id = node_id
        self.on_required = on_required
        self.published: tuple[str, ...] | None = None

    async def run(self, lease_id: int, epoch: int) -> None:
        backoff = Backoff()
        prefix = self.store.nodes_prefix
        while True:
            try:
                kvs, rev = await self.store.get_prefix(prefix)
                ids = {kv.key[len(prefix):] for kv in kvs}
                await self._publish(ids, lease_id, epoch)
                async for batch in self.store.watch(prefix, prefix=True, start_revision=rev + 1):
                    backoff.reset()
                    for ev in batch.events:
                        node = ev.kv.key[len(prefix):]
                        if ev.kind is EventKind.PUT:
                            ids.add(node)
                        else:
                            ids.discard(node)
                    await self._publish(ids, lease_id, epoch)
            except EtcdError as err:
                delay = backoff.next()
                log.info("member list: %s; again in %.2fs", err, delay)
                await asyncio.sleep(delay)

    async def _publish(self, ids: set[str], lease_id: int, epoch: int) -> None:
        nodes = tuple(sorted(ids - {self.node_id}))
        if nodes == self.published:
            return
        self.on_required(frozenset(nodes), epoch)  # the machine first: it demands their promises now
        lk = self.store.leader_key.encode()
        compare = [rpc.Compare(key=lk, target=rpc.Compare.LEASE, result=rpc.Compare.EQUAL, lease=lease_id)]
        body = json.dumps({"epoch": epoch, "nodes": list(nodes)}).encode()
        put = [rpc.RequestOp(request_put=rpc.PutRequest(key=members_key(self.store).encode(), value=body))]
        resp = await self.store.txn(compare, put)
        if resp.succeeded:
            self.published = nodes
            log.info("member list (epoch %d): %s", epoch, ", ".join(nodes) or "-")


class Membership:
    """Keep ``nodes/<id>`` (JSON `info`) alive with the node's own lease; re-register if lost."""

    def __init__(self, store: EtcdStore, node_id: str, info: dict[str, Any], *, ttl: int = 5) -> None:
        self.store, self.node_id, self.info, self.ttl = store, node_id, info, ttl
        self.lease_id = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.connect()
        self._task = asyncio.create_task(self._run(), name=f"membership-{self.node_id}")

    async def update(self, **info: Any) -> None:
        """Change the published info (e.g. ready: true)."""
        self.info.update(info)
        if self.lease_id:
            with contextlib.suppress(EtcdError):
                await self.store.put(self.store.node_key(self.node_id), json.dumps(self.info), self.lease_id)

    async def abandon(self) -> None:
        """Stop renewing without revoking (a crash, in tests): the record lives out its TTL."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.lease_id = 0

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.lease_id:
            with contextlib.suppress(EtcdError):
                await self.store.lease_revoke(self.lease_id)
        self.lease_id = 0

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                self.lease_id, granted = await self.store.lease_grant(self.ttl)
                await self.store.put(self.store.node_key(self.node_id), json.dumps(self.info), self.lease_id)
                await self._keepalive(granted)
            except EtcdError as err:
                log.info("membership of %s: %s", self.node_id, err)
            self.lease_id = 0
            await asyncio.sleep(backoff.next())

    async def _keepalive(self, granted: int) -> None:
        """Renew every TTL/3; return when the lease is gone or could have expired."""
        last_ok = time.monotonic()
        while time.monotonic() < last_ok + granted:
            await asyncio.sleep(granted / 3)
            sent = time.monotonic()
            try:
                if await self.store.lease_keepalive(self.lease_id, timeout=granted / 3) <= 0:
                    return
                last_ok = sent
            except EtcdError:
                continue


async def members(store: EtcdStore) -> dict[str, dict[str, Any]]:
    """node id -> published info for every live member."""
    kvs, _ = await store.get_prefix(store.nodes_prefix)
    out: dict[str, dict[str, Any]] = {}
    for kv in kvs:
        with contextlib.suppress(ValueError):
            out[kv.key[len(store.nodes_prefix):]] = json.loads(kv.value)
    return out
