import pytest

from director.config.node import NodeConfigError, parse_node_config

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
