import ipaddress
import os

import pytest

from director.config.node import NodeConfigError, parse_node_config
from director.config.validate import ConfigError
from tests.director.config.hostile_docs import bomb

GOOD = """
node_id: d1
cluster: lab
etcd: {endpoints: ["198.18.1.250:2379"], prefix: /lbd}
interfaces: {external: ext0, internal: int0}
vmac_id: 7
sync: {listen: "198.18.1.1:7100"}
admin: {unix: /tmp/d1.sock}
"""


def test_good_node_config_parses_with_defaults() -> None:
    cfg = parse_node_config(GOOD)
    assert cfg.node_id == "d1"
    assert cfg.etcd_endpoints == ("198.18.1.250:2379",)
    assert cfg.sync_advertise == "198.18.1.1:7100"
    assert cfg.vmac == bytes.fromhex("00005e000107")
    assert cfg.lease_ttl == 1.0
    assert cfg.workers == max(1, len(os.sched_getaffinity(0)))  # default: every usable core
    assert parse_node_config(GOOD + "workers: 1\n").workers == 1


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.replace("node_id: d1\n", ""), "node_id"),
        (GOOD.replace("vmac_id: 7", "vmac_id: 300"), "vmac_id"),
        (GOOD.replace('endpoints: ["198.18.1.250:2379"]', "endpoints: []"), "etcd.endpoints"),
        (GOOD + "lease_ttl: 0.2\n", "lease_ttl"),
        (GOOD + "bogus: 1\n", "bogus"),
        (GOOD.replace("external: ext0", "external: 3"), "interfaces.external"),
        ("[1, 2", "YAML"),
    ],
)
def test_bad_node_config_names_the_field(text: str, field: str) -> None:
    with pytest.raises(NodeConfigError, match=field.replace(".", r"\.")):
        parse_node_config(text)


EPS = 'endpoints: ["198.18.1.250:2379"]'


def errors_of(text: str | bytes) -> tuple[str, ...]:
    with pytest.raises(NodeConfigError) as exc:
        parse_node_config(text)
    assert isinstance(exc.value, ConfigError)
    return exc.value.errors


def test_every_problem_is_collected() -> None:
    text = GOOD.replace("vmac_id: 7", "vmac_id: 0") + "lease_ttl: .nan\nsloppy_grace: .inf\nbogus: 1\n" \
        "gateways: [198.18.2.1, 127.0.0.1, x]\nint_mtu: 70000\ntable_bits: 40\n"
    errs = errors_of(text)
    assert errs[0].startswith("bogus: unknown field (allowed: admin, cluster, defense, etcd, events_file, "
                              "ext_mtu, fence_file, forward_fragments, gateways, icmp_echo, icmp_ratelimit, "
                              "int_addr, int_mtu, interfaces, lease_ttl, log_json, ")
    assert errs[1:] == (
        "vmac_id: must be an integer in 1..255, got 0",
        "lease_ttl: must be a number in 1..600, got nan",
        "sloppy_grace: must be a number in 0..3600, got inf",
        "gateways[1]: must be a unicast address a host can own, got 127.0.0.1 (loopback)",
        "gateways[2]: must be an IPv4 address, got 'x'",
        "int_mtu: must be an integer in 576..65535, got 70000",
        "table_bits: must be an integer in 8..20, got 40",
    )


@pytest.mark.parametrize(("old", "new", "line"), [
    ("node_id: d1", "node_id: ../../leader", "node_id: must be 1-63 letters, digits"),
    ("cluster: lab", "cluster: 'a/b'", "cluster: must be 1-63 letters, digits"),
    (EPS, "endpoints: [nohost]", "etcd.endpoints[0]: must be 'host:port', got"),
    (EPS, "endpoints: {a: 1}", "etcd.endpoints: must be a list, got a mapping"),
    ("external: ext0", "external: 'eth0 up'", "interfaces.external: must be an interface name"),
    ("external: ext0", "external: averyveryverylongname", "interfaces.external: must be an interface name"),
    ('listen: "198.18.1.1:7100"', 'listen: "198.18.1.1:99999"', "sync.listen: must be 'host:port', got"),
    ("sync: {", "sync: {tls: {ca: a, cert: b}, ", "sync.tls.key: required"),
    ("admin: {unix: /tmp/d1.sock}", "admin: [x]", "admin: must be a mapping, got a list"),
    ("vmac_id: 7", "vmac_id: 7\nvmac_id: 8", "found duplicate key 'vmac_id'"),
    ("vmac_id: 7", "vmac_id: !!python/name:os.system", "could not determine a constructor"),
])
def test_hostile_node_fields(old: str, new: str, line: str) -> None:
    assert old in GOOD
    errs = errors_of(GOOD.replace(old, new))
    assert any(line in e for e in errs), errs


def test_endpoint_urls_and_listen_port_zero_are_fine() -> None:
    cfg = parse_node_config(GOOD.replace('"198.18.1.250:2379"', '"http://198.18.1.250:2379"')
                            .replace("admin: {unix: /tmp/d1.sock}", "admin: {listen: '127.0.0.1:0'}"))
    assert cfg.etcd_endpoints == ("http://198.18.1.250:2379",) and cfg.admin_listen == "127.0.0.1:0"


def test_non_utf8_and_bombs_are_clean_errors() -> None:
    assert errors_of(b"node_id: \xff\n") == ("(top level): not valid UTF-8: byte 0xff at offset 9",)
    (err,) = errors_of(bomb(9))
    assert err.startswith("(top level): refused: more than")


def test_packet_path_keys_reach_the_core_config() -> None:
    from director.node import core_config_for

    cfg = parse_node_config(GOOD + "forward_fragments: true\nicmp_echo: false\nicmp_ratelimit: 5\n"
                            "ext_mtu: 9000\ntun_src6: 'FD00:19::FE'\n")
    core = core_config_for(cfg)
    got = (core.forward_fragments, core.icmp_echo, core.icmp_ratelimit, core.ext_mtu)
    assert got == (True, False, 5, 9000)
    assert core.tun_src6 == int(ipaddress.IPv6Address("fd00:19::fe"))
    default = core_config_for(parse_node_config(GOOD))
    assert (default.forward_fragments, default.icmp_echo, default.icmp_ratelimit, default.ext_mtu,
            default.tun_src6) == (False, True, 100, 1500, 0)


@pytest.mark.parametrize(("line", "error"), [
    ("tun_src6: 198.18.1.1", "tun_src6: must be an IPv6 address (the outer source of ip6ip6)"),
    ("tun_src6: 'ff02::1'", "tun_src6: must be a unicast address a host can own, got ff02::1"),
    ("ext_mtu: 100", "ext_mtu: must be an integer in 576..65535, got 100"),
    ("icmp_echo: maybe", "icmp_echo: must be true or false"),
    ("icmp_ratelimit: -1", "icmp_ratelimit: must be an integer in 0..100000, got -1"),
])
def test_packet_path_keys_are_checked_by_name(line: str, error: str) -> None:
    errs = errors_of(GOOD + line + "\n")
    assert any(e.startswith(error) for e in errs), errs
