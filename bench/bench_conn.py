"""Micro-benchmark of the conn table: creates, lookups, refreshes, expiries, bytes per conn.

Theory of operation
-------------------
Each figure times a tight loop of calls with the packet path's signature over ``N`` distinct
flows (random client addr:port towards one VIP, 4 real servers) and is the median of several
rounds on a fresh table (default 12 bits, GC enabled as in the daemon):

* ``conn_creates_per_s`` - ``ConnTable.new`` (dest binding, hashing, timer arming; events off);
  ``conn_creates_events_per_s`` is the same with the sync event feed on (drained every 4096),
  ``conn_creates_nogc_per_s`` the same with the cyclic GC off (GC pauses excluded);
* ``conn_in_lookups_per_s`` / ``conn_out_lookups_per_s`` - ``in_get`` / ``out_get`` hits;
* ``conn_refreshes_per_s`` - ``refresh`` (the per-packet timer update);
* ``conn_expiries_per_s`` - one ``tick`` removing all N entries (unhash, unbind, counters);
* ``conn_bytes_per_conn_1m`` - tracemalloc growth per conn after creating 1M conns (200k in quick
  mode), every index and timer included; addresses/ports are fresh int objects per conn, as a
  packet parser would produce.

The ``ref_`` figures do the same jobs with plain dicts in the same run: an in-index keyed by
``(proto, caddr, cport, vaddr, vport)`` and an out-index keyed by ``(proto, daddr, dport, caddr,
cport)``, both holding a tuple value, an ``expires`` dict for refreshes, and ``del`` for expiry.
``python -m bench.bench_conn [--quick]`` prints the dict as JSON.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from director.services.service import Dest, VirtualService
from director.table.conn import Conn, ConnTable
from director.types import Proto

TCP = int(Proto.TCP)
VIP = int(ipaddress.IPv4Address("198.18.0.100"))
RS = [int(ipaddress.IPv4Address(f"198.18.2.{i}")) for i in range(1, 5)]
Flow = tuple[int, int, int]  # caddr, cport, dest index


class _Sched:
    name = "bench"

    def update(self, dests: Any) -> None:
        pass

    def schedule(self, dests: Any, caddr: int, cport: int) -> Dest | None:
        return None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _flows(n: int, seed: int) -> list[Flow]:
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    out: list[Flow] = []
    while len(out) < n:
        a, p = rng.getrandbits(32), rng.randrange(1024, 65536)
        if (a, p) not in seen:
            seen.add((a, p))
            out.append((a, p, len(out) & 3))
    return out


def _dests() -> list[Dest]:
    svc = VirtualService(TCP, VIP, 80, _Sched())
    for addr in RS:
        svc.add_dest(Dest(svc, addr, 8080))
    return svc.dests


def _rate(n: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _in_loop(in_get: Callable[[int, int, int, int, int], object], flows: list[Flow]) -> None:
    for a, p, _ in flows:
        if in_get(TCP, a, p, VIP, 80) is None:
            raise RuntimeError("in lookup missed")


def _out_loop(out_get: Callable[[int, int, int, int, int], object], flows: list[Flow]) -> None:
    for a, p, d in flows:
        if out_get(TCP, RS[d], 8080, a, p) is None:
            raise RuntimeError("out lookup missed")


def _table_round(flows: list[Flow]) -> dict[str, float]:
    clock, dests = _Clock(), _dests()
    tab = ConnTable(clock)
    n = len(flows)
    new, in_get, out_get = tab.new, tab.in_get, tab.out_get
    conns: list[Conn] = []
    add = conns.append

    def creates() -> None:
        for a, p, d in flows:
            dest = dests[d]
            add(new(TCP, a, p, VIP, 80, dest.addr, 8080, 0, dest))

    out = {"conn_creates_per_s": _rate(n, creates)}
    out["conn_in_lookups_per_s"] = _rate(n, lambda: _in_loop(in_get, flows))
    out["conn_out_lookups_per_s"] = _rate(n, lambda: _out_loop(out_get, flows))
    refresh = tab.refresh
    clock.now += 1.0
    def refreshes() -> None:
        for c in conns:
            refresh(c)

    out["conn_refreshes_per_s"] = _rate(n, refreshes)
    clock.now += 10.0
    removed = [0]

    def expiries() -> None:
        removed[0] = tab.tick()

    out["conn_expiries_per_s"] = _rate(n, expiries)
    if removed[0] != n:
        raise RuntimeError(f"expired {removed[0]} of {n}")
    return out


def _events_round(flows: list[Flow]) -> dict[str, float]:
    clock, dests = _Clock(), _dests()
    tab = ConnTable(clock)
    tab.events.enabled = True
    new, drain = tab.new, tab.events.drain

    def creates() -> None:
        for i, (a, p, d) in enumerate(flows):
            dest = dests[d]
            new(TCP, a, p, VIP, 80, dest.addr, 8080, 0, dest)
            if i & 4095 == 0:
                drain(8192)

    return {"conn_creates_events_per_s": _rate(len(flows), creates)}


def _nogc_round(flows: list[Flow]) -> dict[str, float]:
    """Creates with the cyclic GC off: the table's own cost, without GC pauses (conns form no
    reference cycles, so a daemon may freeze/disable the GC; see the report)."""
    clock, dests = _Clock(), _dests()
    tab = ConnTable(clock)
    new = tab.new

    def creates() -> None:
        for a, p, d in flows:
            dest = dests[d]
            new(TCP, a, p, VIP, 80, dest.addr, 8080, 0, dest)

    gc.disable()
    try:
        return {"conn_creates_nogc_per_s": _rate(len(flows), creates)}
    finally:
        gc.enable()


def _ref_round(flows: list[Flow]) -> dict[str, float]:
    clock = _Clock()
    din: dict[tuple[int, ...], tuple[Any, ...]] = {}
    dout: dict[tuple[int, ...], tuple[Any, ...]] = {}
    exp: dict[tuple[int, ...], float] = {}
    n = len(flows)

    def new(proto: int, a: int, p: int, v: int, vp: int, d: int, dp: int) -> None:
        val = (proto, a, p, v, vp, d, dp, 0, 0, 3.0)
        din[(proto, a, p, v, vp)] = val
        dout[(proto, d, dp, a, p)] = val

    def in_get(proto: int, a: int, p: int, v: int, vp: int) -> tuple[Any, ...] | None:
        return din.get((proto, a, p, v, vp))

    def out_get(proto: int, s: int, sp: int, a: int, p: int) -> tuple[Any, ...] | None:
        return dout.get((proto, s, sp, a, p))

    def refresh(key: tuple[int, ...]) -> None:
        exp[key] = clock() + 900.0

    def creates() -> None:
        for a, p, d in flows:
            new(TCP, a, p, VIP, 80, RS[d], 8080)

    def refreshes() -> None:
        for k in keys:
            refresh(k)

    out = {"ref_conn_creates_per_s": _rate(n, creates)}
    out["ref_conn_in_lookups_per_s"] = _rate(n, lambda: _in_loop(in_get, flows))
    out["ref_conn_out_lookups_per_s"] = _rate(n, lambda: _out_loop(out_get, flows))
    keys = list(din)
    out["ref_conn_refreshes_per_s"] = _rate(n, refreshes)

    def expiries() -> None:
        for k in keys:
            v = din.pop(k)
            del dout[(v[0], v[5], v[6], v[1], v[2])]
            exp.pop(k, None)

    out["ref_conn_expiries_per_s"] = _rate(n, expiries)
    return out


def _fresh(x: int, width: int) -> int:
    """A new int object equal to x, like a packet parser's int.from_bytes."""
    return int.from_bytes(x.to_bytes(width, "big"), "big")


def _bytes_per_conn(n: int) -> tuple[float, float]:
    """tracemalloc growth per entry: (ConnTable, plain-dict reference)."""
    flows = _flows(n, 99)
    gc.collect()
    tracemalloc.start()
    try:
        clock, dests = _Clock(), _dests()
        tab = ConnTable(clock)
        base = tracemalloc.get_traced_memory()[0]
        for i, (a, p, d) in enumerate(flows):
            clock.now = 1000.0 + i * 1e-5  # a distinct float per conn, like a real clock
            dest = dests[d]
            tab.new(TCP, a, p, _fresh(VIP, 4), _fresh(80, 2), _fresh(dest.addr, 4), _fresh(8080, 2),
                    0, dest)
        ours = (tracemalloc.get_traced_memory()[0] - base) / n
        del tab
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        din: dict[tuple[int, ...], tuple[Any, ...]] = {}
        dout: dict[tuple[int, ...], tuple[Any, ...]] = {}
        for i, (a, p, d) in enumerate(flows):
            v, vp, da, dp = _fresh(VIP, 4), _fresh(80, 2), _fresh(RS[d], 4), _fresh(8080, 2)
            val = (TCP, a, p, v, vp, da, dp, 0, 0, 3.0, 1000.0 + i * 1e-5)
            din[(TCP, a, p, v, vp)] = val
            dout[(TCP, da, dp, a, p)] = val
        ref = (tracemalloc.get_traced_memory()[0] - base) / n
        del din, dout
    finally:
        tracemalloc.stop()
    return ours, ref


def run(quick: bool = False) -> dict[str, float]:
    n = 50_000 if quick else 200_000
    rounds = 3 if quick else 5
    samples: dict[str, list[float]] = {}
    for r in range(rounds):
        flows = _flows(n, r)
        for fn in (_table_round, _ref_round, _events_round, _nogc_round):
            gc.collect()
            for k, v in fn(flows).items():
                samples.setdefault(k, []).append(v)
    out = {k: statistics.median(v) for k, v in samples.items()}
    ours, ref = _bytes_per_conn(200_000 if quick else 1_000_000)
    out["conn_bytes_per_conn_1m"] = ours
    out["ref_conn_bytes_per_conn_1m"] = ref
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
