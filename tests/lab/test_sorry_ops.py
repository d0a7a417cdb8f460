"""Sorry server, one-packet scheduling (ops), BYPASS and LOCALNODE with real kernel TCP/UDP in the lab.

One static directord (``cluster: none``, tests/lab/labutil.py) runs in d1 for the module; the real
servers' HTTP answers name the server, their UDP echo replies ``<name>|<datagram>``, so the client sees
which server took each conn or datagram. r3 is the sorry server of a TCP service over r1 and r2.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.lab import GATEWAY, PYTHON, VIP_NAT, Lab, real_addr
from tests.lab.labutil import DirectorProc, wait_for

pytestmark = pytest.mark.lab

HTTP, OPS, LOCAL, NO_SERVICE = 84, 53, 10, 9
DATAGRAMS = 30


def services_yaml(weight: int = 1, sorry: bool = True) -> str:
    dests = ", ".join(f"{{address: {real_addr(i)}, port: 80, weight: {weight}}}" for i in (1, 2))
    sorry_line = f" sorry_server: '{real_addr(3)}:80'," if sorry else ""
    ops_dests = ", ".join(f"{{address: {real_addr(i)}, port: 7}}" for i in (1, 2, 3))
    return (f"vmac_id: 1\ngateways: [{GATEWAY}]\nservices:\n"
            f"  - {{name: sorry-http, protocol: tcp, vip: {VIP_NAT}, port: {HTTP}, scheduler: rr,"
            f"{sorry_line}\n"
            f"     dests: [{dests}]}}\n"
            f"  - {{name: ops-dns, protocol: udp, vip: {VIP_NAT}, port: {OPS}, scheduler: rr, ops: true,\n"
            f"     dests: [{ops_dests}]}}\n"
            f"  - {{name: local, protocol: udp, vip: {VIP_NAT}, port: {LOCAL}, dests: [{{address: 127.0.0.1,"
            f" port: 7}}]}}\n")


@pytest.fixture(scope="module")
def director(lab: Lab) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, services_yaml(), "sorryops") as d:
        yield d


UDP_CLIENT = r"""
import json, socket, sys
vip, port, n, cport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
wait = sys.argv[5] == "1"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", cport))
s.settimeout(1.0)
out, sent = [], 0
for i in range(n):
    msg = f"q-{i}".encode()
    got = None
    for _ in range(5 if wait else 1):  # a lost datagram is sent again (and scheduled again)
        s.sendto(msg, (vip, port))
        sent += 1
        if not wait:
            break
        try:
            data, src = s.recvfrom(2048)
            got = [src[0], src[1], data.decode()]
            break
        except TimeoutError:
            continue
    out.append(got)
print(json.dumps({"sent": sent, "replies": out}))
"""


def udp_client(lab: Lab, port: int, n: int, cport: int, wait: bool = True) -> dict[str, Any]:
    res = lab.run_python(lab.client.ns, UDP_CLIENT, VIP_NAT, str(port), str(n), str(cport),
                         "1" if wait else "0", timeout=120)
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def http(lab: Lab, n: int) -> list[str]:
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "http", VIP_NAT, str(HTTP), str(n),
                         timeout=120)
    return [server for _src, server in json.loads(res.stdout)]


def svc_stats(stats: dict[str, Any], proto: int, vport: int) -> dict[str, Any]:
    return next(s for s in stats["services"] if s["key"][0] == proto and s["key"][2] == vport)


def test_ops_spreads_every_datagram_and_keeps_no_entry(lab: Lab, director: DirectorProc) -> None:
    before = director.fresh_stats()
    got = udp_client(lab, OPS, DATAGRAMS, 40053)  # one client socket: one (caddr, cport) for all datagrams
    replies = got["replies"]
    assert all(r is not None for r in replies), replies
    assert {(src, sport) for src, sport, _ in replies} == {(VIP_NAT, OPS)}  # translated back, no entry
    per_server = Counter(text.split("|")[0] for _src, _sport, text in replies)
    assert set(per_server) == {"r1", "r2", "r3"} and all(n >= DATAGRAMS // 3 - 3 for n in per_server.values())
    after = director.fresh_stats()
    dests = svc_stats(after, 17, OPS)["dests"]
    old = svc_stats(before, 17, OPS)["dests"]
    scheduled = {a: dests[a]["conns"] - old[a]["conns"] for a in dests}
    assert sum(scheduled.values()) == got["sent"]  # every datagram scheduled on its own
    assert all(n >= DATAGRAMS // 3 - 3 for n in scheduled.values()), scheduled
    assert all(d["activeconns"] + d["inactconns"] == 0 for d in dests.values())
    assert after["conns"] == before["conns"]  # nothing entered the conn table


def test_sorry_server_takes_new_conns_while_no_dest_is_usable(lab: Lab, director: DirectorProc) -> None:
    assert set(http(lab, 4)) == {"r1", "r2"}  # dests usable: never the sorry server
    director.reload(services_yaml(weight=0))  # every dest quiesced
    held = lab.popen(lab.client.ns, [PYTHON, "-m", "tests.lab.clientops", "hold", VIP_NAT, str(HTTP)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert held.stdin is not None and held.stdout is not None
    try:
        assert json.loads(held.stdout.readline()) == "connected"  # a conn on the sorry server, kept open
        assert set(http(lab, 4)) == {"r3"}
        director.reload(services_yaml(weight=1))  # the dests are back
        assert set(http(lab, 6)) == {"r1", "r2"}  # new conns leave the sorry server at once
        held.stdin.write(b"get\n")
        held.stdin.flush()
        answer = json.loads(held.stdout.readline())
        assert answer is not None and answer.rstrip().endswith("r3")  # the existing sorry flow stayed
    finally:
        held.stdin.close()
        Lab.stop(held)
        held.stdout.close()


def test_bypass_and_localnode_are_counted_and_dropped(lab: Lab, director: DirectorProc) -> None:
    before = director.fresh_stats()["drops"]
    director.reload(services_yaml(weight=0, sorry=False))  # no usable dest and no sorry server
    try:
        udp_client(lab, NO_SERVICE, 3, 40009, wait=False)  # the VIP has no service on this port
        udp_client(lab, LOCAL, 2, 40010, wait=False)  # its only dest is the director itself
        lab.run_python(lab.client.ns, "tests.lab.clientops", "http", VIP_NAT, str(HTTP), "1", check=False,
                       timeout=120)  # SYNs to a service without a usable dest
        wait_for(lambda: director.stats()["drops"]["bypass"] >= before["bypass"] + 4
                 and director.stats()["drops"]["localnode"] >= before["localnode"] + 2,
                 what="bypass and localnode drops to be counted")
        drops = director.stats()["drops"]
        assert drops["no_dest"] == before["no_dest"]  # not the generic reason any more
    finally:
        director.reload(services_yaml())
