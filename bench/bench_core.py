"""Micro-benchmark of the pure packet path: ``Director.handle()`` frames/s, no sockets.

Theory of operation
-------------------
A director with one NAT service (rr, 2 dests) and ``FLOWS`` established TCP conns (SYN, SYN-ACK,
ACK already through) is fed 60-byte frames of those flows, round robin: client -> VIP ACKs
(``nat_in``), real server -> client ACKs (``nat_out``), and 60-byte UDP datagrams of established
UDP flows (``udp_in``). Each iteration first restores the frame from its template into a reused
buffer (``buf[:] = tmpl``, what ``recv_into`` would have done); that copy is measured on its own
(``copy_ns``) and included in the rates, so they are conservative. New conns (SYN, schedule,
create) are measured as ``new_conn``. The reference is a naive scapy NAT of the same frames
(dissect, change dst/dport, delete checksums, rebuild) and scapy's dissection alone, in the same run.
Rates are frames (or new conns) per second; any benchmark frame dropped raises.

IPv6 (issue 13): the same NAT service on an IPv6 VIP with IPv6 dests (a second director, the
neighbours learned as ND would learn them) and the same flows over IPv6: ``core_nat6_in`` /
``core_nat6_out`` are 80-byte frames (IPv6's 40-byte header, same TCP segment), measured in the same
interleaved rounds as their IPv4 twins. IPv6 runs the slow path's dispatch (``path6``), the IPv4 hot
path does not see it.

Cases run interleaved ``ROUNDS`` times and the median is kept (the machine is shared and noisy).
``python -m bench.bench_core [--quick]`` prints the dict as JSON.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import sys
import time
from collections.abc import Callable

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.packet import mac_bytes
from director.services.sched import registry
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import ConnTable

VIP = "198.18.0.100"
RS = ("198.18.2.1", "198.18.2.2")
RS_MAC = ("02:00:00:00:02:01", "02:00:00:00:02:02")
CLIENT_MAC = "02:00:00:00:01:01"
VMAC = "00:00:5e:00:01:01"
FLOWS = 1024
VIP6 = "fd00:18::10"
RS6 = ("fd00:19::1", "fd00:19::2")


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def _client(i: int) -> tuple[str, int]:
    return f"198.18.1.{1 + i % 200}", 10000 + i


def _director() -> tuple[Director, list[float]]:
    now = [1000.0]

    def clock() -> float:
        return now[0]

    table = ConnTable(clock)
    services = ServiceTable()
    for proto in (6, 17):
        svc = VirtualService(protocol=proto, addr=_i(VIP), port=80, scheduler=registry.create("rr"))
        for a in RS:
            svc.add_dest(Dest(svc, _i(a), 8080))
        services.add(svc)
    d = Director(table, services, clock, CoreConfig(gw_addrs=frozenset({_i("198.18.2.254")})))
    d.set_active(True)
    for a, m in zip(RS, RS_MAC, strict=True):
        d.handle(bytearray(bytes(Ether(src=m, dst=VMAC) / ARP(op=2, hwsrc=m, psrc=a, pdst="198.18.2.254"))),
                 INT)
    return d, now


def _director6() -> Director:
    """The IPv6 twin of :func:`_director`: one TCP NAT service on VIP6, its dests' MACs known."""
    now = 1000.0
    table = ConnTable(lambda: now)
    services = ServiceTable()
    svc = VirtualService(protocol=6, addr=int(ipaddress.IPv6Address(VIP6)), port=80,
                         scheduler=registry.create("rr"))
    for a in RS6:
        svc.add_dest(Dest(svc, int(ipaddress.IPv6Address(a)), 8080))
    services.add(svc)
    d = Director(table, services, lambda: now, CoreConfig())
    d.set_active(True)
    for a, m in zip(RS6, RS_MAC, strict=True):  # what an NA from each dest would teach
        d.neigh[INT].learn(int(ipaddress.IPv6Address(a)), mac_bytes(m), now)
    return d


def _frames6(d: Director) -> dict[str, list[bytes]]:
    """Establish FLOWS TCP flows over IPv6 (the SYN teaches the client's MAC); their steady frames."""
    out: dict[str, list[bytes]] = {"nat6_in": [], "nat6_out": []}
    for i in range(FLOWS):
        src, sport = f"2001:db8:1::{1 + i % 200:x}", 10000 + i
        cl = Ether(src=CLIENT_MAC, dst=VMAC) / IPv6(src=src, dst=VIP6)
        d.handle(bytearray(bytes(cl / TCP(sport=sport, dport=80, flags="S"))), EXT)
        conn = d.table.in_get(6, int(ipaddress.IPv6Address(src)), sport, int(ipaddress.IPv6Address(VIP6)), 80)
        assert conn is not None
        rs = str(ipaddress.IPv6Address(conn.daddr))
        sv = Ether(src=RS_MAC[RS6.index(rs)], dst=VMAC) / IPv6(src=rs, dst=src)
        d.handle(bytearray(bytes(sv / TCP(sport=8080, dport=sport, flags="SA"))), INT)
        ack = bytes(cl / TCP(sport=sport, dport=80, flags="A") / (b"\0" * 6))
        d.handle(bytearray(ack), EXT)
        out["nat6_in"].append(ack)
        out["nat6_out"].append(bytes(sv / TCP(sport=8080, dport=sport, flags="A") / (b"\0" * 6)))
    return out


def _frames(d: Director) -> dict[str, list[bytes]]:
    """Establish FLOWS TCP and UDP flows; return the steady-state frames of each case."""
    out: dict[str, list[bytes]] = {"nat_in": [], "nat_out": [], "udp_in": [], "syn": []}
    for i in range(FLOWS):
        src, sport = _client(i)
        cl = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=src, dst=VIP)
        d.handle(bytearray(bytes(cl / TCP(sport=sport, dport=80, flags="S"))), EXT)
        conn = d.table.in_get(6, _i(src), sport, _i(VIP), 80)
        assert conn is not None
        rs = str(ipaddress.IPv4Address(conn.daddr))
        sv = Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst=src)
        d.handle(bytearray(bytes(sv / TCP(sport=8080, dport=sport, flags="SA"))), INT)
        ack = bytes(cl / TCP(sport=sport, dport=80, flags="A") / (b"\0" * 6))
        d.handle(bytearray(ack), EXT)
        out["nat_in"].append(ack)
        out["nat_out"].append(bytes(sv / TCP(sport=8080, dport=sport, flags="A") / (b"\0" * 6)))
        udp = bytes(cl / UDP(sport=sport, dport=80) / (b"\0" * 18))
        d.handle(bytearray(udp), EXT)
        out["udp_in"].append(udp)
        out["syn"].append(bytes(Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=f"198.18.3.{i % 250}", dst=VIP) /
                                TCP(sport=20000 + i, dport=80, flags="S") / (b"\0" * 6)))
    return out


def _rate(n: int, body: Callable[[int], None]) -> float:
    t0 = time.perf_counter()
    body(n)
    return n / (time.perf_counter() - t0)


def _loop(d: Director, frames: list[bytes], side: int) -> Callable[[int], None]:
    handle = d.handle
    buf = bytearray(len(frames[0]))
    m = len(frames)

    def body(n: int) -> None:
        for k in range(n):
            buf[:] = frames[k % m]
            if handle(buf, side) is None:
                raise RuntimeError("benchmark frame was dropped")
    return body


def _copy_only(frames: list[bytes]) -> Callable[[int], None]:
    buf = bytearray(len(frames[0]))
    m = len(frames)

    def body(n: int) -> None:
        for k in range(n):
            buf[:] = frames[k % m]
    return body


def _new_conns(frames: list[bytes]) -> Callable[[int], None]:
    """SYNs of new flows into a fresh director (built before the clock starts)."""
    d, _ = _director()
    handle = d.handle
    bufs = [bytearray(f) for f in frames]

    def body(n: int) -> None:
        for k in range(min(n, len(bufs))):
            if handle(bufs[k], EXT) is None:
                raise RuntimeError("benchmark SYN was dropped")
    return body


def _scapy_nat(frames: list[bytes]) -> Callable[[int], None]:
    rs = RS[0]

    def body(n: int) -> None:
        for k in range(n):
            p = Ether(frames[k % len(frames)])
            p.dst = RS_MAC[0]
            p[IP].dst = rs
            p[IP].ttl -= 1
            p[TCP].dport = 8080
            del p[IP].chksum
            del p[TCP].chksum
            bytes(p)
    return body


def _scapy_parse(frames: list[bytes]) -> Callable[[int], None]:
    def body(n: int) -> None:
        for k in range(n):
            Ether(frames[k % len(frames)])
    return body


def run(quick: bool = False) -> dict[str, float]:
    """frames/s of handle() per case (medians of interleaved rounds) and the ratio to scapy."""
    d, _now = _director()
    frames = _frames(d)
    d6 = _director6()
    frames6 = _frames6(d6)
    n = 20_000 if quick else 200_000
    rounds = 3 if quick else 5
    cases: dict[str, Callable[[int], None]] = {
        "nat_in": _loop(d, frames["nat_in"], EXT),
        "nat6_in": _loop(d6, frames6["nat6_in"], EXT),
        "nat_out": _loop(d, frames["nat_out"], INT),
        "nat6_out": _loop(d6, frames6["nat6_out"], INT),
        "udp_in": _loop(d, frames["udp_in"], EXT),
        "copy": _copy_only(frames["nat_in"]),
    }
    samples: dict[str, list[float]] = {k: [] for k in [*cases, "new_conn", "scapy", "scapy_parse"]}
    for _ in range(rounds):
        for name, body in cases.items():
            samples[name].append(_rate(n, body))
        samples["new_conn"].append(_rate(len(frames["syn"]), _new_conns(frames["syn"])))
        samples["scapy"].append(_rate(max(200, n // 200), _scapy_nat(frames["nat_in"])))
        samples["scapy_parse"].append(_rate(max(200, n // 100), _scapy_parse(frames["nat_in"])))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "core_nat_in_frames_per_s": med["nat_in"],
        "core_nat_out_frames_per_s": med["nat_out"],
        "core_nat6_in_frames_per_s": med["nat6_in"],
        "core_nat6_out_frames_per_s": med["nat6_out"],
        "core_udp_in_frames_per_s": med["udp_in"],
        "core_new_conns_per_s": med["new_conn"],
        "ref_scapy_parse_frames_per_s": med["scapy_parse"],
        "ref_scapy_nat_frames_per_s": med["scapy"],
        "core_copy_ns": 1e9 / med["copy"],
        "core_nat_in_ns_per_frame": 1e9 / med["nat_in"] - 1e9 / med["copy"],
        "core_nat_in_vs_scapy_nat": med["nat_in"] / med["scapy"],
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
