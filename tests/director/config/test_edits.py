"""Document edits for the admin API: pure documents/plan, and concurrent edits that lose nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from deploy.etcd import EtcdServer
from director.cluster.store import ConfigEdit, ConfigSnapshot, EtcdStore, update_config
from director.config.edits import documents, plan
from director.config.services import ConfigError, config_from_dict, dump_service, parse_service

pytest_plugins = ["tests.plugins.etcd"]


def svc(name: str = "web", port: int = 80, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "protocol": "tcp", "vip": "198.18.1.1", "port": port,
                           "dests": [{"address": "198.18.2.10", "port": port}]}
    doc.update(over)
    return doc


def texts(*docs: dict[str, Any]) -> dict[str, str]:
    return {s.name: dump_service(s) for s in config_from_dict({"services": list(docs)}).services}


def test_documents_edit_and_plan_touch_only_what_changed() -> None:
    stored = texts(svc(), svc("api", 81))
    docs = documents(stored)
    assert docs["web"]["dests"] == [{"address": "198.18.2.10", "port": 80, "weight": 1, "u_threshold": 0,
                                     "l_threshold": 0}]
    docs["web"]["dests"][0]["weight"] = 5
    put, delete = plan(stored, docs)
    assert list(put) == ["web"] and delete == ()
    assert parse_service("web", put["web"]).dests[0].weight == 5
    assert plan(stored, documents(stored)) == ({}, ())  # canonical: nothing to write

    docs = documents(stored)
    del docs["api"]
    docs["web"]["name"] = "www"  # a rename is a delete and a put
    put, delete = plan(stored, docs)
    assert list(put) == ["www"] and delete == ("api", "web")


def test_plan_validates_the_edited_config_as_a_whole() -> None:
    stored = texts(svc(), svc("api", 81))
    docs = documents(stored)
    docs["api"]["port"] = 80  # now the same protocol, vip and port as web
    with pytest.raises(ConfigError) as exc:
        plan(stored, docs)
    assert exc.value.errors == (
        "services[1]: same protocol, vip and port as services[0] (tcp 198.18.1.1:80)",)
    docs = documents(stored)
    docs["web"]["dests"].append({"address": "224.0.0.1"})
    with pytest.raises(ConfigError, match=r"services\[0\]\.dests\[1\]\.address: must be a unicast address"):
        plan(stored, docs)
    with pytest.raises(ConfigError, match=r"^services\[web\]: not valid YAML"):
        documents({"web": "port: [\n"})


@pytest.mark.etcd
def test_concurrent_dest_additions_to_one_service_are_all_kept(etcd: EtcdServer, etcd_cluster: str) -> None:
    """What the admin API's put_dest does, from several connections at once."""
    writers, each = 4, 8

    def add_dest(addr: str) -> Callable[[ConfigSnapshot], ConfigEdit]:
        def edit(snap: ConfigSnapshot) -> ConfigEdit:
            docs = documents(snap.services)
            docs["web"]["dests"].append({"address": addr, "port": 80})
            put, delete = plan(snap.services, docs)
            return ConfigEdit(put, delete)
        return edit

    async def writer(i: int) -> None:
        async with EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) as st:
            for j in range(each):
                await update_config(st, add_dest(f"198.18.3.{i * each + j + 1}"), offload=j % 2 == 0)

    async def main() -> None:
        async with EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) as st:
            await update_config(st, lambda snap: ConfigEdit(texts(svc())))
            await asyncio.gather(*(writer(i) for i in range(writers)))
            final = parse_service("web", (await st.read_config()).services["web"])
        assert sorted(d.address for d in final.dests) == sorted(
            ["198.18.2.10", *(f"198.18.3.{n}" for n in range(1, writers * each + 1))])
    asyncio.run(main())
