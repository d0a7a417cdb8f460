"""Service groups (fwmark semantics) in the config: the schema, canonical YAML, every refusal by field."""

from __future__ import annotations

from typing import Any

import pytest

from director.config.model import Selector
from director.config.services import (
    ConfigError,
    config_from_dict,
    config_from_texts,
    dump_config,
    dump_service,
    parse_config,
    parse_service,
)


def group(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "shop", "fwmark": 7, "group": [
        {"protocol": "tcp", "vip": "198.18.0.10", "port": 80},
        {"protocol": "tcp", "vip": "198.18.0.10", "port": 443},
        {"protocol": "tcp", "vip": "198.18.0.11", "ports": "10000-10100"}],
        "persistence": {"timeout": 300}, "dests": [{"address": "198.18.2.1"}, {"address": "198.18.2.2"}]}
    d.update(over)
    return d


def plain(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "web", "protocol": "tcp", "vip": "198.18.0.10", "port": 8080,
                         "dests": [{"address": "198.18.2.1"}]}
    d.update(over)
    return d


def errors(*services: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"services": list(services)})
    return e.value.errors


def test_group_schema_and_round_trip() -> None:
    cfg = config_from_dict({"services": [group(), plain()]})
    shop = cfg.services[0]
    assert shop.fwmark == 7 and (shop.protocol, shop.vip, shop.port) == ("tcp", "0.0.0.0", 0)
    assert shop.group == (Selector("tcp", "198.18.0.10", 80, 80), Selector("tcp", "198.18.0.10", 443, 443),
                          Selector("tcp", "198.18.0.11", 10000, 10100))
    assert [d.port for d in shop.dests] == [0, 0]  # the packet's port by default
    assert shop.svc_key == (6, 0, 0, 7) and shop.protocols == {"tcp"}
    assert config_from_dict({"services": [group(), plain()]}) == cfg
    assert parse_config(dump_config(cfg)) == cfg
    text = dump_service(shop)
    assert parse_service("shop", text) == shop
    assert "ports: 10000-10100" in text and "0.0.0.0" not in text
    assert text.startswith("name: shop\nfwmark: 7\n")


def test_mixed_protocols_dest_ports_and_no_ops() -> None:
    dns = group(name="dns", fwmark=53, persistence=None, scheduler="rr", group=[
        {"protocol": "udp", "vip": "198.18.0.10", "port": 53},
        {"protocol": "tcp", "vip": "198.18.0.12", "port": 53}],
        dests=[{"address": "198.18.2.1", "port": 5353}])
    cfg = config_from_dict({"services": [dns]})
    assert cfg.services[0].protocols == {"tcp", "udp"} and cfg.services[0].dests[0].port == 5353
    udp_only = {**dns, "group": dns["group"][:1], "ops": True}
    assert errors(udp_only) == ("services[0].ops: not with fwmark: a reply without an entry could not tell "
                                "which of the group's VIPs and ports it answers",)


@pytest.mark.parametrize(("over", "line"), [
    ({"vip": "198.18.0.10"},
     "services[0].vip: not with fwmark: the group's selectors give protocols, VIPs and ports"),
    ({"port": 80}, "services[0].port: not with fwmark: the group's selectors give protocols, VIPs and ports"),
    ({"fwmark": 0}, "services[0].fwmark: must be an integer in 1..4294967295, got 0"),
    ({"group": []}, "services[0].group: must list at least one selector {protocol, vip, port or ports}"),
    ({"group": {}}, "services[0].group: must be a list, got a mapping"),
    ({"group": [{"protocol": "tcp", "vip": "198.18.0.10"}]},
     "services[0].group[0]: give port (one port) or ports (a range 'lo-hi'), one of them"),
    ({"group": [{"protocol": "tcp", "vip": "198.18.0.10", "port": 1, "ports": "1-2"}]},
     "services[0].group[0]: give port (one port) or ports (a range 'lo-hi'), one of them"),
    ({"group": [{"protocol": "tcp", "vip": "198.18.0.10", "ports": "20-10"}]},
     "services[0].group[0].ports: must be a range 'lo-hi' with 1 <= lo <= hi <= 65535, got '20-10'"),
    ({"group": [{"protocol": "tcp", "vip": "198.18.0.10", "ports": 80}]},
     "services[0].group[0].ports: must be a range 'lo-hi' with 1 <= lo <= hi <= 65535, got 80"),
    ({"group": [{"protocol": "sctp", "vip": "198.18.0.10", "port": 80}]},
     "services[0].group[0].protocol: must be one of tcp, udp, got 'sctp'"),
    ({"group": [{"protocol": "tcp", "vip": "224.0.0.1", "port": 80}]},
     "services[0].group[0].vip: must be a unicast address a host can own, got 224.0.0.1 (multicast)"),
    ({"group": [{"protocol": "tcp", "vip": "198.18.0.10", "port": 80, "mark": 1}]},
     "services[0].group[0].mark: unknown field (allowed: port, ports, protocol, vip)"),
    ({"group": [{"protocol": "tcp", "vip": "198.18.0.10", "ports": "1-100"},
                {"protocol": "tcp", "vip": "198.18.0.10", "port": 100}]},
     "services[0].group[1]: tcp 198.18.0.10:100 overlaps services[0].group[0]: a packet belongs to one "
     "service"),
    ({"forward": "dr", "dests": [{"address": "198.18.2.1", "port": 80}]},
     "services[0].dests[0].port: must equal the service port 0 with forward dr (no port translation), "
     "got 80"),
])
def test_group_refusals_name_the_field(over: dict[str, Any], line: str) -> None:
    assert line in errors(group(**over))


def test_fwmark_and_group_need_each_other() -> None:
    no_group = {k: v for k, v in group().items() if k != "group"}
    assert errors(no_group) == ("services[0].group: required",)
    no_mark = {k: v for k, v in group().items() if k != "fwmark"}
    assert errors(no_mark) == ("services[0].fwmark: required",)


def test_selectors_never_overlap_across_services() -> None:
    errs = errors(plain(port=443), group(), group(name="other", fwmark=7, group=[
        {"protocol": "tcp", "vip": "198.18.0.11", "ports": "10100-10200"}]))
    assert errs == (
        "services[1].group[1]: tcp 198.18.0.10:443 overlaps services[0]: a packet belongs to one service",
        "services[2].fwmark: duplicate fwmark 7 (also services[1])",
        "services[2].group[0]: tcp 198.18.0.11:10100-10200 overlaps services[1].group[2]: a packet belongs "
        "to one service")
    # another protocol, another VIP, a port-0 (any port) service on the VIP: fine
    config_from_dict({"services": [group(), plain(protocol="udp", port=80),
                                   plain(name="any", port=0, persistence={"timeout": 60})]})


def test_a_dest_at_a_group_vip_is_the_director_itself() -> None:
    (err,) = errors(group(), plain(vip="198.18.0.20", dests=[{"address": "198.18.0.11"}]))
    assert err.startswith("services[1].dests[0].address: must not be the director itself")
    assert err.endswith("(the vip of services[0])")


def test_group_documents_in_etcd() -> None:
    text = dump_service(config_from_dict({"services": [group()]}).services[0])
    cfg = config_from_texts({"shop": text})
    assert cfg.services[0].fwmark == 7
    with pytest.raises(ConfigError) as e:
        config_from_texts({"shop": text, "other": text.replace("name: shop", "name: other")})
    assert "services[shop].fwmark: duplicate fwmark 7 (also services[other])" in e.value.errors


def group6(**over: Any) -> dict[str, Any]:
    v6: dict[str, Any] = {"group": [{"protocol": "tcp", "vip": "2001:DB8::10", "port": 80},
                                    {"protocol": "udp", "vip": "2001:db8::10", "port": 53},
                                    {"protocol": "tcp", "vip": "2001:db8::11", "ports": "70-80"}],
                          "persistence": {"timeout": 300, "netmask": 64},
                          "dests": [{"address": "fd00:2::1"}, {"address": "fd00:2::2"}]}
    return group(**{**v6, **over})


def test_an_ipv6_group_round_trips_with_a_prefix_persistence() -> None:
    cfg = config_from_dict({"services": [group6(), plain()]})
    shop = cfg.services[0]
    assert shop.group[0] == Selector("tcp", "2001:db8::10", 80, 80)  # canonical text
    assert shop.family == 6 and shop.persistence is not None
    assert shop.persistence.netmask == "ffff:ffff:ffff:ffff::"
    assert parse_config(dump_config(cfg)) == cfg
    assert parse_service("shop", dump_service(shop)) == shop


@pytest.mark.parametrize(("over", "line"), [
    ({"group": [{"protocol": "tcp", "vip": "2001:db8::10", "port": 80},
                {"protocol": "tcp", "vip": "198.18.0.10", "port": 80}]},
     "services[0].group[1].vip: must be an IPv6 address like services[0].group[0].vip 2001:db8::10 (a group "
     "forwards within one family: give the IPv4 VIPs a group of their own), got 198.18.0.10"),
    ({"dests": [{"address": "198.18.2.1"}]},
     "services[0].dests[0].address: must be an IPv6 address like the vip 2001:db8::10"),
    ({"group": [{"protocol": "tcp", "vip": "fe80::1", "port": 80}]},
     "services[0].group[0].vip: must be a unicast address a host can own, got fe80::1"),
    ({"persistence": {"timeout": 300, "netmask": 129}},
     "services[0].persistence.netmask: must be"),
])
def test_ipv6_group_refusals_name_the_field(over: dict[str, Any], line: str) -> None:
    errs = errors(group6(**over))
    assert any(e.startswith(line) for e in errs), errs
