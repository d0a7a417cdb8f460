"""The etcd test/demo server: lifecycle, isolation, and the lease TTLs it grants."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploy.cluster import wait_for
from deploy.etcd import EtcdCluster, EtcdServer, MemberNet, min_lease_ttl, probe_health
from deploy.lab import REPO, new_name
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
    idle = EtcdServer()  # built, never started: nothing on disk, nothing to leak
    assert not os.path.exists(idle.run_dir)
    idle.close()
    server = EtcdServer()
    assert not os.path.exists(server.run_dir)
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


# ------------------------------------------------------------------ a real 3-member cluster
def _client(c: EtcdCluster, ops: str, endpoints: list[str] | None = None, timeout: float = 2.0) -> str:
    """Run `ops` (awaits on `st`, an EtcdStore over `endpoints`, default every member) from the
    cluster's client namespace; returns what it printed, or ``error: ...``."""
    eps = endpoints or c.endpoints
    code = (
        "import asyncio\n"
        "from director.cluster.store import EtcdStore, EtcdError\n"
        "async def main():\n"
        f"    async with EtcdStore({eps!r}, timeout={timeout}) as st:\n"
        + "".join(f"        {line}\n" for line in ops.splitlines())
        + "try:\n    asyncio.run(main())\n"
        "except EtcdError as err:\n    print('error:', type(err).__name__)\n"
    )
    res = subprocess.run(["ip", "netns", "exec", c.net.client_ns, sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _put(c: EtcdCluster, key: str, value: str, **kw: Any) -> str:
    return _client(c, f"await st.put({key!r}, {value!r})\nprint('ok')", **kw)


def _read(c: EtcdCluster, key: str, member: EtcdServer | None = None) -> str:
    eps = [member.endpoint] if member is not None else None
    return _client(c, f"kv, _ = await st.get({key!r})\nprint(kv.value.decode() if kv else None)", eps)


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(MemberNet(new_name(), 3))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def test_three_members_in_their_own_namespaces_replicate(etcd3: EtcdCluster) -> None:
    nets = {os.readlink(f"/proc/{m.pid}/ns/net") for m in etcd3.members}
    assert len(nets) == 3 and os.readlink("/proc/self/ns/net") not in nets
    lead = etcd3.wait_leader()
    assert {st["leader"] for st in etcd3.statuses().values()} == {etcd3.statuses()[lead.name]["member_id"]}
    assert _put(etcd3, "/k", "v1") == "ok"
    assert [_read(etcd3, "/k", m) for m in etcd3.members] == ["v1"] * 3  # each member alone


def test_killing_the_leader_elects_another_and_the_member_rejoins_with_its_data(etcd3: EtcdCluster) -> None:
    old = etcd3.wait_leader()
    assert _put(etcd3, "/before", "1") == "ok"
    old.kill()
    new = etcd3.wait_leader(not_=old)
    assert new is not old and not old.running()
    assert _put(etcd3, "/during", "2") == "ok"  # the client list fails over past the dead member
    etcd3.start_member(old)  # same ports, same data dir
    assert etcd3.wait_leader() is not None and old.healthy()
    assert (_read(etcd3, "/before", old), _read(etcd3, "/during", old)) == ("1", "2")


def test_killing_a_follower_keeps_the_leader(etcd3: EtcdCluster) -> None:
    lead = etcd3.wait_leader()
    follower = etcd3.followers()[0]
    follower.kill()
    assert etcd3.wait_leader() is lead
    assert _put(etcd3, "/k", "v") == "ok"


def test_two_members_down_lose_the_quorum_and_come_back_with_their_data(etcd3: EtcdCluster) -> None:
    assert _put(etcd3, "/k", "before") == "ok"
    survivor, *stopped = etcd3.members
    for m in stopped:
        m.stop()
    wait_for("the survivor to lose its leader", lambda: not survivor.healthy() and etcd3.leader() is None, 30)
    assert not etcd3.quorum()
    assert _put(etcd3, "/k", "lost", timeout=1.0).startswith("error:")  # no quorum: the write fails
    for m in stopped:
        etcd3.start_member(m, wait=False)
    for m in etcd3.members:
        m.wait_healthy(30)
    assert etcd3.quorum() and _read(etcd3, "/k") == "before"
    assert _put(etcd3, "/k", "after") == "ok"


def test_a_paused_leader_is_replaced_and_rejoins_as_a_follower(etcd3: EtcdCluster) -> None:
    old = etcd3.wait_leader()
    old.pause()
    try:
        new = etcd3.wait_leader(not_=old)
        others = [m.endpoint for m in etcd3.members if m is not old]
        assert _put(etcd3, "/k", "while-paused", endpoints=others) == "ok"
    finally:
        old.resume()
    wait_for("the resumed member to follow", lambda: old.healthy() and etcd3.leader() is new, 30)
    assert _read(etcd3, "/k", old) == "while-paused"
