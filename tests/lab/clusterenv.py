"""A lab cluster under client traffic, shared by the failover, HA and static-stability lab tests.

`ClusterEnv` holds a lab with two `directord` nodes, the traffic tool in the client namespace
(long-lived verified TCP streams plus new sticky connections) and, optionally, the fabric observer
(captures on every director port of both bridges). Its helpers wait on conditions with generous
deadlines; none of them asserts a duration.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deploy.cluster import LabCluster, NodeProc, split_brain, wait_for
from deploy.drill import TrafficProc, services_yaml
from deploy.lab import Lab, new_name
from deploy.observer import FabricObserver


class ClusterEnv:
    def __init__(self, lab: Lab, cluster: LabCluster, conns: int, *, observe: bool = False) -> None:
        self.lab = lab
        self.cluster = cluster
        self.conns = conns
        self.kills: dict[str, list[float]] = {}
        self.traffic: TrafficProc | None = None
        self.observer = FabricObserver(lab, [n.n for n in cluster.nodes]) if observe else None

    def start_traffic(self) -> TrafficProc:
        traffic = self.traffic = TrafficProc(self.lab, self.conns, 10.0, 0.05)
        traffic.wait_flowing(self.conns, 90)
        return traffic

    def settle(self, since_ok: int) -> dict[str, Any]:
        """Every client address made a new connection since `since_ok`, and no stream is stalled."""
        assert self.traffic is not None
        return self.traffic.wait_settled(since_ok, 180)

    def assert_clean(self, end: dict[str, Any]) -> None:
        """Every stream alive, no reset, no byte wrong, no sticky client moved."""
        assert end["alive"] == self.conns and end["resets"] == 0 and end["mismatches"] == 0, end
        assert end["sources_moved"] == [], end

    def no_split_brain(self) -> bool:
        c = self.cluster
        return not split_brain({n.node_id: c.active_intervals(n, self.kills) for n in c.nodes})

    def frames(self) -> dict[str, list[float]]:
        assert self.observer is not None
        return self.observer.frames()

    def frames_after(self, name: str, t: float) -> int:
        return sum(1 for ts in self.frames().get(name, []) if ts > t)

    def other(self, node: NodeProc) -> NodeProc:
        return next(n for n in self.cluster.nodes if n is not node)

    def roles_under_traffic(self) -> tuple[NodeProc, NodeProc, int]:
        """(master, backup, new connections so far) once traffic flows: the start of every fault test."""
        master = self.cluster.wait_master()
        traffic = self.start_traffic()
        return master, self.other(master), int(traffic.report()["new_ok"])

    def forwarding_since(self, name: str, t: float, frames: int = 200) -> bool:
        """`name` forwarded more than `frames` frames after `t` and still forwards: it sent a frame
        within the last second. (Frames stamped after the call's own clock reading are merely the
        ones captured while the files were read: a race, not evidence.)"""
        recent = time.time() - 1.0
        return self.frames_after(name, max(t, recent)) > 0 and self.frames_after(name, t) > frames


@contextmanager
def cluster_env(conns: int, *, observe: bool = False, etcd_members: int = 1) -> Iterator[ClusterEnv]:
    """A fresh, uniquely named lab with two nodes up and in sync; torn down whatever happens."""
    lab = Lab(new_name(), n_directors=2, n_reals=3)
    cluster = LabCluster(lab, n_nodes=2, etcd_members=etcd_members)
    env = ClusterEnv(lab, cluster, conns, observe=observe)
    try:
        cluster.bring_up(services_yaml(3))
        if env.observer is not None:
            env.observer.start()
        yield env
    finally:
        if env.observer is not None:
            env.observer.stop()
        if env.traffic is not None:
            env.traffic.stop()
        cluster.close()
        lab.down()


@contextmanager
def admin_cluster(n_nodes: int, services: str, node_extra: str = "") -> Iterator[LabCluster]:
    """A fresh, uniquely named lab (three real servers) with `n_nodes` nodes up, in sync and their
    admin sockets there; torn down whatever happens."""
    lab = Lab(new_name(), n_directors=n_nodes, n_reals=3)
    cluster = LabCluster(lab, n_nodes=n_nodes, node_extra=node_extra)
    try:
        cluster.bring_up(services)
        wait_for("admin sockets", lambda: all(cluster.admin_socket(n).exists() for n in cluster.nodes), 30)
        yield cluster
    finally:
        cluster.close()
        lab.down()
