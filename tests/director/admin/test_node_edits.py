"""NodeAdmin's EditService / EditDest(set) intents on a real etcd: only the named fields change, a
write that lands in between is kept, identity fields are refused."""

from __future__ import annotations

import asyncio
import ipaddress
import types
from typing import Any

import pytest

from deploy.etcd import EtcdServer
from director.admin.api import InvalidArgument, SvcRef
from director.admin.node import NodeAdmin
from director.cluster.store import EtcdStore
from director.config import services as config
from director.config.validate import ConfigError
from director.types import Proto

pytestmark = pytest.mark.etcd
pytest_plugins = ["tests.plugins.etcd"]

DOC = """
services:
  - name: web
    protocol: tcp
    vip: 198.18.0.10
    port: 80
    scheduler: wlc
    persistence: {timeout: 300}
    dests:
      - {address: 198.18.1.2, port: 8080, weight: 2}
"""
WEB = SvcRef(int(Proto.TCP), int(ipaddress.ip_address("198.18.0.10")), 80)
D1 = int(ipaddress.ip_address("198.18.1.2"))


async def stored(st: EtcdStore) -> dict[str, Any]:
    snap = await st.read_config()
    return config.service_dict(config.parse_service("web", snap.services["web"]))


def test_edit_service_and_dest_fields_through_etcd(etcd: EtcdServer, etcd_cluster: str) -> None:
    async def main() -> None:
        async with EtcdStore(etcd.endpoint, prefix="lbd-test", cluster=etcd_cluster) as st:
            api = NodeAdmin(types.SimpleNamespace(store=st))  # type: ignore[arg-type]
            await api.apply_config(DOC, dry_run=False, prune=False)
            # another operator adds a dest; the service edit computed afterwards keeps it
            await api.put_dest(WEB, {"address": "198.18.1.3", "port": 8080}, create_only=True)
            rev = await api.edit_service(WEB, {"scheduler": "rr", "persistence": None})
            web = await stored(st)
            assert rev > 0 and web["scheduler"] == "rr" and "persistence" not in web
            assert [d["address"] for d in web["dests"]] == ["198.18.1.2", "198.18.1.3"]

            await api.edit_dest(WEB, D1, 8080, weight=None, u_threshold=None, l_threshold=None,
                                fields={"healthcheck": {"type": "tcp", "interval": 5}})
            d = (await stored(st))["dests"][0]
            assert d["weight"] == 2 and d["healthcheck"]["interval"] == 5.0
            await api.edit_dest(WEB, D1, 8080, weight=7, u_threshold=None, l_threshold=None,
                                fields={"healthcheck": None})
            d = (await stored(st))["dests"][0]
            assert d["weight"] == 7 and "healthcheck" not in d

            with pytest.raises(InvalidArgument, match=r"set\.vip"):
                await api.edit_service(WEB, {"vip": "198.18.0.11"})
            with pytest.raises(InvalidArgument, match=r"set\.port"):
                await api.edit_dest(WEB, D1, 8080, weight=None, u_threshold=None, l_threshold=None,
                                    fields={"port": 81})
            with pytest.raises(ConfigError, match=r"scheduler"):
                await api.edit_service(WEB, {"scheduler": "nope"})
            assert (await stored(st))["scheduler"] == "rr"  # a refused edit wrote nothing

    asyncio.run(main())
