"""The admin API and health checks against live `directord` nodes in the lab (real etcd, real TCP).

Two directors, three real servers; `web` (tcp/80) has HTTP health checks. Every RPC is called over
each node's admin unix socket. The health drill stops one real server's processes: both nodes
quiesce it (the master probes, etcd carries the verdict), new connections avoid it; restarting
it restores it. Conditions are polled with generous deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.lab import VIP_NAT, Lab, new_name, real_addr
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

WEB = pb.ServiceRef(protocol="tcp", vip=VIP_NAT, port=80)
HC = "{type: http, path: /, expect_body: r, interval: 0.2, timeout: 0.5, rise: 2, fall: 2}"


def services_yaml(weight: int = 1) -> str:
    dests = "\n".join(
        f"      - {{address: {real_addr(i)}, port: 80, weight: {weight}, healthcheck: {HC}}}"
        for i in (1, 2, 3)
    )
    return (
        f"timeouts: {{tcp: 900, tcpfin: 120, udp: 300}}\nservices:\n  - name: web\n    protocol: tcp\n"
        f"    vip: {VIP_NAT}\n    port: 80\n    scheduler: rr\n    forward: nat\n    dests:\n{dests}\n"
    )


class Env:
    def __init__(self, lab: Lab, cluster: LabCluster) -> None:
        self.lab, self.cluster = lab, cluster
        self.channels: list[Any] = []

    def stub(self, node: NodeProc) -> Any:
        ch = grpc.insecure_channel(f"unix:{self.cluster.admin_socket(node)}")
        self.channels.append(ch)
        return pb_grpc.AdminStub(ch)

    def get(self, n: int) -> list[str]:
        """n HTTP GETs to the VIP from the client; the names of the real servers that answered."""
        code = (
            "import urllib.request, json\n"
            f"get = lambda: urllib.request.urlopen('http://{VIP_NAT}/', timeout=5).read().decode().strip()\n"
            f"print(json.dumps([get()"
            f" for _ in range({n})]))\n"
        )
        res = self.lab.run_python(self.lab.client.ns, code, timeout=60)
        names: list[str] = json.loads(res.stdout.strip().splitlines()[-1])
        return names


@pytest.fixture
def env() -> Iterator[Env]:
    lab = Lab(new_name(), n_directors=2, n_reals=3)
    cluster = LabCluster(lab, n_nodes=2)
    e = Env(lab, cluster)
    try:
        cluster.bring_up(services_yaml())
        wait_for("admin sockets", lambda: all(cluster.admin_socket(n).exists() for n in cluster.nodes), 30)
        yield e
    finally:
        for ch in e.channels:
            ch.close()
        cluster.close()
        lab.down()


def dest(stub: Any, addr: str) -> Any:
    svc = stub.ListServices(pb.ListServicesRequest(service=WEB), timeout=10).services[0]
    return next(d for d in svc.dests if d.address == addr)


def test_every_rpc_on_live_nodes(env: Env) -> None:
    d1, d2 = env.cluster.nodes
    m, b = env.stub(d1), env.stub(d2)
    for node in (d1, d2):  # a static node's reload / take-over signals neither kill nor move a member
        assert node.proc is not None
        for sig in (signal.SIGHUP, signal.SIGUSR2):
            node.proc.send_signal(sig)
    st = m.Status(pb.StatusRequest(), timeout=10)
    assert (st.node_id, st.role, st.master_id, st.cluster) == ("d1", "master", "d1", env.lab.name)
    assert all(node.proc is not None and node.proc.poll() is None for node in (d1, d2))
    assert b.Status(pb.StatusRequest(), timeout=10).master_id == "d1"
    svc = m.ListServices(pb.ListServicesRequest(), timeout=10).services
    assert [(s.name, len(s.dests)) for s in svc] == [("web", 3)]

    served = env.get(6)
    assert set(served) <= {"r1", "r2", "r3"} and len(served) == 6
    conns = [c for ch in m.ListConns(pb.ListConnsRequest(service=WEB), timeout=10) for c in ch.conns]
    assert len(conns) >= 6 and all(c.vaddr == VIP_NAT and c.vport == 80 for c in conns)
    wait_for(
        "backup has the synced entries",
        lambda: sum(len(ch.conns) for ch in b.ListConns(pb.ListConnsRequest(service=WEB), timeout=10)) >= 6,
        30,
    )
    stats = m.GetStats(pb.GetStatsRequest(), timeout=10)
    assert stats.services[0].counters.conns >= 6 and stats.totals.inpkts > 0

    text = m.GetConfig(pb.GetConfigRequest(), timeout=10)
    assert "web" in text.yaml and text.revision > 0
    plan = m.ApplyConfig(pb.ApplyConfigRequest(yaml=services_yaml(weight=2), dry_run=True), timeout=10)
    assert [(c.op, c.key) for c in plan.changes] == [("change", "web")] and plan.revision == 0
    rev = b.ApplyConfig(pb.ApplyConfigRequest(yaml=services_yaml(weight=2)), timeout=10).revision
    assert rev > text.revision  # written through etcd from either node
    wait_for(
        "both nodes apply the new weights", lambda: all(dest(s, real_addr(1)).weight == 2 for s in (m, b)), 30
    )

    with pytest.raises(grpc.RpcError) as ei:
        m.ApplyConfig(
            pb.ApplyConfigRequest(yaml=services_yaml().replace("scheduler: rr", "scheduler: x")), timeout=10
        )
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "scheduler" in ei.value.details()

    conn_watch = m.WatchEvents(pb.WatchEventsRequest(kinds=["conn"]), timeout=60)
    got_event = threading.Event()

    def new_conns() -> None:  # until the watcher is subscribed and sees one (no fixed sleep)
        for _ in range(20):
            if got_event.is_set():
                return
            env.get(1)

    feeder = threading.Thread(target=new_conns)
    feeder.start()
    conn_ev = next(iter(conn_watch))
    got_event.set()
    conn_watch.cancel()
    feeder.join()
    assert conn_ev.kind == "conn" and conn_ev.conn.vaddr == VIP_NAT and not conn_ev.synced

    # the backup streams the conn events it applies from sync, marked as synced
    synced_watch = b.WatchEvents(pb.WatchEventsRequest(kinds=["conn"]), timeout=60)
    got_event.clear()
    feeder = threading.Thread(target=new_conns)
    feeder.start()
    synced_ev = next(iter(synced_watch))
    got_event.set()
    synced_watch.cancel()
    feeder.join()
    assert synced_ev.kind == "conn" and synced_ev.synced and synced_ev.conn.vaddr == VIP_NAT

    watch = b.WatchEvents(pb.WatchEventsRequest(kinds=["config"]))
    m.EditDest(pb.EditDestRequest(service=WEB, address=real_addr(2), port=80, weight=5), timeout=10)
    ev = next(iter(watch))
    watch.cancel()
    assert ev.kind == "config" and ev.revision > rev
    wait_for("edit applied", lambda: dest(b, real_addr(2)).weight == 5, 30)
    m.DrainDest(pb.DrainDestRequest(service=WEB, address=real_addr(2), port=80), timeout=10)
    wait_for("drain applied", lambda: dest(b, real_addr(2)).weight == 0, 30)
    assert "r2" not in env.get(6)
    assert m.SetTimeouts(pb.SetTimeoutsRequest(timeouts={"tcp": 600}), timeout=10).revision > rev
    m.ZeroCounters(pb.ZeroCountersRequest(), timeout=10)
    assert m.GetStats(pb.GetStatsRequest(), timeout=10).totals.inpkts < stats.totals.inpkts + 1000
    assert b.Flush(pb.FlushRequest(), timeout=10).removed >= 0

    with pytest.raises(grpc.RpcError) as ei:
        b.Failover(pb.FailoverRequest(), timeout=30)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    m.Failover(pb.FailoverRequest(), timeout=60)
    wait_for("d2 takes over", lambda: b.Status(pb.StatusRequest(), timeout=10).role == "master", 60)


def test_health_drill_quiesce_and_restore(env: Env) -> None:
    d1, d2 = env.cluster.nodes
    stubs = [env.stub(d1), env.stub(d2)]
    wait_for(
        "first verdicts",
        lambda: all(dest(s, real_addr(i)).health == "up" for s in stubs for i in (1, 2, 3)),
        60,
    )
    victim = env.lab.reals[0]
    env.lab._kill_ns_pids(victim.ns)  # stop r1's servers (started by this lab)
    wait_for(
        "r1 quiesced on both nodes",
        lambda: all(
            dest(s, real_addr(1)).weight == 0 and dest(s, real_addr(1)).health == "down" for s in stubs
        ),
        60,
    )
    assert "r1" not in env.get(9)  # no new connection goes to the dead server
    env.lab.ensure_servers()
    wait_for(
        "r1 restored on both nodes",
        lambda: all(
            dest(s, real_addr(1)).weight == 1 and dest(s, real_addr(1)).health == "up" for s in stubs
        ),
        60,
    )
    wait_for("r1 serves again", lambda: "r1" in env.get(6), 60)


def test_put_and_delete_service_and_dest_through_etcd(env: Env) -> None:
    from google.protobuf import struct_pb2

    d1, d2 = env.cluster.nodes
    m, b = env.stub(d1), env.stub(d2)
    spec = struct_pb2.Struct()
    spec.update({"name": "mail", "protocol": "tcp", "vip": VIP_NAT, "port": 25,
                 "dests": [{"address": real_addr(1), "port": 25, "weight": 3}]})
    rev = m.PutService(pb.PutServiceRequest(service=spec), timeout=10).revision
    assert rev > 0
    mail = pb.ServiceRef(protocol="tcp", vip=VIP_NAT, port=25)

    def mail_dests(stub: Any) -> set[str]:
        try:
            svcs = stub.ListServices(pb.ListServicesRequest(service=mail), timeout=10).services
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
            return set()
        return {d.address for d in svcs[0].dests}

    wait_for("the new service on the backup", lambda: mail_dests(b) == {real_addr(1)}, 30)
    with pytest.raises(grpc.RpcError) as ei:
        b.PutService(pb.PutServiceRequest(service=spec, create_only=True), timeout=10)
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    dest = struct_pb2.Struct()
    dest.update({"address": real_addr(2), "port": 25, "weight": 1})
    b.PutDest(pb.PutDestRequest(service=mail, dest=dest), timeout=10)
    wait_for("the new dest on the master", lambda: mail_dests(m) == {real_addr(1), real_addr(2)}, 30)
    m.DeleteDest(pb.DeleteDestRequest(service=mail, address=real_addr(1), port=25), timeout=10)
    wait_for("the dest gone on both", lambda: mail_dests(m) == mail_dests(b) == {real_addr(2)}, 30)
    m.DeleteService(pb.DeleteServiceRequest(service=mail), timeout=10)
    wait_for("the service gone on both", lambda: mail_dests(m) == mail_dests(b) == set(), 30)
    with pytest.raises(grpc.RpcError) as ei:
        m.DeleteService(pb.DeleteServiceRequest(service=mail), timeout=10)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_of_live_nodes(env: Env) -> None:
    """Prometheus text from each node's metrics listener, scraped from the control namespace."""
    from deploy.cluster import METRICS_PORT
    from deploy.lab import director_int

    env.get(3)

    def scrape(n: int) -> str:
        code = ("import urllib.request\n"
                f"print(urllib.request.urlopen('http://{director_int(n)}:{METRICS_PORT}/metrics', timeout=5)"
                ".read().decode())\n")
        return env.lab.run_python(env.lab.ctl.ns, code, timeout=60).stdout

    master, backup = scrape(1), scrape(2)
    for text in (master, backup):
        assert "# TYPE lbd_connections gauge" in text
        assert "# TYPE lbd_scheduled_connections_total counter" in text
        assert 'lbd_packets_dropped_total{reason="' in text and "process_resident_memory_bytes " in text
    assert "lbd_role" in master and "lbd_sync_lag_events" in master
    assert 'lbd_node_info{' in master and 'node="d1"' in master and 'node="d2"' in backup


def test_concurrent_writers_through_both_nodes_lose_no_acknowledged_write(env: Env) -> None:
    """Writers on both nodes' admin APIs add dests to one service and edit weights at the same time:
    every acknowledged write is in etcd at the end (none reverted by a lost update), and both nodes
    converge on it."""
    from google.protobuf import struct_pb2

    d1, d2 = env.cluster.nodes
    stubs = [env.stub(d1), env.stub(d2)]
    added: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        stub = stubs[k % 2]
        for i in range(6):
            addr = f"198.18.1.{100 + 6 * k + i}"
            spec = struct_pb2.Struct()
            spec.update({"address": addr, "port": 80, "weight": 1 + i})
            try:
                stub.PutDest(pb.PutDestRequest(service=WEB, dest=spec), timeout=60)
            except grpc.RpcError as exc:  # only an explicit refusal may lose a write
                with lock:
                    errors.append(f"{exc.code()}: {exc.details()}")
                continue
            with lock:
                added.append(addr)
            stub.EditDest(pb.EditDestRequest(service=WEB, address=real_addr(1 + (i % 3)), port=80,
                                             weight=1 + k), timeout=60)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("ABORTED" in e or "RESOURCE_EXHAUSTED" in e for e in errors), errors
    assert len(added) >= 12  # most writes were acknowledged

    def dests_of(stub: Any) -> set[str]:
        svc = stub.ListServices(pb.ListServicesRequest(service=WEB), timeout=10).services[0]
        return {d.address for d in svc.dests}

    expected = set(added) | {real_addr(i) for i in (1, 2, 3)}
    for stub in stubs:  # the running config of each node is what etcd holds at its revision
        wait_for("every node to converge on every acknowledged write",
                 lambda s=stub: dests_of(s) == expected, 60)
