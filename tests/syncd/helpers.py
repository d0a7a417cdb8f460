"""Shared helpers for the syncd tests: fake clock, services, a master and backups on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import Conn, ConnTable
from director.types import LOCAL_CONN_FLAGS, ConnFlags, Proto
from syncd.backup import BackupConfig, SyncBackup
from syncd.master import MasterConfig
from syncd.server import ServerConfig, SyncServer, create_sync_server

T = TypeVar("T")

VIP = int(ipaddress.IPv4Address("198.18.0.10"))
RIPS = [int(ipaddress.IPv4Address(f"198.18.1.{i}")) for i in range(1, 5)]
CLIENT_NET = int(ipaddress.IPv4Address("198.19.0.0"))


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class StubSched:
    name = "stub"

    def update(self, dests: Sequence[Dest]) -> None:
        pass

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        return dests[0] if dests else None


def make_services(rips: Sequence[int] = RIPS, port: int = 80) -> ServiceTable:
    services = ServiceTable()
    svc = VirtualService(int(Proto.TCP), VIP, port, StubSched())
    for rip in rips:
        svc.add_dest(Dest(svc, rip, 8080))
    services.add(svc)
    return services


def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `cond` every few ms until it holds; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def entry_view(c: Conn) -> tuple[Any, ...]:
    """What must be equal between master and backup for one entry (timers compared separately).

    INACTIVE of an unbound conn is history-dependent (set_state only moves it while bound) and
    means nothing without a dest, so it is not compared.
    """
    timeout = c.timeout
    flags = c.flags & ~int(LOCAL_CONN_FLAGS)
    if c.dest is None:
        flags &= ~int(ConnFlags.INACTIVE)
    return (c.key, flags, c.state, timeout,
            c.dest.key if c.dest is not None else None,
            c.control.key if c.control is not None else None, c.n_control)


def table_view(table: ConnTable) -> dict[Any, tuple[Any, ...]]:
    return {c.key: entry_view(c) for c in table}


def expires_view(table: ConnTable, now: float) -> dict[Any, float]:
    return {c.key: c.expires - now for c in table}


def dest_counters(services: ServiceTable) -> dict[Any, tuple[int, int, int]]:
    return {d.key: (d.activeconns, d.inactconns, d.persistconns) for svc in services for d in svc.dests}


class Cluster:
    """One master and N backups in this process, over real gRPC on 127.0.0.1."""

    def __init__(self, clock: Callable[[], float] | None = None, master_cfg: MasterConfig | None = None,
                 backup_cfg: BackupConfig | None = None, epoch: int = 1, tls: Any = None,
                 event_capacity: int = 65536) -> None:
        self.clock = clock or time.monotonic
        self.master_cfg = master_cfg or MasterConfig()
        self.backup_cfg = backup_cfg or BackupConfig(reconnect_min=0.05, reconnect_max=0.2)
        self.epoch = epoch
        self.tls = tls
        self.services = make_services()
        self.table = ConnTable(self.clock, event_capacity=event_capacity)
        self.server: SyncServer
        self.port = 0
        self.backups: list[SyncBackup] = []
        self.backup_tables: list[ConnTable] = []
        self.backup_services: list[ServiceTable] = []

    async def start(self, n_followers: int = 1, serve: bool = True) -> None:
        self.server, self.port = await create_sync_server(
            "127.0.0.1:0", self.table, self.services, self.epoch, tls=self.tls, clock=self.clock,
            cfg=ServerConfig(master=self.master_cfg))
        if serve:
            self.server.start_serving()
        for i in range(n_followers):
            self.add_backup(f"b{i}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add_backup(self, node_id: str, services: ServiceTable | None = None,
                     tls: Any = "cluster") -> SyncBackup:
        table = ConnTable(self.clock)
        svcs = services if services is not None else make_services()
        f = SyncBackup(self.target, node_id, table, svcs, tls=self.tls if tls == "cluster" else tls,
                     cfg=self.backup_cfg)
        f.start()
        self.backups.append(f)
        self.backup_tables.append(table)
        self.backup_services.append(svcs)
        return f

    async def synced(self, timeout: float = 30.0) -> None:
        """Wait until every backup is in sync and has applied the master's head."""
        self.server.master.run_refresh()
        self.server.master.cut_batch()
        head = self.server.master.head_seq
        await wait_until(lambda: all(f.in_sync and f.applied_seq >= head for f in self.backups),
                         timeout, f"backups at seq {head}")

    async def close(self) -> None:
        for f in self.backups:
            await f.stop()
        await self.server.stop(0)


async def with_cluster(body: Callable[[Cluster], Awaitable[None]], n: int = 1, **kw: Any) -> None:
    cluster = Cluster(**kw)
    await cluster.start(n)
    try:
        await body(cluster)
    finally:
        await cluster.close()
