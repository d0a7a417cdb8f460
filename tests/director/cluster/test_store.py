"""Config text in etcd: apply/read, and a config watch that survives restarts and compaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from deploy.etcd import EtcdServer
from director.cluster.store import ConfigSnapshot, EtcdStore, apply, prefix_end
from tests.director.cluster.etcd_helpers import wait_until

pytest_plugins = ["tests.plugins.etcd"]
pytestmark = pytest.mark.etcd


def store_for(server: EtcdServer, cluster: str) -> EtcdStore:
    return EtcdStore(server.endpoint, prefix="lbd-test", cluster=cluster)


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_key_layout() -> None:
    st = EtcdStore("127.0.0.1:1", prefix="/lbd/", cluster="east")
    assert st.service_key("web") == "/lbd/east/config/services/web"
    assert st.timeouts_key == "/lbd/east/config/timeouts"
    assert st.leader_key == "/lbd/east/leader"
    assert st.node_key("n1") == "/lbd/east/nodes/n1"
    with pytest.raises(ValueError):
        st.service_key("a/b")


def test_apply_writes_in_one_txn_prunes_and_skips_unchanged(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with store_for(etcd, etcd_cluster) as st:
            rev1 = await apply(st, {"web": "port: 80\n", "dns": "port: 53\n"}, "tcp: 900\n", prune=False)
            web1, _ = await st.get(st.service_key("web"))
            dns1, _ = await st.get(st.service_key("dns"))
            assert web1 is not None and dns1 is not None
            assert web1.mod_revision == dns1.mod_revision == rev1  # one transaction
            snap = await st.read_config()
            assert dict(snap.services) == {"web": "port: 80\n", "dns": "port: 53\n"}
            assert snap.timeouts == "tcp: 900\n" and snap.revision >= rev1

            rev2 = await apply(st, {"web": "port: 80\n", "smtp": "port: 25\n"}, None, prune=True)
            assert rev2 > rev1
            snap = await st.read_config()
            assert dict(snap.services) == {"web": "port: 80\n", "smtp": "port: 25\n"}
            assert snap.timeouts == "tcp: 900\n"  # None leaves timeouts alone
            web2, _ = await st.get(st.service_key("web"))
            assert web2 is not None and web2.mod_revision == rev1  # unchanged: not rewritten

            assert await apply(st, {"web": "port: 80\n"}, None, prune=False) == snap.revision  # no-op
    asyncio.run(main())


async def collect(gen: AsyncIterator[ConfigSnapshot], into: list[ConfigSnapshot]) -> None:
    async for snap in gen:
        into.append(snap)


def test_config_watch_sees_puts_and_deletes_across_an_etcd_restart(
        etcd_factory: Callable[..., EtcdServer], etcd_cluster: str) -> None:
    server = etcd_factory()

    async def main() -> None:
        async with store_for(server, etcd_cluster) as st, store_for(server, etcd_cluster) as writer:
            await apply(writer, {"a": "1\n", "b": "2\n"}, None, prune=False)
            seen: list[ConfigSnapshot] = []
            task = asyncio.create_task(collect(st.watch_config(), seen))
            try:
                await wait_until(lambda: bool(seen), what="initial snapshot")
                assert dict(seen[0].services) == {"a": "1\n", "b": "2\n"}
                rev = await apply(writer, {"a": "1b\n"}, "udp: 300\n", prune=True)
                await wait_until(lambda: seen[-1].revision >= rev, what="change before restart")
                assert dict(seen[-1].services) == {"a": "1b\n"}
                await asyncio.to_thread(server.restart)
                # written while the watcher is still reconnecting
                rev = await apply(writer, {"c": "3\n"}, None, prune=True)
                await wait_until(lambda: seen[-1].revision >= rev, what="change after restart")
                final = await writer.read_config()
                assert seen[-1].same_config(final)
                assert dict(final.services) == {"c": "3\n"} and final.timeouts == "udp: 300\n"
                revs = [s.revision for s in seen]
                assert revs == sorted(set(revs))  # each change once, in order
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())


def test_config_watch_rereads_after_compaction(
        etcd_factory: Callable[..., EtcdServer], etcd_cluster: str) -> None:
    server = etcd_factory()  # compaction is global: keep it off the shared server

    async def main() -> None:
        async with store_for(server, etcd_cluster) as st:
            await apply(st, {"a": "1\n"}, None, prune=False)
            old = await st.read_config()
            await apply(st, {"a": "2\n", "b": "x\n"}, None, prune=False)
            rev = await apply(st, {"b": "y\n"}, None, prune=True)
            await st.compact(rev)
            seen: list[ConfigSnapshot] = []
            task = asyncio.create_task(collect(st.watch_config(old), seen))
            try:
                await wait_until(lambda: bool(seen), what="snapshot after compaction")
                assert dict(seen[-1].services) == {"b": "y\n"}
                assert seen[-1].revision >= rev
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())
