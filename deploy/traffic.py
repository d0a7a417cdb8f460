"""Drill traffic: long-lived verified TCP streams plus a steady stream of new sticky connections.

Theory of operation
-------------------
Runs inside the lab's client namespace (``python -m deploy.traffic ...``). It opens ``--conns``
long-lived TCP connections to an echo service through the VIP. Each connection sends a chunk whose bytes
are a function of (connection id, offset), reads the echo back and compares it byte for byte, then
pauses ``--interval`` seconds. The time between two completed round trips of a connection is its gap; the
worst gap is what a failover costs that connection. A reset, an EOF or a mismatch kills the connection and
is counted. In parallel it opens ``--new-rate`` new HTTP connections per second to a persistent service,
each from one of several client source addresses, and records which real server answered (the servers
return their name): a source that lands on another server after a failover lost its persistence template.

IPv6: with ``--conns6 K`` the last K of the ``--conns`` streams go to ``--echo-vip6`` from the IPv6
``--sources6``, and the new sticky connections rotate over the IPv6 sources too (to ``--http-vip6``).
Every figure counts both families; the ``*_v6`` figures (``alive_v6``, ``resets_v6``,
``sticky_sources_v6``, ...) count the IPv6 part alone, and an IPv6 source in ``sources_moved`` is
written as IPv6 text.

With ``--udp-rate`` it also sends that many UDP datagrams per second to the UDP echo service
(``--udp-port``) and records the worst gap between replies: unlike TCP, UDP has no retransmission
back-off, so this gap is the data-plane outage itself.

Control is line-based on stdin, results are JSON lines on stdout:
  ``phase NAME`` starts a new measurement phase (per-phase counters reset; sticky bindings are kept);
  ``report`` prints the current phase's figures (``stalls_ms``: every connection's worst stall in the
  phase, sorted); ``stop`` prints a final report and exits.
Nothing here sleeps to wait for a condition: the drill polls ``report`` output.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

CHUNK = 512


_CYCLE = bytes(i % 251 for i in range(251 + CHUNK))


def pattern(conn_id: int, offset: int, size: int = CHUNK) -> bytes:
    """Deterministic payload: byte i of connection c is (c*131 + offset + i) mod 251."""
    start = (conn_id * 131 + offset) % 251
    return _CYCLE[start:start + size]


@dataclass
class PhaseStats:
    name: str
    started: float = field(default_factory=time.monotonic)
    resets: int = 0
    mismatches: int = 0
    bytes_verified: int = 0
    max_gap_ms: float = 0.0
    new_ok: int = 0
    new_failed: int = 0
    sticky_checked: int = 0
    sticky_moved: int = 0
    sources_moved: set[str] = field(default_factory=set)
    sources_seen: set[str] = field(default_factory=set)
    udp_sent: int = 0
    udp_received: int = 0
    udp_max_gap_ms: float = 0.0
    conn_max_gap_ms: dict[int, float] = field(default_factory=dict)
    """Per connection, its worst gap between two completed round trips in this phase."""
    v6: Counter[str] = field(default_factory=Counter)
    """The IPv6 part of resets, mismatches, bytes_verified, new_ok, new_failed."""


def is_v6(addr: str) -> bool:
    return ":" in addr


class UdpProbe(asyncio.DatagramProtocol):
    """Datagrams to the UDP echo service every few ms: the finest-grained view of a takeover."""

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self.last_reply = time.monotonic()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        p = self.traffic.phase
        p.udp_received += 1
        p.udp_max_gap_ms = max(p.udp_max_gap_ms, (now - self.last_reply) * 1000.0)
        self.last_reply = now


class Traffic:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.phase = PhaseStats("warmup")
        self.alive: set[int] = set()
        self.opened = 0
        self.last_progress: dict[int, float] = {}
        self.sticky: dict[str, str] = {}
        self.stopping = False
        self.opened_v6 = 0
        self.conns_v6: set[int] = set()
        """Ids of the streams over IPv6."""

    # -- long-lived verified streams ------------------------------------------------------------
    async def stream(self, conn_id: int, src: str) -> None:
        a = self.args
        v6 = is_v6(src)
        if v6:
            self.conns_v6.add(conn_id)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(a.echo_vip6 if v6 else a.echo_vip, a.echo_port,
                                        local_addr=(src, 0)), 10)
        except (TimeoutError, OSError):
            self.phase.new_failed += 1
            self.phase.v6["new_failed"] += v6
            return
        self.alive.add(conn_id)
        self.opened += 1
        self.opened_v6 += v6
        offset = 0
        self.last_progress[conn_id] = time.monotonic()
        try:
            while not self.stopping:
                out = pattern(conn_id, offset, CHUNK)
                writer.write(out)
                await writer.drain()
                got = await reader.readexactly(CHUNK)
                if got != out:
                    self.phase.mismatches += 1
                    self.phase.v6["mismatches"] += v6
                    break
                now = time.monotonic()
                gap = (now - self.last_progress[conn_id]) * 1000.0
                self.phase.max_gap_ms = max(self.phase.max_gap_ms, gap)
                worst = self.phase.conn_max_gap_ms
                worst[conn_id] = max(worst.get(conn_id, 0.0), gap)
                self.last_progress[conn_id] = now
                self.phase.bytes_verified += CHUNK
                self.phase.v6["bytes_verified"] += CHUNK if v6 else 0
                offset += CHUNK
                await asyncio.sleep(a.interval)
        except (OSError, asyncio.IncompleteReadError):
            self.phase.resets += 1
            self.phase.v6["resets"] += v6
        finally:
            self.alive.discard(conn_id)
            writer.close()

    # -- new sticky connections ------------------------------------------------------------------
    async def fetch(self, src: str) -> tuple[str, int] | None:
        """One HTTP GET to the VIP from `src`: (the server that answered, our source port); None
        (counted as failed) when it did not work."""
        a = self.args
        v6 = is_v6(src)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(a.http_vip6 if v6 else a.http_vip, a.http_port,
                                        local_addr=(src, 0)), 5)
            port = int(writer.get_extra_info("sockname")[1])
            writer.write(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            await writer.drain()
            body = await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
        except (TimeoutError, OSError):
            self.phase.new_failed += 1
            self.phase.v6["new_failed"] += v6
            return None
        server = body.split(b"\r\n\r\n", 1)[-1].strip().decode(errors="replace")
        if not server:
            self.phase.new_failed += 1
            self.phase.v6["new_failed"] += v6
            return None
        self.phase.new_ok += 1
        self.phase.v6["new_ok"] += v6
        return server, port

    async def one_request(self, src: str) -> None:
        got = await self.fetch(src)
        if got is None:
            return
        server = got[0]
        before = self.sticky.setdefault(src, server)
        self.phase.sources_seen.add(src)
        self.phase.sticky_checked += 1
        if before != server:
            self.phase.sticky_moved += 1
            self.phase.sources_moved.add(src)

    async def new_conns(self, sources: list[str]) -> None:
        i = 0
        period = 1.0 / self.args.new_rate
        while not self.stopping:
            asyncio.ensure_future(self.one_request(sources[i % len(sources)]))
            i += 1
            await asyncio.sleep(period)

    async def udp_probe(self, src: str) -> None:
        a = self.args
        loop = asyncio.get_running_loop()
        probe = UdpProbe(self)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: probe, local_addr=(src, 0), remote_addr=(a.echo_vip, a.udp_port))
        period = 1.0 / a.udp_rate
        seq = 0
        try:
            while not self.stopping:
                transport.sendto(seq.to_bytes(8, "big"))
                self.phase.udp_sent += 1
                seq += 1
                await asyncio.sleep(period)
        finally:
            transport.close()

    # -- control ---------------------------------------------------------------------------------
    def report(self) -> dict[str, object]:
        p = self.phase
        now = time.monotonic()
        current = {c: (now - t) * 1000.0 for c, t in self.last_progress.items() if c in self.alive}
        stalled = max(current.values(), default=0.0)
        v6 = p.v6
        # per connection (alive now or seen in this phase): its worst stall, the current one included
        per_conn = {c: max(p.conn_max_gap_ms.get(c, 0.0), current.get(c, 0.0))
                    for c in set(current) | set(p.conn_max_gap_ms)}
        return {
            "phase": p.name, "opened": self.opened, "alive": len(self.alive), "resets": p.resets,
            "mismatches": p.mismatches, "bytes_verified": p.bytes_verified,
            "max_gap_ms": round(max(p.max_gap_ms, stalled), 1), "current_stall_ms": round(stalled, 1),
            "new_ok": p.new_ok, "new_failed": p.new_failed, "sticky_sources": len(self.sticky),
            "sticky_checked": p.sticky_checked, "sticky_moved": p.sticky_moved,
            "sources_moved": sorted(p.sources_moved), "sources_seen": len(p.sources_seen),
            "udp_sent": p.udp_sent, "udp_received": p.udp_received,
            "udp_max_gap_ms": round(p.udp_max_gap_ms, 1),
            "stalls_ms": sorted(round(v, 1) for v in per_conn.values()),
            "opened_v6": self.opened_v6,
            "alive_v6": len(self.alive & self.conns_v6), "resets_v6": v6["resets"],
            "mismatches_v6": v6["mismatches"], "bytes_verified_v6": v6["bytes_verified"],
            "new_ok_v6": v6["new_ok"], "new_failed_v6": v6["new_failed"],
            "sticky_sources_v6": sum(1 for src in self.sticky if is_v6(src)),
            "sources_moved_v6": sum(1 for src in p.sources_moved if is_v6(src)),
        }

    async def control(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "stop":
                self.emit(self.report())
                self.stopping = True
                return
            cmd, _, arg = line.partition(" ")
            if cmd == "phase":
                self.phase = PhaseStats(arg or "phase")
                self.emit({"phase_started": self.phase.name})
            elif cmd == "report":
                self.emit(self.report())

    @staticmethod
    def emit(obj: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def main(self) -> None:
        a = self.args
        sources = expand_sources(a.sources)
        sources6 = expand_sources(a.sources6) if a.sources6 else []
        n6 = min(a.conns, a.conns6) if sources6 else 0
        n4 = a.conns - n6
        tasks = [asyncio.ensure_future(self.stream(i, sources[i % len(sources)])) for i in range(n4)]
        tasks += [asyncio.ensure_future(self.stream(n4 + i, sources6[i % len(sources6)])) for i in range(n6)]
        tasks.append(asyncio.ensure_future(self.new_conns(sources + sources6)))
        if self.args.udp_rate > 0:
            tasks.append(asyncio.ensure_future(self.udp_probe(sources[0])))
        await self.control()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def expand_sources(spec: str) -> list[str]:
    """'198.18.0.100-198.18.0.119', 'fd00:18::64-fd00:18::6d' or a comma list -> addresses."""
    out: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        first = ipaddress.ip_address(lo)
        last = ipaddress.ip_address(hi) if hi else first
        out.extend(str(ipaddress.ip_address(a)) for a in range(int(first), int(last) + 1))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--echo-vip", required=True)
    p.add_argument("--echo-port", type=int, default=7)
    p.add_argument("--http-vip", required=True)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--new-rate", type=float, default=20.0)
    p.add_argument("--sources", required=True)
    p.add_argument("--udp-port", type=int, default=7)
    p.add_argument("--echo-vip6", default="", help="IPv6 VIP of the echo service (with --sources6)")
    p.add_argument("--http-vip6", default="", help="IPv6 VIP of the sticky HTTP service")
    p.add_argument("--sources6", default="", help="IPv6 client addresses ('' : no IPv6 traffic)")
    p.add_argument("--conns6", type=int, default=0, help="how many of --conns go over IPv6")
    p.add_argument("--udp-rate", type=float, default=0.0, help="UDP probes per second (0: none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(Traffic(parse_args(argv)).main())


if __name__ == "__main__":
    main()
