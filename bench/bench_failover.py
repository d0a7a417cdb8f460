"""Takeover time of a real cluster in the lab: kill -9 the master, time to the first forwarded packet.

Theory of operation
-------------------
For each etcd setting (tuned 100/600 ms, then etcd's defaults) a lab with two `directord` nodes and
a trickle of client traffic (10 echo streams, a round trip every 10 ms each) is built once. Each
round measures three takeovers, each from the fault to the first packet the survivor forwarded (its
event log, same wall clock), restarting the faulted node and waiting until it is back in sync:

* ``crash``: kill -9 of the master *under a supervisor*: the launcher reaps the process group and
  runs the exit hook (``python -m director.cluster.release``, what ``ExecStopPost=`` runs), which
  revokes the dead master's lease at once;
* ``hostloss``: kill -9 with no hook, as when the whole host is gone: the lease runs out in etcd;
* ``graceful``: SIGUSR1 (flush sync, resign).

``crash`` runs with the director-host tuning of docs/HA.md (``/sys/kernel/rcu_expedited`` = 1:
a dead process's AF_PACKET rings are torn down in milliseconds), ``crash_untuned`` with the host's
RCU setting as found (restored afterwards either way).

Figures are medians over the rounds (p95 for host loss); the reference for host loss is the same
measurement with etcd's default settings.
"""

from __future__ import annotations

import contextlib
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.drill import TrafficProc, services_yaml
from deploy.lab import Lab, new_name


def _first_forward(cluster: LabCluster, node: NodeProc, since: float) -> Callable[[], Any]:
    return lambda: cluster.last_event(node, "first_forward", since)


RCU_EXPEDITED = Path("/sys/kernel/rcu_expedited")


@contextlib.contextmanager
def rcu_expedited(on: bool) -> Iterator[None]:
    """Expedited RCU grace periods on (or off) for the block; the previous value is put back."""
    old = RCU_EXPEDITED.read_text().strip()
    RCU_EXPEDITED.write_text("1" if on else "0")
    try:
        yield
    finally:
        RCU_EXPEDITED.write_text(old)


def _kill(cluster: LabCluster, hook: bool) -> float:
    master = cluster.wait_master(60)
    backup = next(n for n in cluster.nodes if n is not master)
    cluster.wait_in_sync(backup, 60)
    t = cluster.kill_node(master, exit_hook=hook)
    ev = wait_for("first forward", _first_forward(cluster, backup, t), 60)
    cluster.start_node(master)
    cluster.wait_in_sync(master, 60)
    return float(ev["t"]) - t


def _rounds(tuned: bool, rounds: int, crash: bool = True) -> dict[str, list[float]]:
    lab = Lab(new_name(), n_directors=2, n_reals=2)
    cluster = LabCluster(lab, n_nodes=2, tuned_etcd=tuned)
    traffic = None
    out: dict[str, list[float]] = {"crash": [], "crash_untuned": [], "hostloss": [], "graceful": []}
    try:
        master = cluster.bring_up(services_yaml(2))
        backup = next(n for n in cluster.nodes if n is not master)
        traffic = TrafficProc(lab, 10, 5.0, 0.05, udp_rate=500.0)
        wait_for("traffic", lambda: traffic is not None and traffic.report()["alive"] >= 10, 60, 0.2)
        for _ in range(rounds):
            if crash:
                with rcu_expedited(True):
                    out["crash"].append(_kill(cluster, hook=True))
                out["crash_untuned"].append(_kill(cluster, hook=True))
            out["hostloss"].append(_kill(cluster, hook=False))
            if crash:
                master = cluster.wait_master(60)
                backup = next(n for n in cluster.nodes if n is not master)
                cluster.wait_in_sync(backup, 60)
                t = time.time()
                cluster.signal_node(master, signal.SIGUSR1)
                ev = wait_for("first forward", _first_forward(cluster, backup, t), 60)
                out["graceful"].append(float(ev["t"]) - t)
    finally:
        if traffic is not None:
            traffic.stop()
        cluster.close()
        lab.down()
    return out


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def run(quick: bool = False) -> dict[str, float]:
    rounds = 2 if quick else 9
    tuned = _rounds(True, rounds)
    default = _rounds(False, rounds, crash=False)
    out = {
        "failover_takeover_crash_ms": statistics.median(tuned["crash"]) * 1000.0,
        "failover_takeover_crash_untuned_host_ms": statistics.median(tuned["crash_untuned"]) * 1000.0,
        "failover_takeover_hostloss_s": statistics.median(tuned["hostloss"]),
        "failover_takeover_hostloss_ms": statistics.median(tuned["hostloss"]) * 1000.0,
        "failover_takeover_hostloss_p95_s": p95(tuned["hostloss"]),
        "failover_takeover_default_s": statistics.median(default["hostloss"]),
        "failover_graceful_ms": statistics.median(tuned["graceful"]) * 1000.0,
    }
    for name, xs in (("crash (exit hook), tuned etcd and host", tuned["crash"]),
                     ("crash (exit hook), tuned etcd, host RCU as found", tuned["crash_untuned"]),
                     ("host loss, tuned etcd", tuned["hostloss"]),
                     ("host loss, default etcd", default["hostloss"]),
                     ("graceful handover", tuned["graceful"])):
        print(f"    {name} (s):", [round(x, 3) for x in xs])
    return out


if __name__ == "__main__":
    print(run())
