"""A randomized workload on a master's conn table: creates with and without templates, state
changes, traffic refreshes, expirations (timers and forced), flushes, dest changes, re-keys."""

from __future__ import annotations

import random
from collections.abc import Callable

from director.services.service import Dest, ServiceTable
from director.table.conn import Conn, ConnTable
from director.table.tcp import TcpState
from director.types import ConnFlags, Proto
from tests.syncd.helpers import CLIENT_NET, VIP, FakeClock

TCP = int(Proto.TCP)
TEMPLATE = int(ConnFlags.TEMPLATE)
STATES = [(TcpState.SYN_RECV, 30.0), (TcpState.ESTABLISHED, 900.0), (TcpState.FIN_WAIT, 10.0),
          (TcpState.TIME_WAIT, 5.0), (TcpState.CLOSE, 2.0)]


class Workload:
    def __init__(self, table: ConnTable, services: ServiceTable, clock: FakeClock, seed: int,
                 max_entries: int = 400, advance: Callable[[float], None] | None = None) -> None:
        self.table = table
        self.advance = advance
        self.svc = next(iter(services))
        self.dests: list[Dest] = list(self.svc.dests)
        self.clock = clock
        self.rng = random.Random(seed)
        self.max_entries = max_entries
        self.ops = 0

    def _pick(self) -> Conn | None:
        conns = list(self.table)
        return self.rng.choice(conns) if conns else None

    def _client(self) -> tuple[int, int]:
        return CLIENT_NET + self.rng.randrange(64), self.rng.randrange(1024, 65535)

    def new_conn(self, persistent: bool, no_cport: bool = False) -> None:
        caddr, cport = self._client()
        cport = 0 if no_cport else cport
        dest = self.rng.choice(self.dests)
        tpl = None
        if persistent:
            tpl = self.table.ct_in_get(TCP, caddr, 0, VIP, 80)
            if tpl is None or not self.table.check_template(tpl, False):  # as ip_vs_sched_persist
                tpl = self.table.new(TCP, caddr, 0, VIP, 80, dest.addr, dest.port, TEMPLATE, dest,
                                     timeout=self.rng.choice([3.0, 20.0, 300.0]))
            dest = tpl.dest
        if self.table.in_get(TCP, caddr, cport, VIP, 80) is not None:
            return
        c = self.table.new(TCP, caddr, cport, VIP, 80, dest.addr, dest.port, 0, dest, control=tpl)
        if tpl is not None:
            self.table.refresh(tpl)
        state, timeout = self.rng.choice(STATES)
        self.table.set_state(c, int(state), timeout)

    def step(self) -> None:
        self.ops += 1
        r = self.rng.random()
        t = self.table
        self.last = f"r={r:.3f}"
        if r < 0.30 and len(t) < self.max_entries:
            self.new_conn(persistent=self.rng.random() < 0.4, no_cport=self.rng.random() < 0.05)
            return
        c = self._pick()
        if c is None:
            return
        self.last += f" on {c!r} n_control={c.n_control} control={c.control!r}"
        if r < 0.50:
            state, timeout = self.rng.choice(STATES)
            t.set_state(c, int(state), timeout)
        elif r < 0.62:
            t.refresh(c)  # traffic: no event
        elif r < 0.70:
            t.expire_now(c)
            t.tick()
        elif r < 0.82:
            dt = self.rng.uniform(0.1, 4.0)
            if self.advance is not None:
                self.advance(dt)
            else:
                self.clock.advance(dt)
                t.tick()
        elif r < 0.87:
            if c.dest is not None:
                t.unbind_dest(c)
            else:
                t.bind_dest(c, self.rng.choice(self.dests))
        elif r < 0.90:
            if c.flags & ConnFlags.NO_CPORT:
                t.fill_cport(c, self.rng.randrange(1024, 65535))
        elif r < 0.93:
            if c.flags & TEMPLATE and c.dest is not None:
                self.svc.remove_dest(c.dest)
                t.check_template(c, False)
                self._restore_dests()
        elif r < 0.995:
            t.refresh(c, self.rng.uniform(0.5, 5.0))
        else:
            t.flush()

    def _restore_dests(self) -> None:
        for d in self.dests:
            if d not in self.svc.dests:
                self.svc.add_dest(d)
            d.flags |= 1  # AVAILABLE
