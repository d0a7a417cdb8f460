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

IPv6 (issue 13): the same table with 128-bit addresses (random clients in ``2001:db8::/32``, VIP and
real servers in ``fd00::/16``: ints >= 2**32, the table's IPv6 range), measured in the same rounds,
interleaved with the IPv4 ones: ``conn_creates_per_s_v6``, ``conn_in_lookups_per_s_v6``,
``conn_out_lookups_per_s_v6`` and ``conn_bytes_per_conn_1m_v6`` (goal <= 350 B; the conn key is a
152-bit int, 16-byte addresses are fresh objects per conn as the parser makes them).

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
VIP6 = int(ipaddress.IPv6Address("fd00:18::10"))
RS6 = [int(ipaddress.IPv6Address(f"fd00:19::{i:x}")) for i in range(1, 5)]
CLIENT6_NET = int(ipaddress.IPv6Address("2001:db8::"))
Flow = tuple[int, int, int]  # caddr, cport, dest index


class Family:
    """The addresses of one address family's benchmark flows."""

    def __init__(self, vip: int, rs: list[int], width: int, suffix: str) -> None:
        self.vip, self.rs, self.width, self.suffix = vip, rs, width, suffix


V4 = Family(VIP, RS, 4, "")
V6 = Family(VIP6, RS6, 16, "_v6")


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


def _flows(n: int, seed: int, fam: Family = V4) -> list[Flow]:
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    out: list[Flow] = []
    while len(out) < n:
        a = rng.getrandbits(32) if fam is V4 else CLIENT6_NET | rng.getrandbits(96)
        p = rng.randrange(1024, 65536)
        if (a, p) not in seen:
            seen.add((a, p))
            out.append((a, p, len(out) & 3))
    return out


def _dests(fam: Family = V4) -> list[Dest]:
    svc = VirtualService(TCP, fam.vip, 80, _Sched())
    for addr in fam.rs:
        svc.add_dest(Dest(svc, addr, 8080))
    return svc.dests


def _rate(n: int, fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def _in_loop(in_get: Callable[[int, int, int, int, int], object], flows: list[Flow], vip: int = VIP) -> None:
    for a, p, _ in flows:
        if in_get(TCP, a, p, vip, 80) is None:
            raise RuntimeError("in lookup missed")


def _out_loop(out_get: Callable[[int, int, int, int, int], object], flows: list[Flow],
              rs: list[int] = RS) -> None:
    for a, p, d in flows:
        if out_get(TCP, rs[d], 8080, a, p) is None:
            raise RuntimeError("out lookup missed")


def _table_round(flows: list[Flow], fam: Family = V4) -> dict[str, float]:
    clock, dests = _Clock(), _dests(fam)
    tab = ConnTable(clock)
    n = len(flows)
    new, in_get, out_get = tab.new, tab.in_get, tab.out_get
    conns: list[Conn] = []
    add = conns.append
    vip, sfx = fam.vip, fam.suffix

    def creates() -> None:
        for a, p, d in flows:
            dest = dests[d]
            add(new(TCP, a, p, vip, 80, dest.addr, 8080, 0, dest))

    out = {f"conn_creates_per_s{sfx}": _rate(n, creates)}
    out[f"conn_in_lookups_per_s{sfx}"] = _rate(n, lambda: _in_loop(in_get, flows, vip))
    out[f"conn_out_lookups_per_s{sfx}"] = _rate(n, lambda: _out_loop(out_get, flows, fam.rs))
    if fam is V6:  # refreshes and expiries do not look at addresses: measured in IPv4 only
        return out
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


def _table_bytes_per_conn(flows: list[Flow], fam: Family) -> float:
    """tracemalloc growth per entry of a ConnTable (tracing already started)."""
    clock, dests = _Clock(), _dests(fam)
    tab = ConnTable(clock)
    w = fam.width
    base = tracemalloc.get_traced_memory()[0]
    for i, (a, p, d) in enumerate(flows):  # client addresses are the flows' (made before tracing)
        clock.now = 1000.0 + i * 1e-5  # a distinct float per conn, like a real clock
        dest = dests[d]
        tab.new(TCP, a, p, _fresh(fam.vip, w), _fresh(80, 2), _fresh(dest.addr, w), _fresh(8080, 2),
                0, dest)
    ours = (tracemalloc.get_traced_memory()[0] - base) / len(flows)
    del tab
    gc.collect()
    return ours


def _bytes_per_conn_v6(n: int) -> float:
    flows = _flows(n, 99, V6)
    gc.collect()
    tracemalloc.start()
    try:
        return _table_bytes_per_conn(flows, V6)
    finally:
        tracemalloc.stop()


def _bytes_per_conn(n: int) -> tuple[float, float]:
    """tracemalloc growth per entry: (ConnTable, plain-dict reference)."""
    flows = _flows(n, 99)
    gc.collect()
    tracemalloc.start()
    try:
        ours = _table_bytes_per_conn(flows, V4)
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
        flows, flows6 = _flows(n, r), _flows(n, r, V6)
        for fn in (_table_round, _ref_round, _events_round, _nogc_round):
            gc.collect()
            for k, v in fn(flows).items():
                samples.setdefault(k, []).append(v)
            if fn is _table_round:  # IPv6 right after IPv4, same round
                gc.collect()
                for k, v in _table_round(flows6, V6).items():
                    samples.setdefault(k, []).append(v)
    out = {k: statistics.median(v) for k, v in samples.items()}
    n_mem = 200_000 if quick else 1_000_000
    ours, ref = _bytes_per_conn(n_mem)
    out["conn_bytes_per_conn_1m"] = ours
    out["ref_conn_bytes_per_conn_1m"] = ref
    out["conn_bytes_per_conn_1m_v6"] = _bytes_per_conn_v6(n_mem)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
