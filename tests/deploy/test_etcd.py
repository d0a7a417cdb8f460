"""The etcd test/demo server: lifecycle, isolation, and the lease TTLs it grants."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from deploy.etcd import EtcdServer, min_lease_ttl, probe_health
from director.cluster.store import EtcdStore

pytest_plugins = ["tests.plugins.etcd"]
pytestmark = pytest.mark.etcd


def test_min_lease_ttl_formula() -> None:
    assert min_lease_ttl(100, 600) == 1
    assert min_lease_ttl(100, 1000) == 2
    assert min_lease_ttl(100, 2000) == 3


def test_tuned_server_grants_one_second_leases_and_defaults_round_up(
        etcd_factory: Callable[..., EtcdServer]) -> None:
    tuned, stock = etcd_factory(), etcd_factory(tuned=False)
    assert "--election-timeout=600" in tuned.argv() and "--election-timeout=1000" in stock.argv()

    async def granted(server: EtcdServer) -> int:
        async with EtcdStore(server.endpoint) as st:
            lease_id, ttl = await st.lease_grant(1)
            await st.lease_revoke(lease_id)
            return ttl
    assert asyncio.run(granted(tuned)) == tuned.min_lease_ttl == 1
    assert asyncio.run(granted(stock)) == stock.min_lease_ttl == 2


def test_servers_are_isolated_and_stop_kills_only_their_own_pid(
        etcd_factory: Callable[..., EtcdServer]) -> None:
    a, b = etcd_factory(), etcd_factory()
    assert a.endpoint != b.endpoint and a.run_dir != b.run_dir
    pid = a.pid
    assert pid is not None
    a.stop()
    assert not a.running() and not probe_health(a.client_url, 0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert b.healthy()


def test_restart_keeps_address_and_data(etcd_factory: Callable[..., EtcdServer]) -> None:
    server = etcd_factory()
    endpoint, pid = server.endpoint, server.pid

    async def put() -> None:
        async with EtcdStore(server.endpoint) as st:
            await st.put("/k", "v")

    async def get() -> bytes | None:
        async with EtcdStore(server.endpoint) as st:
            kv, _ = await st.get("/k")
            return kv.value if kv else None
    asyncio.run(put())
    server.restart()
    assert server.endpoint == endpoint and server.pid != pid and server.healthy()
    assert asyncio.run(get()) == b"v"


def test_close_removes_the_run_dir() -> None:
    server = EtcdServer()
    server.start()
    run_dir = server.run_dir
    assert os.path.isdir(os.path.join(run_dir, "data"))
    server.close()
    assert not os.path.exists(run_dir)


@pytest.fixture
def netns() -> Iterator[str]:
    name = "lbd-etcd-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_runs_inside_a_network_namespace(netns: str) -> None:
    server = EtcdServer(netns=netns)
    try:
        server.start()
        assert server.argv()[:4] == ["ip", "netns", "exec", netns]
        assert server.healthy()  # probed inside the namespace
        assert not probe_health(server.client_url, 0.5)  # not reachable from the root namespace
        pid = server.pid
        assert pid is not None
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        server.restart()
        assert server.healthy()
    finally:
        server.close()
    assert not server.running()
