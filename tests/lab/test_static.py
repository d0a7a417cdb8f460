"""Static stability in the lab: etcd out of reach must not stop a healthy master (docs/HA.md, case table).

Real `directord` processes, real etcd, real TCP through the VIP; the fabric observer (captures on
every director port of both bridges) is the judge of who forwarded when. Conditions are awaited with
generous deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from deploy.cluster import wait_for
from deploy.lab import CTL_ADDR, director_int
from deploy.observer import overlaps
from tests.lab.clusterenv import ClusterEnv, cluster_env

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

LEASE_PLUS = 3.0
"""Seconds past which a lease of 1 s is certainly gone: frames after that prove static stability."""


@pytest.fixture
def static() -> Iterator[ClusterEnv]:
    with cluster_env(20, observe=True) as env:
        yield env


def test_etcd_down_for_everybody(static: ClusterEnv) -> None:
    env, c = static, static.cluster
    master, backup, new_ok = env.roles_under_traffic()
    t0 = time.time()
    c.etcd.stop()
    try:
        wait_for("the master to forward past its lease",
                 lambda: env.frames_after(master.node_id, t0 + LEASE_PLUS) > 200, 60)
        assert c.last_event(master, "stopped_forwarding", t0) is None
        assert c.last_event(backup, "forwarding", t0) is None
    finally:
        c.etcd.start()
    wait_for("the master's election to settle", lambda: c.wait_master() is master, 60)
    env.assert_clean(env.settle(new_ok))
    assert c.last_event(master, "stopped_forwarding", t0) is None, "the master stopped during the outage"
    assert overlaps(env.frames()) == []
    c.wait_in_sync(backup, 90)


def test_master_cut_from_etcd_only(static: ClusterEnv) -> None:
    env, c = static, static.cluster
    master, backup, new_ok = env.roles_under_traffic()
    t0 = time.time()
    c.cut(master, [CTL_ADDR], c.etcd.client_port)
    try:
        wait_for("the backup to see the master's lease gone",
                 lambda: c.last_event(backup, "role", t0, master=None), 60)
        wait_for("the master to forward past its lease",
                 lambda: env.forwarding_since(master.node_id, t0 + LEASE_PLUS), 60)
        assert c.last_event(backup, "forwarding", t0) is None, "the backup took over"
    finally:
        c.heal(master)
    wait_for("the master to win its key back", lambda: c.last_event(master, "master", t0), 60)
    assert c.last_event(master, "stopped_forwarding", t0) is None
    assert c.last_event(backup, "forwarding", t0) is None
    env.assert_clean(env.settle(new_ok))
    assert overlaps(env.frames()) == []
    c.wait_in_sync(backup, 90)


def test_master_cut_from_etcd_and_from_its_backups_hands_over_without_overlap(static: ClusterEnv) -> None:
    env, c = static, static.cluster
    master, backup, new_ok = env.roles_under_traffic()
    t0 = time.time()
    c.cut(master, [CTL_ADDR], c.etcd.client_port)
    c.cut(master, [director_int(backup.n)])
    try:
        wait_for("the isolated master to stop", lambda: c.last_event(master, "stopped_forwarding", t0), 60)
        wait_for("the backup to take over", lambda: c.last_event(backup, "first_forward", t0), 60)
    finally:
        c.heal(master)
    env.assert_clean(env.settle(new_ok))
    assert overlaps(env.frames()) == []


def test_backup_cut_from_its_master_only_changes_nothing(static: ClusterEnv) -> None:
    """The backup stops promising; the master keeps its lease (etcd is up); nobody campaigns."""
    env, c = static, static.cluster
    master, backup, new_ok = env.roles_under_traffic()
    t0 = time.time()
    c.cut(backup, [director_int(master.n)], 7100)
    try:
        wait_for("the backup to lose its stream",
                 lambda: c.last_event(backup, "sync_state", t0, in_sync=False), 60)
        wait_for("the master to forward past the backup's last promise",
                 lambda: env.forwarding_since(master.node_id, t0 + LEASE_PLUS), 60)
        assert c.last_event(backup, "forwarding", t0) is None
        assert c.last_event(master, "stopped_forwarding", t0) is None
    finally:
        c.heal(backup)
    c.wait_in_sync(backup, 90)
    env.assert_clean(env.settle(new_ok))
    assert overlaps(env.frames()) == []


def test_master_killed_during_an_etcd_outage_is_replaced_once_etcd_returns(static: ClusterEnv) -> None:
    """Nobody can take over while etcd is down (documented); then a synced backup does, losing nothing."""
    env, c = static, static.cluster
    master, backup, new_ok = env.roles_under_traffic()
    t0 = time.time()
    c.etcd.stop()
    try:
        c.kill_node(master)  # the exit hook cannot reach etcd: the lease stays until etcd expires it
        wait_for("the backup's promise to lapse and its stream to end",
                 lambda: c.last_event(backup, "sync_state", t0, in_sync=False), 60)
        assert c.last_event(backup, "forwarding", t0) is None, "a takeover without etcd"
    finally:
        c.etcd.start()
    wait_for("the synced backup to take over once etcd is back",
             lambda: c.last_event(backup, "first_forward", t0), 90)
    env.assert_clean(env.settle(new_ok))
    assert overlaps(env.frames()) == []
