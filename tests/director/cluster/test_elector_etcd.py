"""Leader election against a real etcd (tuned: 1 s leases)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from deploy.etcd import EtcdServer
from director.cluster.election import Role
from director.cluster.elector import Elector, NodeInfo
from director.cluster.members import Membership, members
from director.cluster.store import EtcdStore
from tests.director.cluster.etcd_helpers import Cluster, wait_async, wait_until

pytest_plugins = ["tests.plugins.etcd"]
pytestmark = pytest.mark.etcd


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_one_leader_among_three_and_every_follower_knows_it(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        c = Cluster(etcd, etcd_cluster, n=3)
        await c.start()
        try:
            await wait_until(c.settled, what="one leader known to all")
            (leader,) = c.leaders()
            for e in c.electors:
                assert e.master is not None and e.master.sync_addr == leader.node.sync_addr
            st = c.stores[0]

            async def published() -> bool:
                kv, _ = await st.get(st.leader_key)
                assert kv is not None and kv.create_revision == leader.epoch
                return bool(json.loads(kv.value)["epoch"] == leader.epoch)
            await wait_async(published, what="epoch written into the leader value")
            backup = next(e for e in c.electors if e is not leader)
            changes = backup.changes()
            first = await asyncio.wait_for(changes.__anext__(), 5)  # the current state comes first
            await changes.aclose()
            assert first.role is Role.BACKUP and first.master == leader.master
            assert first.epoch == leader.epoch
            assert c.overlaps == []
        finally:
            await c.close()
    run(main)


def test_crashed_leader_is_replaced_once_its_touch_window_passed_before_its_lease_expires(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        c = Cluster(etcd, etcd_cluster, n=3)
        await c.start()
        try:
            await wait_until(c.settled, what="first leader")
            (old,) = c.leaders()
            old_epoch = old.epoch
            await c.kill(old)  # stops touching and renewing, revokes nothing
            fence = old.machine.forward_until()  # how long it would have forwarded, frozen
            rest = [e for e in c.electors if e is not old]
            await wait_until(lambda: c.settled(rest), what="a new leader")
            (new,) = [e for e in rest if e.is_master]
            assert new.epoch > old_epoch
            assert sum(e.machine.stale_deleted for e in rest) == 1  # a backup deleted the untouched key
            (_, _, started) = next(s for s in c.starts if s[1] == new.epoch)
            assert fence is not None and started > fence  # the old master had stopped forwarding
            assert c.overlaps == []
        finally:
            await c.close()
    run(main)


def test_crashed_leader_without_touches_is_replaced_after_its_lease_expires_with_a_higher_epoch(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        c = Cluster(etcd, etcd_cluster, n=3, touch=0.0)  # masters that declare no touch window
        await c.start()
        try:
            await wait_until(c.settled, what="first leader")
            (old,) = c.leaders()
            old_epoch, old_lease = old.epoch, old.machine.lease.lease_id
            await c.kill(old)  # stops renewing, revokes nothing
            rest = [e for e in c.electors if e is not old]
            await wait_until(lambda: c.settled(rest), what="a new leader")
            (new,) = [e for e in rest if e.is_master]
            assert new.epoch > old_epoch
            remaining, _ = await c.stores[1].lease_ttl(old_lease)
            assert remaining == -1  # the new leader only won because the old lease expired
            assert c.overlaps == []
            old_again = c.by_id(new.node.node_id)
            assert old_again.master is not None and old_again.master.epoch == new.epoch
        finally:
            await c.close()
    run(main)


def test_resign_revokes_at_once_and_hands_over(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        c = Cluster(etcd, etcd_cluster, n=2)
        await c.start()
        try:
            await wait_until(c.settled, what="first leader")
            (old,) = c.leaders()
            old_epoch, old_lease = old.epoch, old.machine.lease.lease_id
            await old.resign()
            assert not old.is_master and old.node.node_id not in c.forwarding
            remaining, _ = await c.stores[0].lease_ttl(old_lease)
            assert remaining == -1  # revoked, not left to expire
            await wait_until(c.settled, what="handover")
            (new,) = c.leaders()
            assert new is not old and new.epoch > old_epoch
            assert old.role is Role.BACKUP
            resigned = [h for h in old.history if h.role is Role.STEPPED_DOWN]
            assert resigned and not any(h.uncertain for h in resigned)  # its sync stream ends
            assert c.overlaps == []
        finally:
            await c.close()
    run(main)


def test_readiness_gate(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        ready = {"n0": True, "n1": False}
        c = Cluster(etcd, etcd_cluster, n=2, ready=ready)
        a, b = c.electors
        await b.start()
        try:
            await wait_until(lambda: b.machine.waiting_for_ready, what="b observed no leader")
            assert b.role is Role.BACKUP
            kv, _ = await c.stores[1].get(c.stores[1].leader_key)
            assert kv is None  # an unready node never campaigned
            await a.start()
            await wait_until(c.settled, what="a leads")
            assert a.is_master
            lease = a.machine.lease.lease_id
            await c.kill(a)

            async def lease_gone() -> bool:
                return (await c.stores[1].lease_ttl(lease))[0] == -1
            await wait_async(lease_gone, what="a's lease expired")
            await wait_until(lambda: b.machine.observed and b.machine.master is None,
                             what="b saw the leader key go")
            assert not b.is_master
            ready["n1"] = True
            b.poke()
            await wait_until(lambda: b.is_master, what="b leads once ready")
        finally:
            await c.close()
    run(main)


@pytest.mark.parametrize("mode", ["pause-brief", "pause-beyond-ttl", "stop-beyond-ttl"])
def test_leader_steps_down_before_its_lease_could_expire_when_etcd_is_unreachable(
        etcd_factory: Callable[..., EtcdServer], etcd_cluster: str, mode: str) -> None:
    server = etcd_factory()
    beyond_ttl = mode.endswith("beyond-ttl")

    async def main() -> None:
        c = Cluster(server, etcd_cluster, n=2)
        await c.start()
        try:
            await wait_until(c.settled, what="first leader")
            (leader,) = c.leaders()
            epoch = leader.epoch
            if mode.startswith("pause"):
                server.pause()  # SIGSTOP: connected but silent
            else:
                await asyncio.to_thread(server.stop)  # connection refused
            try:
                await wait_until(lambda: not leader.is_master, what="step down")
                assert leader.node.node_id not in c.forwarding
                m = leader.machine
                assert m.stepped_down_at is not None
                assert m.stepped_down_at < m.lease.last_ok_sent + m.lease.ttl
                step = next(h for h in leader.history if h.role is Role.STEPPED_DOWN)
                assert step.uncertain  # it may resume with its epoch: the node keeps its sync stream
                assert not any(e.is_master for e in c.electors)
                if beyond_ttl:  # keep etcd away until the lease has certainly run out
                    expiry = m.lease.last_ok_sent + m.lease.ttl
                    await wait_until(lambda: time.monotonic() > expiry + 0.5, what="lease expiry")
            finally:
                if mode.startswith("pause"):
                    server.resume()
                else:
                    await asyncio.to_thread(server.start)
            await wait_until(c.settled, what="a leader after etcd came back")
            (now_leader,) = c.leaders()
            assert now_leader.epoch >= epoch
            if mode == "pause-beyond-ttl":
                assert now_leader.epoch > epoch  # etcd expired the lease: a new election
            assert c.overlaps == []
        finally:
            await c.close()
    run(main)


def test_etcd_restart_keeps_the_leader_and_its_epoch(
        etcd_factory: Callable[..., EtcdServer], etcd_cluster: str) -> None:
    server = etcd_factory()

    async def main() -> None:
        c = Cluster(server, etcd_cluster, n=3)
        await c.start()
        try:
            await wait_until(c.settled, what="first leader")
            (leader,) = c.leaders()
            epoch = leader.epoch
            await asyncio.to_thread(server.restart)
            back = time.monotonic()
            await wait_until(lambda: leader.is_master and leader.machine.lease.last_ok_sent > back,
                             what="leader renewing again after the restart")
            await wait_until(c.settled, what="all backups following")
            assert leader.epoch == epoch
            ever_led = {e.node.node_id for e in c.electors for h in e.history if h.role is Role.MASTER}
            assert ever_led == {leader.node.node_id}
            for e in c.electors:
                if e is not leader:
                    seen = {h.master.epoch for h in e.history if h.master is not None}
                    assert seen == {epoch}
            assert c.overlaps == []
        finally:
            await c.close()
    run(main)


def test_membership_lives_with_its_lease(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) as st:
            mem = Membership(st, "n7", {"sync_addr": "198.18.0.7:7000"}, ttl=2)
            await mem.start()
            try:
                async def listed() -> bool:
                    return "n7" in await members(st)
                await wait_async(listed, what="n7 listed")
                assert (await members(st))["n7"]["sync_addr"] == "198.18.0.7:7000"
                await mem.update(ready=True)
                assert (await members(st))["n7"]["ready"] is True
            finally:
                await mem.stop()
            assert "n7" not in await members(st)
    run(main)


def test_priority_preemption_hands_over_to_the_preferred_node_once_ready(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        ready = {"lo": True, "hi": False}
        stores = [EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) for _ in range(2)]
        lo = Elector(stores[0], NodeInfo("lo", priority=1), preempt=True, ready=lambda: ready["lo"])
        hi = Elector(stores[1], NodeInfo("hi", priority=5), preempt=True, ready=lambda: ready["hi"])
        try:
            await lo.start()
            await wait_until(lambda: lo.is_master, what="lo leads")
            await hi.start()
            await wait_until(lambda: hi.master is not None and hi.master.node_id == "lo", what="hi follows")
            await wait_until(lambda: hi.listed, what="hi in the member list")
            assert lo.is_master  # hi is not in sync yet: no preemption
            ready["hi"] = True
            hi.poke()
            await wait_until(lambda: hi.is_master and lo.master is not None and lo.master.node_id == "hi",
                             what="handover to hi")
            assert not lo.is_master
        finally:
            for e in (lo, hi):
                await e.stop()
            for st in stores:
                await st.close()
    run(main)
