"""Benchmarks of syncd: apply rate, lag, snapshot time/bytes, packet path with sync on vs off.

Theory of operation
-------------------
The master (table + SyncServer) runs in this process on one asyncio loop, like directord; the
backup (table + SyncBackup) runs in a child process (spawned, so it has its own interpreter and can
use the second core), both over real gRPC on 127.0.0.1. The parent drives the child through a pipe
(commands: wait until a seq is applied / until in sync, report lag percentiles). Figures:

* ``sync_updates_per_s``: NEW updates created on the master as fast as the loop allows (yielding
  every 1000 so batches flow) until the backup acknowledges having applied them all; updates
  divided by the elapsed time. The reference ``ref_sync_wire_roundtrip_per_s`` is protobuf encode
  + decode of the same updates with no gRPC and no table (the ceiling of the wire format; packed
  rows since wire version 2). ``sync_master_cpu_us_per_update`` / ``sync_backup_cpu_us_per_update``:
  CPU time (all threads) each process spent per update in the same rounds - the master's includes
  creating the conns (the packet path's share); unlike the rate they hardly depend on what else runs
  on the machine.
* ``sync_lag_p50/p99_ms_<rate>``: updates generated at a paced rate (1k, 10k, 50k/s); each batch
  applied on the backup records wall time since the master saw the batch's *first* event (the
  worst case within a batch). An update on an idle stream is cut at the next loop turn; only under
  load (a cut of >= ``MasterConfig.load_events`` events) are cuts ``batch_window`` (5 ms) apart.
* ``sync_snapshot_<n>_s`` / ``_mb``: a fresh backup joins a master holding n entries: time from the
  backup's start to in sync, and the bytes streamed.
* ``fwd_sync_on_over_off``: Director.handle() frames/s on a mix of 1 new flow (SYN) per 10 frames,
  with the sync master consuming events and streaming to the backup vs. sync off (feed disabled).

Both processes run with directord's GC policy (``daemon_gc``). Every figure is the median of
several rounds (5 for the stream figures). ``python -m bench.bench_sync [--quick]`` prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from director.services.sched import registry
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import ConnTable
from syncd.backup import BackupConfig, SyncBackup
from syncd.convert import decode_sync_message, encode_batch
from syncd.model import SyncKind, Update
from syncd.server import SyncServer, create_sync_server

EST = 1
VIP = 0xC612000A         # 198.18.0.10
CLIENT_NET = 0xC6130000  # 198.19.0.0
RIPS = [0xC6120101 + i for i in range(4)]


def make_services() -> ServiceTable:
    services = ServiceTable()
    svc = VirtualService(6, VIP, 80, registry.create("rr"))
    for rip in RIPS:
        svc.add_dest(Dest(svc, rip, 8080))
    services.add(svc)
    return services


# --- the backup process ------------------------------------------------------------------------------

def daemon_gc() -> None:
    """directord's GC policy (director/daemon.py): startup objects frozen, young generation 50,000."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _backup_main(pipe: Connection, target: str) -> None:
    daemon_gc()
    asyncio.run(_backup(pipe, target))


async def _backup(pipe: Connection, target: str) -> None:
    table = ConnTable(time.monotonic, bits=20, event_capacity=1)
    f = SyncBackup(target, "bench-backup", table, make_services(),
                 cfg=BackupConfig(max_message=64 << 20, heartbeat_timeout=30.0))
    t_start = time.time()
    f.start()
    loop = asyncio.get_running_loop()

    async def timers() -> None:  # as directord's timer loop: the table's wheel runs on every node
        while True:
            table.tick()
            await asyncio.sleep(0.05)

    ticker = loop.create_task(timers())
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: inbox.put_nowait(pipe.recv()))
    while True:
        cmd = await inbox.get()
        if cmd[0] == "stop":
            break
        if cmd[0] == "wait_seq":
            while f.applier.applied_seq < cmd[1] or f.applier.incarnation != cmd[2]:
                await asyncio.sleep(0.0005)
            pipe.send(("ok", time.time()))
        elif cmd[0] == "wait_sync":
            while not f.in_sync:
                await asyncio.sleep(0.0005)
            pipe.send(("ok", time.time() - t_start, len(table)))
        elif cmd[0] == "lags":
            pipe.send(("ok", f.lag_percentile(50), f.lag_percentile(99), len(f.lags_ms)))
            f.lags_ms.clear()
        elif cmd[0] == "cpu":
            pipe.send(("ok", time.process_time()))
        elif cmd[0] == "size":
            gc.collect()
            pipe.send(("ok", len(table), rss_mb()))
    loop.remove_reader(pipe.fileno())
    ticker.cancel()
    await f.stop()


class Backup:
    """Handle on the child process; `ask` waits for its answer without blocking the master's loop."""

    def __init__(self, target: str) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_backup_main, args=(child, target), daemon=True)
        self.proc.start()
        child.close()

    async def ask(self, *cmd: Any, timeout: float = 600.0) -> Any:
        self.pipe.send(cmd)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.pipe.poll():
            if loop.time() > deadline or not self.proc.is_alive():
                raise RuntimeError(f"backup did not answer {cmd[0]}")
            await asyncio.sleep(0.0005)
        return self.pipe.recv()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --- master side helpers -----------------------------------------------------------------------------

class Gen:
    """Creates distinct established conns on the master table (one NEW event each)."""

    def __init__(self, table: ConnTable, services: ServiceTable) -> None:
        self.table = table
        self.dests = next(iter(services)).dests
        self.i = 0

    def make(self, n: int) -> None:
        new, dests = self.table.new, self.dests
        for _ in range(n):
            i = self.i
            self.i += 1
            d = dests[i & 3]
            new(6, CLIENT_NET + (i >> 16), i & 0xFFFF, VIP, 80, d.addr, d.port, 0, d, state=EST,
                timeout=900.0)


async def _caught_up(server: SyncServer, backup: Backup) -> float:
    m = server.master
    m.cut_batch()
    reply = await backup.ask("wait_seq", m.head_seq, m.incarnation)
    return float(reply[1])


async def _saturation(server: SyncServer, backup: Backup, gen: Gen, n: int) -> tuple[float, float, float]:
    """(updates/s, master CPU us per update, backup CPU us per update) of one round."""
    await _caught_up(server, backup)
    b0 = (await backup.ask("cpu"))[1]
    c0 = time.process_time()
    t0 = time.time()
    done = 0
    while done < n:
        gen.make(1000)
        done += 1000
        await asyncio.sleep(0)
    t1 = await _caught_up(server, backup)
    c1 = time.process_time()
    b1 = (await backup.ask("cpu"))[1]
    return n / (t1 - t0), (c1 - c0) / n * 1e6, (b1 - b0) / n * 1e6


async def _paced(server: SyncServer, backup: Backup, gen: Gen, rate: float,
                 seconds: float) -> tuple[float, float]:
    await _caught_up(server, backup)
    await backup.ask("lags")  # reset
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = 0
    while (now := loop.time()) - start < seconds:
        due = int((now - start) * rate) - done
        if due > 0:
            gen.make(due)
            done += due
        await asyncio.sleep(0.0005)
    await _caught_up(server, backup)
    _, p50, p99, _ = await backup.ask("lags")
    return float(p50), float(p99)


def _wire_roundtrip(n: int) -> float:
    key = (6, CLIENT_NET, 1000, VIP, 80, VIP + 1, 8080, 0, False)
    ups = [Update(SyncKind.NEW, key[:2] + (i & 0xFFFF,) + key[3:], 0, EST, 900.0, 899.0,
                  (6, VIP, 80, 0, VIP + 1, 8080), None, 3) for i in range(1000)]
    t0 = time.perf_counter()
    for _ in range(n // 1000):
        decode_sync_message(encode_batch(1, 1, 1, 0, ups))
    return n / (time.perf_counter() - t0)


async def _master(table: ConnTable, services: ServiceTable) -> SyncServer:
    server, _ = await create_sync_server("127.0.0.1:0", table, services, 1, clock=time.monotonic)
    server.start_serving()
    return server


async def _stream_figures(quick: bool) -> dict[str, float]:
    services = make_services()
    table = ConnTable(time.monotonic, bits=20, event_capacity=1 << 20)
    server = await _master(table, services)
    backup = Backup(f"127.0.0.1:{server.port}")
    out: dict[str, float] = {}
    try:
        await backup.ask("wait_sync")
        gen = Gen(table, services)
        rounds = 3 if quick else 5
        n = 50_000 if quick else 200_000
        sat = [await _saturation(server, backup, gen, n) for _ in range(rounds)]
        out["sync_updates_per_s"] = statistics.median(r[0] for r in sat)
        out["sync_master_cpu_us_per_update"] = statistics.median(r[1] for r in sat)
        out["sync_backup_cpu_us_per_update"] = statistics.median(r[2] for r in sat)
        seconds = 1.0 if quick else 3.0
        for rate, name in ((1000, "1k"), (10_000, "10k"), (50_000, "50k")):
            res = [await _paced(server, backup, gen, rate, seconds) for _ in range(rounds)]
            out[f"sync_lag_p50_ms_{name}"] = statistics.median(r[0] for r in res)
            out[f"sync_lag_p99_ms_{name}"] = statistics.median(r[1] for r in res)
    finally:
        backup.close()
        await server.stop(0)
    out["ref_sync_wire_roundtrip_per_s"] = statistics.median(_wire_roundtrip(100_000) for _ in range(3))
    return out


async def _snapshot_figures(n: int, rounds: int) -> tuple[float, float]:
    services = make_services()
    table = ConnTable(time.monotonic, bits=20, event_capacity=1)
    Gen(table, services).make(n)
    server = await _master(table, services)
    times, sizes = [], []
    try:
        for _ in range(rounds):
            backup = Backup(f"127.0.0.1:{server.port}")
            try:
                _, seconds, got = await backup.ask("wait_sync")
                if got != n:
                    raise RuntimeError(f"snapshot delivered {got} of {n} entries")
                times.append(float(seconds))
                sizes.append(sum(s.bytes_sent for s in server.master.sessions))
            finally:
                backup.close()
    finally:
        await server.stop(0)
    return statistics.median(times), statistics.median(sizes) / 1e6


def _syn_frames(n: int, base: int) -> list[bytes]:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from bench.bench_core import CLIENT_MAC, VMAC
    from bench.bench_core import VIP as CORE_VIP
    tmpl = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.19.0.1", dst=CORE_VIP) / TCP(dport=80, flags="S")
    out = []
    for i in range(base, base + n):
        p = tmpl.copy()
        p[IP].src = f"198.19.{(i >> 16) & 0xFF}.{1 + ((i >> 8) & 0x7F)}"
        p[TCP].sport = 1024 + (i & 0xFF) + ((i >> 15) << 8)
        out.append(bytes(p))
    return out


async def _fwd_rate(director: Any, frames: list[bytes]) -> float:
    from director.dataplane.core import EXT
    handle = director.handle
    t0 = time.perf_counter()
    for i in range(0, len(frames), 500):
        for f in frames[i:i + 500]:
            if handle(bytearray(f), EXT) is None:
                raise RuntimeError("benchmark frame was dropped")
        await asyncio.sleep(0)  # the loop also runs gRPC and the sync master, as in directord
    return len(frames) / (time.perf_counter() - t0)


async def _fwd_figures(quick: bool) -> dict[str, float]:
    """Director.handle() frames/s, 1 SYN (new flow) per 10 frames, sync on vs off, same loop.

    Both cases run with directord's GC policy (startup objects frozen, young-generation threshold
    50,000; see director/daemon.py): with Python's default threshold the short-lived sync objects
    trigger a collection every few hundred events and the figure measures the collector.
    """
    old_threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        return await _fwd_figures_gc(quick)
    finally:
        gc.set_threshold(*old_threshold)
        gc.unfreeze()


async def _fwd_figures_gc(quick: bool) -> dict[str, float]:
    from bench.bench_core import _director, _frames
    rounds = 5
    n_syn = 2000 if quick else 10_000
    on, off = _director()[0], _director()[0]
    acks = {id(on): _frames(on)["nat_in"], id(off): _frames(off)["nat_in"]}
    server, _ = await create_sync_server("127.0.0.1:0", on.table, on.services, 1)
    server.start_serving()
    backup = Backup(f"127.0.0.1:{server.port}")
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        await backup.ask("wait_sync")
        for r in range(rounds):
            syns = _syn_frames(n_syn, r * n_syn)
            for name, d in (("off", off), ("on", on)):
                ack = acks[id(d)]
                mix = [syns[i // 10] if i % 10 == 0 else ack[i % len(ack)] for i in range(n_syn * 10)]
                rates[name].append(await _fwd_rate(d, mix))
            await _caught_up(server, backup)
    finally:
        backup.close()
        await server.stop(0)
    on_rate, off_rate = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {"fwd_sync_on_frames_per_s": on_rate, "fwd_sync_off_frames_per_s": off_rate,
            "fwd_sync_on_over_off": on_rate / off_rate}


def _stream_figures_gc(quick: bool) -> dict[str, float]:
    """The stream figures with directord's GC policy on the master too (the backup process has it)."""
    old_threshold = gc.get_threshold()
    daemon_gc()
    try:
        return asyncio.run(_stream_figures(quick))
    finally:
        gc.set_threshold(*old_threshold)
        gc.unfreeze()


def run(quick: bool = False) -> dict[str, float]:
    out = _stream_figures_gc(quick)
    out.update(asyncio.run(_fwd_figures(quick)))
    for n, name in ((100_000, "100k"), (1_000_000, "1m")):
        if quick and n > 100_000:
            continue
        secs, mb = asyncio.run(_snapshot_figures(n, 1 if n > 100_000 else 3))
        out[f"sync_snapshot_{name}_s"] = secs
        out[f"sync_snapshot_{name}_mb"] = mb
    return out


# --- soak: memory given back after load -------------------------------------------------------------

def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


async def _soak(seconds: float, rate: float) -> dict[str, float]:
    """`rate` new conns/s (timeouts 5..30 s, some closed early) for `seconds`, then the tables drain
    and the retention ring ages out (``retention_age``); RSS of the master (this process) and the
    backup (child) before, at the peak and after."""
    services = make_services()
    table = ConnTable(time.monotonic, bits=20, event_capacity=1 << 20)
    server = await _master(table, services)
    backup = Backup(f"127.0.0.1:{server.port}")
    loop = asyncio.get_running_loop()

    async def timers() -> None:
        while True:
            table.tick()
            await asyncio.sleep(0.05)

    ticker = loop.create_task(timers())
    out: dict[str, float] = {}
    try:
        await backup.ask("wait_sync")
        gc.collect()
        out["soak_master_rss_before_mb"] = rss_mb()
        out["soak_backup_rss_before_mb"] = (await backup.ask("size"))[2]
        dests, i, start = next(iter(services)).dests, 0, loop.time()
        peak = 0
        while (now := loop.time()) - start < seconds:
            while i < (now - start) * rate:
                d = dests[i & 3]
                c = table.new(6, CLIENT_NET + (i >> 16), i & 0xFFFF, VIP, 80, d.addr, d.port, 0, d, state=EST,
                              timeout=5.0 + (i % 26))
                if i % 3 == 0:
                    table.set_state(c, 5, 2.0)  # TIME_WAIT: goes early
                i += 1
            peak = max(peak, len(table))
            await asyncio.sleep(0.01)
        out["soak_peak_entries"] = peak
        out["soak_master_rss_peak_mb"] = rss_mb()
        out["soak_backup_rss_peak_mb"] = (await backup.ask("size"))[2]
        while len(table) or (await backup.ask("size"))[1] or len(server.master.ring):
            await asyncio.sleep(0.5)  # tables drained and the ring's history aged out
        gc.collect()
        out["soak_master_rss_after_mb"] = rss_mb()
        out["soak_backup_rss_after_mb"] = (await backup.ask("size"))[2]
    finally:
        ticker.cancel()
        backup.close()
        await server.stop(0)
    return out


if __name__ == "__main__":
    if "--soak" in sys.argv:  # python -m bench.bench_sync --soak SECONDS
        daemon_gc()
        secs = float(sys.argv[sys.argv.index("--soak") + 1])
        print(json.dumps(asyncio.run(_soak(secs, 1000.0)), indent=2))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
