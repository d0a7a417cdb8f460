"""Real kernel TCP/UDP at both ends, our director in between (NAT, DR, TUN), in the namespace lab.

One static directord (``cluster: none``, tests/lab/labutil.py) runs in d1 for the module with the
services below; tests drive traffic from the client namespace (``tests.lab.clientops``) and read the
director's counters from its stats file. The kernel reference path (ip_forward + nftables DNAT in d3)
is checked too, so a lab fault is told apart from a director fault.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from deploy.lab import GATEWAY, VIP_DR, VIP_NAT, VIP_TUN, Lab, real_addr
from tests.lab.labutil import DirectorProc, wait_for

pytestmark = pytest.mark.lab

VMAC = "00:00:5e:00:01:01"
WEIGHTS = (1, 2, 3)
HTTP, ECHO, UDP_ECHO, PERSIST, WEIGHTED, NODEST_TCP, NODEST_UDP = 80, 7, 7, 81, 82, 83, 8


def _dests(port: int | None = None, weights: tuple[int, ...] = (1, 1, 1), skip: int | None = None) -> str:
    items = []
    for i, w in enumerate(weights, start=1):
        if i == skip:
            continue
        p = f", port: {port}" if port else ""
        items.append(f"{{address: {real_addr(i)}{p}, weight: {w}}}")
    return "[" + ", ".join(items) + "]"


def _svc(name: str, proto: str, vip: str, port: int, dests: str, fwd: str = "nat", sched: str = "rr",
         extra: str = "") -> str:
    return (f"  - {{name: {name}, protocol: {proto}, vip: {vip}, port: {port}, scheduler: {sched},"
            f" forward: {fwd},{extra}\n     dests: {dests}}}\n")


def services_yaml(tcp_skip: int | None = None, udp_skip: int | None = None) -> str:
    """Node keys + services in director.config.services's schema (DirectorProc splits them). Only the NODEST
    services expire conns of removed dests (the per-service expire_nodest_conn)."""
    nodest = " expire_nodest_conn: true,"
    return "".join([
        f"vmac_id: 1\ngateways: [{GATEWAY}]\nint_mtu: 1600\nservices:\n",
        _svc("nat-http", "tcp", VIP_NAT, HTTP, _dests()),
        _svc("nat-echo", "tcp", VIP_NAT, ECHO, _dests()),
        _svc("nat-udp-echo", "udp", VIP_NAT, UDP_ECHO, _dests()),
        _svc("nat-persist", "tcp", VIP_NAT, PERSIST, _dests(HTTP), extra=" persistence: {timeout: 120},"),
        _svc("nat-weighted", "tcp", VIP_NAT, WEIGHTED, _dests(HTTP, WEIGHTS), sched="wrr"),
        _svc("nat-nodest-tcp", "tcp", VIP_NAT, NODEST_TCP, _dests(HTTP, skip=tcp_skip), extra=nodest),
        _svc("nat-nodest-udp", "udp", VIP_NAT, NODEST_UDP, _dests(UDP_ECHO, skip=udp_skip), extra=nodest),
        _svc("dr-http", "tcp", VIP_DR, HTTP, _dests(), fwd="dr"),
        _svc("tun-http", "tcp", VIP_TUN, HTTP, _dests(), fwd="tun"),
        _svc("dr-echo", "tcp", VIP_DR, ECHO, _dests(), fwd="dr"),
        _svc("tun-echo", "tcp", VIP_TUN, ECHO, _dests(), fwd="tun"),
    ])


@pytest.fixture(scope="module")
def director(lab: Lab) -> Iterator[DirectorProc]:
    with DirectorProc(lab, 1, services_yaml(), "fwd") as d:
        yield d


def client(lab: Lab, *args: str, timeout: float = 120.0) -> Any:
    res = lab.run_python(lab.client.ns, "tests.lab.clientops", *args, timeout=timeout)
    return json.loads(res.stdout)


def servers(lab: Lab) -> set[str]:
    return {f"r{r.index}" for r in lab.reals}


def svc_stats(stats: dict[str, Any], proto: int, vport: int) -> dict[str, Any]:
    return next(s for s in stats["services"] if s["key"][0] == proto and s["key"][2] == vport)


def test_lab_reference_path_kernel_dnat(lab: Lab) -> None:
    """The lab itself works: kernel forwarding + DNAT in d3 reaches r1 (no user-space director)."""
    d3 = lab.directors[2]
    vip = "198.18.0.30"
    lab.exec(d3.ns, "nft delete table netdev lbvip", check=False)
    lab.sysctl(d3.ns, "net.ipv4.ip_forward", "1")
    rules = ("table ip labref {\n chain pre {\n  type nat hook prerouting priority -100\n"
             f"  ip daddr {vip} tcp dport {HTTP} dnat to {real_addr(1)}\n }}\n"
             " chain post {\n  type nat hook postrouting priority 100\n"
             f"  ip daddr {real_addr(1)} tcp dport {HTTP} masquerade\n }}\n}}\n")
    lab.exec(d3.ns, ["nft", "-f", str(lab.write_file("labref.nft", rules))])
    lab.exec(lab.client.ns, f"ip neigh replace {vip} lladdr {d3.macs['ext']} dev eth0")
    try:
        assert client(lab, "http", vip, str(HTTP), "2") == [[None, "r1"], [None, "r1"]]
    finally:
        lab.exec(d3.ns, "nft delete table ip labref", check=False)
        lab.sysctl(d3.ns, "net.ipv4.ip_forward", "0")


@pytest.mark.parametrize("vip", [VIP_NAT, VIP_DR, VIP_TUN], ids=["nat", "dr", "tun"])
def test_http_through_vip(lab: Lab, director: DirectorProc, vip: str) -> None:
    got = client(lab, "http", vip, str(HTTP), "6")
    names = [server for _src, server in got]
    assert set(names) <= servers(lab)
    assert len(set(names)) == len(lab.reals)  # rr over three dests: every server answered


def test_checksum_offload_frames_are_completed(lab: Lab, director: DirectorProc) -> None:
    """Client and servers send CHECKSUM_PARTIAL frames (veth tx offload on); the director completes
    the checksums, so the receiving kernels count no checksum errors."""
    client(lab, "http", VIP_NAT, str(HTTP), "3")
    assert director.fresh_stats()["csum_fixed"] > 0
    for r in lab.reals:
        snmp = lab.exec(r.ns, "cat /proc/net/snmp").stdout.split("\n")
        for proto in ("Tcp:", "Udp:"):
            head, vals = [line.split() for line in snmp if line.startswith(proto)][:2]
            if "InCsumErrors" in head:
                assert vals[head.index("InCsumErrors")] == "0"


def test_200_concurrent_tcp_connections_byte_for_byte(lab: Lab, director: DirectorProc) -> None:
    before = director.stats()
    got = client(lab, "echo", VIP_NAT, str(ECHO), "200", "65536", timeout=170)
    assert got["failed"] == [] and got["ok"] == 200
    after = director.fresh_stats()
    per_dest = svc_stats(after, 6, ECHO)["dests"]
    conns = sum(d["conns"] for d in per_dest.values())
    conns_before = sum(d["conns"] for d in svc_stats(before, 6, ECHO)["dests"].values())
    assert conns - conns_before == 200
    assert all(d["conns"] > 0 for d in per_dest.values())


@pytest.mark.parametrize("vip", [VIP_DR, VIP_TUN], ids=["dr", "tun"])
def test_bulk_tcp_dr_and_tun_byte_for_byte(lab: Lab, director: DirectorProc, vip: str) -> None:
    """Full-size segments one way through the director (DR: MAC rewrite; TUN: 1500-byte packets
    + 20 bytes of IPIP on the 1600-byte internal link), replies straight from the real servers."""
    got = client(lab, "echo", vip, str(ECHO), "30", str(256 * 1024), timeout=170)
    assert got["failed"] == [] and got["ok"] == 30


def test_udp_request_response(lab: Lab, director: DirectorProc) -> None:
    got = client(lab, "udp", VIP_NAT, str(UDP_ECHO), "9")
    for sent, reply in got:
        assert reply is not None, f"no reply to {sent}"
        name, _, echoed = reply.partition("|")
        assert name in servers(lab) and echoed == sent


def test_persistence_same_client_same_server(lab: Lab, director: DirectorProc) -> None:
    sources = lab.client_sources()[1:7]
    got = client(lab, "http", VIP_NAT, str(PERSIST), "1", "--sources", ",".join(sources), "--repeat", "4")
    by_source: dict[str, set[str]] = {}
    for src, server in got:
        by_source.setdefault(src, set()).add(server)
    assert set(by_source) == set(sources)
    assert all(len(s) == 1 for s in by_source.values()), by_source
    assert len(set().union(*by_source.values())) > 1  # different clients were spread


def test_weights_honoured(lab: Lab, director: DirectorProc) -> None:
    n = 60 * sum(WEIGHTS) // 6
    got = client(lab, "http", VIP_NAT, str(WEIGHTED), str(n))
    counts = Counter(server for _src, server in got)
    total = sum(WEIGHTS)
    for i, w in enumerate(WEIGHTS, start=1):
        expected = n * w / total
        assert abs(counts[f"r{i}"] - expected) <= 0.25 * expected, counts


def _dest_with_conn(stats: dict[str, Any], proto: int, vport: int) -> str:
    dests = svc_stats(stats, proto, vport)["dests"]
    busy = [addr for addr, d in dests.items() if d["activeconns"] + d["inactconns"] > 0]
    return busy[0] if len(busy) == 1 else ""


def test_removed_dest_expire_nodest_conn(lab: Lab, director: DirectorProc) -> None:
    """Per-service expire_nodest_conn: packets of a conn whose dest was removed are dropped and the conn
    expired; a UDP flow (same client port) is rescheduled to a remaining dest."""
    first = client(lab, "udp", VIP_NAT, str(NODEST_UDP), "1", "--cport", "40001")
    old_server = first[0][1].split("|")[0]
    held = lab.popen(lab.client.ns, [*_py(), "-m", "tests.lab.clientops", "hold", VIP_NAT, str(NODEST_TCP)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert held.stdout is not None and held.stdin is not None
    try:
        assert json.loads(held.stdout.readline()) == "connected"
        tcp_addr = wait_for(lambda: _dest_with_conn(director.stats(), 6, NODEST_TCP), what="held conn")
        tcp_idx = int(tcp_addr.rsplit(".", 1)[1]) - 9
        udp_idx = int(old_server[1:])
        # remove the held TCP conn's dest from the TCP service and the UDP flow's dest from the UDP one
        text = services_yaml(tcp_skip=tcp_idx, udp_skip=udp_idx)
        drops_before = director.stats()["drops"]["dest_unavailable"]
        director.reload(text)
        held.stdin.write(b"get\n")
        held.stdin.flush()
        wait_for(lambda: director.stats()["drops"]["dest_unavailable"] > drops_before,
                 what="packets of the removed dest's conn to be dropped")
        again = client(lab, "udp", VIP_NAT, str(NODEST_UDP), "1", "--cport", "40001")
        new_server = again[0][1].split("|")[0]
        assert new_server != old_server and new_server in servers(lab)
        fresh = client(lab, "http", VIP_NAT, str(NODEST_TCP), "4")
        assert f"r{tcp_idx}" not in {s for _src, s in fresh}
    finally:
        held.stdin.close()
        Lab.stop(held)
        held.stdout.close()
        director.reload(services_yaml())


def _py() -> list[str]:
    from deploy.lab import PYTHON
    return [PYTHON]


def test_malformed_frames_counted_and_dropped_while_traffic_flows(lab: Lab, director: DirectorProc) -> None:
    before = director.stats()["drops"]
    argv = [*_py(), "-m", "tests.lab.clientops", "garbage", VIP_NAT, VMAC, "4000", "--until-eof"]
    sender = lab.popen(lab.client.ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert sender.stdout is not None
    assert json.loads(sender.stdout.readline()) == "sending"
    good = client(lab, "http", VIP_NAT, str(HTTP), "30")  # while the garbage keeps coming
    out, _ = sender.communicate(timeout=120)              # closes its stdin: it stops
    assert sender.returncode == 0
    sent: dict[str, int] = json.loads(out)
    assert {s for _src, s in good} <= servers(lab) and len(good) == 30

    deltas: dict[str, int] = {}

    def all_counted() -> bool:
        drops = director.stats()["drops"]
        deltas.update({k: drops[k] - before[k] for k in sent})
        return all(deltas[k] >= n for k, n in sent.items())

    try:
        wait_for(all_counted, what=f"drop counters to cover {sent}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; counted {deltas}") from None
