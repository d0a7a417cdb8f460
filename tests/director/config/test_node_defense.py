"""Node YAML ``defense:`` (director.config.node) and the sizes derived for the box (director.daemon)."""

from __future__ import annotations

import pytest

from director.config.node import DefenseConfig, NodeConfigError, parse_node_config
from director.daemon import defense_settings
from director.table.defense_policy import Mode

BASE = ('node_id: a\netcd: {endpoints: ["198.18.1.250:2379"]}\ninterfaces: {external: e, internal: i}\n'
        'sync: {listen: "198.18.1.1:7100"}\n')
MIB = 1 << 20


def test_defaults_are_auto_and_sized_for_the_box() -> None:
    d = parse_node_config(BASE).defense
    assert d == DefenseConfig()
    s = defense_settings(d, 8 << 30)
    assert (s.drop_entry, s.drop_packet, s.secure_tcp) == (Mode.AUTO,) * 3
    assert s.rss_max == 2 << 30 and s.rss_threshold == 3 * (2 << 30) // 4
    assert s.max_conns == (2 << 30) // 2048 and s.conn_threshold == s.max_conns // 2
    assert defense_settings(d, 0).max_conns == 65536  # memory unknown: a floor, never unbounded


def test_explicit_values() -> None:
    d = parse_node_config(BASE + "defense: {drop_entry: always, secure_tcp: off, am_droprate: 3, "
                                 "conn_threshold: 100, max_conns: 200, rss_threshold_mb: 50, rss_max_mb: 80}"
                          ).defense
    s = defense_settings(d, 8 << 30)
    assert (s.drop_entry, s.drop_packet, s.secure_tcp, s.am_droprate) == (Mode.ALWAYS, Mode.AUTO, Mode.OFF, 3)
    assert (s.conn_threshold, s.max_conns, s.rss_threshold, s.rss_max) == (100, 200, 50 * MIB, 80 * MIB)


@pytest.mark.parametrize(("doc", "field"), [
    ("defense: {drop_entry: sometimes}", "defense.drop_entry"),
    ("defense: {drop_packet: 1}", "defense.drop_packet"),
    ("defense: {max_conns: -1}", "defense.max_conns"),
    ("defense: {max_conns: .nan}", "defense.max_conns"),
    ("defense: {max_conns: 10, conn_threshold: 10}", "defense.conn_threshold"),
    ("defense: {rss_max_mb: 10, rss_threshold_mb: 20}", "defense.rss_threshold_mb"),
    ("defense: {am_droprate: 0}", "defense.am_droprate"),
    ("defense: {bogus: 1}", "defense.bogus"),
    ("defense: [1]", "defense"),
])
def test_bad_values_name_the_field(doc: str, field: str) -> None:
    with pytest.raises(NodeConfigError) as exc:
        parse_node_config(BASE + doc)
    assert any(e.startswith(field + ":") for e in exc.value.errors), exc.value.errors
