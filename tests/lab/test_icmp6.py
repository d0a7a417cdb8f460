"""ICMP through a real directord, judged by the client's own kernel.

* **Packet Too Big through ip6ip6**: the inside MTU (1500) cannot carry a full-size client packet
  plus the 40-byte outer header. The director answers Packet Too Big (MTU 1460) from the VIP; the
  client's kernel must accept it (checksum, quote matching its socket), lower its path MTU to the
  VIP, and bulk TCP must then arrive intact (the IPv6 twin of ``test_pmtu``).
* **Errors about NAT flows**: a UDP datagram to an IPv6 NAT service whose real servers have nothing
  on the port. The real server's kernel answers port unreachable about the datagram it got
  (client -> real server); the director translates it (source VIP, quote client -> VIP), and the
  client's connected UDP socket must see ECONNREFUSED, which Linux reports only for an error whose
  quote matches that socket exactly.
* **Echo**: ICMP and ICMPv6 echo requests to the VIPs are answered by the master (raw-socket ping
  from the client; the director's kernel holds no VIP and drops the VIP range at ingress, so the
  answers can only come from the packet path).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deploy.lab import GATEWAY, VIP6_NAT, VIP6_TUN, VIP_NAT, Lab, real_addr, real_addr6
from tests.lab.labutil import DirectorProc, wait_for

pytestmark = pytest.mark.lab

ECHO = 7
CLOSED = 9  # nothing listens there on the real servers


def config() -> str:
    dests6 = ", ".join(f'{{address: "{real_addr6(i)}", port: {ECHO}}}' for i in (1, 2))
    closed6 = ", ".join(f'{{address: "{real_addr6(i)}", port: {CLOSED}}}' for i in (1, 2))
    return (f"vmac_id: 1\ngateways: [{GATEWAY}]\nint_mtu: 1500\nservices:\n"
            f"  - {{name: nat-http, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,\n"
            f"     dests: [{{address: {real_addr(1)}}}]}}\n"
            f'  - {{name: tun6-echo, protocol: tcp, vip: "{VIP6_TUN}", port: {ECHO}, scheduler: rr,\n'
            f"     forward: tun, dests: [{dests6}]}}\n"
            f'  - {{name: nat6-closed, protocol: udp, vip: "{VIP6_NAT}", port: {CLOSED}, scheduler: rr,\n'
            f"     forward: nat, dests: [{closed6}]}}\n")


@pytest.fixture(scope="module")
def director(lab: Lab) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, config(), "icmp6") as d:
        yield d
    lab.exec(lab.client.ns, "ip -6 route flush cache", check=False)


def test_tun6_packet_too_big_lets_the_client_lower_its_path_mtu(lab: Lab, director: DirectorProc) -> None:
    lab.exec(lab.client.ns, "ip -6 route flush cache", check=False)
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "echo", VIP6_TUN, str(ECHO), "4",
                         str(512 * 1024), timeout=170)
    got = json.loads(res.stdout)
    assert got["failed"] == [] and got["ok"] == 4, got
    assert director.fresh_stats()["drops"]["too_big"] > 0
    route = lab.exec(lab.client.ns, f"ip -6 route get {VIP6_TUN}").stdout
    assert "mtu 1460" in route, route


def test_port_unreachable_from_a_v6_nat_dest_reaches_the_client_socket(lab: Lab,
                                                                      director: DirectorProc) -> None:
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", "refused", VIP6_NAT, str(CLOSED), "20",
                         timeout=60)
    assert json.loads(res.stdout) is True
    stats = director.fresh_stats()
    svc = next(s for s in stats["services"] if s["key"][2] == CLOSED)
    assert svc["counters"]["outpkts"] >= 1, svc  # the translated error, counted as a reply


@pytest.mark.parametrize("addr", [VIP_NAT, VIP6_NAT], ids=["ipv4", "ipv6"])
def test_ping_to_a_vip_is_answered_by_the_director(lab: Lab, director: DirectorProc, addr: str) -> None:
    before = director.stats()["echo_replies"]
    answered = wait_for(lambda: json.loads(lab.run_python(lab.client.ns, "tests.lab.clientops", "ping",
                                                          addr, "3", timeout=30).stdout),
                        what=f"echo replies from {addr}")
    assert answered and set(answered) <= {0, 1, 2}
    wait_for(lambda: director.stats()["echo_replies"] >= before + len(answered), what="echo_replies counted")
