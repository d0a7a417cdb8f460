"""Service groups (fwmark semantics) with real kernel TCP and UDP in the lab.

One stand-alone director in d1 serves one group (fwmark 1, persistent, rr over r1..r3, dest port 0 so
every packet keeps its port): TCP 80 and UDP 7 on the NAT VIP and the TCP port range 70-80 on a second
VIP. Each client address must reach the same real server over all three selectors (HTTP names the
server; the UDP echo replies ``<name>|...``), and different client addresses are spread. A second
group (fwmark 2) does the same over IPv6 (``[fd00:18::10]`` 80 and UDP 7, ``[fd00:18::13]`` 70-80).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.lab import GATEWAY, VIP6_NAT, VIP_NAT, Lab, real_addr, real_addr6
from tests.lab.labutil import DirectorProc

pytestmark = pytest.mark.lab

VIP2 = "198.18.0.13"
VIP6_2 = "fd00:18::13"
HTTP, UDP_ECHO = 80, 7


def services_yaml() -> str:
    dests = ", ".join(f"{{address: {real_addr(i)}}}" for i in (1, 2, 3))
    dests6 = ", ".join(f'{{address: "{real_addr6(i)}"}}' for i in (1, 2, 3))
    return (f"vmac_id: 1\ngateways: [{GATEWAY}]\nservices:\n"
            "  - name: shop\n    fwmark: 1\n    scheduler: rr\n    persistence: {timeout: 120}\n"
            f"    group:\n      - {{protocol: tcp, vip: {VIP_NAT}, port: {HTTP}}}\n"
            f"      - {{protocol: udp, vip: {VIP_NAT}, port: {UDP_ECHO}}}\n"
            f"      - {{protocol: tcp, vip: {VIP2}, ports: 70-80}}\n"
            f"    dests: [{dests}]\n"
            "  - name: shop6\n    fwmark: 2\n    scheduler: rr\n    persistence: {timeout: 120}\n"
            f'    group:\n      - {{protocol: tcp, vip: "{VIP6_NAT}", port: {HTTP}}}\n'
            f'      - {{protocol: udp, vip: "{VIP6_NAT}", port: {UDP_ECHO}}}\n'
            f'      - {{protocol: tcp, vip: "{VIP6_2}", ports: 70-80}}\n'
            f"    dests: [{dests6}]\n")


@pytest.fixture(scope="module")
def director(lab: Lab) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, services_yaml(), "groups") as d:
        yield d


UDP_FROM = r"""
import json, socket, sys
src, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(1.0)
reply = None
for _ in range(5):  # a lost datagram (ARP on the way) is sent again
    s.sendto(b"which", (vip, port))
    try:
        data, peer = s.recvfrom(2048)
        reply = [peer[0], peer[1], data.decode()]
        break
    except TimeoutError:
        continue
print(json.dumps(reply))
"""


def http_from(lab: Lab, vip: str, sources: list[str]) -> dict[str, str]:
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "http", vip, str(HTTP), "1",
                         "--sources", ",".join(sources), timeout=120)
    return {src: server for src, server in json.loads(res.stdout)}


def udp_from(lab: Lab, src: str, vip: str = VIP_NAT) -> Any:
    return json.loads(lab.run_python(lab.client.ns, UDP_FROM, src, vip, str(UDP_ECHO), timeout=60).stdout)


def test_a_client_sticks_to_one_server_over_every_selector(lab: Lab, director: DirectorProc) -> None:
    sources = lab.client_sources()[1:7]
    by_http = http_from(lab, VIP_NAT, sources)
    by_range = http_from(lab, VIP2, sources)
    assert set(by_http) == set(sources) and by_range == by_http  # port 80 and the 70-80 range together
    for src in sources:
        reply = udp_from(lab, src)
        assert reply is not None and (reply[0], reply[1]) == (VIP_NAT, UDP_ECHO)  # translated back
        assert reply[2].split("|")[0] == by_http[src]  # UDP 7 sticks with the TCP selectors
    assert len(set(by_http.values())) == 3  # rr over three servers for six client addresses
    stats = director.fresh_stats()
    svc = next(s for s in stats["services"] if s["key"][3] == 1)
    assert svc["key"] == [6, 0, 0, 1] and svc["counters"]["conns"] >= 3 * len(sources)


def test_an_ipv6_group_sticks_a_client_over_every_selector(lab: Lab, director: DirectorProc) -> None:
    sources = lab.client_sources6()[1:7]
    by_http = http_from(lab, VIP6_NAT, sources)
    by_range = http_from(lab, VIP6_2, sources)
    assert set(by_http) == set(sources) and by_range == by_http
    for src in sources:
        reply = udp_from(lab, src, VIP6_NAT)
        assert reply is not None and (reply[0], reply[1]) == (VIP6_NAT, UDP_ECHO)
        assert reply[2].split("|")[0] == by_http[src]
    assert len(set(by_http.values())) == 3
    svc = next(s for s in director.fresh_stats()["services"] if s["key"][3] == 2)
    assert svc["counters"]["conns"] >= 3 * len(sources)


def test_ports_outside_the_selectors_are_bypass(lab: Lab, director: DirectorProc) -> None:
    before = director.fresh_stats()["drops"]["bypass"]
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "http", VIP2, "81", "1", check=False,
                         timeout=120)
    assert res.returncode != 0  # nothing answers on VIP2:81 (the SYNs are dropped)
    after = director.fresh_stats()["drops"]["bypass"]
    assert after > before
