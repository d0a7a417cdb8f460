"""IPVS defense and admin floods against live `directord` nodes (issue 17, deliverables 2 and 4).

Two directors (master + backup, real etcd), three real servers. The nodes run with small defense
bounds (``defense:`` in the node YAML). The client sends a spoofed SYN flood (>= 5k/s from random
198.19.0.0/16 sources, ``deploy.synflood``) at the NAT VIP while long-lived TCP echo streams run;
then the same traffic goes on while the master's admin socket is flooded with Status, ListConns pages
and 1 MB ApplyConfig documents. The master's own Status (sampled in a thread) shows its table, RSS
and defense state; the nodes' events files show role changes. Conditions are polled with generous
deadlines; nothing asserts a duration.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.lab import PYTHON, VIP_NAT, Lab, real_addr
from deploy.synflood import StatusSampler
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.lab.clusterenv import admin_cluster
from tests.lab.labutil import big_document

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

VMAC = "00:00:5e:00:01:01"
HTTP, ECHO = 80, 7
CONN_THRESHOLD, MAX_CONNS = 4000, 12000
DEFENSE = (f"defense: {{drop_entry: auto, drop_packet: auto, secure_tcp: auto,"
           f" conn_threshold: {CONN_THRESHOLD}, max_conns: {MAX_CONNS},"
           " rss_threshold_mb: 3072, rss_max_mb: 4096}")
FLOOD_RATE, FLOOD_SECONDS = 6000, 12.0
STREAMS = 20
RSS_GROWTH_BOUND = 160 << 20
"""Generous: the table is bounded at MAX_CONNS entries (~1 KiB each with events and neighbours)."""


def services_yaml() -> str:
    dests = ", ".join(f"{{address: {real_addr(i)}}}" for i in (1, 2, 3))
    return ("services:\n"
            f"  - {{name: http, protocol: tcp, vip: {VIP_NAT}, port: {HTTP}, scheduler: rr, forward: nat,"
            f" dests: [{dests}]}}\n"
            f"  - {{name: echo, protocol: tcp, vip: {VIP_NAT}, port: {ECHO}, scheduler: rr, forward: nat,"
            f" dests: [{dests}]}}\n")


class Env:
    def __init__(self, lab: Lab, cluster: LabCluster) -> None:
        self.lab, self.cluster = lab, cluster

    @property
    def master(self) -> NodeProc:
        return self.cluster.nodes[0]

    @property
    def backup(self) -> NodeProc:
        return self.cluster.nodes[1]

    def sock(self, node: NodeProc) -> str:
        return str(self.cluster.admin_socket(node))

    def status(self, node: NodeProc) -> Any:
        with grpc.insecure_channel(f"unix:{self.sock(node)}") as ch:
            return pb_grpc.AdminStub(ch).Status(pb.StatusRequest(), timeout=30)

    def streams(self, seconds: float) -> subprocess.Popen[bytes]:
        return self.lab.popen(self.lab.client.ns, [PYTHON, "-m", "deploy.synflood", "streams", VIP_NAT,
                                                    str(ECHO), str(STREAMS), str(seconds)],
                              stdout=subprocess.PIPE)

    def flood(self, rate: int, seconds: float) -> subprocess.Popen[bytes]:
        c = self.lab.client
        return self.lab.popen(c.ns, [PYTHON, "-m", "deploy.synflood", "flood", "eth0", c.macs["eth0"], VMAC,
                                     VIP_NAT, str(HTTP), str(rate), str(seconds)], stdout=subprocess.PIPE)

    def established_echo(self) -> int:
        req = pb.ListConnsRequest(service=pb.ServiceRef(protocol="tcp", vip=VIP_NAT, port=ECHO),
                                  state="ESTABLISHED")
        with grpc.insecure_channel(f"unix:{self.sock(self.master)}") as ch:
            return sum(len(chunk.conns) for chunk in pb_grpc.AdminStub(ch).ListConns(req, timeout=30))

    def streams_up(self) -> None:
        wait_for("the echo streams to be established", lambda: self.established_echo() >= STREAMS, 60)

    def role_events(self, since: float) -> list[dict[str, Any]]:
        return [ev for node in self.cluster.nodes for ev in self.cluster.events(node)
                if ev["event"] == "role" and ev["t"] >= since]


def result(proc: subprocess.Popen[bytes], timeout: float) -> Any:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with admin_cluster(2, services_yaml(), DEFENSE) as cluster:
        yield Env(cluster.lab, cluster)


def test_syn_flood_table_bounded_streams_survive(env: Env) -> None:
    st0 = env.status(env.master)
    assert st0.defense.max_conns == MAX_CONNS and st0.defense.drop_entry == "auto"
    rss0 = st0.defense.rss
    since = time.time()
    streams = env.streams(FLOOD_SECONDS + 15)
    env.streams_up()
    sampler = StatusSampler(env.sock(env.master)).start()
    try:
        flood = result(env.flood(FLOOD_RATE, FLOOD_SECONDS), FLOOD_SECONDS + 60)
    finally:
        samples = sampler.stop()
    survived = result(streams, 120)
    assert flood["sent"] / flood["seconds"] >= 5000, flood
    assert survived["failed"] == [] and survived["ok"] == STREAMS, survived
    assert samples, f"no Status answered during the flood ({sampler.errors} errors)"
    peak = max(s["entries"] for s in samples)
    # the flood pushed the table into the defense band, and the bound held
    assert CONN_THRESHOLD < peak <= MAX_CONNS, [s["entries"] for s in samples]
    assert any(s["drop_entry"] == "auto (engaged)" and s["secure_tcp"] == "auto (engaged)" for s in samples)
    last = env.status(env.master).defense
    assert last.entries_dropped + last.packets_dropped + last.table_full_drops > 0, last
    assert max(s["rss"] for s in samples) - rss0 < RSS_GROWTH_BOUND, (rss0, [s["rss"] for s in samples])
    # afterwards the table drains (short half-open timeouts), defense lets go, the backup follows
    wait_for("the table to drain under the threshold",
             lambda: env.status(env.master).conns < CONN_THRESHOLD // 2, 120)
    wait_for("defense to disengage", lambda: env.status(env.master).defense.drop_entry == "auto", 30)

    def tables_agree() -> bool:
        m, b = env.status(env.master), env.status(env.backup)
        return abs((m.conns + m.templates) - (b.conns + b.templates)) <= 20

    wait_for("the backup's table to equal the master's", tables_agree, 60)
    assert env.role_events(since) == []


def _loop(deadline: float, fn: Callable[[], None], codes: Counter[str]) -> None:
    while time.monotonic() < deadline:
        try:
            fn()
            codes["OK"] += 1
        except grpc.RpcError as err:
            codes[err.code().name] += 1
            assert len(err.details() or "") < 5000


def test_admin_flood_under_traffic_changes_no_role(env: Env) -> None:
    doc = big_document()
    seconds = 12.0
    since = time.time()
    streams = env.streams(seconds + 15)
    env.streams_up()
    flood = env.flood(3000, seconds)  # keeps a big table under the admin reads
    ch = grpc.insecure_channel(f"unix:{env.sock(env.master)}",
                               options=[("grpc.max_send_message_length", 4 << 20)])
    stub = pb_grpc.AdminStub(ch)
    codes: dict[str, Counter[str]] = {"Status": Counter(), "ListConns": Counter(), "ApplyConfig": Counter()}

    def status() -> None:
        stub.Status(pb.StatusRequest(), timeout=30)

    def list_conns() -> None:
        token = ""
        for _ in range(5):
            chunks = list(stub.ListConns(pb.ListConnsRequest(page_size=1000, page_token=token), timeout=30))
            token = chunks[-1].next_page_token
            if not token:
                break

    def apply() -> None:
        stub.ApplyConfig(pb.ApplyConfigRequest(yaml=doc, dry_run=True), timeout=60)

    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_loop, args=(deadline, fn, codes[name]), daemon=True)
               for name, fn, n in (("Status", status, 24), ("ListConns", list_conns, 4),
                                   ("ApplyConfig", apply, 4)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    ch.close()
    result(flood, 120)
    survived = result(streams, 120)
    assert not any(t.is_alive() for t in threads)
    print("admin flood:", {k: dict(v) for k, v in codes.items()})
    for c in codes.values():
        assert c["OK"] > 0, codes  # every kind got through the limits at least sometimes ...
        assert set(c) <= {"OK", "RESOURCE_EXHAUSTED"}, codes  # ... and was otherwise refused cleanly
    assert codes["Status"]["RESOURCE_EXHAUSTED"] > 0, codes  # the per-peer bucket did its job
    assert env.role_events(since) == [], env.role_events(since)
    assert env.cluster.is_forwarding(env.master)
    assert survived["failed"] == [], survived
