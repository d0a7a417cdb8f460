"""The stand-alone data plane's file: node settings + the service schema's services/timeouts; reload."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from director.config.services import ConfigError
from director.dataplane.io.plane import (
    build_director,
    core_config,
    load_config,
    main,
    parse_runner_config,
    reload_config,
)
from director.types import ConnFlags, DestFlags, FwdMethod, Proto

VIP = "198.18.0.10"


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def runner_yaml(dests: list[tuple[str, int]], fwd: str = "nat", udp_timeout: int = 11) -> str:
    items = ", ".join(f"{{address: {a}, port: 80, weight: {w}}}" for a, w in dests)
    return f"""\
vmac_id: 7
gateways: [198.18.1.254]
int_mtu: 1600
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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runner.yaml"
    path.write_text(text)
    return path


def test_build_uses_config_schema_and_node_settings(tmp_path: Path) -> None:
    rc = load_config(write(tmp_path, runner_yaml([("198.18.1.10", 1), ("198.18.1.11", 2)], fwd="tun")))
    d = build_director(rc)
    web = d.services.get(Proto.TCP, ip(VIP), 80)
    assert web is not None and web.name == "web" and web.persistent and web.timeout == 30
    assert web.expire_nodest_conn
    assert sorted((x.addr, x.port, x.weight, x.fwd) for x in web.dests) == [
        (ip("198.18.1.10"), 80, 1, FwdMethod.TUN), (ip("198.18.1.11"), 80, 2, FwdMethod.TUN)]
    dns = d.services.get(Proto.UDP, ip("198.18.0.11"), 53)
    assert dns is not None and [(x.port, x.fwd) for x in dns.dests] == [(5353, FwdMethod.NAT)]
    assert not d.active  # the caller decides when to forward


def test_core_config_never_uses_a_kernel_address_as_arp_sender(tmp_path: Path) -> None:
    rc = load_config(write(tmp_path, runner_yaml([("198.18.1.10", 1)])))
    d = build_director(rc)
    cfg = core_config(rc, d.services)
    assert cfg.int_addr == ip("198.18.1.254") and cfg.ext_addr == ip(VIP)
    assert cfg.gw_addrs == {ip("198.18.1.254")}
    assert cfg.vmac == bytes.fromhex("00005e000107") and cfg.mtu == 1600
    assert cfg.timeouts.udp == 11 and d.cfg.timeouts.udp == 11


def test_reload_keeps_services_dests_and_conns(tmp_path: Path) -> None:
    path = write(tmp_path, runner_yaml([("198.18.1.10", 1), ("198.18.1.11", 2)]))
    running = load_config(path)
    d = build_director(running)
    svc = d.services.get(Proto.TCP, ip(VIP), 80)
    assert svc is not None
    kept, gone = svc.find_dest(ip("198.18.1.11"), 80), svc.find_dest(ip("198.18.1.10"), 80)
    assert kept is not None and gone is not None
    conns = [d.table.new(6, ip("198.18.2.1") + i, 40000, ip(VIP), 80, dest.addr, 80, ConnFlags(0), dest,
                         timeout=60.0) for i, dest in enumerate((kept, gone))]
    path.write_text(runner_yaml([("198.18.1.11", 5), ("198.18.1.12", 1)], udp_timeout=22))
    reload_config(d, running, path)
    assert d.services.get(Proto.TCP, ip(VIP), 80) is svc
    assert svc.find_dest(ip("198.18.1.11"), 80) is kept and kept.weight == 5
    assert {x.addr for x in svc.dests} == {ip("198.18.1.11"), ip("198.18.1.12")}
    assert not gone.flags & DestFlags.AVAILABLE   # removed: its conns follow expire_nodest_conn
    assert [c.dest for c in conns] == [kept, gone] and all(d.table.alive(c) for c in conns)
    assert d.cfg.timeouts.udp == 22


def test_failed_reload_keeps_the_running_config(tmp_path: Path) -> None:
    path = write(tmp_path, runner_yaml([("198.18.1.10", 1)]))
    running = load_config(path)
    d = build_director(running)
    before = [(s.key, [(x.addr, x.weight) for x in s.dests]) for s in d.services]
    path.write_text(runner_yaml([("198.18.1.10", 70000)]))
    with pytest.raises(ConfigError) as exc:
        reload_config(d, running, path)
    assert "services[0].dests[0].weight" in str(exc.value) and str(path) in str(exc.value)
    assert [(s.key, [(x.addr, x.weight) for x in s.dests]) for s in d.services] == before


def test_reload_of_node_settings_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, runner_yaml([("198.18.1.10", 1)]))
    running = load_config(path)
    d = build_director(running)
    path.write_text(runner_yaml([("198.18.1.10", 1)]).replace("vmac_id: 7", "vmac_id: 9"))
    now = reload_config(d, running, path)
    assert now.vmac_id == 7 and d.cfg.vmac == bytes.fromhex("00005e000107")


def test_reload_moves_the_ext_arp_sender_off_a_removed_vip(tmp_path: Path) -> None:
    path = write(tmp_path, runner_yaml([("198.18.1.10", 1)]))
    running = load_config(path)
    d = build_director(running)
    assert d.cfg.ext_addr == ip(VIP)
    text = runner_yaml([("198.18.1.10", 1)])
    path.write_text(text[:text.index("  - name: web")] + text[text.index("  - {name: dns"):])
    reload_config(d, running, path)
    assert [s.name for s in d.services] == ["dns"] and d.cfg.ext_addr == ip("198.18.0.11")


def test_bad_file_stops_the_runner_before_any_socket(tmp_path: Path) -> None:
    path = write(tmp_path, "int_mtu: 9\n")
    assert main(["--ext", "no-such-if0", "--int", "no-such-if1", "--config", str(path)]) == 2


def test_every_problem_is_reported_naming_its_field() -> None:
    text = """\
vmac_id: 300
gateways: [198.18.1.254, nope]
int_mtu: big
expire_nodest_conn: true
services:
  - {protocol: tcp, vaddr: 198.18.0.10, vport: 80, dests: [{addr: 198.18.1.10, fwd: nat}]}
  - {name: any, protocol: tcp, vip: 198.18.0.10, port: 0, dests: [{address: 198.18.1.10}]}
  - {name: dr, protocol: tcp, vip: 198.18.0.11, port: 80, forward: dr,
     dests: [{address: 198.18.1.10, port: 8080}]}
"""
    with pytest.raises(ConfigError) as exc:
        parse_runner_config(text)
    fields = {line.split(":", 1)[0] for line in exc.value.errors}
    assert {"vmac_id", "gateways[1]", "int_mtu", "expire_nodest_conn", "services[0].name",
            "services[0].vaddr", "services[0].vport", "services[0].dests[0].addr", "services[1].port",
            "services[2].dests[0].port"} <= fields, exc.value.errors


def test_empty_file_and_defaults() -> None:
    rc = parse_runner_config("")
    assert (rc.vmac_id, rc.gateways, rc.int_mtu, rc.config.services) == (1, (), 1500, ())
    with pytest.raises(ConfigError, match=r"\(top level\): not valid YAML"):
        parse_runner_config("services: [")
    with pytest.raises(ConfigError, match=r"\(top level\): must be a mapping"):
        parse_runner_config("- 1\n")


def test_neighbour_knobs_reach_the_core_and_are_validated() -> None:
    rc = parse_runner_config("neigh_max_entries: 64\nneigh_learn_rate: 12.5\n")
    d = build_director(rc)
    assert d.cfg.neigh_max_entries == 64 and d.cfg.neigh_learn_rate == 12.5
    assert all(n.max_entries == 64 for n in d.neigh)
    assert parse_runner_config("").neigh_max_entries == 16384
    with pytest.raises(ConfigError) as exc:
        parse_runner_config("neigh_max_entries: 0\nneigh_learn_rate: fast\n")
    assert {line.split(":", 1)[0] for line in exc.value.errors} == {"neigh_max_entries", "neigh_learn_rate"}


def test_deadline_file_words() -> None:
    from director.dataplane.io.plane import read_deadline

    assert read_deadline("none\n") is None and read_deadline("") is None
    assert read_deadline("inf") == float("inf") and read_deadline(" 12.5\n") == 12.5
    with pytest.raises(ValueError):
        read_deadline("soon")
