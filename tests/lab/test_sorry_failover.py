"""Sorry flows and service-group templates are synced like any entry and survive a master's kill -9.

A uniquely named lab with etcd and two ``directord`` nodes (in-process, then with two packet workers
per node) serves a TCP service whose dests are all
quiesced (so new conns go to its sorry server r3) and a persistent service group (fwmark 1: TCP 80 and
UDP 7 on the NAT VIP). Before the kill the backup's admin API must show the synced sorry conn on its
sorry dest (``sorry`` flag through the gRPC view) and the group's templates; after the takeover the
held TCP conn on the sorry server still answers, and every client address is still sent to the same
server, now over the group's UDP selector; the new master's stats API counts a datagram to a VIP port
without a service as ``bypass``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.lab import PYTHON, VIP_NAT, Lab, real_addr
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.lab.clusterenv import admin_cluster

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

SORRY_PORT = 84


def services_yaml() -> str:
    quiesced = ", ".join(f"{{address: {real_addr(i)}, port: 80, weight: 0}}" for i in (1, 2))
    dests = ", ".join(f"{{address: {real_addr(i)}}}" for i in (1, 2, 3))
    return ("services:\n"
            f"  - {{name: sorry-http, protocol: tcp, vip: {VIP_NAT}, port: {SORRY_PORT}, scheduler: rr,\n"
            f"     sorry_server: '{real_addr(3)}:80', dests: [{quiesced}]}}\n"
            "  - name: shop\n    fwmark: 1\n    scheduler: rr\n    persistence: {timeout: 300}\n"
            f"    group: [{{protocol: tcp, vip: {VIP_NAT}, port: 80}},"
            f" {{protocol: udp, vip: {VIP_NAT}, port: 7}}]\n"
            f"    dests: [{dests}]\n")


@pytest.fixture(params=["", "workers: 2"], ids=["in-process", "two-workers"])
def cluster(request: pytest.FixtureRequest) -> Iterator[LabCluster]:
    with admin_cluster(2, services_yaml(), request.param) as c:
        yield c


def services(c: LabCluster, node: NodeProc) -> Any:
    with grpc.insecure_channel(f"unix:{c.admin_socket(node)}") as ch:
        return pb_grpc.AdminStub(ch).ListServices(pb.ListServicesRequest(), timeout=10).services


def drops(c: LabCluster, node: NodeProc) -> dict[str, int]:
    with grpc.insecure_channel(f"unix:{c.admin_socket(node)}") as ch:
        return dict(pb_grpc.AdminStub(ch).GetStats(pb.GetStatsRequest(), timeout=10).drops)


UDP_FROM = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.settimeout(1.0)
reply = None
for _ in range(int(sys.argv[4])):  # lost datagrams (takeover, ARP) are sent again
    s.sendto(b"which", (sys.argv[2], int(sys.argv[3])))
    try:
        reply = s.recv(2048).decode()
        break
    except TimeoutError:
        continue
print(json.dumps(reply))
"""


def udp_from(lab: Lab, src: str, port: int, tries: int) -> Any:
    """One datagram from ``src`` to the NAT VIP, sent up to ``tries`` times; the reply or None."""
    return json.loads(lab.run_python(lab.client.ns, UDP_FROM, src, VIP_NAT, str(port), str(tries),
                                     timeout=60).stdout)


def test_sorry_flow_and_group_templates_survive_a_kill(cluster: LabCluster) -> None:
    c, lab = cluster, cluster.lab
    master = c.wait_master()
    backup = next(n for n in c.nodes if n is not master)
    held = lab.popen(lab.client.ns, [PYTHON, "-m", "tests.lab.clientops", "hold", VIP_NAT, str(SORRY_PORT)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert held.stdin is not None and held.stdout is not None
    try:
        assert json.loads(held.stdout.readline()) == "connected"  # on the sorry server (r1, r2 quiesced)
        sources = lab.client_sources()[1:4]
        res = lab.run_python(lab.client.ns, "tests.lab.clientops", "http", VIP_NAT, "80", "1",
                             "--sources", ",".join(sources), timeout=120)
        before = {src: server for src, server in json.loads(res.stdout)}
        assert set(before) == set(sources)

        def backup_has_them() -> bool:
            svcs = {s.name: s for s in services(c, backup)}
            sorry = [d for d in svcs["sorry-http"].dests if d.sorry]
            group = svcs["shop"]
            templates = sum(d.persistent_conns for d in group.dests)
            return (len(sorry) == 1 and sorry[0].address == real_addr(3)
                    and sorry[0].active_conns + sorry[0].inactive_conns == 1
                    and group.ref.fwmark == 1 and templates == len(sources))

        wait_for("the backup to hold the synced sorry conn and the group's templates", backup_has_them, 60)

        def master_counted() -> bool:  # the master's sorry row counts the conn (summed over its workers)
            (sorry,) = [d for s in services(c, master) if s.name == "sorry-http" for d in s.dests if d.sorry]
            return bool(sorry.counters.conns >= 1)

        wait_for("the master's sorry dest to count its conn", master_counted, 30)
        c.kill_node(master)
        assert c.wait_master(60) is backup
        held.stdin.write(b"get\n")
        held.stdin.flush()
        answer = json.loads(held.stdout.readline())
        assert answer is not None and answer.rstrip().endswith("r3")  # the sorry flow survived the kill
        for src in sources:  # the template outlived the master: same server, over the UDP selector
            reply = udp_from(lab, src, 7, 10)
            assert reply is not None and reply.split("|")[0] == before[src]
        # the new master's stats API counts traffic to a VIP port without a service as bypass
        bypass = drops(c, backup).get("bypass", 0)
        assert udp_from(lab, sources[0], 9, 2) is None
        wait_for("bypass drops in GetStats", lambda: drops(c, backup).get("bypass", 0) >= bypass + 2, 30)
    finally:
        held.stdin.close()
        Lab.stop(held)
        held.stdout.close()
