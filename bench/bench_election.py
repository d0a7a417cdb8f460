"""Election benchmark: leader crash -> new leader, tuned etcd vs etcd defaults.

Theory of operation
-------------------
For each etcd setting (tuned ``--heartbeat-interval=100 --election-timeout=600`` and the
stock 100/1000) one private etcd is started and three `Elector`s campaign on it with a
requested 1 s lease (etcd grants what it can: 1 s tuned, 2 s stock).  Each round waits for
a settled leader, lets a random 0.3 s .. 0.3 s + 1.5 TTL pass (a crash does not wait for a
convenient moment; killing right after an election would be phase-locked to etcd's 500 ms
lease-expiry scan, which is what ended the previous term, and always pays its full 0.5 s),
then kills the leader the way a crash would: its keepalives stop and nothing is revoked.
The figure is the time from the kill to the moment another elector starts forwarding (its
START_FORWARDING callback): lease left (TTL minus the time since the last renewal) + etcd's
expiry scan (0-0.5 s) + one watch event + grant + txn.  The killed elector is replaced by a
fresh one so every round has three candidates.  A graceful `resign()` handover is measured
the same way as a reference for what the lease floor costs.

``python -m bench.bench_election [--quick]`` prints the figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import statistics
import sys
import time

from deploy.etcd import EtcdServer
from director.cluster.elector import Elector, NodeInfo
from director.cluster.store import EtcdStore

log = logging.getLogger(__name__)

DEADLINE = 30.0


class _Bench:
    def __init__(self, server: EtcdServer, n: int = 3) -> None:
        self.server = server
        self.cluster = f"bench-{random.getrandbits(40):x}"
        self.started: dict[str, float] = {}
        self.electors: list[Elector] = []
        self.stores: list[EtcdStore] = []
        self._seq = 0
        self.n = n

    async def add(self) -> Elector:
        self._seq += 1
        node_id = f"n{self._seq}"
        store = EtcdStore(self.server.endpoint, prefix="lbd-bench", cluster=self.cluster)
        el = Elector(store, NodeInfo(node_id, f"198.18.0.{self._seq}:7000"), ttl=1,
                     on_start_forwarding=lambda _e: self.started.__setitem__(node_id, time.monotonic()))
        self.stores.append(store)
        self.electors.append(el)
        await el.start()
        return el

    async def master(self) -> Elector:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            ls = [e for e in self.electors if e.is_master]
            if len(ls) == 1 and all(e.master is not None and e.epoch == ls[0].epoch for e in self.electors):
                return ls[0]
            await asyncio.sleep(0.005)
        raise TimeoutError("no settled master")

    async def takeover(self, graceful: bool) -> float:
        old = await self.master()
        # crash at a random moment of the term: not phase-locked to the renewals or to
        # etcd's 500 ms expiry scan (a new term starts right after one)
        await asyncio.sleep(random.uniform(0.3, 0.3 + 1.5 * old.granted_ttl))
        self.started.clear()
        t0 = time.monotonic()
        if graceful:
            await old.resign()
        else:
            await old.kill()
        end = t0 + DEADLINE
        while not any(k != old.node.node_id for k in self.started):
            if time.monotonic() > end:
                raise TimeoutError("no takeover")
            await asyncio.sleep(0.002)
        t1 = min(t for k, t in self.started.items() if k != old.node.node_id)
        if not graceful:
            self.electors.remove(old)
            await self.add()
        return t1 - t0

    async def close(self) -> None:
        for e in self.electors:
            await e.stop()
        for s in self.stores:
            await s.close()


async def _measure(tuned: bool, rounds: int) -> dict[str, float]:
    server = EtcdServer(tuned=tuned)
    server.start()
    tag = "tuned" if tuned else "default"
    try:
        b = _Bench(server)
        for _ in range(b.n):
            await b.add()
        crash = [await b.takeover(graceful=False) for _ in range(rounds)]
        resign = [await b.takeover(graceful=True) for _ in range(max(3, rounds // 2))]
        granted = (await b.master()).granted_ttl
        await b.close()
    finally:
        server.close()
    log.info("%s: crash takeover %s, resign %s", tag, [round(x, 3) for x in crash],
             [round(x, 4) for x in resign])
    return {
        f"election_takeover_{tag}_s": statistics.median(crash),
        f"election_takeover_{tag}_min_s": min(crash),
        f"election_takeover_{tag}_max_s": max(crash),
        f"election_resign_handover_{tag}_s": statistics.median(resign),
        f"election_granted_ttl_{tag}_s": granted,
    }


def run(quick: bool = False) -> dict[str, float]:
    """Medians of several crash takeovers (and graceful handovers), tuned vs default etcd."""
    rounds = 3 if quick else 9
    out: dict[str, float] = {}
    for tuned in (True, False):
        out.update(asyncio.run(_measure(tuned, rounds)))
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
