"""Helpers for conn-table tests: a settable clock, services/dests built with the real API."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from director.services.service import Dest, VirtualService
from director.table.conn import Conn, ConnTable
from director.types import ConnFlags, FwdMethod, Proto

TCP, UDP, ICMP = int(Proto.TCP), int(Proto.UDP), int(Proto.ICMP)
VIP = int(ipaddress.IPv4Address("198.18.1.1"))
VIP2 = int(ipaddress.IPv4Address("198.18.1.2"))
RS1 = int(ipaddress.IPv4Address("198.18.2.1"))
RS2 = int(ipaddress.IPv4Address("198.18.2.2"))
CLIENT = int(ipaddress.IPv4Address("198.19.0.10"))
CLIENT2 = int(ipaddress.IPv4Address("198.19.0.11"))
TEMPLATE = int(ConnFlags.TEMPLATE)


class FakeClock:
    """Injected clock: time moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class NullSched:
    name = "null"

    def update(self, dests: Sequence[Dest]) -> None:
        pass

    def schedule(self, dests: Sequence[Dest], caddr: int, cport: int) -> Dest | None:
        return dests[0] if dests else None


def make_dest(fwd: FwdMethod = FwdMethod.NAT, *, addr: int = RS1, port: int = 8080, vport: int = 80,
              u_threshold: int = 0, l_threshold: int = 0, weight: int = 1) -> Dest:
    svc = VirtualService(TCP, VIP, vport, NullSched())
    dest = Dest(svc, addr, port, weight=weight, fwd=fwd, u_threshold=u_threshold,
                l_threshold=l_threshold)
    svc.add_dest(dest)
    return dest


def make_table(bits: int = 8) -> tuple[ConnTable, FakeClock]:
    clock = FakeClock()
    return ConnTable(clock, bits=bits), clock


def new_conn(tab: ConnTable, dest: Dest | None, cport: int = 40000, caddr: int = CLIENT,
             flags: int = 0, protocol: int = TCP, vport: int = 80) -> Conn:
    daddr, dport = (dest.addr, dest.port) if dest is not None else (0, 0)
    return tab.new(protocol, caddr, cport, VIP, vport, daddr, dport, flags, dest)


def new_template(tab: ConnTable, dest: Dest, caddr: int = CLIENT, vport: int = 80,
                 timeout: float = 300.0) -> Conn:
    return tab.new(TCP, caddr, 0, VIP, vport, dest.addr, dest.port, TEMPLATE, dest,
                   timeout=timeout)
