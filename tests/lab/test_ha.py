"""HA under faults nobody scripted: a frozen master, a crashed master, a dead link.

Every test runs real `directord` processes with real etcd in its own lab, real TCP through the VIP,
and judges with the fabric observer (captures on every director port of the bridges), not with the
nodes' own reports. Conditions are awaited with generous deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from deploy.cluster import wait_for
from deploy.observer import overlaps
from tests.lab.clusterenv import ClusterEnv, cluster_env

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

CONNS = 20


HaEnv = ClusterEnv


@pytest.fixture
def ha() -> Iterator[HaEnv]:
    with cluster_env(CONNS, observe=True) as env:
        yield env


def test_frozen_master_never_forwards_beside_the_new_one(ha: HaEnv) -> None:
    """SIGSTOP the master under traffic until the backup took over, SIGCONT: the fabric must never
    see both directors forward (the resumed node's packet path checks its fence before each batch)."""
    c = ha.cluster
    old, new, new_ok = ha.roles_under_traffic()
    wait_for("the master to forward under traffic", lambda: ha.frames_after(old.node_id, 0) > 100, 60)
    t_stop = time.time()
    c.signal_node(old, signal.SIGSTOP)
    try:
        wait_for("the backup to take over", lambda: c.last_event(new, "first_forward", t_stop), 60)
        t_new = time.time()
        wait_for("the new master to carry traffic", lambda: ha.frames_after(new.node_id, t_new) > 200, 60)
    finally:
        c.signal_node(old, signal.SIGCONT)
    t_cont = time.time()
    wait_for("the old master to notice it lost", lambda: c.last_event(old, "role", t_cont, role="BACKUP"), 60)
    wait_for("the new master to go on after the resume",
             lambda: ha.frames_after(new.node_id, t_cont) > 200, 60)
    ha.assert_clean(ha.settle(new_ok))
    frames = ha.frames()
    assert not [t for t in frames[old.node_id] if t > t_cont], "the resumed master forwarded"
    assert overlaps(frames) == []


def test_crashed_master_process_is_replaced_through_the_exit_hook(ha: HaEnv) -> None:
    """kill -9 under a supervisor: the exit hook revokes the dead master's lease at once."""
    c = ha.cluster
    old, new, new_ok = ha.roles_under_traffic()
    t_kill = c.kill_node(old)  # the launcher runs the exit hook after reaping the process group
    assert old.released_at > t_kill
    assert not old.lease_file.exists(), "the hook removes the lease file once released"
    wait_for("the backup to take over", lambda: c.last_event(new, "first_forward", t_kill), 60)
    ha.assert_clean(ha.settle(new_ok))
    assert overlaps(ha.frames()) == []


def test_master_with_a_dead_link_resigns_and_a_backup_with_one_does_not_campaign(ha: HaEnv) -> None:
    c = ha.cluster
    old, new, new_ok = ha.roles_under_traffic()
    # the backup's client-side link dies first (etcd and sync stay reachable on the server side):
    # it must not campaign when the master goes
    ha.lab.exec(ha.lab.switch, f"ip link set d{new.n}e down")
    wait_for("the backup's link tracker to see its link down", lambda: c.last_event(new, "link_down"), 30)
    t_down = time.time()
    ha.lab.exec(ha.lab.switch, f"ip link set d{old.n}e down")  # now the master's client side dies
    wait_for("the master to resign for its link", lambda: c.last_event(old, "link_down", t_down), 30)
    wait_for("the master to stop forwarding", lambda: c.last_event(old, "stopped_forwarding", t_down), 30)
    wait_for("the backup to see no master", lambda: c.last_event(new, "role", t_down, master=None), 30)
    assert c.last_event(new, "forwarding", t_down) is None, "a backup with a dead link campaigned"
    t_up = time.time()
    ha.lab.exec(ha.lab.switch, f"ip link set d{new.n}e up")
    wait_for("the backup to take over once its link is back",
             lambda: c.last_event(new, "forwarding", t_up), 60)
    ha.lab.exec(ha.lab.switch, f"ip link set d{old.n}e up")
    ha.assert_clean(ha.settle(new_ok))
    assert overlaps(ha.frames()) == []
