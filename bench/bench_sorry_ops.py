"""Micro-benchmark of one-packet scheduling in the pure packet path (``Director.handle()``, no sockets).

Theory of operation
-------------------
Three UDP NAT services over three dests (rr) are built through the real config path: a plain one with
one established flow, the same with a new client port per datagram (a table entry and an event each),
and an ``ops`` one (a transient conn per datagram, nothing kept). Each case feeds pre-built 74-byte
datagrams; replies are fed from a dest, to the established flow and to the ops service (translated by
the dest's address, no entry). Cases run interleaved ``ROUNDS`` times and the median rate is kept (the
machine is shared and noisy). ``python -m bench.bench_sorry_ops`` prints the dict as JSON (frames/s);
``run()`` is ``bench.run``'s module interface (not in its ``MODULES`` list yet).
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import time
from collections.abc import Callable

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from director.config.services import apply_to_services, parse_config
from director.dataplane.arp import vrrp_mac
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.services.service import ServiceTable
from director.table.conn import ConnTable

VIP, GW, CLIENT = "198.18.0.100", "198.18.2.254", "198.18.1.10"
RS = ("198.18.2.1", "198.18.2.2", "198.18.2.3")
MAC = {a: f"02:00:00:00:02:0{i + 1}" for i, a in enumerate(RS)}
CLIENT_MAC, VMAC = "02:00:00:00:01:01", "00:00:5e:00:01:01"
N, ROUNDS = 50_000, 5


def _director(ops: bool) -> Director:
    now = [1000.0]
    dests = ", ".join(f"{{address: {a}, port: 5353}}" for a in RS)
    text = (f"services:\n  - {{name: dns, protocol: udp, vip: {VIP}, port: 53, scheduler: rr,"
            f"{' ops: true,' if ops else ''} dests: [{dests}]}}\n")
    services = ServiceTable()
    apply_to_services(parse_config(text), services)
    d = Director(ConnTable(lambda: now[0], event_capacity=1 << 20), services, lambda: now[0],
                 CoreConfig(vmac=vrrp_mac(1), gw_addrs=frozenset({int(ipaddress.IPv4Address(GW))})))
    d.set_active(True)
    for a in RS:
        d.handle(bytearray(bytes(Ether(src=MAC[a], dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=MAC[a], psrc=a,
                                                                                   pdst=GW))), INT)
    return d


def _query(sport: int) -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=CLIENT, dst=VIP) / UDP(sport=sport, dport=53)
                 / (b"q" * 32))


REPLY = bytes(Ether(src=MAC[RS[0]], dst=VMAC) / IP(src=RS[0], dst=CLIENT) / UDP(sport=5353, dport=5300)
              / (b"r" * 32))


def _case(d: Director, frames: list[bytes], side: int) -> Callable[[], float]:
    def run() -> float:
        bufs = [bytearray(f) for f in frames]
        h = d.handle
        t = time.perf_counter()
        for b in bufs:
            if h(b, side) is None:
                raise AssertionError("a benchmark frame was dropped")
        return len(bufs) / (time.perf_counter() - t)
    return run


def run(quick: bool = False) -> dict[str, float]:
    """The figures (``bench.run``'s module interface; ``quick`` is accepted: the run is short anyway)."""
    return main()


def main() -> dict[str, float]:
    plain, ops = _director(False), _director(True)
    flow = _query(5300)
    plain.handle(bytearray(flow), EXT)  # the established flow (its dest: RS[0], rr's first)
    ops.handle(bytearray(flow), EXT)  # (the client's MAC, for the replies)
    fresh = [_director(False) for _ in range(ROUNDS)]
    cases = {
        "udp_established_in": _case(plain, [flow] * N, EXT),
        "udp_new_conn_per_datagram": None,
        "ops_datagram_in": _case(ops, [flow] * N, EXT),
        "udp_established_reply": _case(plain, [REPLY] * N, INT),
        "ops_reply_no_entry": _case(ops, [REPLY] * N, INT),
    }
    news = [_query(1024 + i) for i in range(N)]
    rates: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(ROUNDS):
        for name, run in cases.items():
            rates[name].append(_case(fresh[r], news, EXT)() if run is None else run())
    out = {f"{k}_frames_per_s": statistics.median(v) for k, v in rates.items()}
    out["ops_table_entries"] = float(len(ops.table))
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
