"""The master's etcd history compaction, against a real etcd."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from deploy.etcd import EtcdServer
from director.cluster.compactor import compact_history
from director.cluster.store import EtcdError, EtcdStore

pytest_plugins = ["tests.plugins.etcd"]
pytestmark = pytest.mark.etcd


def test_history_older_than_one_tick_is_compacted_and_current_values_stay(
        etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) as st:
            first = await st.put(st.leader_key + "-probe", "v0")
            task = asyncio.create_task(compact_history(st, every=0.1))
            try:
                async def compacted() -> bool:
                    try:
                        await st.get_prefix(st.leader_key + "-probe", revision=first)
                    except EtcdError as err:
                        return "compacted" in str(err)
                    return False
                for i in range(200):
                    await st.put(st.leader_key + "-probe", f"v{i + 1}")
                    if await compacted():
                        break
                    await asyncio.sleep(0.02)
                assert await compacted(), "history was never compacted"
                kv, _ = await st.get(st.leader_key + "-probe")
                assert kv is not None and kv.value.startswith(b"v")  # the live value survives
                assert not task.done()  # an already-compacted revision does not end the loop
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    asyncio.run(main())
