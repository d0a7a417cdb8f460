"""Health agreement through a real etcd: only the master probes; every node applies the published
verdicts; a backup that takes over starts from the same view; stale-epoch writes are ignored."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from deploy.etcd import EtcdServer
from director.cluster.store import EtcdStore
from director.config.services import parse_config
from director.health.manager import dest_id, encode_verdict
from director.health.service import HealthService
from director.services.service import DestKey
from tests.director.health.servers import HttpServer

pytest_plugins = ["tests.plugins.etcd"]
pytestmark = pytest.mark.etcd


def config_for(ports: list[int]) -> Any:
    dests = "\n".join(
        f"      - {{address: 127.0.0.1, port: {p}, weight: 2, healthcheck: {{type: http, path: /h, "
        f"expect_body: ok, interval: 0.1, timeout: 0.5, rise: 2, fall: 2}}}}" for p in ports)
    return parse_config(f"services:\n  - name: web\n    protocol: tcp\n    vip: 198.18.0.10\n    port: 80\n"
                        f"    dests:\n{dests}\n")


def key_of(port: int) -> DestKey:
    return (6, 0xC612000A, 80, 0, 0x7F000001, port)


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def test_master_publishes_every_node_applies_takeover_keeps_view(etcd: EtcdServer, etcd_cluster: str) -> None:
    asyncio.run(_scenario(etcd, etcd_cluster))


async def _scenario(etcd: EtcdServer, cluster: str) -> None:
    servers = [await HttpServer({"/h": (200, b"ok")}).start() for _ in range(2)]
    cfg = config_for([s.port for s in servers])
    epoch = [1]
    changes: dict[str, list[tuple[frozenset[DestKey], frozenset[DestKey]]]] = {"a": [], "b": []}
    stores = [EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=cluster) for _ in range(2)]
    def recorder(name: str) -> Callable[[frozenset[DestKey], frozenset[DestKey]], None]:
        return lambda down, up: changes[name].append((down, up))

    nodes = {name: HealthService(name, epoch=lambda: epoch[0], on_change=recorder(name))
             for name in ("a", "b")}
    tasks = []
    try:
        for store, node in zip(stores, nodes.values(), strict=True):
            await store.connect()
            node.reconfigure(cfg)
            tasks.append(asyncio.create_task(node.run(store)))
        a, b = nodes["a"], nodes["b"]
        assert b.health_view() == {key_of(s.port): "unknown" for s in servers}  # nothing published yet
        a.set_master(True)
        victim = key_of(servers[0].port)
        await until(lambda: len(b.verdicts) == 2)  # first verdicts, announced by the master
        assert a.down_keys() == b.down_keys() == frozenset()
        assert a.health_view() == b.health_view() == {k: "up" for k in a.specs}
        assert b.manager.get(victim) is not None and b.manager.get(victim).checks == 0  # type: ignore[union-attr]

        await servers[0].stop()
        await until(lambda: victim in a.down_keys() and victim in b.down_keys())
        assert changes["a"][-1] == (frozenset({victim}), frozenset()) == changes["b"][-1]
        assert b.health_view() == {victim: "down", key_of(servers[1].port): "up"}
        kv, _ = await stores[1].get(f"{stores[1].root}/health/{dest_id(victim)}")
        assert kv is not None and b"\"up\": false" in kv.value and b"\"node\": \"a\"" in kv.value

        # failover: a stops probing, b takes over with the published view and re-checks
        a.set_master(False)
        epoch[0] = 2
        b.set_master(True)
        h = b.manager.get(victim)
        assert h is not None and h.up is False  # seeded from the verdict, not from "unknown = up"
        servers[0].port = victim[5]
        await servers[0].start()
        await until(lambda: victim not in a.down_keys() and victim not in b.down_keys())
        kv, _ = await stores[0].get(f"{stores[0].root}/health/{dest_id(victim)}")
        assert kv is not None and b"\"node\": \"b\"" in kv.value and b"\"epoch\": 2" in kv.value

        # a deposed master's late write (old epoch) is ignored by everyone
        stale = encode_verdict(False, since=0.0, node="a", epoch=1, detail="late")
        await stores[0].put(f"{stores[0].root}/health/{dest_id(victim)}", stale)
        marker = key_of(servers[1].port)
        fresh = encode_verdict(True, since=0.0, node="b", epoch=2, detail="marker")
        await stores[0].put(f"{stores[0].root}/health/{dest_id(marker)}", fresh)
        await until(lambda: all(n.verdicts.get(marker, {}).get("detail") == "marker" for n in nodes.values()))
        assert victim not in a.down_keys() and victim not in b.down_keys()
    finally:
        for node in nodes.values():
            await node.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for store in stores:
            await store.close()
        for s in servers:
            if s.server is not None:
                await s.stop()
