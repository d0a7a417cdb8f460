"""Config of sorry servers, one-packet scheduling (ops) and LOCALNODE dests: accepted forms, canonical
YAML round trips, and every refusal with its field named."""

from __future__ import annotations

from typing import Any

import pytest

from director.config.services import (
    ConfigError,
    SorryServer,
    config_from_dict,
    config_from_texts,
    dump_config,
    dump_service,
    parse_config,
    parse_service,
)
from director.types import FwdMethod


def svc(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "s", "protocol": "tcp", "vip": "198.18.0.10", "port": 80,
                         "dests": [{"address": "198.18.2.1", "port": 8080}]}
    d.update(over)
    return d


def errors(*services: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"services": list(services)})
    return e.value.errors


def test_sorry_server_forms_and_defaults() -> None:
    cfg = config_from_dict({"services": [
        svc(sorry_server="198.18.2.9:8081"),
        svc(name="t", port=443, sorry_server="198.18.2.9", forward="dr", dests=[]),
        svc(name="u", port=25, sorry_server="198.18.2.9:8025", sorry_forwarding="nat", forward="dr",
            dests=[])]})
    a, b, c = cfg.services
    assert a.sorry == SorryServer("198.18.2.9", 8081, None) and a.sorry_fwd() == FwdMethod.NAT
    assert b.sorry == SorryServer("198.18.2.9", 443, None) and b.sorry_fwd() == FwdMethod.DR
    assert c.sorry == SorryServer("198.18.2.9", 8025, "nat") and c.sorry_fwd() == FwdMethod.NAT


def test_sorry_and_ops_round_trip_through_canonical_yaml() -> None:
    cfg = config_from_dict({"services": [
        svc(sorry_server="198.18.2.9:8081", sorry_forwarding="nat"),
        svc(name="dns", protocol="udp", port=53, ops=True, scheduler="rr",
            dests=[{"address": "198.18.2.1", "port": 53}])]})
    assert parse_config(dump_config(cfg)) == cfg
    for s in cfg.services:
        assert parse_service(s.name, dump_service(s)) == s
    text = dump_service(cfg.services[0])
    assert "sorry_server: 198.18.2.9:8081" in text and "sorry_forwarding: nat" in text
    assert "ops" not in text and "ops: true" in dump_service(cfg.services[1])


def test_documents_without_the_new_keys_dump_as_before() -> None:
    text = dump_service(config_from_dict({"services": [svc()]}).services[0])
    assert "sorry" not in text and "ops" not in text


@pytest.mark.parametrize(("over", "line"), [
    ({"ops": True}, "services[0].ops: one-packet scheduling is for UDP services only (like ipvsadm --ops), "
                    "got protocol tcp"),
    ({"protocol": "udp", "ops": True, "persistence": {"timeout": 60}},
     "services[0].ops: cannot be combined with persistence (like ipvsadm --ops)"),
    ({"protocol": "udp", "ops": "yes"}, "services[0].ops: must be true or false, got 'yes'"),
    ({"sorry_forwarding": "dr"}, "services[0].sorry_forwarding: needs sorry_server"),
    ({"sorry_server": "198.18.2.1:8080"},
     "services[0].sorry_server: must not be one of the dests, got 198.18.2.1:8080 (also dests[0])"),
    ({"sorry_server": "198.18.2.9:8080", "sorry_forwarding": "tun"},
     "services[0].sorry_server: port must equal the service port 80 with forwarding tun (no port "
     "translation), got 8080"),
    ({"sorry_server": "198.18.2.9:70000"}, "services[0].sorry_server: must be an integer in 1..65535, "
                                           "got 70000"),
    ({"sorry_server": "198.18.2.9:"}, "services[0].sorry_server: must be an integer in 1..65535, got ''"),
    ({"sorry_server": "nowhere:80"}, "services[0].sorry_server: must be an IPv4 address, got 'nowhere'"),
    ({"sorry_server": "224.0.0.1"}, "services[0].sorry_server: must be a unicast address a host can own, "
                                    "got 224.0.0.1 (multicast)"),
    ({"sorry_server": ["198.18.2.9"]}, "services[0].sorry_server: must be 'address' or 'address:port', "
                                       "got a list"),
    ({"sorry_server": "198.18.2.9", "sorry_forwarding": "local"},
     "services[0].sorry_forwarding: must be one of nat, dr, tun, got 'local'"),
])
def test_refusals_name_the_field(over: dict[str, Any], line: str) -> None:
    assert line in errors(svc(**over))


def test_a_dest_or_sorry_server_at_a_vip_is_the_director_itself() -> None:
    errs = errors(svc(dests=[{"address": "198.18.0.11", "port": 80}], sorry_server="198.18.0.10"),
                  svc(name="t", vip="198.18.0.11"))
    assert errs == (
        "services[0].dests[0].address: must not be the director itself (IPVS local node: a user-space "
        "director cannot hand conns to its node's own stack); give a real server's address, got 198.18.0.11 "
        "(the vip of services[1])",
        "services[0].sorry_server: must not be the director itself (IPVS local node: a user-space director "
        "cannot hand conns to its node's own stack); give a real server's address, got 198.18.0.10 (the vip "
        "of services[0])")


def test_an_ops_nat_dest_may_serve_no_other_udp_service() -> None:
    dns = svc(name="dns", protocol="udp", port=53, ops=True, dests=[{"address": "198.18.2.1", "port": 53}])
    other = svc(name="dns2", protocol="udp", vip="198.18.0.11", port=53,
                dests=[{"address": "198.18.2.1", "port": 53}])
    (err,) = errors(dns, other)
    assert err.startswith("services[1].dests[0].address: 198.18.2.1:53 is also a NAT dest of services[0]")
    sorry = svc(name="dns2", protocol="udp", vip="198.18.0.11", port=53, dests=[],
                sorry_server="198.18.2.1:53")
    (err,) = errors(dns, sorry)
    assert err.startswith("services[1].sorry_server: 198.18.2.1:53 is also a NAT dest of services[0]")
    # fine: the same real server over TCP, on another port, or by DR
    config_from_dict({"services": [dns, {**other, "protocol": "tcp"}]})
    config_from_dict({"services": [dns, {**other, "dests": [{"address": "198.18.2.1", "port": 54}]}]})
    config_from_dict({"services": [dns, {**other, "forward": "dr"}]})
    # and two plain UDP services may share a NAT dest as before (their replies match entries)
    config_from_dict({"services": [{**dns, "ops": False}, other]})


def test_cross_checks_run_on_etcd_snapshots_too() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_texts({"a": "protocol: tcp\nvip: 198.18.0.10\nport: 80\ndests:\n- address: 198.18.0.11\n",
                           "b": "protocol: tcp\nvip: 198.18.0.11\nport: 80\n"})
    assert e.value.errors[0].startswith("services[a].dests[0].address: must not be the director itself")


def test_an_ops_nat_dest_conflicts_with_a_port_zero_dest_of_a_group() -> None:
    dns = svc(name="dns", protocol="udp", port=53, ops=True, dests=[{"address": "198.18.2.1", "port": 53}])
    shop = {"name": "shop", "fwmark": 1, "group": [{"protocol": "udp", "vip": "198.18.0.11", "port": 7}],
            "dests": [{"address": "198.18.2.1"}]}
    (err,) = errors(dns, shop)
    assert err.startswith("services[1].dests[0].address: 198.18.2.1:0 is also a NAT dest of services[0]")
    config_from_dict({"services": [dns, {**shop, "dests": [{"address": "198.18.2.2"}]}]})
