"""The chaos run's client: deploy.traffic, plus every sticky move with its time and both servers.

Theory of operation
-------------------
`ChaosTraffic` is `deploy.traffic.Traffic` (long verified echo streams, new HTTP connections from
many client addresses, UDP datagrams with sequence numbers) with one change: it remembers, per
client address, the server that answered its *last* request, and when a new request of that address
lands elsewhere it records a move (wall-clock time, address, from, to). The judge decides whether the
move was allowed (the server it left had failed). Each move also names its source port and, if that
port was used before by the address, the server that answered then and how long ago (a SYN on a
4-tuple the director still holds, e.g. in TIME_WAIT, follows that old entry). ``report`` adds
``moves`` (every move so far) and
``servers`` (how many client addresses each server answered last).

Same command line and stdin protocol as deploy.traffic (``python -m deploy.chaos_traffic ...``).
`TrafficDriver` runs it in the lab's client namespace and speaks that protocol (like the drill's
`TrafficProc`, which deploy.chaos cannot import: the drill dispatches ``--chaos`` to deploy.chaos).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import signal
import subprocess
import threading
import time
from typing import IO, Any

from deploy.lab import PYTHON, VIP_NAT, Lab
from deploy.traffic import Traffic, parse_args


class ChaosTraffic(Traffic):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.last_server: dict[str, str] = {}
        self.moves: list[list[object]] = []
        self.by_port: dict[tuple[str, int], tuple[str, float]] = {}
        """(address, source port) -> (server, time) of its last request: a move on a reused port may
        have followed the director's old entry for that 4-tuple."""

    async def one_request(self, src: str) -> None:
        a = self.args
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(a.http_vip, a.http_port, local_addr=(src, 0)), 5)
            port = int(writer.get_extra_info("sockname")[1])
            writer.write(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            await writer.drain()
            body = await asyncio.wait_for(reader.read(65536), 5)
            writer.close()
        except (TimeoutError, OSError):
            self.phase.new_failed += 1
            return
        server = body.split(b"\r\n\r\n", 1)[-1].strip().decode(errors="replace")
        if not server:
            self.phase.new_failed += 1
            return
        self.phase.new_ok += 1
        self.sticky.setdefault(src, server)
        self.phase.sources_seen.add(src)
        self.phase.sticky_checked += 1
        before = self.last_server.get(src)
        self.last_server[src] = server
        now = time.time()
        prev = self.by_port.get((src, port))
        self.by_port[(src, port)] = (server, now)
        if before is not None and before != server:
            reuse = [port, prev[0], round(now - prev[1], 1)] if prev is not None else [port, None, None]
            self.moves.append([round(now, 4), src, before, server, *reuse])
            self.phase.sticky_moved += 1
            self.phase.sources_moved.add(src)

    def report(self) -> dict[str, object]:
        out = super().report()
        out["moves"] = list(self.moves)
        servers: dict[str, int] = {}
        for name in self.last_server.values():
            servers[name] = servers.get(name, 0) + 1
        out["servers"] = servers
        return out


class TrafficDriver:
    """``python -m deploy.chaos_traffic`` in the client namespace, driven over stdin/stdout."""

    def __init__(self, lab: Lab, conns: int, new_rate: float, interval: float, udp_rate: float) -> None:
        sources = lab.client_sources()
        self.n_sources = len(sources)
        argv = [PYTHON, "-m", "deploy.chaos_traffic", "--echo-vip", VIP_NAT, "--http-vip", VIP_NAT,
                "--conns", str(conns), "--interval", str(interval), "--new-rate", str(new_rate),
                "--sources", ",".join(sources), "--udp-rate", str(udp_rate)]
        self.proc = lab.popen(lab.client.ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: IO[bytes] | None) -> None:
        assert out is not None
        for line in out:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()

    def report(self, timeout: float = 30.0) -> dict[str, Any]:
        self.send("report")
        return self.report_line(timeout)

    def phase(self, name: str) -> None:
        self.send(f"phase {name}")

    def stop(self) -> dict[str, Any] | None:
        try:
            self.send("stop")
            msg: dict[str, Any] | None = self.report_line(20)
        except (OSError, queue.Empty):
            msg = None
        Lab.stop(self.proc, signal.SIGTERM)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return msg

    def report_line(self, timeout: float) -> dict[str, Any]:
        """The next report the client printed (raises queue.Empty after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if "alive" in msg:
                return msg


def main(argv: list[str] | None = None) -> None:
    asyncio.run(ChaosTraffic(parse_args(argv)).main())


if __name__ == "__main__":
    main()
