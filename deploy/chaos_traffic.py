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
`TrafficDriver` is deploy.trafficproc's `TrafficProc` running this module in the lab's client namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from deploy.traffic import Traffic, parse_args
from deploy.trafficproc import TrafficProc


class ChaosTraffic(Traffic):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.last_server: dict[str, str] = {}
        self.moves: list[list[object]] = []
        self.by_port: dict[tuple[str, int], tuple[str, float]] = {}
        """(address, source port) -> (server, time) of its last request: a move on a reused port may
        have followed the director's old entry for that 4-tuple."""

    async def one_request(self, src: str) -> None:
        got = await self.fetch(src)
        if got is None:
            return
        server, port = got
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


class TrafficDriver(TrafficProc):
    """``python -m deploy.chaos_traffic`` in the client namespace, driven over stdin/stdout (the
    drill's `TrafficProc` running this module)."""

    MODULE = "deploy.chaos_traffic"


def main(argv: list[str] | None = None) -> None:
    asyncio.run(ChaosTraffic(parse_args(argv)).main())


if __name__ == "__main__":
    main()
