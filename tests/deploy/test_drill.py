"""The drill's service document (no lab needed): both families, valid for the config loader."""

from __future__ import annotations

import yaml

from deploy.drill import services_yaml
from deploy.lab import VIP6_NAT, VIP_NAT, real_addr6
from director.config.services import config_from_dict


def test_drill_services_have_ipv6_twins_that_validate() -> None:
    cfg = config_from_dict(yaml.safe_load(services_yaml(3, v6=True)))
    by_name = {s.name: s for s in cfg.services}
    assert set(by_name) == {"stream", "probe", "web", "stream6", "web6"}
    assert by_name["web"].vip == VIP_NAT and by_name["web6"].vip == VIP6_NAT
    assert by_name["web6"].persistence is not None and by_name["stream6"].scheduler == "mh"
    assert [d.address for d in by_name["stream6"].dests] == [real_addr6(i) for i in (1, 2, 3)]


def test_drill_services_default_to_ipv4_only() -> None:
    cfg = config_from_dict(yaml.safe_load(services_yaml(2)))
    assert [s.name for s in cfg.services] == ["stream", "probe", "web"]
    assert "198.18.1.12, port: 80, weight: 1" in services_yaml(3)  # what test_failover edits
    assert "fd00" not in services_yaml(3) and "fd00" in services_yaml(3, v6=True)
