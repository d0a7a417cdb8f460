"""IPv6 end to end in the namespace lab: real kernel TCP from the dual-stack client to an IPv6 VIP.

A static directord (``cluster: none``) in d1 serves an IPv6 NAT service (and an IPv4 one beside it);
each real server runs a small IPv6 TCP server (bound to ``::``) that answers with its name and the
client address it saw. Nothing is configured by hand on the director's side of neighbour discovery:
the client resolves the VIP by NS (answered by the director from the virtual MAC), the director
resolves the real servers by NS, and the real servers reach the client through their default route,
the director's link-local address (``deploy.lab.GATEWAY6``), which the director answers too.

DR and TUN over IPv6 go to the lab's own servers (``deploy.servers``, HTTP on ``[::]:80``): the IPv6 DR
VIP sits on each real server's lo (IPv6 answers NS only for addresses of the interface asked, so
nothing else is needed to keep the real servers quiet), the IPv6 TUN VIP on its tun device, fed by the
user-space decapsulator with the inner packets of the director's ip6ip6 (this kernel has no
``ip6_tunnel``). Replies leave from the VIP through the router, straight to the client: the director
counts packets in and none out.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.lab import (
    GATEWAY,
    PYTHON,
    VIP6_DR,
    VIP6_NAT,
    VIP6_TUN,
    VIP_NAT,
    Lab,
    client_addr6,
    real_addr,
    real_addr6,
)
from tests.lab.labutil import DirectorProc, wait_for

pytestmark = pytest.mark.lab

PORT6 = 8086
SERVER6 = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[2])))
s.listen(128)
print("ready", flush=True)
while True:
    c, addr = s.accept()
    with c:
        c.settimeout(5)
        try:
            c.recv(1024)
            c.sendall(f"{sys.argv[1]} {addr[0]}\n".encode())
        except OSError:
            pass
"""
CLIENT6 = r"""
import json, socket, sys, time
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + float(sys.argv[4])
out = []
while len(out) < n and time.monotonic() < deadline:
    try:  # the first SYNs may meet unresolved neighbours: TCP retransmits, we retry
        with socket.create_connection((vip, port), timeout=5) as s:
            s.sendall(b"hello\n")
            out.append(s.recv(1024).decode().split())
    except OSError:
        pass
print(json.dumps(out))
"""


def services_yaml() -> str:
    dests6 = ", ".join(f'{{address: "{real_addr6(i)}", port: {PORT6}}}' for i in (1, 2, 3))
    http6 = ", ".join(f'{{address: "{real_addr6(i)}", port: 80}}' for i in (1, 2, 3))
    return (f"vmac_id: 1\ngateways: [{GATEWAY}]\nint_mtu: 1600\nservices:\n"
            f"  - {{name: nat-http, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,\n"
            f"     dests: [{{address: {real_addr(1)}}}]}}\n"
            f'  - {{name: nat6, protocol: tcp, vip: "{VIP6_NAT}", port: 80, scheduler: rr, forward: nat,\n'
            f"     dests: [{dests6}]}}\n"
            f'  - {{name: dr6, protocol: tcp, vip: "{VIP6_DR}", port: 80, scheduler: rr, forward: dr,\n'
            f"     dests: [{http6}]}}\n"
            f'  - {{name: tun6, protocol: tcp, vip: "{VIP6_TUN}", port: 80, scheduler: rr, forward: tun,\n'
            f"     dests: [{http6}]}}\n")


@pytest.fixture(scope="module")
def servers6(lab: Lab) -> Iterator[None]:
    procs = []
    try:
        for r in lab.reals:
            p = lab.popen(r.ns, [PYTHON, "-c", SERVER6, f"r{r.index}", str(PORT6)], stdout=subprocess.PIPE)
            assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
            procs.append(p)
        yield
    finally:
        for p in procs:
            Lab.stop(p)
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture(scope="module")
def director6(lab: Lab, servers6: None) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, services_yaml(), "ipv6") as d:
        yield d


def connect(lab: Lab, n: int, vip: str = VIP6_NAT, port: int = 80, within: float = 60.0) -> list[Any]:
    res = lab.run_python(lab.client.ns, CLIENT6, vip, str(port), str(n), str(within), timeout=within + 30)
    out: list[Any] = json.loads(res.stdout)
    return out


def test_tcp_over_ipv6_nat_reaches_every_real_server(lab: Lab, director6: DirectorProc) -> None:
    # the lab is shared by the session: forget what earlier tests resolved, so that the client must
    # resolve the VIP and the real servers their router by neighbour discovery through this director
    for host in (lab.client, *lab.reals):
        lab.exec(host.ns, "ip -6 neigh flush all")
    replies = connect(lab, 6)
    assert len(replies) == 6, replies
    assert {name for name, _ in replies} == {"r1", "r2", "r3"}  # rr over the three
    assert {caddr for _, caddr in replies} == {client_addr6(1)}  # NAT keeps the client's address
    stats = wait_for(lambda: (s := director6.fresh_stats())["neigh"]["nd_ns_answered"] >= 2 and s,
                     what="NS answered by the director")
    neigh = stats["neigh"]
    assert neigh["nd_na_learned"] >= 3  # the real servers, resolved by NS
    assert neigh["nd_malformed"] == 0


def test_the_director_kernel_does_not_own_the_v6_vip(lab: Lab, director6: DirectorProc) -> None:
    d1 = lab.directors[0].ns
    out = lab.exec(d1, "ip -6 -o addr show").stdout
    assert VIP6_NAT not in out
    neigh = lab.exec(lab.client.ns, f"ip -6 neigh show {VIP6_NAT}").stdout
    if neigh.strip():  # resolved (by the test above): to the virtual MAC, never a kernel's
        assert "00:00:5e:00:02:01" in neigh, neigh  # IPv6's virtual MAC (VRRP 00:00:5e:00:02:XX)


def test_ipv4_still_works_beside_ipv6(lab: Lab, director6: DirectorProc) -> None:
    code = (f"import socket; s = socket.create_connection(('{VIP_NAT}', 80), timeout=10);"
            " s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100).decode().split()[0])")
    res = wait_for(lambda: lab.run_python(lab.client.ns, code, check=False, timeout=30).stdout.strip(),
                   what="IPv4 HTTP through the director")
    assert res.startswith("HTTP/")


HTTP6 = r"""
import json, socket, sys, time
vip, n = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + float(sys.argv[3])
out = []
while len(out) < n and time.monotonic() < deadline:
    try:
        with socket.create_connection((vip, 80), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        out.append(data.split(b"\r\n\r\n", 1)[1].decode().strip())
    except (OSError, IndexError):
        pass
print(json.dumps(out))
"""


def svc_counters(stats: dict[str, Any], vip: str) -> dict[str, int]:
    addr = int(ipaddress.ip_address(vip))
    counters: dict[str, int] = next(s["counters"] for s in stats["services"] if s["key"][1] == addr)
    return counters


@pytest.mark.parametrize("vip", [VIP6_DR, VIP6_TUN], ids=["dr", "tun"])
def test_tcp_over_ipv6_dr_and_tun_reaches_every_real_server(lab: Lab, director6: DirectorProc,
                                                            vip: str) -> None:
    """Real HTTP over TCP to the IPv6 DR / TUN VIP: every real server answers (rr), the replies go
    from the VIP through the router, never through the director."""
    res = lab.run_python(lab.client.ns, HTTP6, vip, "6", "60", timeout=90)
    names = json.loads(res.stdout)
    assert len(names) == 6 and set(names) == {"r1", "r2", "r3"}, names
    c = svc_counters(director6.fresh_stats(), vip)
    assert c["conns"] >= 6 and c["inpkts"] >= 6 * 3, c  # SYN, ACK, request, FIN... per connection
    assert c["outpkts"] == 0, c  # DR/TUN: replies bypass the director
    if vip == VIP6_TUN:
        for r in lab.reals:  # the inner packets came out of the tun device (the decapsulator's work)
            out = json.loads(lab.exec(r.ns, "ip -s -j link show tunl0").stdout)
            assert out[0]["stats64"]["rx"]["packets"] > 0
