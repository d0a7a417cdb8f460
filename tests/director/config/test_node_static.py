"""Node YAML ``cluster: none`` (static mode, director.config.node): each mode's keys, errors naming fields."""

from pathlib import Path

import pytest

from director.config.node import NodeConfigError, parse_node_config, read_deadline
from director.config.services import load_config

STATIC = """
node_id: d1
cluster: none
interfaces: {external: ext0, internal: int0}
services_file: /etc/lbd/services.yaml
workers: 1
"""


def errors_of(text: str) -> tuple[str, ...]:
    with pytest.raises(NodeConfigError) as exc:
        parse_node_config(text)
    return exc.value.errors


def test_static_node_needs_no_etcd_and_no_sync() -> None:
    cfg = parse_node_config(STATIC)
    assert cfg.static and cfg.cluster == "none"
    assert cfg.services_file == "/etc/lbd/services.yaml" and cfg.static_role == "master"
    assert cfg.etcd_endpoints == () and cfg.sync_listen == "" and cfg.fence_file is None
    assert not parse_node_config(STATIC.replace("cluster: none", "cluster: lab")
                                 .replace("services_file: /etc/lbd/services.yaml",
                                          "etcd: {endpoints: ['198.18.1.250:2379']}\n"
                                          "sync: {listen: '198.18.1.1:7100'}")).static


def test_static_keys_parse() -> None:
    cfg = parse_node_config(STATIC + "static_role: backup\nfence_file: /run/lbd/fence\n"
                            "stats_file: /run/lbd/stats.json\nrx_ring: false\ntx_ring: false\n"
                            "neigh_max_entries: 64\nneigh_learn_rate: 12.5\n")
    assert (cfg.static_role, cfg.fence_file) == ("backup", "/run/lbd/fence")
    assert cfg.stats_file == "/run/lbd/stats.json"
    assert (cfg.rx_ring, cfg.tx_ring, cfg.neigh_max_entries, cfg.neigh_learn_rate) == (False, False, 64, 12.5)


@pytest.mark.parametrize(("extra", "line"), [
    ("etcd: {endpoints: ['198.18.1.250:2379']}\n", "etcd: not used with cluster: none"),
    ("sync: {listen: '198.18.1.1:7100'}\n", "sync: not used with cluster: none"),
    ("lease_ttl: 2\n", "lease_ttl: not used with cluster: none"),
    ("priority: 3\n", "priority: not used with cluster: none"),
    ("preempt: true\n", "preempt: not used with cluster: none"),
    ("static_role: boss\n", "static_role: must be one of master, backup, got 'boss'"),
    ("fence_file: 3\n", "fence_file: must be a string"),
    ("neigh_max_entries: 0\n", "neigh_max_entries: must be an integer in 1..16777216, got 0"),
    ("neigh_learn_rate: fast\n", "neigh_learn_rate: must be a number in 0..1e+09, got 'fast'"),
    ("rx_ring: maybe\n", "rx_ring: must be"),
])
def test_static_refusals_name_the_field(extra: str, line: str) -> None:
    errs = errors_of(STATIC + extra)
    assert any(e.startswith(line) for e in errs), errs


def test_services_file_is_required_and_every_problem_is_collected() -> None:
    text = STATIC.replace("services_file: /etc/lbd/services.yaml\n", "") + "etcd: {}\nstatic_role: x\n"
    fields = {e.split(":", 1)[0] for e in errors_of(text)}
    assert fields == {"services_file", "etcd", "static_role"}


def test_static_keys_are_refused_in_a_cluster() -> None:
    cluster = ("node_id: d1\ncluster: lab\netcd: {endpoints: ['198.18.1.250:2379']}\n"
               "interfaces: {external: ext0, internal: int0}\nsync: {listen: '198.18.1.1:7100'}\n")
    errs = errors_of(cluster + "services_file: /x.yaml\nstatic_role: master\nfence_file: /f\n")
    assert {e.split(":", 1)[0] for e in errs} == {"services_file", "static_role", "fence_file"}
    assert all("only with cluster: none" in e for e in errs)


def test_rings_off_only_with_one_worker() -> None:
    errs = errors_of(STATIC.replace("workers: 1", "workers: 2") + "tx_ring: false\n")
    assert errs == ("tx_ring: false only with workers: 1 (packet workers always use rings), got 2",)


def test_fence_file_words() -> None:
    assert read_deadline("none\n") is None and read_deadline("") is None
    assert read_deadline("inf") == float("inf") and read_deadline(" 12.5\n") == 12.5
    with pytest.raises(ValueError):
        read_deadline("soon")


def test_the_static_example_parses() -> None:
    examples = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "static"
    cfg = parse_node_config((examples / "d1.yaml").read_text())
    assert cfg.static and cfg.static_role == "master" and cfg.services_file == "/etc/lbd/services.yaml"
    assert [s.name for s in load_config(str(examples / "services.yaml")).services] == ["web"]
