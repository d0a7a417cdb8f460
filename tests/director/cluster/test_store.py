"""Config text in etcd: apply/read, and a config watch that survives restarts and compaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from deploy.etcd import EtcdServer
from director.cluster.store import (
    ConfigEdit,
    ConfigSnapshot,
    EtcdConflict,
    EtcdStore,
    apply,
    prefix_end,
    update_config,
)
from director.config.watch import ConfigUpdate, config_updates, validate_snapshot
from tests.director.cluster.etcd_helpers import wait_until
from tests.director.config.hostile_docs import bomb, deep

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


Update = ConfigUpdate[ConfigSnapshot]


async def collect_updates(gen: AsyncIterator[Update], into: list[Update]) -> None:
    async for upd in gen:
        into.append(upd)


WEB = ("name: web\nprotocol: tcp\nvip: 198.18.1.1\nport: 80\n"
       "dests: [{address: 198.18.2.10, port: 80, weight: %d}]\n")
GARBAGE: dict[str, bytes] = {
    "deep nesting": deep(100_000).encode(),
    "alias bomb": bomb(9).encode(),
    "health host bomb": (bomb(9) + WEB % 1).replace("weight: 1",
                                                    "healthcheck: {type: http, host: *l8}").encode(),
    "not UTF-8": b"name: web\xff\xfe\n",
    "python tag": b"name: !!python/object/apply:os.system [ls]\n",
    "bad timestamp": b"name: web\nport: !!timestamp 2020-99-99\n",
    "NaN interval": (WEB % 1).replace("weight: 1", "healthcheck: {interval: .nan}").encode(),
    "duplicate key": (WEB % 1 + "port: 81\n").encode(),
    "empty dests mapping": (WEB % 1).replace("dests: [{address: 198.18.2.10, port: 80, weight: 1}]",
                                             "dests: {}").encode(),
}


def test_garbage_written_straight_into_etcd_is_refused_and_later_revisions_apply(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    """Issue 17: a deeply nested document written into etcd killed the config watch. Now every
    garbage revision is refused (the running config stays) and the next good one is applied."""
    async def main() -> None:
        async with store_for(etcd, etcd_cluster) as st, store_for(etcd, etcd_cluster) as writer:
            web_key = writer.service_key("web")
            await writer.put(web_key, WEB % 1)
            updates: list[Update] = []
            task = asyncio.create_task(collect_updates(config_updates(st.watch_config()), updates))
            try:
                await wait_until(lambda: bool(updates), what="initial config")
                first = updates[0].config
                assert first is not None and first.services[0].dests[0].weight == 1
                for weight, (what, garbage) in enumerate(GARBAGE.items(), start=2):
                    rev = await writer.put(web_key, garbage)
                    await wait_until(lambda r=rev: updates[-1].revision >= r, what=f"{what} seen")  # type: ignore[misc]
                    bad = updates[-1]
                    assert bad.config is None and bad.error is not None, what
                    assert bad.error.errors[0].startswith("services[web]"), (what, bad.error.errors)
                    assert len(str(bad.error)) < 16 * 1024
                    rev = await writer.put(web_key, WEB % weight)
                    await wait_until(lambda r=rev: updates[-1].revision >= r, what=f"good after {what}")  # type: ignore[misc]
                    good = updates[-1].config
                    assert good is not None and good.services[0].dests[0].weight == weight, what
                rev = await writer.put(writer.timeouts_key, b"tcp: .inf\n")
                await wait_until(lambda: updates[-1].revision >= rev, what="bad timeouts")
                assert updates[-1].error is not None
                assert updates[-1].error.errors == (
                    "timeouts.tcp: must be an integer in 1..2147483, got inf",)
                rev = await writer.put(writer.timeouts_key, b"tcp: 600\n")
                await wait_until(lambda: updates[-1].revision >= rev, what="good timeouts")
                last = updates[-1].config
                assert last is not None and last.timeouts is not None and last.timeouts.tcp == 600
                assert not task.done()
                revs = [u.revision for u in updates]
                assert revs == sorted(set(revs))
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())


def test_non_utf8_keys_and_values_reach_the_validator_as_such(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with store_for(etcd, etcd_cluster) as st:
            await st.put(st.services_prefix + "w\xffb".encode("latin-1").decode("utf-8", "surrogateescape"),
                         b"port: \xff\n")
            snap = await st.read_config()
            ((name, text),) = snap.services.items()
            assert name == "w\udcffb" and text == "port: \udcff\n"  # not silently "repaired"
            upd = validate_snapshot(snap)
            assert upd.error is not None
            assert upd.error.errors == (
                "services['w\\udcffb']: not valid UTF-8: undecodable character at offset 6",)
    asyncio.run(main())


# -- linearizable config writes (issue 14 point 5) ------------------------------------------------

def test_commit_is_a_compare_and_swap_on_the_snapshot_it_was_computed_from(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with store_for(etcd, etcd_cluster) as st, store_for(etcd, etcd_cluster) as other:
            await apply(st, {"a": "1\n", "b": "1\n"}, None, prune=False)
            base = await st.read_config()
            await other.put(other.service_key("b"), "2\n")  # an untouched key modified after the base
            with pytest.raises(EtcdConflict):
                await st.commit(ConfigEdit({"a": "from-base\n"}), base)
            base = await st.read_config()
            await other.delete(other.service_key("a"))  # the touched key deleted after the base
            with pytest.raises(EtcdConflict):
                await st.commit(ConfigEdit({"a": "resurrected\n"}), base)
            base = await st.read_config()
            await other.put(other.service_key("c"), "new\n")  # a key created after the base
            with pytest.raises(EtcdConflict):
                await st.commit(ConfigEdit(delete=("b",)), base)
            await other.put(other.timeouts_key, "tcp: 60\n")
            base = await st.read_config()
            rev = await st.commit(ConfigEdit({"a": "3\n"}, ("b",), "tcp: 61\n"), base)
            now = await st.read_config()
            assert now.revision == rev and dict(now.services) == {"a": "3\n", "c": "new\n"}
            assert now.timeouts == "tcp: 61\n"
            assert (await st.read_config(revision=base.revision)).same_config(base)
    asyncio.run(main())


def test_prune_deletes_only_what_the_file_dropped_relative_to_its_base(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with store_for(etcd, etcd_cluster) as st, store_for(etcd, etcd_cluster) as other:
            base_rev = await apply(st, {"a": "1\n", "b": "1\n"}, None, prune=False)
            # the operator diffs their file {a: 2} against base_rev (it drops b); meanwhile c is added
            await other.put(other.service_key("c"), "added concurrently\n")
            rev = await apply(st, {"a": "2\n"}, None, prune=True, base_revision=base_rev)
            snap = await st.read_config()
            assert snap.revision == rev
            assert dict(snap.services) == {"a": "2\n", "c": "added concurrently\n"}
            # without a base the fresh read is the base: c goes too
            await apply(st, {"a": "2\n"}, None, prune=True)
            assert dict((await st.read_config()).services) == {"a": "2\n"}
    asyncio.run(main())


def _count(text: str | None) -> int:
    return 0 if text is None else int(text.split(":")[1])


def test_concurrent_writers_never_lose_an_update(etcd: EtcdServer, etcd_cluster: str) -> None:
    """Writers on their own connections increment a shared counter service and their own, and
    add/delete scratch services, all by read-modify-write. Every acknowledged increment is in the
    result, and the acknowledged writes in revision order are exactly the sequence 1, 2, 3, ..."""
    writers, rounds = 5, 12
    acks: list[tuple[int, str, int]] = []  # (revision, service, count written)

    def incr(name: str, seen: list[int]) -> Callable[[ConfigSnapshot], ConfigEdit]:
        def edit(snap: ConfigSnapshot) -> ConfigEdit:
            seen[:] = [_count(snap.services.get(name)) + 1]
            return ConfigEdit({name: f"count: {seen[0]}\n"})
        return edit

    async def writer(i: int) -> None:
        async with store_for(etcd, etcd_cluster) as st:
            for r in range(rounds):
                for name in ("shared", f"own{i}"):
                    seen: list[int] = []
                    rev = await update_config(st, incr(name, seen))
                    acks.append((rev, name, seen[0]))
                scratch = f"tmp{i}-{r}"
                await update_config(st, lambda s, n=scratch: ConfigEdit({n: "x\n"}))  # type: ignore[misc]
                await update_config(st, lambda s, n=scratch: ConfigEdit(delete=(n,)))  # type: ignore[misc]

    async def main() -> None:
        await asyncio.gather(*(writer(i) for i in range(writers)))
        async with store_for(etcd, etcd_cluster) as st:
            final = await st.read_config()
            assert dict(final.services) == {"shared": f"count: {writers * rounds}\n",
                                            **{f"own{i}": f"count: {rounds}\n" for i in range(writers)}}
            shared = sorted((rev, n) for rev, name, n in acks if name == "shared")
            assert [n for _rev, n in shared] == list(range(1, writers * rounds + 1))
            assert len({rev for rev, _n in shared}) == len(shared)
            for rev, n in shared[:: max(1, len(shared) // 6)]:  # what each ack says is what etcd held then
                assert (await st.read_config(revision=rev)).services["shared"] == f"count: {n}\n"
    asyncio.run(main())


def test_an_edit_that_refuses_writes_nothing(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with store_for(etcd, etcd_cluster) as st:
            rev = await apply(st, {"a": "1\n"}, None, prune=False)

            def refuse(snap: ConfigSnapshot) -> ConfigEdit:
                raise LookupError(f"no service b at revision {snap.revision}")
            with pytest.raises(LookupError, match=f"no service b at revision {rev}"):
                await update_config(st, refuse)
            assert (await st.read_config()).revision == rev
            assert await update_config(st, lambda snap: ConfigEdit({"a": "1\n"})) == rev  # no-op: no write
    asyncio.run(main())
