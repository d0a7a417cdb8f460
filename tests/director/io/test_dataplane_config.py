"""The stand-alone data plane's services file: build, reload in place, core settings."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from director.io.dataplane import apply_services, build_director, core_config, load_config
from director.service import ServiceTable
from director.types import DestFlags, FwdMethod, Proto

VIP = "198.18.0.10"


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def specs(dests: list[tuple[str, int]], fwd: str = "nat") -> list[dict[str, object]]:
    return [{"protocol": "tcp", "vaddr": VIP, "vport": 80, "scheduler": "wrr", "persistent": 30,
             "dests": [{"addr": a, "weight": w, "fwd": fwd} for a, w in dests]}]


def test_reload_adds_removes_and_reweights_dests_in_place() -> None:
    table = ServiceTable()
    apply_services(table, specs([("198.18.1.10", 1), ("198.18.1.11", 2)]))
    svc = table.get(Proto.TCP, ip(VIP), 80)
    assert svc is not None and svc.persistent and svc.timeout == 30
    old = svc.find_dest(ip("198.18.1.10"), 80)
    assert old is not None
    apply_services(table, specs([("198.18.1.11", 5), ("198.18.1.12", 1)]))
    assert table.get(Proto.TCP, ip(VIP), 80) is svc  # same service object: conns keep their dests
    assert {(d.addr, d.weight) for d in svc.dests} == {(ip("198.18.1.11"), 5), (ip("198.18.1.12"), 1)}
    assert not old.flags & DestFlags.AVAILABLE   # removed dest is marked for expire_nodest_conn
    apply_services(table, [])
    assert len(table) == 0


def test_forwarding_method_and_port_default() -> None:
    table = ServiceTable()
    apply_services(table, specs([("198.18.1.10", 1)], fwd="tun"))
    svc = table.get(Proto.TCP, ip(VIP), 80)
    assert svc is not None
    assert [(d.fwd, d.port) for d in svc.dests] == [(FwdMethod.TUN, 80)]


def test_core_config_never_uses_a_kernel_address_as_arp_sender(tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(f"vmac_id: 7\ngateways: [198.18.1.254]\nexpire_nodest_conn: true\n"
                    f"timeouts: {{udp: 11}}\nservices:\n  - {{protocol: udp, vaddr: {VIP}, vport: 7,"
                    " scheduler: rr, dests: [{addr: 198.18.1.10}]}\n")
    conf = load_config(path)
    d = build_director(conf)
    cfg = core_config(conf, d.services)
    assert cfg.int_addr == ip("198.18.1.254") and cfg.ext_addr == ip(VIP)
    assert cfg.vmac == bytes.fromhex("00005e000107")
    assert cfg.expire_nodest_conn and cfg.timeouts.udp == 11
    assert not d.active  # the caller decides when to forward
