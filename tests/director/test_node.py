"""directord's node parts (director.node): static mode's files, the etcd stand-in, the core config."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest

from director.cluster.store import EtcdUnavailable
from director.config.node import parse_node_config
from director.config.services import ConfigError
from director.node import (
    EventLog,
    FenceFile,
    NodeFiles,
    NoEtcd,
    arp_sender_outside,
    core_config_for,
    load_services,
    read_services,
    write_json,
)
from director.services.sched import registry
from director.services.service import ServiceTable, VirtualService

NODE = """
node_id: d1
cluster: none
interfaces: {external: ext0, internal: int0}
services_file: /x.yaml
gateways: [198.18.1.254, 198.18.1.253]
neigh_max_entries: 64
neigh_learn_rate: 12.5
workers: 1
"""


def test_core_config_from_the_node() -> None:
    core = core_config_for(parse_node_config(NODE))
    assert core.int_addr == 0xC61201FD and core.gw_addrs == {0xC61201FE, 0xC61201FD}  # the lowest gateway
    assert (core.neigh_max_entries, core.neigh_learn_rate) == (64, 12.5)


def test_an_ipv6_gateway_is_owned_but_never_the_arp_sender() -> None:
    node = parse_node_config(NODE.replace("gateways: [198.18.1.254, 198.18.1.253]",
                                          "gateways: [fd00:19::1, 198.18.1.254]"))
    core = core_config_for(node)
    v6 = int(ipaddress.IPv6Address("fd00:19::1"))
    assert core.gw_addrs == {v6, 0xC61201FE} and core.int_addr == 0xC61201FE
    bad = NODE.replace("gateways: [198.18.1.254, 198.18.1.253]", "gateways: [ff02::1]")
    with pytest.raises(ConfigError, match=r"gateways\[0\]: must be a unicast address"):
        parse_node_config(bad)


def test_the_arp_sender_outside_is_the_lowest_ipv4_vip() -> None:
    table = ServiceTable()
    for vip in ("fd00:18::10", "198.18.0.20", "198.18.0.10"):
        table.add(VirtualService(6, int(ipaddress.ip_address(vip)), 80, registry.create("rr")))
    assert arp_sender_outside(table) == int(ipaddress.IPv4Address("198.18.0.10"))
    v6only = ServiceTable()
    v6only.add(VirtualService(6, int(ipaddress.IPv6Address("fd00:18::10")), 80, registry.create("rr")))
    assert arp_sender_outside(v6only) == 0


def test_services_file_errors_name_the_path_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("services: [{name: a, protocol: tcp, vip: 198.18.0.10, port: 99999}]\n")
    with pytest.raises(ConfigError) as exc:
        load_services(str(path))
    assert any(line.startswith(f"{path}: services[0].port") for line in exc.value.errors), exc.value.errors
    upd = read_services(str(path), 7)
    assert upd.config is None and upd.revision == 7 and upd.error is not None
    missing = read_services(str(tmp_path / "nope.yaml"), 8)
    assert missing.error is not None and "cannot read" in str(missing.error)


def test_fence_file_is_applied_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "fence"
    ff = FenceFile(str(path))
    assert ff.poll() == (False, None)  # missing: unusable, logged
    path.write_text("inf\n")
    assert ff.poll() == (True, float("inf"))
    assert ff.poll() == (False, None)  # unchanged
    path.write_text("soon\n")
    os.utime(path, ns=(1, 1))
    assert ff.poll() == (False, None)  # unusable: the deadline stays
    path.write_text("none\n")
    os.utime(path, ns=(2, 2))
    assert ff.poll() == (True, None)


def test_node_files_write_stats_and_feed_the_fence(tmp_path: Path) -> None:
    (tmp_path / "fence").write_text("12.5")
    seen: list[float | None] = []
    stats = tmp_path / "stats.json"
    files = NodeFiles(str(stats), FenceFile(str(tmp_path / "fence")), lambda: {"active": True, "n": 1},
                      seen.append, EventLog(None, "d1"))
    assert files.wanted
    files.poll_fence()
    files.write_stats()
    assert seen == [12.5] and json.loads(stats.read_text()) == {"active": True, "n": 1}
    assert not NodeFiles(None, None, dict, seen.append, EventLog(None, "d1")).wanted


def test_write_json_replaces_atomically(tmp_path: Path) -> None:
    path = str(tmp_path / "x.json")
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(Path(path).read_text()) == {"a": 2} and os.listdir(tmp_path) == ["x.json"]


def test_no_etcd_refuses_every_call_naming_the_services_file() -> None:
    store = NoEtcd()

    async def calls() -> list[Any]:
        out = []
        for aw in (store.read_config(), store.put("k", "v"), store.connect()):
            with pytest.raises(EtcdUnavailable, match="services_file") as exc:
                await aw
            out.append(exc.value)
        return out

    assert len(asyncio.run(calls())) == 3
