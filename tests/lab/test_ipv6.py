"""IPv6 end to end in the namespace lab: real kernel TCP from the dual-stack client to an IPv6 VIP.

A static directord (``cluster: none``) in d1 serves an IPv6 NAT service (and an IPv4 one beside it);
each real server runs a small IPv6 TCP server (bound to ``::``) that answers with its name and the
client address it saw. Nothing is configured by hand on the director's side of neighbour discovery:
the client resolves the VIP by NS (answered by the director from the virtual MAC), the director
resolves the real servers by NS, and the real servers reach the client through their default route,
the director's link-local address (``deploy.lab.GATEWAY6``), which the director answers too.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.lab import (
    GATEWAY,
    PYTHON,
    VIP6_NAT,
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
    return (f"vmac_id: 1\ngateways: [{GATEWAY}]\nint_mtu: 1600\nservices:\n"
            f"  - {{name: nat-http, protocol: tcp, vip: {VIP_NAT}, port: 80, scheduler: rr, forward: nat,\n"
            f"     dests: [{{address: {real_addr(1)}}}]}}\n"
            f'  - {{name: nat6, protocol: tcp, vip: "{VIP6_NAT}", port: 80, scheduler: rr, forward: nat,\n'
            f"     dests: [{dests6}]}}\n")


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
        assert "00:00:5e:00:01:01" in neigh, neigh


def test_ipv4_still_works_beside_ipv6(lab: Lab, director6: DirectorProc) -> None:
    code = (f"import socket; s = socket.create_connection(('{VIP_NAT}', 80), timeout=10);"
            " s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100).decode().split()[0])")
    res = wait_for(lambda: lab.run_python(lab.client.ns, code, check=False, timeout=30).stdout.strip(),
                   what="IPv4 HTTP through the director")
    assert res.startswith("HTTP/")
