"""One-packet scheduling through ``directord`` (etcd config, in-process and with two packet workers).

A uniquely named lab with etcd and one node serves ``ops`` UDP on the NAT VIP over r1..r3's UDP echo.
Datagrams from one client socket are spread over the three servers one by one, every reply comes back
from the VIP and port, the node's conn table stays empty and the admin API counts one conn per
datagram on the dests.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.lab import VIP_NAT, real_addr
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.lab.clusterenv import admin_cluster

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

OPS_PORT, DATAGRAMS = 53, 30


def services_yaml() -> str:
    dests = ", ".join(f"{{address: {real_addr(i)}, port: 7}}" for i in (1, 2, 3))
    return (f"services:\n  - {{name: dns, protocol: udp, vip: {VIP_NAT}, port: {OPS_PORT}, scheduler: rr,"
            f" ops: true,\n     dests: [{dests}]}}\n")


@pytest.fixture(params=["", "workers: 2"], ids=["in-process", "two-workers"])
def cluster(request: pytest.FixtureRequest) -> Iterator[LabCluster]:
    with admin_cluster(1, services_yaml(), request.param) as c:
        yield c


def stats(c: LabCluster, node: NodeProc) -> Any:
    with grpc.insecure_channel(f"unix:{c.admin_socket(node)}") as ch:
        return pb_grpc.AdminStub(ch).GetStats(pb.GetStatsRequest(), timeout=10)


UDP_CLIENT = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40053))
s.settimeout(1.0)
out, sent = [], 0
for i in range(int(sys.argv[3])):
    got = None
    for _ in range(5):  # a lost datagram is sent again (and scheduled again)
        s.sendto(f"q-{i}".encode(), (sys.argv[1], int(sys.argv[2])))
        sent += 1
        try:
            data, src = s.recvfrom(2048)
            got = [src[0], src[1], data.decode()]
            break
        except TimeoutError:
            continue
    out.append(got)
print(json.dumps({"sent": sent, "replies": out}))
"""


def test_ops_datagrams_spread_with_replies_from_the_vip_and_no_entry(cluster: LabCluster) -> None:
    c, lab = cluster, cluster.lab
    node = c.wait_master()
    got = json.loads(lab.run_python(lab.client.ns, UDP_CLIENT, VIP_NAT, str(OPS_PORT), str(DATAGRAMS),
                                    timeout=120).stdout)
    replies = got["replies"]
    assert all(r is not None for r in replies), replies
    assert {(src, sport) for src, sport, _ in replies} == {(VIP_NAT, OPS_PORT)}
    per_server = Counter(text.split("|")[0] for _src, _sport, text in replies)
    assert set(per_server) == {"r1", "r2", "r3"}, per_server

    def counted() -> Any:
        st = stats(c, node)
        (svc,) = st.services
        conns = sum(d.counters.conns for d in svc.dests)
        return st if conns == got["sent"] else None

    st = wait_for("one conn per datagram on the dests", counted, 30)
    assert st.conns == 0  # nothing entered the conn table
    assert all(d.counters.conns > 0 for d in st.services[0].dests)
