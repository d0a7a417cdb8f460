"""IPv6 services in the config: v6 VIPs and dests, ``[addr]:port``, one family per service, v6 netmasks."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from director.admin.cli_format import hostport, persist_mask
from director.config.services import (
    ConfigError,
    apply_to_services,
    config_from_dict,
    dump_config,
    parse_config,
)
from director.services.service import ServiceTable


def svc6(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "web6", "protocol": "tcp", "vip": "2001:db8::10", "port": 80,
                           "dests": [{"address": "fd00:2::1", "port": 8080}, {"address": "fd00:2::2"}]}
    doc.update(over)
    return doc


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    return list(exc.value.errors)


def test_a_v6_service_parses_with_canonical_addresses() -> None:
    cfg = config_from_dict({"services": [svc6(vip="2001:DB8:0::10", sorry_server="[fd00:2::9]:8081")]})
    svc = cfg.services[0]
    assert (svc.vip, svc.family, svc.vaddr) == ("2001:db8::10", 6, int(ipaddress.IPv6Address("2001:db8::10")))
    assert [(d.address, d.port) for d in svc.dests] == [("fd00:2::1", 8080), ("fd00:2::2", 80)]
    assert svc.dests[0].ident == "[fd00:2::1]:8080"
    assert svc.sorry is not None and (svc.sorry.address, svc.sorry.port) == ("fd00:2::9", 8081)
    assert svc.key == (6, int(ipaddress.IPv6Address("2001:db8::10")), 80)


@pytest.mark.parametrize(("text", "port"), [("fd00:2::9", 80), ("[fd00:2::9]", 80), ("[fd00:2::9]:81", 81)])
def test_sorry_server_forms_for_v6(text: str, port: int) -> None:
    sorry = config_from_dict({"services": [svc6(sorry_server=text)]}).services[0].sorry
    assert sorry is not None and (sorry.address, sorry.port) == ("fd00:2::9", port)


def test_a_v6_config_round_trips_through_the_canonical_dump() -> None:
    cfg = config_from_dict({"services": [
        svc6(sorry_server="[fd00:2::9]:8081", persistence={"timeout": 60, "netmask": 64}),
        {"name": "web4", "protocol": "tcp", "vip": "198.18.1.1", "port": 80,
         "dests": [{"address": "198.18.2.10"}]}]})
    text = dump_config(cfg)
    assert "sorry_server: '[fd00:2::9]:8081'" in text or "sorry_server: \"[fd00:2::9]:8081\"" in text
    assert parse_config(text) == cfg


@pytest.mark.parametrize(("mask", "plen"), [(64, 64), ("64", 64), ("/48", 48), (128, 128), (0, 0),
                                            ("ffff:ffff:ffff:ffff::", 64)])
def test_v6_persistence_netmask_is_a_prefix_length(mask: Any, plen: int) -> None:
    svc = config_from_dict({"services": [svc6(persistence={"timeout": 60, "netmask": mask})]}).services[0]
    assert svc.persistence is not None
    assert svc.persistence.mask == int(ipaddress.IPv6Network(f"::/{plen}").netmask)


def test_v6_persistence_defaults_to_a_host_mask() -> None:
    svc = config_from_dict({"services": [svc6(persistence={"timeout": 60})]}).services[0]
    assert svc.persistence is not None and svc.persistence.mask == 2**128 - 1


_OWN = "services[0].vip: must be a unicast address a host can own, got"


@pytest.mark.parametrize(("over", "expected"), [
    ({"dests": [{"address": "198.18.2.1"}]},
     "services[0].dests[0].address: must be an IPv6 address like the vip 2001:db8::10 (a service forwards "
     "within one family), got 198.18.2.1"),
    ({"vip": "198.18.1.1"},
     "services[0].dests[0].address: must be an IPv4 address like the vip 198.18.1.1 (a service forwards "
     "within one family), got fd00:2::1"),
    ({"sorry_server": "198.18.2.9:80"},
     "services[0].sorry_server: must be an IPv6 address like the vip 2001:db8::10 (a service forwards "
     "within one family), got 198.18.2.9"),
    ({"vip": "::1"}, "services[0].vip: must be a unicast address a host can own, got ::1 (unspecified, "
     "loopback or IPv4-compatible)"),
    ({"vip": "::198.18.1.1"}, "services[0].vip: must be a unicast address a host can own, got ::c612:101 "
     "(unspecified, loopback or IPv4-compatible)"),
    ({"vip": "::ffff:198.18.1.1"}, "services[0].vip: must be a unicast address a host can own, got "
     "::ffff:c612:101 (IPv4-mapped: give the IPv4 address)"),
    ({"vip": "ff02::1"}, f"{_OWN} ff02::1 (multicast)"),
    ({"vip": "fe80::1"}, f"{_OWN} fe80::1 (link-local)"),
    ({"vip": "2001:db8::zz"}, "services[0].vip: must be an IPv4 or IPv6 address, got '2001:db8::zz'"),
    ({"sorry_server": "[fd00:2::9"},
     "services[0].sorry_server: must be an IPv4 or IPv6 address, got '[fd00:2::9'"),
    ({"sorry_server": "[fd00:2::9]:x"}, "services[0].sorry_server: must be an integer in 1..65535, got 'x'"),
    ({"persistence": {"timeout": 60, "netmask": "255.255.255.0"}},
     "services[0].persistence.netmask: must be a prefix length 0..128 (an IPv6 service), got "
     "'255.255.255.0'"),
    ({"persistence": {"timeout": 60, "netmask": 129}},
     "services[0].persistence.netmask: must be a prefix length 0..128 (an IPv6 service), got 129"),
    ({"persistence": {"timeout": 60, "netmask": "ffff::ffff"}},
     "services[0].persistence.netmask: must be a prefix length 0..128 (an IPv6 service), got 'ffff::ffff'"),
])
def test_v6_refusals_name_the_field(over: dict[str, Any], expected: str) -> None:
    assert expected in errors_of({"services": [svc6(**over)]})


def test_v6_dest_may_be_loopback_or_link_local_like_v4() -> None:
    cfg = config_from_dict({"services": [svc6(dests=[{"address": "::1"}, {"address": "fe80::2"}])]})
    assert [d.address for d in cfg.services[0].dests] == ["::1", "fe80::2"]


def test_a_dest_at_a_v6_vip_is_the_director_itself() -> None:
    errs = errors_of({"services": [svc6(), svc6(name="b", vip="2001:db8::11",
                                                dests=[{"address": "2001:db8::10"}])]})
    assert any(e.startswith("services[1].dests[0].address: must not be the director itself") for e in errs)


def test_same_v6_service_twice_is_refused_and_families_do_not_collide() -> None:
    errs = errors_of({"services": [svc6(), svc6(name="b", vip="2001:db8:0::10")]})
    assert any(e.startswith("services[1]: same protocol, vip and port") for e in errs)
    cfg = config_from_dict({"services": [svc6(), {"name": "v4", "protocol": "tcp", "vip": "198.18.1.1",
                                                  "port": 80, "dests": [{"address": "198.18.2.1"}]}]})
    assert len({s.key for s in cfg.services}) == 2


def test_apply_builds_v6_services_and_dests() -> None:
    cfg = config_from_dict({"services": [svc6(persistence={"timeout": 60, "netmask": 64},
                                              sorry_server="fd00:2::9")]})
    table = ServiceTable()
    apply_to_services(cfg, table)
    (live,) = list(table)
    assert live.addr == int(ipaddress.IPv6Address("2001:db8::10"))
    assert live.netmask == int(ipaddress.IPv6Network("::/64").netmask)
    assert [(d.addr, d.port) for d in live.dests] == [(int(ipaddress.IPv6Address("fd00:2::1")), 8080),
                                                      (int(ipaddress.IPv6Address("fd00:2::2")), 80)]
    assert live.sorry is not None and live.sorry.addr == int(ipaddress.IPv6Address("fd00:2::9"))
    assert table.get(6, live.addr, 80) is live
    assert table.get(6, live.addr & 0xFFFFFFFF, 80) is None  # the low 32 bits are no v4 VIP


def test_cli_shows_v6_like_ipvsadm() -> None:
    assert hostport("2001:db8::10", 80) == "[2001:db8::10]:80"
    assert hostport("198.18.0.10", 80) == "198.18.0.10:80"
    assert persist_mask(str(ipaddress.IPv6Network("::/64").netmask)) == "64"
    assert persist_mask(str(ipaddress.IPv6Network("::/128").netmask)) == ""
    assert persist_mask("255.255.255.0") == "255.255.255.0"
    assert persist_mask("255.255.255.255") == ""
