"""Takeover time of a real cluster in the lab: kill -9 the master, time to the first forwarded packet.

Theory of operation
-------------------
For each etcd setting (tuned 100/600 ms, then etcd's defaults) a lab with two `directord` nodes and
a trickle of client traffic (10 echo streams, a round trip every 10 ms each) is built once. Each
round kills the master with SIGKILL, reads from the survivor's event log when it forwarded its first
packet (same wall clock), restarts the killed node and waits until it is back in sync, so the next
round kills the other node. The graceful handover (SIGUSR1: flush sync, resign) is timed the same way.
Figures are medians over the rounds; the reference is the same measurement with etcd's defaults.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.drill import TrafficProc, services_yaml
from deploy.lab import Lab, new_name


def _first_forward(cluster: LabCluster, node: NodeProc, since: float) -> Callable[[], Any]:
    return lambda: cluster.last_event(node, "first_forward", since)


def _rounds(tuned: bool, rounds: int) -> tuple[list[float], list[float]]:
    lab = Lab(new_name(), n_directors=2, n_reals=2)
    cluster = LabCluster(lab, n_nodes=2, tuned_etcd=tuned)
    traffic = None
    kills: list[float] = []
    resigns: list[float] = []
    try:
        master = cluster.bring_up(services_yaml(2))
        backup = next(n for n in cluster.nodes if n is not master)
        traffic = TrafficProc(lab, 10, 5.0, 0.05, udp_rate=500.0)
        wait_for("traffic", lambda: traffic is not None and traffic.report()["alive"] >= 10, 60, 0.2)
        for _ in range(rounds):
            master = cluster.wait_master(60)
            backup = next(n for n in cluster.nodes if n is not master)
            cluster.wait_in_sync(backup, 60)
            t = cluster.kill_node(master)
            ev = wait_for("first forward", _first_forward(cluster, backup, t), 60)
            kills.append(float(ev["t"]) - t)
            cluster.start_node(master)
            cluster.wait_in_sync(master, 60)
            t = time.time()
            cluster.signal_node(backup, signal.SIGUSR1)
            ev = wait_for("first forward", _first_forward(cluster, master, t), 60)
            resigns.append(float(ev["t"]) - t)
    finally:
        if traffic is not None:
            traffic.stop()
        cluster.close()
        lab.down()
    return kills, resigns


def run(quick: bool = False) -> dict[str, float]:
    rounds = 2 if quick else 9
    tuned_kill, tuned_resign = _rounds(True, rounds)
    default_kill, _ = _rounds(False, rounds)
    out = {
        "failover_takeover_tuned_s": statistics.median(tuned_kill),
        "failover_takeover_default_s": statistics.median(default_kill),
        "failover_graceful_ms": statistics.median(tuned_resign) * 1000.0,
    }
    print("    takeover after kill -9, tuned etcd:", [round(x, 3) for x in tuned_kill])
    print("    takeover after kill -9, default etcd:", [round(x, 3) for x in default_kill])
    print("    graceful handover (s):", [round(x, 3) for x in tuned_resign])
    return out


if __name__ == "__main__":
    print(run())
