"""Health-check benchmark: probe throughput per checker type, and the event loop's worst stall while
hundreds of probes (misbehaving scripts included) run on it.

Theory of operation
-------------------
Real local servers on 127.0.0.1 (the test helpers in tests/director/health/servers.py: HTTP, HTTPS
with a self-signed certificate, a DNS responder, a UDP echo, a grpc.aio health servicer), run in a
child process so their work does not land on the measured loop, and small scripts for misc. For each
type, `CONCURRENCY` probes at a time run through ``run_probe`` (the dispatcher the health runner
uses) for a fixed number of probes; the figure is probes per second. The TCP connect check is the
reference: the cheapest probe there is.

The loop-stall figure is what "checkers never block the event loop" means in numbers: a ticker task
asks to wake every millisecond and records how late it was; meanwhile a mixed load runs (every type,
plus misc scripts that hang and are killed with their process group at a 0.2 s timeout). The figure
is the ticker's worst lateness; the reference is the same ticker on an idle loop. On a shared,
loaded machine both are dominated by scheduling noise: compare them to each other, and run
``uptime`` beside them.

``python -m bench.bench_health [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from director.health.manager import Probe, run_probe
from director.health.spec import QTYPES, HealthSpec
from tests.director.health.servers import (
    DnsZone,
    HttpServer,
    HttpsServer,
    UdpServer,
    grpc_health_server,
    self_signed,
)

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 20
KEY = (6, 1, 80, 0, 0x7F000001, 80)
ROUTES: dict[str, tuple[int, bytes] | str] = {"/h": (200, b"ok\n")}


async def _throughput(probe: Probe, n: int) -> float:
    sem = asyncio.Semaphore(CONCURRENCY)
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with sem:
            failed += not (await run_probe(probe)).ok

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - t0
    if failed:
        raise RuntimeError(f"{probe.spec.kind}: {failed} of {n} probes failed")
    return n / elapsed


async def _ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - t0 - 0.001)


async def _max_stall(load: Callable[[], Awaitable[Any]]) -> float:
    stop, lateness = asyncio.Event(), []
    tick = asyncio.ensure_future(_ticker(stop, lateness))
    await load()
    stop.set()
    await tick
    return max(lateness) * 1000


class Servers:
    """The real servers in a child process (`--serve`): neither their CPU nor their GIL is the loop's."""

    def __init__(self, tmp: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.bench_health", "--serve", str(tmp)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdout is not None
        ports = json.loads(self.proc.stdout.readline())
        self.http, self.https, self.dns, self.udp, self.grpc = (ports[k] for k in
                                                                ("http", "https", "dns", "udp", "grpc"))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # EOF: the child stops its servers and exits
        self.proc.wait(30)


async def serve(tmp: Path) -> None:
    """The child: start every server, print their ports as JSON, serve until stdin closes."""
    cert, key = self_signed(tmp)
    http = await HttpServer(ROUTES).start()
    https = await HttpsServer(ROUTES, cert, key).start()
    dns = await UdpServer(DnsZone({("www.lbd.test", QTYPES["A"]): [bytes([198, 18, 2, 10])]})).start()
    udp = await UdpServer(lambda data: data).start()
    grpc_server, grpc_port = await grpc_health_server({"": "SERVING"})
    print(json.dumps({"http": http.port, "https": https.port, "dns": dns.port, "udp": udp.port,
                      "grpc": grpc_port}), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await http.stop()
    await https.stop()
    dns.stop()
    udp.stop()
    await grpc_server.stop(None)


async def _main(quick: bool, srv: Servers, tmp: Path) -> dict[str, float]:
    n = 200 if quick else 1000
    ok_script, hang_script = tmp / "ok.sh", tmp / "hang.sh"
    ok_script.write_text("#!/bin/sh\nexit 0\n")
    hang_script.write_text("#!/bin/sh\nsleep 30\n")
    for p in (ok_script, hang_script):
        p.chmod(0o755)
    specs = {
        "tcp": (srv.http, {"type": "tcp"}),
        "http": (srv.http, {"type": "http", "path": "/h", "expect_body": "ok"}),
        "https": (srv.https, {"type": "https", "path": "/h", "expect_body": "ok"}),
        "dns": (srv.dns, {"type": "dns", "query": "www.lbd.test", "expect_answer": ["198.18.2.10"]}),
        "udp": (srv.udp, {"type": "udp", "payload": "ping", "expect": "ping"}),
        "grpc": (srv.grpc, {"type": "grpc"}),
        "misc": (0, {"type": "misc", "command": [str(ok_script)]}),
        "ping": (0, {"type": "ping"}),
    }
    probes = {k: Probe(KEY, "127.0.0.1", port, HealthSpec.from_dict({**d, "timeout": 5}))
              for k, (port, d) in specs.items()}
    out: dict[str, float] = {}
    for kind, probe in probes.items():
        runs = [await _throughput(probe, n if kind != "misc" else n // 5) for _ in range(3)]
        out[f"health_{kind}_probes_per_s" if kind != "tcp" else "ref_health_tcp_probes_per_s"] = \
            statistics.median(runs)
    hang = Probe(KEY, "127.0.0.1", 0, HealthSpec.from_dict({"type": "misc", "command": [str(hang_script)],
                                                             "timeout": 0.2}))

    async def mixed() -> None:
        killed = await asyncio.gather(*(run_probe(hang) for _ in range(20)),
                                      *(_throughput(p, n // 10) for p in probes.values()))
        if not all(r.killed for r in killed[:20]):
            raise RuntimeError("a hanging script was not killed")

    async def idle() -> None:
        await asyncio.sleep(2.0)

    for kind, probe in probes.items():  # which checker costs the loop what
        out[f"health_{kind}_loop_stall_max_ms"] = await _max_stall(
            lambda probe=probe: _throughput(probe, n // 5))
    out["health_loop_stall_max_ms"] = statistics.median([await _max_stall(mixed) for _ in range(3)])
    out["ref_idle_loop_stall_max_ms"] = statistics.median([await _max_stall(idle) for _ in range(3)])
    return out


def run(quick: bool = False) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-health-"))
    srv = Servers(tmp)
    try:
        return asyncio.run(_main(quick, srv, tmp))
    finally:
        srv.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(serve(Path(sys.argv[2])))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
