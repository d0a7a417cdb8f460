"""Property tests: random trees, YAML-ish text and bytes into every operator-document parser.

Each parser either returns a valid object (which round-trips and applies) or raises its clean,
bounded ``ConfigError`` — never anything else. ``LBD_FUZZ_EXAMPLES`` raises the example count
(e.g. for a longer ``make fuzz`` run).
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from director.config.node import NodeConfigError, node_config_from_dict, parse_node_config
from director.config.services import (
    ConfigError,
    apply_to_services,
    config_from_dict,
    config_from_texts,
    dump_config,
    parse_config,
    parse_service,
    parse_timeouts,
)
from director.config.validate import MAX_LINE, Errors
from director.health.spec import HealthSpec, health_spec
from director.services.service import ServiceTable

EXAMPLES = int(os.environ.get("LBD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = ["services", "timeouts", "name", "protocol", "vip", "port", "scheduler", "scheduler_options",
          "persistence", "forward", "expire_nodest_conn", "expire_quiescent_template", "dests", "address",
          "weight", "u_threshold", "l_threshold", "healthcheck", "health", "type", "interval", "timeout",
          "rise", "fall", "path", "host", "expect_status", "expect_body", "on_failure", "netmask", "tcp",
          "tcpfin", "udp", "table_size", "fallback", "tab_bits", "node_id", "cluster", "etcd", "endpoints",
          "prefix", "interfaces", "external", "internal", "vmac_id", "sync", "listen", "advertise", "tls",
          "admin", "unix", "token", "metrics", "lease_ttl", "sloppy_grace", "priority", "preempt", "gateways",
          "int_addr", "int_mtu", "table_bits", "events_file", "ca", "cert", "key"]
WORDS = ["tcp", "udp", "wlc", "mh", "sh", "rr", "nat", "dr", "tun", "http", "quiesce", "remove", "/", "/h",
         "198.18.1.1", "198.18.2.10", "0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "24",
         "255.255.255.0", "10.0.0.1:2379", "eth0", "a{99999999999}", "(", "web", "", "x" * 300]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000), st.integers(), st.integers(-2**80, 2**80),
    st.floats(), st.text(max_size=12), st.sampled_from(WORDS))
KEYS = st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS), st.text(max_size=6), st.integers(-2, 2),
                 st.booleans(), st.none())
TREES = st.recursive(SCALARS, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(KEYS, ch, max_size=6),
                     max_leaves=30)
SVC = {"name": "web", "protocol": "tcp", "vip": "198.18.1.1", "port": 80,
       "dests": [{"address": "198.18.2.10", "port": 80}]}
NODE = {"node_id": "d1", "etcd": {"endpoints": ["198.18.1.250:2379"]},
        "interfaces": {"external": "ext0", "internal": "int0"}, "sync": {"listen": "198.18.1.1:7100"}}
YAMLISH = st.lists(st.sampled_from([*"[]{}:,-&*!|>'\"#%@`?~<= \n\tab01.", "!!", "&a ", "*a", "<<", "port",
                                    "name", "\n  ", ": "]), max_size=60).map("".join)


def clean(err: ConfigError) -> None:
    assert err.errors and str(err) == "\n".join(err.errors)
    assert all(len(line) <= MAX_LINE for line in err.errors)
    assert len(str(err)) < 16 * 1024


def check_config(data: Any) -> None:
    try:
        cfg = config_from_dict(data)
    except ConfigError as err:
        clean(err)
        return
    assert parse_config(dump_config(cfg)) == cfg
    apply_to_services(cfg, ServiceTable())


def check_text(text: str | bytes) -> None:
    for parse in (parse_config, parse_timeouts, lambda t: parse_service("web", t),
                  lambda t: config_from_texts({"web": t}, t)):
        try:
            parse(text)
        except ConfigError as err:
            clean(err)
    try:
        parse_node_config(text)
    except NodeConfigError as err:
        clean(err)


def tree_merge(base: dict[str, Any], tree: Any) -> dict[str, Any]:
    if not isinstance(tree, dict):
        return base
    return {**base, **{k: v for k, v in tree.items() if isinstance(k, str)}}


@FUZZ
@given(TREES)
def test_random_trees_into_the_service_schema(tree: Any) -> None:
    check_config(tree)
    check_config({"services": [tree]})
    check_config({"services": [tree_merge(SVC, tree)], "timeouts": tree})
    check_config({"services": [{**SVC, "dests": [tree_merge({"address": "198.18.2.10"}, tree)]}]})
    check_config({"services": [{**SVC, "scheduler": "mh", "scheduler_options": tree}]})


@FUZZ
@given(TREES)
def test_random_trees_into_the_health_spec(tree: Any) -> None:
    for data in (tree, tree_merge({"type": "http"}, tree)):
        errs = Errors()
        spec = health_spec(data, "health", errs)
        assert (spec is None) == (errs.count > 0)
        try:
            assert HealthSpec.from_dict(data) == spec
        except ConfigError as err:
            clean(err)
        if spec is not None:
            assert HealthSpec.from_dict(spec.as_dict()) == spec


@FUZZ
@given(TREES)
def test_random_trees_into_the_node_schema(tree: Any) -> None:
    for data in (tree, tree_merge(NODE, tree)):
        try:
            node_config_from_dict(data)
        except NodeConfigError as err:
            clean(err)


@FUZZ
@given(TREES)
def test_random_trees_as_yaml_text(tree: Any) -> None:
    check_text(yaml.safe_dump(tree))
    check_text(yaml.safe_dump({"services": [tree_merge(SVC, tree)]}))


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    check_text(raw)
    check_text(raw.decode("utf-8", "surrogateescape"))
    check_text(b"services:\n- " + raw)


@FUZZ
@given(YAMLISH)
def test_yaml_punctuation_soup(text: str) -> None:
    check_text(text)
    check_text("services:\n- " + text)
