"""TUN with an internal MTU too small for a full client packet plus IPIP: the director answers
frag-needed, the client's real kernel lowers its path MTU, and bulk TCP still arrives intact."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy.lab import GATEWAY, VIP_TUN, Lab, real_addr
from tests.lab.labutil import DirectorProc

pytestmark = pytest.mark.lab

ECHO = 7
CONFIG = f"""\
vmac_id: 1
gateways: [{GATEWAY}]
int_mtu: 1500
services:
  - {{name: tun-echo, protocol: tcp, vip: {VIP_TUN}, port: {ECHO}, scheduler: rr, forward: tun,
     dests: [{{address: {real_addr(1)}}}, {{address: {real_addr(2)}}}]}}
"""


@pytest.fixture
def small_mtu_director(lab: Lab) -> Iterator[DirectorProc]:
    d = DirectorProc(lab, 1, CONFIG, "pmtu")
    try:
        yield d
    finally:
        d.stop()
        lab.exec(lab.client.ns, "ip route flush cache", check=False)


def test_tun_frag_needed_lets_client_lower_its_path_mtu(lab: Lab, small_mtu_director: DirectorProc) -> None:
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "echo", VIP_TUN, str(ECHO), "4",
                         str(512 * 1024), timeout=170)
    got = json.loads(res.stdout)
    assert got["failed"] == [] and got["ok"] == 4
    assert small_mtu_director.fresh_stats()["drops"]["too_big"] > 0
    route = lab.exec(lab.client.ns, f"ip route get {VIP_TUN}").stdout
    assert "mtu 1480" in route, route
