"""ARP ownership of the VIPs: a backup answers nothing; on takeover the new master announces the
VIPs with gratuitous ARP from the shared virtual MAC and answers requests; the old master goes quiet.

Two static directords (``cluster: none``, ``static_role: backup``) switched by hand: SIGUSR2 takes
over, SIGUSR1 stands by (docs/CONFIG.md, static mode)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy.lab import GATEWAY, VIP_NAT, Lab, real_addr
from tests.lab.labutil import DirectorProc, wait_for

pytestmark = pytest.mark.lab

VMAC = "00:00:5e:00:01:01"
CONFIG = f"""\
vmac_id: 1
gateways: [{GATEWAY}]
services:
  - {{name: web, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,
     dests: [{{address: {real_addr(1)}}}]}}
"""


@pytest.fixture
def pair(lab: Lab) -> Iterator[tuple[DirectorProc, DirectorProc]]:
    with DirectorProc(lab, 1, CONFIG, "arp-d1", static_role="backup") as d1, \
            DirectorProc(lab, 2, CONFIG, "arp-d2", static_role="backup") as d2:
        yield d1, d2


def who_has(lab: Lab, addr: str) -> str | None:
    got: str | None = json.loads(lab.run_python(lab.client.ns, "tests.lab.clientops", "arp", addr).stdout)
    return got


def test_only_the_active_director_answers_arp(lab: Lab, pair: tuple[DirectorProc, DirectorProc]) -> None:
    d1, d2 = pair
    assert who_has(lab, VIP_NAT) is None
    wait_for(lambda: d1.stats()["drops"]["not_active"] > 0 and d2.stats()["drops"]["not_active"] > 0,
             what="both backups to count the unanswered request")
    d1.take_over()
    wait_for(lambda: d1.stats()["active"], what="d1 active")
    # polled: one scapy request/1 s answer can be missed on a loaded box; only VMAC ever answers
    wait_for(lambda: who_has(lab, VIP_NAT) == VMAC, what="d1 to answer ARP for the VIP")
    # switch over: d1 steps down, d2 takes over with gratuitous ARP; HTTP through the VIP works
    d1.stand_by()
    d2.take_over()
    wait_for(lambda: d2.stats()["active"] and not d1.stats()["active"], what="d2 active, d1 backup")
    replies = d2.stats()["arp_replies"]
    wait_for(lambda: who_has(lab, VIP_NAT) == VMAC, what="d2 to answer ARP for the VIP")
    wait_for(lambda: d2.stats()["arp_replies"] > replies, what="d2 to count its ARP reply")
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "http", VIP_NAT, "80", "2")
    assert [s for _src, s in json.loads(res.stdout)] == ["r1", "r1"]
    assert d1.fresh_stats()["services"][0]["counters"]["conns"] == 0
    # the stats file is rewritten every 200 ms: poll until it shows the two conns
    wait_for(lambda: d2.stats()["services"][0]["counters"]["conns"] == 2, what="d2 to count both conns")
