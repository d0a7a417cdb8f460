"""directord with `workers: 2` in the lab: two packet worker processes per node (director.workers).

Each test builds its own uniquely named lab with real etcd. The node writes its per-worker counters to
``<events file>.workers.json`` once a second (director.workers.pool); the tests read them to see which
worker forwarded. Conditions are polled with generous deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.cluster import METRICS_PORT, LabCluster, NodeProc, wait_for
from deploy.drill import Drill, TrafficProc
from deploy.drill import services_yaml as drill_services
from deploy.lab import VIP_NAT, Lab, director_int, new_name, real_addr
from director.cluster.release import pid_alive
from director.dataplane.io.shard import shard_of
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.lab.clusterenv import ClusterEnv

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

WORKERS = "workers: 2"
SLASH24 = 0xFFFFFF00


def web_yaml(persistence: str = "", scheduler: str = "rr", weights: tuple[int, ...] = (1, 1, 1)) -> str:
    dests = "\n".join(f"      - {{address: {real_addr(i)}, port: 80, weight: {w}}}"
                      for i, w in enumerate(weights, 1))
    return (f"timeouts: {{tcp: 900, tcpfin: 120, udp: 300}}\nservices:\n  - name: web\n    protocol: tcp\n"
            f"    vip: {VIP_NAT}\n    port: 80\n    scheduler: {scheduler}\n    forward: nat\n{persistence}"
            f"    dests:\n{dests}\n")


def worker_stats(node: NodeProc) -> list[dict[str, Any]]:
    path = Path(f"{node.events}.workers.json")
    try:
        rows: list[dict[str, Any]] = json.loads(path.read_text())["workers"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []
    return rows


def forwarded(row: dict[str, Any]) -> int:
    """Packets the worker forwarded for a virtual service (both directions)."""
    return int(row.get("forwarded", 0))


def http_gets(lab: Lab, sources: list[str], each: int) -> dict[str, list[str]]:
    """`each` HTTP GETs to the VIP from every client address; the real servers that answered."""
    code = (
        "import http.client, json\n"
        "out = {}\n"
        f"for src in {sources!r}:\n"
        "    names = []\n"
        f"    for _ in range({each}):\n"
        f"        c = http.client.HTTPConnection({VIP_NAT!r}, 80, timeout=10, source_address=(src, 0))\n"
        "        c.request('GET', '/')\n"
        "        names.append(c.getresponse().read().decode().strip())\n"
        "        c.close()\n"
        "    out[src] = names\n"
        "print(json.dumps(out))\n"
    )
    res = lab.run_python(lab.client.ns, code, timeout=120)
    got: dict[str, list[str]] = json.loads(res.stdout.strip().splitlines()[-1])
    return got


@pytest.fixture
def single() -> Iterator[tuple[Lab, LabCluster]]:
    lab = Lab(new_name(), n_directors=1, n_reals=3)
    cluster = LabCluster(lab, n_nodes=1, node_extra=WORKERS)
    try:
        yield lab, cluster
    finally:
        cluster.close()
        lab.down()


def _ready_workers(cluster: LabCluster, node: NodeProc) -> None:
    """Both workers started and report themselves active (the master's role reached them)."""
    wait_for("both workers ready", lambda: len({e["worker"] for e in cluster.current_events(node)
                                                if e["event"] == "worker_ready"}) == 2, 60)
    wait_for("both workers active", lambda: [r.get("active") for r in worker_stats(node)] == [True, True], 60)


def test_two_workers_forward_nat_and_each_takes_its_share_of_the_clients(
        single: tuple[Lab, LabCluster]) -> None:
    lab, cluster = single
    node = cluster.bring_up(web_yaml())
    _ready_workers(cluster, node)
    sources = lab.client_sources()
    got = http_gets(lab, sources, 3)
    assert all(len(names) == 3 and all(names) for names in got.values()), got
    expected = {shard_of(int(ipaddress.IPv4Address(s)), 0xFFFFFFFF, 2) for s in sources}
    assert expected == {0, 1}  # the lab's client addresses fall into both shards

    def both_forwarded() -> list[dict[str, Any]] | None:
        rows = worker_stats(node)
        return rows if len(rows) == 2 and all(forwarded(r) > 0 for r in rows) else None

    rows = wait_for("both workers to report forwarded frames", both_forwarded, 30)
    assert len({r["pid"] for r in rows}) == 2
    assert all(r["handler_errors"] == 0 for r in rows)


def test_admin_gives_the_node_totals_over_both_workers(single: tuple[Lab, LabCluster]) -> None:
    """Status, ListConns and GetStats of a `workers: 2` node count every worker's conns and packets."""
    lab, cluster = single
    node = cluster.bring_up(web_yaml())
    _ready_workers(cluster, node)
    sources = lab.client_sources()
    got = http_gets(lab, sources, 3)
    assert sum(len(v) for v in got.values()) == 30
    stub = pb_grpc.AdminStub(grpc.insecure_channel(f"unix:{cluster.admin_socket(node)}"))

    def totals() -> tuple[Any, list[dict[str, Any]]] | None:
        rows = worker_stats(node)  # written once a second: wait until it shows what GetStats shows
        st = stub.GetStats(pb.GetStatsRequest(), timeout=10)
        created = [int(r.get("created", 0)) for r in rows]
        moved = sum(forwarded(r) for r in rows)
        if len(rows) == 2 and min(created) > 0 and st.services[0].counters.conns == sum(created) >= 30 \
                and st.totals.inpkts + st.totals.outpkts == moved:
            return st, rows
        return None

    # both workers created conns and forwarded packets, and the node's totals are their sums
    stats, rows = wait_for("GetStats to hold the sums over both workers", totals, 30)
    conns = [c for ch in stub.ListConns(pb.ListConnsRequest(), timeout=10) for c in ch.conns]
    assert len(conns) == stats.services[0].counters.conns and {c.caddr for c in conns} == set(sources)
    assert stub.Status(pb.StatusRequest(), timeout=10).conns == len(conns)
    # the metrics scrape has a row per worker, both up and both forwarding
    code = ("import urllib.request\n"
            f"print(urllib.request.urlopen('http://{director_int(node.n)}:{METRICS_PORT}/metrics', timeout=5)"
            ".read().decode())\n")
    text = lab.run_python(lab.ctl.ns, code, timeout=60).stdout
    for w in ("0", "1"):
        assert f'lbd_worker_up{{worker="{w}"}} 1.0' in text, text[-2000:]
        row = next(x for x in text.splitlines() if x.startswith(f'lbd_worker_packets_total{{worker="{w}"}}'))
        assert float(row.split()[-1]) > 0
    # flush and zero reach the workers' tables and counters, not only the parent's sums
    stub.ZeroCounters(pb.ZeroCountersRequest(), timeout=10)
    assert stub.Flush(pb.FlushRequest(), timeout=10).removed == len(conns)
    wait_for("every worker's table and counters emptied", lambda: all(
        r.get("conns") == 0 and r.get("created") == 0 and forwarded(r) == 0 for r in worker_stats(node)), 30)
    wait_for("the node's view emptied", lambda: stub.Status(pb.StatusRequest(), timeout=10).conns == 0
             and stub.GetStats(pb.GetStatsRequest(), timeout=10).services[0].counters.conns == 0, 30)


def test_wrr_per_worker_keeps_the_weights_over_the_box(single: tuple[Lab, LabCluster]) -> None:
    """wrr runs in each worker over its own clients: with whole cycles on each worker the box gives
    the dests exactly their weights' proportions (1:3 here: 5 sources x 4 conns per shard)."""
    lab, cluster = single
    node = cluster.bring_up(web_yaml(scheduler="wrr", weights=(1, 3)))
    _ready_workers(cluster, node)
    sources = lab.client_sources()
    per_shard = [sum(1 for s in sources if shard_of(int(ipaddress.IPv4Address(s)), 0xFFFFFFFF, 2) == i)
                 for i in (0, 1)]
    assert per_shard == [5, 5]
    got = http_gets(lab, sources, 4)
    names = [n for v in got.values() for n in v]
    assert (names.count("r1"), names.count("r2")) == (10, 30), got
    rows = wait_for("both workers' conns", lambda: (r := worker_stats(node)) and len(r) == 2 and
                    [x.get("created") for x in r] == [20, 20] and r, 30)
    assert len(rows) == 2


def test_persistence_scope_stays_on_one_worker_and_one_dest(single: tuple[Lab, LabCluster]) -> None:
    lab, cluster = single
    node = cluster.bring_up(web_yaml("    persistence: {timeout: 300, netmask: 255.255.255.0}\n"))
    _ready_workers(cluster, node)
    sources = lab.client_sources()
    # without the mask these clients would be spread over both workers
    assert {shard_of(int(ipaddress.IPv4Address(s)), 0xFFFFFFFF, 2) for s in sources} == {0, 1}
    got = http_gets(lab, sources, 2)
    answered = {name for names in got.values() for name in names}
    assert len(answered) == 1, got  # one /24 template: every later conn of the scope finds it
    owner = shard_of(int(ipaddress.IPv4Address(sources[0])), SLASH24, 2)

    def owner_only() -> list[dict[str, Any]] | None:
        rows = worker_stats(node)
        return rows if len(rows) == 2 and forwarded(rows[owner]) > 0 else None

    rows = wait_for("the scope's worker to report forwarded frames", owner_only, 30)
    assert forwarded(rows[1 - owner]) == 0


class MixedCluster(LabCluster):
    """A lab cluster whose nodes run different worker counts (node id -> `workers:`)."""

    def __init__(self, lab: Lab, workers: dict[str, int]) -> None:
        super().__init__(lab, n_nodes=2)
        self.workers = workers

    def workers_of(self, node: NodeProc) -> int:
        return self.workers[node.node_id]


def cluster_with(workers: dict[str, int]) -> Iterator[ClusterEnv]:
    lab = Lab(new_name(), n_directors=2, n_reals=3)
    cluster = MixedCluster(lab, workers)
    env = ClusterEnv(lab, cluster, 30)
    try:
        cluster.bring_up(drill_services(3))
        yield env
    finally:
        if env.traffic is not None:
            env.traffic.stop()
        cluster.close()
        lab.down()


@pytest.fixture
def pair() -> Iterator[ClusterEnv]:
    yield from cluster_with({"d1": 2, "d2": 2})


@pytest.fixture(params=[{"d1": 2, "d2": 1}, {"d1": 1, "d2": 2}], ids=["w2-to-w1", "w1-to-w2"])
def mixed(request: pytest.FixtureRequest) -> Iterator[ClusterEnv]:
    yield from cluster_with(request.param)


def test_a_backup_with_another_worker_count_takes_over_every_stream(mixed: ClusterEnv) -> None:
    """One sync stream whatever the shards: a backup re-shards on apply (or keeps one table)."""
    c = mixed.cluster
    master, backup, new_ok = mixed.roles_under_traffic()
    c.wait_in_sync(backup)
    t_kill = c.kill_node(master)
    mixed.kills.setdefault(master.node_id, []).append(t_kill)
    wait_for("the backup to take over", lambda: c.is_forwarding(backup), 60)
    end = mixed.settle(new_ok)
    mixed.assert_clean(end)
    assert mixed.no_split_brain()


def test_crashed_master_with_two_workers_is_replaced_by_a_backup_with_two_workers(pair: ClusterEnv) -> None:
    """Sync from both workers of the master reaches the backup's workers: the kill keeps every stream."""
    c = pair.cluster
    master, backup, new_ok = pair.roles_under_traffic()
    c.wait_in_sync(backup)

    def backup_workers_hold_the_streams() -> bool:
        rows = worker_stats(backup)
        conns = [int(r.get("conns", 0)) for r in rows]
        return len(conns) == 2 and min(conns) > 0 and sum(conns) >= 30

    # the synced entries reached the backup's workers, each its own shard, before anything fails
    wait_for("the backup's workers to hold the synced streams", backup_workers_hold_the_streams, 60)
    t_kill = c.kill_node(master)
    pair.kills.setdefault(master.node_id, []).append(t_kill)
    wait_for("the backup to take over", lambda: c.is_forwarding(backup), 60)
    end = pair.settle(new_ok)
    pair.assert_clean(end)
    assert pair.no_split_brain()
    rows = worker_stats(backup)
    assert len(rows) == 2 and all(forwarded(r) > 0 for r in rows), rows


def test_a_killed_worker_is_restarted_with_its_shard_and_no_stream_breaks(pair: ClusterEnv) -> None:
    """kill -9 one packet worker of the master: the pool respawns it with the shard rebuilt from the
    replica; every stream of that shard goes on, and the node stays master."""
    c = pair.cluster
    master, backup, new_ok = pair.roles_under_traffic()
    rows = wait_for("the master's workers to report", lambda: (r := worker_stats(master)) and
                    len(r) == 2 and all(x.get("conns", 0) > 0 for x in r) and r, 60)
    victim = int(rows[1]["pid"])
    t_kill = time.time()
    os.kill(victim, signal.SIGKILL)
    wait_for("the worker to be restarted", lambda: c.last_event(master, "worker_ready", t_kill, worker=1), 60)
    end = pair.settle(new_ok)
    pair.assert_clean(end)
    assert c.last_event(master, "worker_exit", t_kill, worker=1, pid=victim) is not None
    assert c.master() is master
    assert c.last_event(master, "stopped_forwarding", t_kill) is None
    assert c.last_event(backup, "forwarding", t_kill) is None


def test_drill_kill_switchback_and_freeze_with_two_workers_on_both_nodes() -> None:
    """The failover drill (deploy.drill) with `workers: 2` on both directors."""
    report = Drill(conns=40, new_rate=20.0, workers=2, phases=("kill", "switchback", "freeze")).run()
    for phase in ("kill", "switchback"):
        p = report[phase]
        assert p["connections_total"] == 40
        assert p["connections_survived"] == p["connections_total"], p
        assert p["resets_seen"] == 0, p
        assert p["templates_total"] > 0
        assert p["templates_kept"] == p["templates_total"], p
        assert p["split_brain_seen"] is False
    freeze = report["freeze"]
    assert freeze["split_brain_seen"] is False, freeze
    assert freeze["connections_survived"] == freeze["connections_total"], freeze
    assert freeze["frames_after_resume"] == 0, freeze  # the workers obeyed the shared fence


def test_workers_die_with_the_parent(single: tuple[Lab, LabCluster]) -> None:
    """kill -9 of directord alone (not its group): the kernel kills its workers (PR_SET_PDEATHSIG),
    so nothing of the node forwards once the parent is gone and the exit hook may release the lease."""
    lab, cluster = single
    node = cluster.bring_up(web_yaml())
    _ready_workers(cluster, node)
    pids = [int(r["pid"]) for r in worker_stats(node)]
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait()
    wait_for("both workers gone", lambda: not any(pid_alive(p) for p in pids), 30)
    node.proc = None


def test_a_new_shard_mask_moves_the_entries_and_no_stream_breaks() -> None:
    """A config adding a /24 persistence netmask changes the shard mask under live streams: the
    filters are replaced and each worker gets its new shard from the replica. No sloppy grace (0 s),
    so a mid-flow packet reaching a worker without its entry would be dropped and its stream stall."""
    lab = Lab(new_name(), n_directors=1, n_reals=3)
    cluster = LabCluster(lab, n_nodes=1, node_extra=WORKERS, sloppy_grace=0.0)
    traffic: TrafficProc | None = None
    try:
        node = cluster.bring_up(drill_services(3))
        _ready_workers(cluster, node)
        sources = lab.client_sources()
        before = {shard_of(int(ipaddress.IPv4Address(s)), 0xFFFFFFFF, 2) for s in sources}
        after = {shard_of(int(ipaddress.IPv4Address(s)), SLASH24, 2) for s in sources}
        assert before == {0, 1} and len(after) == 1  # half of the clients change worker
        traffic = TrafficProc(lab, 20, 10.0, 0.05)
        t = traffic
        wait_for("traffic flowing", lambda: t.report()["alive"] >= 20, 90, 0.5)
        t_change = time.time()
        yaml = drill_services(3).replace("persistence: {timeout: 300}",
                                         "persistence: {timeout: 300, netmask: 255.255.255.0}")
        assert yaml != drill_services(3)
        cluster.apply_config(yaml)
        wait_for("the new config applied", lambda: cluster.last_event(node, "config_applied", t_change), 30)
        rows = wait_for("both workers on the /24 mask", lambda: (r := worker_stats(node)) and len(r) == 2
                        and all(x.get("mask") == SLASH24 for x in r) and r, 60)
        owner = after.pop()
        created = [int(x["created"]) for x in rows]
        since = int(t.report()["new_ok"])
        def settled() -> dict[str, Any] | None:
            r = t.report()
            return r if r["new_ok"] >= since + 20 and r["current_stall_ms"] < 1500 else None

        end = wait_for("new connections after the change, no stall", settled, 120, 0.5)
        assert end["alive"] == 20 and end["resets"] == 0 and end["mismatches"] == 0, end
        rows = worker_stats(node)  # every new conn since the change was made by the /24's worker
        assert int(rows[1 - owner]["created"]) == created[1 - owner]
        assert int(rows[owner]["created"]) > created[owner]
    finally:
        if traffic is not None:
            traffic.stop()
        cluster.close()
        lab.down()
