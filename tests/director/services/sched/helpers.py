"""Helpers for scheduler tests: build a service with dests through the real service API."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from director.services.sched.registry import create
from director.services.service import Dest, VirtualService
from director.types import DestFlags, Proto

BASE = int(ipaddress.IPv4Address("198.18.2.0"))
VIP = int(ipaddress.IPv4Address("198.18.1.1"))


def make_service(sched: str, weights: Sequence[int], vport: int = 80, **opts: object) -> VirtualService:
    """A TCP service on the VIP with one dest per weight at 198.18.2.1, .2, ... (in that order)."""
    svc = VirtualService(int(Proto.TCP), VIP, vport, create(sched, **opts))
    for i, w in enumerate(weights):
        svc.add_dest(Dest(svc, BASE + 1 + i, vport, weight=w))
    return svc


def overload(dest: Dest) -> None:
    dest.flags |= DestFlags.OVERLOAD


def clients(n: int, seed: int = 1) -> list[int]:
    """n distinct, well-spread client addresses in 198.19.0.0/16 (deterministic)."""
    base = int(ipaddress.IPv4Address("198.19.0.0"))
    return [base + ((i * 40503 + seed) & 0xFFFF) for i in range(n)]


def shuffled_twin(svc: VirtualService, seed: int) -> VirtualService:
    """An independent service with copies of svc's dests (same addr/port/weight) in another order."""
    import random

    order = list(range(len(svc.dests)))
    random.Random(seed).shuffle(order)
    sched = svc.scheduler
    opts = getattr(sched, "opts", {})
    twin = VirtualService(svc.protocol, svc.addr, svc.port, create(sched.name, **opts))
    for i in order:
        d = svc.dests[i]
        twin.add_dest(Dest(twin, d.addr, d.port, weight=d.weight))
    return twin


def picks(svc: VirtualService, caddrs: Sequence[int], cport: int = 0) -> list[tuple[int, int] | None]:
    """(daddr, dport) chosen for each client, None when no dest."""
    out: list[tuple[int, int] | None] = []
    for c in caddrs:
        d = svc.scheduler.schedule(svc.dests, c, cport)
        out.append(None if d is None else (d.addr, d.port))
    return out
