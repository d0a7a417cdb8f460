"""directord's static mode (``cluster: none``) without sockets: the services file at start and on SIGHUP.

A ``Node`` is built from a static node config and its services file applied (``_start_static``, what
``start()`` does before opening any socket); reloads are ``reload_static`` (what SIGHUP calls).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from director.admin.cli_format import status_text
from director.admin.convert import status_pb
from director.admin.notify import NotifyRunner
from director.config.node import parse_node_config
from director.daemon import Node, main
from director.node import NoEtcd
from director.types import ConnFlags, DestFlags, FwdMethod, Proto

VIP = "198.18.0.10"


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def services_yaml(dests: list[tuple[str, int]], fwd: str = "nat", udp_timeout: int = 11) -> str:
    items = ", ".join(f"{{address: {a}, port: 80, weight: {w}}}" for a, w in dests)
    return f"""\
timeouts: {{tcp: 900, tcpfin: 120, udp: {udp_timeout}}}
services:
  - name: web
    protocol: tcp
    vip: {VIP}
    port: 80
    scheduler: wrr
    persistence: {{timeout: 30}}
    forward: {fwd}
    expire_nodest_conn: true
    dests: [{items}]
  - {{name: dns, protocol: udp, vip: 198.18.0.11, port: 53, scheduler: rr,
     dests: [{{address: 198.18.1.10, port: 5353}}]}}
"""


def node_yaml(tmp_path: Path, services: str, **keys: Any) -> Path:
    svc = tmp_path / "services.yaml"
    svc.write_text(services)
    doc = {"node_id": "d1", "cluster": "none", "interfaces": {"external": "ext9", "internal": "int9"},
           "vmac_id": 7, "gateways": ["198.18.1.254"], "int_mtu": 1600, "workers": 1,
           "services_file": str(svc), **keys}
    path = tmp_path / "node.yaml"
    path.write_text(json.dumps(doc))
    return path


def static_node(tmp_path: Path, services: str, **keys: Any) -> Node:
    node = Node(parse_node_config(node_yaml(tmp_path, services, **keys).read_text()))
    node._start_static()
    return node


def test_services_file_and_node_settings_build_the_director(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1), ("198.18.1.11", 2)], fwd="tun"))
    d = node.director
    web = d.services.get(Proto.TCP, ip(VIP), 80)
    assert web is not None and web.name == "web" and web.persistent and web.timeout == 30
    assert web.expire_nodest_conn
    assert sorted((x.addr, x.port, x.weight, x.fwd) for x in web.dests) == [
        (ip("198.18.1.10"), 80, 1, FwdMethod.TUN), (ip("198.18.1.11"), 80, 2, FwdMethod.TUN)]
    dns = d.services.get(Proto.UDP, ip("198.18.0.11"), 53)
    assert dns is not None and [(x.port, x.fwd) for x in dns.dests] == [(5353, FwdMethod.NAT)]
    assert not d.active  # the role (static_role, at start()) decides when to forward
    assert node.config_revision == 1 and isinstance(node.store, NoEtcd)  # no etcd
    assert node.dataplane.master_until == float("inf")  # static: never fenced


def test_core_config_never_uses_a_kernel_address_as_arp_sender(tmp_path: Path) -> None:
    d = static_node(tmp_path, services_yaml([("198.18.1.10", 1)])).director
    assert d.cfg.int_addr == ip("198.18.1.254") and d.cfg.ext_addr == ip(VIP)
    assert d.cfg.gw_addrs == {ip("198.18.1.254")}
    assert d.cfg.vmac == bytes.fromhex("00005e000107") and d.cfg.mtu == 1600
    assert d.cfg.timeouts.udp == 11


def test_reload_keeps_services_dests_and_conns(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1), ("198.18.1.11", 2)]))
    d = node.director
    svc = d.services.get(Proto.TCP, ip(VIP), 80)
    assert svc is not None
    kept, gone = svc.find_dest(ip("198.18.1.11"), 80), svc.find_dest(ip("198.18.1.10"), 80)
    assert kept is not None and gone is not None
    conns = [d.table.new(6, ip("198.18.2.1") + i, 40000, ip(VIP), 80, dest.addr, 80, ConnFlags(0), dest,
                         timeout=60.0) for i, dest in enumerate((kept, gone))]
    text = services_yaml([("198.18.1.11", 5), ("198.18.1.12", 1)], udp_timeout=22)
    (tmp_path / "services.yaml").write_text(text)
    node.reload_static()
    assert node.config_revision == 2 and node.config_error == ""
    assert d.services.get(Proto.TCP, ip(VIP), 80) is svc
    assert svc.find_dest(ip("198.18.1.11"), 80) is kept and kept.weight == 5
    assert {x.addr for x in svc.dests} == {ip("198.18.1.11"), ip("198.18.1.12")}
    assert not gone.flags & DestFlags.AVAILABLE   # removed: its conns follow expire_nodest_conn
    assert [c.dest for c in conns] == [kept, gone] and all(d.table.alive(c) for c in conns)
    assert d.cfg.timeouts.udp == 22


def _state(node: Node) -> list[Any]:
    return [(s.key, [(x.addr, x.weight) for x in s.dests]) for s in node.services]


def test_failed_reload_keeps_the_running_config(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1)]))
    before = _state(node)
    path = tmp_path / "services.yaml"
    path.write_text(services_yaml([("198.18.1.10", 70000)]))
    node.reload_static()
    assert "services[0].dests[0].weight" in node.config_error and str(path) in node.config_error
    assert _state(node) == before and node.config_revision == 1
    path.unlink()
    node.reload_static()
    assert "cannot read" in node.config_error and _state(node) == before


def test_node_settings_do_not_belong_in_the_services_file(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1)]))
    (tmp_path / "services.yaml").write_text("vmac_id: 9\n" + services_yaml([("198.18.1.10", 1)]))
    node.reload_static()
    assert "vmac_id: unknown field" in node.config_error
    assert node.director.cfg.vmac == bytes.fromhex("00005e000107")


def test_reload_moves_the_ext_arp_sender_off_a_removed_vip(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1)]))
    assert node.director.cfg.ext_addr == ip(VIP)
    text = services_yaml([("198.18.1.10", 1)])
    without_web = text[:text.index("  - name: web")] + text[text.index("  - {name: dns"):]
    (tmp_path / "services.yaml").write_text(without_web)
    node.reload_static()
    assert [s.name for s in node.services] == ["dns"] and node.director.cfg.ext_addr == ip("198.18.0.11")


def test_neighbour_knobs_reach_the_core(tmp_path: Path) -> None:
    d = static_node(tmp_path, "", neigh_max_entries=64, neigh_learn_rate=12.5).director
    assert d.cfg.neigh_max_entries == 64 and d.cfg.neigh_learn_rate == 12.5
    assert all(n.max_entries == 64 for n in d.neigh)
    assert len(d.services) == 0  # an empty services file is a valid (empty) config


@pytest.mark.parametrize("services", ["services: [{protocol: tcp}]\n", None])
def test_bad_or_missing_services_file_stops_directord_before_any_socket(
        tmp_path: Path, services: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    path = node_yaml(tmp_path, services or "")
    if services is None:
        (tmp_path / "services.yaml").unlink()
    assert main(["-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "services_file" in err and ("services[0].name" in err if services else "No such file" in err)


def test_stats_snapshot_says_role_and_config(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1)]))
    snap = node.stats_snapshot()
    assert (snap["role"], snap["config_revision"], snap["config_error"]) == ("backup", 1, "")
    assert not snap["active"] and snap["master_until"] == float("inf") and not snap["fenced"]
    keys = {tuple(s["key"]) for s in snap["services"]}
    assert keys == {(6, ip(VIP), 80, 0), (17, ip("198.18.0.11"), 53, 0)}


def test_status_says_the_node_is_static(tmp_path: Path) -> None:
    node = static_node(tmp_path, services_yaml([("198.18.1.10", 1)]))
    node.notify = NotifyRunner(node.cfg.notify, node.cfg.node_id, node.cfg.cluster)  # start() makes it
    st = status_pb(node.api.status())
    assert st.cluster == "none" and st.services == 2
    assert "static (cluster: none)" in status_text(st)
