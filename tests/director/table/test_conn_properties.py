"""Property tests: after any random sequence of table operations the seed invariants hold."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from director.services.service import Dest
from director.table.conn import Conn, ConnTable
from director.table.events import EventKind
from director.table.tcp import TcpState
from director.types import ConnFlags, DestFlags, FwdMethod
from tests.director.table.conn_helpers import CLIENT, RS1, TCP, UDP, VIP, FakeClock, make_dest

F = ConnFlags
CLIENTS = st.sampled_from([CLIENT, CLIENT + 1, CLIENT + 2])
PORTS = st.sampled_from([0, 1000, 1001, 1002])
VPORTS = st.sampled_from([80, 443])
STATES = st.sampled_from(list(TcpState))
TIMEOUTS = st.sampled_from([1.0, 3.0, 10.0, 60.0, 900.0])


class ConnTableMachine(RuleBasedStateMachine):
    conns = Bundle("conns")
    templates = Bundle("templates")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.tab = ConnTable(self.clock, bits=8)
        self.tab.events.enabled = True
        self.dests: list[Dest] = [
            make_dest(addr=RS1, u_threshold=4, l_threshold=2),
            make_dest(FwdMethod.DR, addr=RS1 + 1, u_threshold=6),
            make_dest(FwdMethod.TUN, addr=RS1 + 2),
        ]
        self.seen: list[Conn] = []
        self.expired_keys: list[tuple[object, ...]] = []

    def _dest(self, i: int) -> Dest | None:
        return self.dests[i] if i < len(self.dests) else None

    @rule(target=conns, caddr=CLIENTS, cport=PORTS, vport=VPORTS, di=st.integers(0, 3),
          proto=st.sampled_from([TCP, UDP]), sync=st.sampled_from([0, int(F.SYNC),
                                                                   int(F.SYNC | F.INACTIVE)]))
    def new_conn(self, caddr: int, cport: int, vport: int, di: int, proto: int, sync: int) -> Conn | None:
        dest = self._dest(di)
        daddr, dport = (dest.addr, dest.port) if dest else (0, 0)
        tab = self.tab
        if tab.in_get(proto, caddr, cport, VIP, vport) or tab.out_get(proto, daddr, dport, caddr, cport):
            return None  # the packet path only creates after a miss
        c = tab.new(proto, caddr, cport, VIP, vport, daddr, dport, sync if dest else int(F.BYPASS), dest)
        self.seen.append(c)
        return c

    @rule(target=templates, caddr=CLIENTS, vport=VPORTS, di=st.integers(0, 2), timeout=TIMEOUTS)
    def new_template(self, caddr: int, vport: int, di: int, timeout: float) -> Conn | None:
        dest = self.dests[di]
        if self.tab.ct_in_get(TCP, caddr, 0, VIP, vport):
            return None
        t = self.tab.new(TCP, caddr, 0, VIP, vport, dest.addr, dest.port, int(F.TEMPLATE), dest,
                         timeout=timeout)
        self.seen.append(t)
        return t

    @rule(target=conns, t=templates, cport=st.sampled_from([3000, 3001, 3002]), state=STATES,
          timeout=TIMEOUTS)
    def new_child(self, t: Conn | None, cport: int, state: TcpState, timeout: float) -> Conn | None:
        """Persistent-service path: a conn on the template's dest, controlled by it."""
        if t is None or not t.hashed or t.dest is None:
            return None
        tab, dest = self.tab, t.dest
        if tab.in_get(TCP, t.caddr, cport, VIP, t.vport) or tab.out_get(
                TCP, dest.addr, dest.port, t.caddr, cport):
            return None
        c = tab.new(TCP, t.caddr, cport, VIP, t.vport, dest.addr, dest.port, 0, dest, control=t)
        tab.set_state(c, int(state), timeout)
        self.seen.append(c)
        return c

    @rule(c=conns, t=templates)
    def control_add(self, c: Conn | None, t: Conn | None) -> None:
        if c is not None and t is not None:
            self.tab.control_add(c, t)

    @rule(c=conns, state=STATES, timeout=TIMEOUTS)
    def set_state(self, c: Conn | None, state: TcpState, timeout: float) -> None:
        if c is not None:
            self.tab.set_state(c, int(state), timeout)

    @rule(c=st.one_of(conns, templates), timeout=st.one_of(st.none(), TIMEOUTS))
    def refresh(self, c: Conn | None, timeout: float | None) -> None:
        if c is not None:
            self.tab.refresh(c, timeout)

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0, 61.0, 301.0, 901.0]))
    def advance_and_tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.tab.tick()

    @rule(c=st.one_of(conns, templates))
    def expire_now(self, c: Conn | None) -> None:
        if c is not None:
            self.tab.expire_now(c)
            self.tab.tick()

    @rule(c=st.one_of(conns, templates))
    def expire(self, c: Conn | None) -> None:
        if c is not None:
            self.tab.expire(c)

    @rule(c=conns, port=st.sampled_from([2000, 2001]))
    def fill_cport(self, c: Conn | None, port: int) -> None:
        if c is not None:
            self.tab.fill_cport(c, port)

    @rule(t=templates, eqt=st.booleans())
    def check_template(self, t: Conn | None, eqt: bool) -> None:
        if t is not None:
            self.tab.check_template(t, eqt)

    @rule(di=st.integers(0, 2), available=st.booleans(), weight=st.sampled_from([0, 1]))
    def change_dest(self, di: int, available: bool, weight: int) -> None:
        d = self.dests[di]
        d.flags = (d.flags | DestFlags.AVAILABLE) if available else (d.flags & ~DestFlags.AVAILABLE)
        d.weight = weight

    @rule(c=st.one_of(conns, templates), di=st.integers(0, 3))
    def rebind(self, c: Conn | None, di: int) -> None:
        if c is None:
            return
        dest = self._dest(di)
        if dest is None:
            self.tab.unbind_dest(c)
        else:
            self.tab.bind_dest(c, dest)

    @rule(seed=st.integers(0, 1000), pkts=st.integers(-1, 10))
    def random_drop(self, seed: int, pkts: int) -> None:
        for c in self.tab:
            c.in_pkts = pkts
        self.clock.advance(61)
        self.tab.random_drop(random.Random(seed))
        self.tab.tick()

    @rule()
    def flush(self) -> None:
        self.tab.flush()
        assert self.tab.count == 0

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def counts_match_reality(self) -> None:
        live = list(self.tab)
        assert self.tab.count == len(live) == len(set(map(id, live)))
        assert self.tab.no_cport_count == sum(1 for c in live if c.flags & F.NO_CPORT)
        assert all(c.hashed for c in live)

    @invariant()
    def dest_counters_equal_bound_entries(self) -> None:
        live = list(self.tab)
        for d in self.dests:
            mine = [c for c in live if c.dest is d]
            assert d.persistconns == sum(1 for c in mine if c.flags & F.TEMPLATE)
            assert d.inactconns == sum(1 for c in mine if not c.flags & F.TEMPLATE and c.flags & F.INACTIVE)
            assert d.activeconns == sum(1 for c in mine if not c.flags & (F.TEMPLATE | F.INACTIVE))
        assert all(c.dest is None for c in self.seen if not c.hashed)

    @invariant()
    def n_control_equals_children(self) -> None:
        live = list(self.tab)
        for c in self.seen:
            kids = sum(1 for k in live if k.control is c)
            assert c.n_control == kids
            if c.control is not None:
                assert c.hashed and c.control.hashed  # nothing that controls children expires

    @invariant()
    def every_entry_found_by_its_lookups(self) -> None:
        tab = self.tab
        for c in tab:
            if c.flags & F.TEMPLATE:
                r = tab.ct_in_get(c.protocol, c.caddr, c.cport, c.vaddr, c.vport)
                assert r is not None and r.flags & F.TEMPLATE
            else:
                r = tab.in_get(c.protocol, c.caddr, c.cport, c.vaddr, c.vport)
                assert r is not None and not r.flags & F.TEMPLATE
            assert (r.caddr, r.cport, r.vaddr, r.vport) == (c.caddr, c.cport, c.vaddr, c.vport)
            o = tab.out_get(c.protocol, c.daddr, c.dport, c.caddr, c.cport)
            assert o is not None
            assert (o.caddr, o.cport, o.daddr, o.dport) == (c.caddr, c.cport, c.daddr, c.dport)
            assert tab.get(c.key) is not None

    @invariant()
    def expired_entries_never_controlled_anyone(self) -> None:
        for e in self.tab.events.drain():
            if e.kind == EventKind.EXPIRE:
                assert not any(c.n_control for c in self.seen if c.key == e.snap.key and not c.hashed)
        assert not self.tab.events.overflowed
        assert not any(k in self.tab.errors for k in ("double_hash", "control_del_underflow",
                                                      "flush_stuck"))


ConnTableMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConnTable = ConnTableMachine.TestCase
