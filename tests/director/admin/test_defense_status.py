"""The defense view in Status: the daemon's view of the policy, its protobuf, `directorctl status`."""

from __future__ import annotations

from director.admin.api import DefenseView, NodeStatus
from director.admin.cli_format import status_text
from director.admin.convert import status_pb
from director.admin.node import defense_view
from director.dataplane.config import CoreConfig
from director.dataplane.core import Director
from director.dataplane.packet import Drop
from director.services.service import ServiceTable
from director.table.conn import ConnTable
from director.table.defense_policy import DefensePolicy, DefenseSettings


def test_defense_view_from_policy_and_counters_to_status_text() -> None:
    clock = lambda: 1.0  # noqa: E731
    director = Director(ConnTable(clock), ServiceTable(), clock, CoreConfig())
    policy = DefensePolicy(DefenseSettings(conn_threshold=100, max_conns=400, rss_threshold=1 << 30,
                                           rss_max=2 << 30))
    policy.update(250, 10 << 20, 1.0)
    policy.note_random_drop(7)
    director.counters.counts[Drop.DEFENSE_DROP] += 5
    director.counters.counts[Drop.TABLE_FULL] += 2
    view = defense_view(policy, director)
    assert view == DefenseView("auto (engaged)", "auto (engaged)", "auto (engaged)", 0.5, 2, 100, 400,
                               10 << 20, 1 << 30, 2 << 30, 7, 5, 2, 1)
    st = NodeStatus("d1", "master", 3, "d1", "", (), 240, 10, 1, 2, 5.0, "x", defense=view)
    m = status_pb(st)
    assert m.defense.drop_rate == 2 and m.defense.entries_dropped == 7 and m.defense.rss == 10 << 20
    text = status_text(m)
    assert "drop_entry auto (engaged)" in text and "(1 in 2)" in text
    assert "conns 250/400 (from 100)" in text and "entries 7" in text and "table full 2" in text
