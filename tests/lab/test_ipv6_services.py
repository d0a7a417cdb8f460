"""ICMP, fragments and health checks over IPv6 through a real directord, judged by real kernels.

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
* **Fragments** (``forward_fragments: true``): UDP datagrams of 3000 bytes over IPv6 are cut by the
  client's kernel, forwarded fragment by fragment (no reassembly in the director), reassembled by
  the real server's kernel; its echo (``<name>|`` + the datagram), fragmented by the real server,
  comes back the same way. The client compares every byte. The real servers' inside MTU is 1600,
  the outside 1500: the first replies are too big for the outside, the director answers Packet Too
  Big to the real server (``ext_mtu``), whose kernel then cuts its replies to fit.
* **Health checks over IPv6**: tcp and ping checkers probe IPv6 dests from the director's own
  stack; the dest with nothing on its port is quiesced (weight 0), the others keep their weight.
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
HEALTH_PORT = 8087


HEALTH = (f'[{{address: "{real_addr6(1)}", port: {ECHO}, health: {{type: tcp, interval: 0.5}}}}, '
          f'{{address: "{real_addr6(2)}", port: {CLOSED}, health: {{type: tcp, interval: 0.5}}}}, '
          f'{{address: "{real_addr6(3)}", port: {ECHO}, health: {{type: ping, interval: 0.5}}}}]')
UDP_BIG = r"""
import json, socket, sys, time
vip, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ok = 0
with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
    s.settimeout(1.0)
    for i in range(n):
        msg = bytes((i * 7 + k) % 251 for k in range(size))
        for _ in range(10):  # the first datagrams may meet unresolved neighbours
            s.sendto(msg, (vip, port))
            try:
                got = s.recv(65536)
            except TimeoutError:
                continue
            ok += got.split(b"|", 1)[-1] == msg  # the lab's UDP echo answers "<name>|<datagram>"
            break
print(json.dumps(ok))
"""


def config() -> str:
    dests6 = ", ".join(f'{{address: "{real_addr6(i)}", port: {ECHO}}}' for i in (1, 2))
    closed6 = ", ".join(f'{{address: "{real_addr6(i)}", port: {CLOSED}}}' for i in (1, 2))
    return (f"vmac_id: 1\ngateways: [{GATEWAY}]\nint_mtu: 1500\nforward_fragments: true\nservices:\n"
            f"  - {{name: nat-http, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,\n"
            f"     dests: [{{address: {real_addr(1)}}}]}}\n"
            f'  - {{name: tun6-echo, protocol: tcp, vip: "{VIP6_TUN}", port: {ECHO}, scheduler: rr,\n'
            f"     forward: tun, dests: [{dests6}]}}\n"
            f'  - {{name: nat6-closed, protocol: udp, vip: "{VIP6_NAT}", port: {CLOSED}, scheduler: rr,\n'
            f"     forward: nat, dests: [{closed6}]}}\n"
            f'  - {{name: nat6-udp-echo, protocol: udp, vip: "{VIP6_NAT}", port: {ECHO}, scheduler: rr,\n'
            f"     forward: nat, dests: [{dests6}]}}\n"
            f'  - {{name: nat6-health, protocol: tcp, vip: "{VIP6_NAT}", port: {HEALTH_PORT},\n'
            f"     scheduler: rr, forward: nat, dests: {HEALTH}}}\n")


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


def test_fragmented_udp_over_ipv6_is_forwarded_both_ways(lab: Lab, director: DirectorProc) -> None:
    res = lab.run_python(lab.client.ns, UDP_BIG, VIP6_NAT, str(ECHO), "6", "3000", timeout=120)
    stats = director.fresh_stats()
    assert json.loads(res.stdout) == 6, {k: v for k, v in stats["drops"].items() if v}
    svc = next(s for s in stats["services"] if s["key"][0] == 17 and s["key"][2] == ECHO)
    assert svc["counters"]["inpkts"] >= 6 * 3 and svc["counters"]["outpkts"] >= 6 * 3, svc  # 3 fragments each
    assert stats["drops"]["fragment"] == 0


def test_health_checks_over_ipv6_quiesce_the_dead_dest_only(lab: Lab, director: DirectorProc) -> None:
    def weights() -> dict[str, int] | None:
        svc = next(s for s in director.stats()["services"] if s["key"][2] == HEALTH_PORT)
        w = {addr: d["weight"] for addr, d in svc["dests"].items()}
        return w if w[real_addr6(2)] == 0 else None

    w = wait_for(weights, what="the IPv6 dest with nothing on its port to be quiesced")
    assert w == {real_addr6(1): 1, real_addr6(2): 0, real_addr6(3): 1}
