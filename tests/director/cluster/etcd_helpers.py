"""Helpers for tests that talk to a real etcd: polling, and a cluster of electors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from deploy.etcd import EtcdServer
from director.cluster.elector import Elector, NodeInfo
from director.cluster.store import EtcdStore

DEADLINE = 20.0


async def wait_until(pred: Callable[[], bool], timeout: float = DEADLINE, what: str = "condition") -> None:
    """Poll `pred` every 10 ms; fail if it is still false after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_async(pred: Callable[[], Awaitable[bool]], timeout: float = DEADLINE,
                     what: str = "condition") -> None:
    """Like wait_until for an async predicate (polled every 20 ms)."""
    end = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Cluster:
    """N electors on one etcd, recording who forwards and checking that never two do at once."""

    def __init__(self, server: EtcdServer, cluster: str, n: int = 3, ttl: int = 1,
                 ready: dict[str, bool] | None = None, touch: float = 0.6) -> None:
        self.touch = touch
        self.server = server
        self.forwarding: set[str] = set()
        self.overlaps: list[set[str]] = []
        self.starts: list[tuple[str, int, float]] = []
        self.stops: list[tuple[str, float]] = []
        self.ready = ready if ready is not None else {}
        self.stores = [EtcdStore(server.endpoint, prefix="lbd-test", cluster=cluster) for _ in range(n)]
        self.electors = [self._make(f"n{i}", st, ttl) for i, st in enumerate(self.stores)]

    def _make(self, node_id: str, store: EtcdStore, ttl: int) -> Elector:
        return Elector(
            store, NodeInfo(node_id, sync_addr=f"198.18.0.{len(node_id)}:7000", admin_addr="a"),
            ttl=ttl, ready=lambda: self.ready.get(node_id, True), touch=self.touch,
            on_start_forwarding=lambda epoch: self._start(node_id, epoch),
            on_stop_forwarding=lambda: self._stop(node_id),
        )

    def _start(self, node_id: str, epoch: int) -> None:
        self.forwarding.add(node_id)
        self.starts.append((node_id, epoch, time.monotonic()))
        if len(self.forwarding) > 1:
            self.overlaps.append(set(self.forwarding))

    def _stop(self, node_id: str) -> None:
        self.forwarding.discard(node_id)
        self.stops.append((node_id, time.monotonic()))

    def by_id(self, node_id: str) -> Elector:
        return next(e for e in self.electors if e.node.node_id == node_id)

    def leaders(self) -> list[Elector]:
        return [e for e in self.electors if e.is_master]

    def settled(self, among: list[Elector] | None = None) -> bool:
        """Exactly one leader, and every other elector in `among` knows its record."""
        group = among if among is not None else self.electors
        ls = [e for e in group if e.is_master]
        if len(ls) != 1 or ls[0].epoch == 0:
            return False
        return all(e.master is not None and e.master.node_id == ls[0].node.node_id
                   and e.epoch == ls[0].epoch for e in group)

    async def start(self) -> None:
        for e in self.electors:
            await e.start()

    async def kill(self, e: Elector) -> None:
        """Crash: no revoke, no callback; the process would be gone, so it forwards no more."""
        await e.kill()
        self.forwarding.discard(e.node.node_id)

    async def close(self) -> None:
        for e in self.electors:
            await e.stop()
        for st in self.stores:
            await st.close()
