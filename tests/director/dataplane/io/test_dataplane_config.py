"""The data plane as directord's node config sets it up (ring choices, fencing) and the stats it reports.

The stand-alone runner and its file are gone: a single director without etcd is ``directord`` with
``cluster: none`` (tests/director/test_daemon_static.py has its services file and reloads).
"""

from __future__ import annotations

import json
from pathlib import Path

from director.config.node import parse_node_config
from director.config.services import apply_to_services, parse_config
from director.daemon import Node
from director.dataplane.io.plane import DEFAULT_RING, DataPlane, service_stats
from director.services.service import ServiceTable


def node(tmp_path: Path, **keys: object) -> Node:
    (tmp_path / "s.yaml").write_text("")
    doc = {"node_id": "d1", "cluster": "none", "interfaces": {"external": "ext9", "internal": "int9"},
           "services_file": str(tmp_path / "s.yaml"), "workers": 1, **keys}
    return Node(parse_node_config(json.dumps(doc)))


def test_rings_by_default_and_plain_sockets_on_request(tmp_path: Path) -> None:
    dp = node(tmp_path).dataplane
    assert isinstance(dp, DataPlane) and dp.ring == DEFAULT_RING and dp.use_tx_ring
    plain = node(tmp_path, rx_ring=False, tx_ring=False).dataplane
    assert isinstance(plain, DataPlane) and plain.ring is None and not plain.use_tx_ring


def test_a_static_node_is_not_fenced_a_clustered_one_is(tmp_path: Path) -> None:
    assert node(tmp_path).dataplane.master_until == float("inf")
    doc = {"node_id": "d1", "etcd": {"endpoints": ["198.18.1.250:2379"]}, "workers": 1,
           "interfaces": {"external": "ext9", "internal": "int9"}, "sync": {"listen": "198.18.1.1:7100"}}
    clustered = Node(parse_node_config(json.dumps(doc)))
    assert clustered.dataplane.master_until is None and clustered.dataplane.fenced()


def test_service_stats_by_dest_address() -> None:
    services = ServiceTable()
    apply_to_services(parse_config("services: [{name: web, protocol: tcp, vip: 198.18.0.10, port: 80, "
                                   "dests: [{address: 198.18.1.10, weight: 3}]}]\n"), services)
    (svc,) = service_stats(services)
    assert svc["key"] == [6, 0xC612000A, 80, 0] and svc["counters"]["conns"] == 0
    assert svc["dests"]["198.18.1.10"]["weight"] == 3 and svc["dests"]["198.18.1.10"]["activeconns"] == 0
