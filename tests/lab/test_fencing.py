"""Fencing in the packet path (issue 11): past its mastership deadline a director sends nothing.

A static directord runs in d1 with a ``fence_file`` (node config; docs/CONFIG.md): the test writes the
deadline (a CLOCK_MONOTONIC time; namespaces share the clock) and the node feeds it to
``DataPlane.set_master_until``. A fabric observer in the switch namespace counts the frames the
switch *receives* from d1's two ports with the virtual MAC as source, i.e. everything the data plane
sends (forwarded frames, ARP answers, probes). Traffic is crafted SYNs and ARP requests from the
client's port, so no kernel timer is involved.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from deploy.lab import GATEWAY, VIP_NAT, Lab, real_addr
from tests.lab.labutil import Capture, DirectorProc, send_frames, wait_for

pytestmark = pytest.mark.lab

VMAC = "00:00:5e:00:01:01"
CONFIG = f"""\
vmac_id: 1
gateways: [{GATEWAY}]
services:
  - {{name: web, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,
     dests: [{{address: {real_addr(1)}}}, {{address: {real_addr(2)}}}]}}
"""


class Fenced:
    def __init__(self, lab: Lab, d: DirectorProc, deadline_file: Path) -> None:
        self.lab, self.d, self.file = lab, d, deadline_file

    def set_deadline(self, deadline: float | str) -> None:
        """Write the deadline and wait until the director shows it."""
        self.file.write_text(f"{deadline}\n")
        want = None if deadline == "none" else float(deadline)
        wait_for(lambda: self.d.stats()["master_until"] == want, what=f"deadline {deadline} applied")

    def ports(self) -> list[str]:
        return ["d1e", "d1i"]

    def traffic(self, n: int, base_port: int) -> list[bytes]:
        """``n`` SYNs to the VIP plus one ARP request for it, from the client."""
        c = self.lab.client
        mac, addr = c.macs["eth0"], c.addrs["eth0"]
        frames = [bytes(Ether(src=mac, dst=VMAC) / IP(src=addr, dst=VIP_NAT) /
                        TCP(sport=base_port + k, dport=80, flags="S", seq=k)) for k in range(n)]
        frames.append(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=addr,
                                                                             pdst=VIP_NAT)))
        return frames


@pytest.fixture
def fenced(lab: Lab) -> Iterator[Fenced]:
    deadline_file = lab.write_file("fence.deadline", "inf\n")
    with DirectorProc(lab, 1, CONFIG, "fence", fence_file=str(deadline_file)) as d:
        yield Fenced(lab, d, deadline_file)


def test_master_within_its_deadline_forwards_and_the_observer_sees_it(lab: Lab, fenced: Fenced) -> None:
    """Positive control: with a future deadline the same traffic is forwarded and answered."""
    fenced.set_deadline(time.monotonic() + 3600)
    cap = Capture(lab, fenced.ports(), VMAC)
    before = fenced.d.fresh_stats()
    send_frames(lab, lab.client.ns, "eth0", fenced.traffic(10, 20000))
    wait_for(lambda: fenced.d.stats()["rx_frames"][0] - before["rx_frames"][0] >= 11, what="frames read")
    wait_for(lambda: fenced.d.stats()["arp_replies"] > before["arp_replies"], what="the ARP answer")
    counts = cap.stop()
    assert counts["d1i"] >= 10 and counts["d1e"] >= 1, counts  # SYNs to the servers, the ARP reply
    assert fenced.d.stats()["drops"]["not_master"] == before["drops"]["not_master"]


def test_past_the_deadline_nothing_leaves_the_director(lab: Lab, fenced: Fenced) -> None:
    fenced.set_deadline(time.monotonic() - 1.0)
    before = fenced.d.fresh_stats()
    assert before["fenced"]
    cap = Capture(lab, fenced.ports(), VMAC)
    frames = fenced.traffic(40, 21000)
    send_frames(lab, lab.client.ns, "eth0", frames)
    wait_for(lambda: fenced.d.stats()["drops"]["not_master"] - before["drops"]["not_master"] >= len(frames),
             what=f"{len(frames)} frames dropped as not_master")
    after = fenced.d.fresh_stats()  # (another tick: its neighbour probes are fenced too)
    counts = cap.stop()
    assert counts == {"d1e": 0, "d1i": 0}
    assert after["arp_replies"] == before["arp_replies"]
    assert sum(s["counters"]["conns"] for s in after["services"]) == sum(
        s["counters"]["conns"] for s in before["services"])
    # re-validated: forwarding resumes at once
    fenced.set_deadline(time.monotonic() + 3600)
    cap = Capture(lab, fenced.ports(), VMAC)
    send_frames(lab, lab.client.ns, "eth0", fenced.traffic(5, 22000))
    wait_for(lambda: fenced.d.stats()["arp_replies"] > after["arp_replies"], what="the ARP answer again")
    assert cap.stop()["d1i"] >= 5


def test_frames_queued_during_a_stall_are_dropped_after_it(lab: Lab, fenced: Fenced) -> None:
    """SIGSTOP the director while it is master, let its deadline pass with frames queued in its rings,
    SIGCONT: it drops them all (not_master) and sends nothing."""
    deadline = time.monotonic() + 1.0
    fenced.set_deadline(deadline)
    d = fenced.d
    before = d.fresh_stats()
    frames = fenced.traffic(40, 23000)
    cap = Capture(lab, fenced.ports(), VMAC)
    d.proc.send_signal(signal.SIGSTOP)
    try:
        send_frames(lab, lab.client.ns, "eth0", frames)
        wait_for(lambda: time.monotonic() > deadline + 0.2, what="the deadline to pass during the stall")
    finally:
        d.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: d.stats()["drops"]["not_master"] - before["drops"]["not_master"] >= len(frames),
             what=f"{len(frames)} queued frames dropped as not_master")
    d.fresh_stats()
    counts = cap.stop()
    assert counts == {"d1e": 0, "d1i": 0}
    assert d.stats()["arp_replies"] == before["arp_replies"]


def test_a_fenced_backup_resolves_the_real_servers_quietly(lab: Lab) -> None:
    """Not master: the neighbour probes leave from the interface's own MAC with sender 0.0.0.0, the real
    servers' answers are learned, and no frame with the virtual MAC ever leaves."""
    deadline_file = lab.write_file("fence-backup.deadline", "none\n")
    cap = Capture(lab, ["d1e", "d1i"], VMAC)
    d = DirectorProc(lab, 1, CONFIG, "fence-backup", static_role="backup", fence_file=str(deadline_file))
    try:
        wait_for(lambda: d.stats()["master_until"] is None and d.stats()["neigh_entries"][1] >= 2,
                 what="both real servers resolved by a fenced backup")
        stats = d.fresh_stats()
        assert stats["fenced"] and not stats["active"]
        assert stats["neigh"]["arp_reply_learned"] >= 2 and stats["ctl_fenced"] == 0
    finally:
        d.stop()
    assert cap.stop() == {"d1e": 0, "d1i": 0}
