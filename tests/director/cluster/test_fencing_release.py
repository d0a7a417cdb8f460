"""The election's fence, the election thread, the process-exit lease release, link tracking."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from deploy.etcd import EtcdServer
from director.cluster.election import ElectionMachine, ElectionParams, LeaderRecord, Role
from director.cluster.elector import Elector, NodeInfo
from director.cluster.elector_thread import ElectorThread
from director.cluster.release import LeaseRecord, read_lease_file, release, write_lease_file
from director.cluster.store import EtcdStore
from director.cluster.track import IFF_RUNNING, IFF_UP, LinkTracker, link_up
from tests.director.cluster.etcd_helpers import wait_async, wait_until

pytest_plugins = ["tests.plugins.etcd"]


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


# -- the fence of the pure machine -------------------------------------------------------------------

def _master(t: float = 0.0) -> ElectionMachine:
    m = ElectionMachine(ElectionParams(ttl=1.0, margin=0.2, touch=0.0))  # the lease alone: see test_touch.py
    m.set_ready(t, True)
    m.leader_observed(t, None)
    m.tick(t)  # -> CANDIDATE, grant
    m.lease_granted(t, 7, 1.0, t)
    m.txn_won(t, 7, 100)
    assert m.role is Role.MASTER
    return m


def test_fence_is_the_step_down_time_and_moves_with_renewals() -> None:
    m = _master(0.0)
    assert m.forward_until() == pytest.approx(0.8)
    m.tick(0.34)  # renew due at ttl/3
    m.renew_ok(0.35, 7, 0.34, 1.0)
    assert m.forward_until() == pytest.approx(0.34 + 0.8)


def test_fence_drops_to_none_on_step_down_and_never_exists_for_a_backup() -> None:
    assert ElectionMachine().forward_until() is None
    m = _master(0.0)
    m.tick(0.9)  # no renewal: past the step-down time
    assert m.role is Role.STEPPED_DOWN and m.forward_until() is None
    m2 = _master(0.0)
    m2.leader_observed(0.1, LeaderRecord("other", "", "", 5, 99))
    assert m2.forward_until() is None


# -- the election thread against a real etcd ---------------------------------------------------------

@pytest.mark.etcd
def test_elector_thread_fences_on_its_own_thread_and_posts_roles_to_the_main_loop(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        main_thread = threading.get_ident()
        fences: list[tuple[float | None, int]] = []
        starts: list[tuple[int, int]] = []
        stops: list[int] = []
        et = ElectorThread(lambda: EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster),
                           NodeInfo("n1"), ttl=1,
                           on_fence=lambda until: fences.append((until, threading.get_ident())),
                           on_start_forwarding=lambda epoch: starts.append((epoch, threading.get_ident())),
                           on_stop_forwarding=lambda: stops.append(threading.get_ident()))
        await et.start()
        try:
            await wait_until(lambda: bool(starts), what="the only node to win")
            assert et.role is Role.MASTER and et.lease_id != 0
            assert starts[0][1] == main_thread  # role callbacks run on the main loop
            assert fences and fences[0][0] is not None
            assert fences[0][1] != main_thread  # the fence is set on the election thread
            n = len(fences)
            await wait_until(lambda: len(fences) > n + 1, what="renewals moving the fence")
            assert [f for f, _ in fences[n:]] == sorted(f for f, _ in fences[n:])  # only forward
            # a blocked main loop does not stop the keepalives: block it for 3 TTLs
            before = len(fences)
            _block(3.0)
            assert len(fences) >= before + 3 and fences[-1][0] is not None
            assert et.role is Role.MASTER
            await et.resign()
            await wait_until(lambda: bool(stops), what="the stop callback")
            assert fences[-1][0] is None and stops[0] == main_thread
        finally:
            await et.stop()
    run(main)


def _block(seconds: float) -> None:
    """Hold the calling thread (the main loop) busy without yielding to asyncio."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


# -- the process-exit hook ---------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.etcd
def test_exit_hook_releases_a_dead_masters_lease_and_a_backup_takes_over(
        etcd: EtcdServer, etcd_cluster: str, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "n1.lease")

    async def main() -> None:
        stores = [EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) for _ in range(2)]
        won: list[str] = []
        # a long TTL: without the hook, the takeover would wait 30 s
        els = [Elector(st, NodeInfo(f"n{i}"), ttl=30, on_start_forwarding=lambda e, i=i: won.append(f"n{i}"))
               for i, st in enumerate(stores)]
        await els[0].start()
        await wait_until(lambda: won == ["n0"], what="n0 to win")
        await els[1].start()
        await wait_until(lambda: els[1].master is not None, what="n1 to see n0")
        await wait_until(lambda: els[1].listed, what="n1 in n0's member list")
        write_lease_file(path, LeaseRecord((etcd.endpoint,), "lbd-test", etcd_cluster, "n0",
                                           els[0].machine.lease.lease_id, _dead_pid()))
        await els[0].kill()  # crash: nothing revoked
        assert read_lease_file(path).lease_id == els[0].machine.lease.lease_id
        out = await asyncio.get_running_loop().run_in_executor(None, lambda: release(path))
        assert out.startswith("released lease")
        assert not os.path.exists(path)
        await wait_until(lambda: won == ["n0", "n1"], timeout=10.0, what="n1 to take over")

        async def key_is_n1() -> bool:
            kv, _ = await stores[1].get(stores[1].leader_key)
            return kv is not None and b'"n1"' in kv.value
        await wait_async(key_is_n1, what="the leader key to name n1")
        await els[1].stop()
        for st in stores:
            await st.close()
    run(main)


def test_exit_hook_refuses_while_the_recorded_process_lives(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "x.lease")
    write_lease_file(path, LeaseRecord(("127.0.0.1:9",), "p", "c", "n", 1, os.getpid()))
    with pytest.raises(RuntimeError, match="still running"):
        release(path)
    assert os.path.exists(path)
    assert release(os.path.join(tmp_path, "missing.lease")).startswith("no lease file")


def test_exit_hook_command_reports_a_bad_file_without_a_traceback(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "bad.lease")
    with open(path, "w") as f:
        f.write("{not json")
    res = subprocess.run([sys.executable, "-m", "director.cluster.release", path], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1
    assert "not a lease file" in res.stderr and "Traceback" not in res.stderr


# -- interface tracking ------------------------------------------------------------------------------

def test_link_up_needs_admin_up_and_carrier() -> None:
    assert link_up(IFF_UP | IFF_RUNNING)
    assert not link_up(IFF_UP)
    assert not link_up(IFF_RUNNING)


def test_tracker_sees_loopback_up_and_a_missing_link_down() -> None:
    downs: list[str] = []
    tr = LinkTracker(("lo", "nosuchlink0"), on_down=downs.append)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert tr.poll(sock) == ["nosuchlink0"]  # was presumed up: one transition
        assert tr.poll(sock) == []  # and only one
    assert tr.state == {"lo": True, "nosuchlink0": False} and not tr.all_up
    assert LinkTracker(("lo",)).all_up
