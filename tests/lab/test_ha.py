"""HA under faults nobody scripted: a frozen master, a crashed master, a dead link.

Every test runs real `directord` processes with real etcd in its own lab, real TCP through the VIP,
and judges with the fabric observer (captures on every director port of the bridges), not with the
nodes' own reports. Conditions are awaited with generous deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.drill import TrafficProc, services_yaml
from deploy.lab import Lab, new_name
from deploy.observer import FabricObserver, overlaps

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

CONNS = 20


class HaEnv:
    def __init__(self, lab: Lab, cluster: LabCluster) -> None:
        self.lab = lab
        self.cluster = cluster
        self.observer = FabricObserver(lab, [n.n for n in cluster.nodes])
        self.traffic: TrafficProc | None = None

    def start_traffic(self) -> TrafficProc:
        self.traffic = TrafficProc(self.lab, CONNS, 10.0, 0.05)
        n_src = self.traffic.n_sources

        def ready() -> bool:
            assert self.traffic is not None
            r = self.traffic.report()
            return bool(r["alive"] >= CONNS and r["sticky_sources"] >= n_src)

        wait_for("traffic flowing", ready, 90, 0.5)
        return self.traffic

    def settle(self, since_ok: int) -> dict[str, Any]:
        assert self.traffic is not None
        need = since_ok + 2 * self.traffic.n_sources

        def settled() -> dict[str, Any] | None:
            assert self.traffic is not None
            r = self.traffic.report()
            return r if r["new_ok"] >= need and r["current_stall_ms"] < 1500 else None

        got: dict[str, Any] = wait_for("traffic to settle", settled, 180, 0.5)
        return got

    def frames_after(self, name: str, t: float) -> int:
        return sum(1 for ts in self.observer.frames().get(name, []) if ts > t)

    def other(self, node: NodeProc) -> NodeProc:
        return next(n for n in self.cluster.nodes if n is not node)


@pytest.fixture
def ha() -> Iterator[HaEnv]:
    lab = Lab(new_name(), n_directors=2, n_reals=3)
    cluster = LabCluster(lab, n_nodes=2)
    env = HaEnv(lab, cluster)
    try:
        cluster.bring_up(services_yaml(3))
        env.observer.start()
        yield env
    finally:
        env.observer.stop()
        if env.traffic is not None:
            env.traffic.stop()
        cluster.close()
        lab.down()


def _assert_clean(end: dict[str, Any]) -> None:
    assert end["alive"] == CONNS and end["resets"] == 0 and end["mismatches"] == 0, end
    assert end["sources_moved"] == [], end


def test_frozen_master_never_forwards_beside_the_new_one(ha: HaEnv) -> None:
    """SIGSTOP the master under traffic until the backup took over, SIGCONT: the fabric must never
    see both directors forward (the resumed node's packet path checks its fence before each batch)."""
    c = ha.cluster
    old = c.wait_master()
    new = ha.other(old)
    traffic = ha.start_traffic()
    before = traffic.report()
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
    end = ha.settle(before["new_ok"])
    _assert_clean(end)
    frames = ha.observer.frames()
    assert not [t for t in frames[old.node_id] if t > t_cont], "the resumed master forwarded"
    assert overlaps(frames) == []


def test_crashed_master_process_is_replaced_through_the_exit_hook(ha: HaEnv) -> None:
    """kill -9 under a supervisor: the exit hook revokes the dead master's lease at once."""
    c = ha.cluster
    old = c.wait_master()
    new = ha.other(old)
    traffic = ha.start_traffic()
    before = traffic.report()
    t_kill = c.kill_node(old)  # the launcher runs the exit hook after reaping the process group
    assert old.released_at > t_kill
    assert not old.lease_file.exists(), "the hook removes the lease file once released"
    wait_for("the backup to take over", lambda: c.last_event(new, "first_forward", t_kill), 60)
    _assert_clean(ha.settle(before["new_ok"]))
    assert overlaps(ha.observer.frames()) == []


def test_master_with_a_dead_link_resigns_and_a_backup_with_one_does_not_campaign(ha: HaEnv) -> None:
    c = ha.cluster
    old = c.wait_master()
    new = ha.other(old)
    traffic = ha.start_traffic()
    before = traffic.report()
    # the backup's client-side link dies first (etcd and sync stay reachable on the server side):
    # it must not campaign when the master goes
    ha.lab.exec(ha.lab.switch, f"ip link set d{new.n}e down")
    wait_for("the backup to see its link down", lambda: ha.lab.exec(
        ha.lab.directors[new.n - 1].ns, "ip -o link show ext").stdout.find("LOWER_UP") < 0, 30)
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
    _assert_clean(ha.settle(before["new_ok"]))
    assert overlaps(ha.observer.frames()) == []
