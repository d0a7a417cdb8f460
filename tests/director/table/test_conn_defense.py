"""Seed random-drop defense and todrop_entry."""

from __future__ import annotations

import random

from director.table.conn import Conn, ConnTable
from director.table.tcp import TcpState
from tests.director.table.conn_helpers import (
    CLIENT,
    TCP,
    UDP,
    VIP,
    make_dest,
    make_table,
    new_conn,
    new_template,
)

S = TcpState


class CountingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.picks: list[int] = []

    def getrandbits(self, k: int) -> int:
        v = super().getrandbits(k)
        self.picks.append(v)
        return v


def _fill(tab: ConnTable, n: int, state: int, protocol: int = TCP, in_pkts: int = 1) -> list[Conn]:
    dest = make_dest()
    out: list[Conn] = []
    rng = random.Random(n * 31 + state)  # spread over the buckets like real clients
    for _ in range(n):
        caddr, cport = CLIENT + rng.randrange(1 << 16), rng.randrange(1024, 65536)
        while tab.in_get(protocol, caddr, cport, VIP, 80) is not None:
            cport = rng.randrange(1024, 65536)
        c = new_conn(tab, dest, cport=cport, caddr=caddr, protocol=protocol)
        tab.set_state(c, state, 900)
        c.in_pkts = in_pkts
        out.append(c)
    return out


def _drop_all_buckets(tab: ConnTable) -> int:
    """Run random_drop until every bucket was visited, then tick: returns entries removed."""
    rng = CountingRandom(7)
    seen: set[int] = set()
    while len(seen) < tab.size:
        tab.random_drop(rng)
        seen.update(rng.picks)
        rng.picks.clear()
    return tab.tick()


def test_random_drop_visits_one_32nd_of_the_buckets_at_random() -> None:
    tab, _ = make_table(bits=10)
    rng = CountingRandom(1)
    tab.random_drop(rng)
    assert len(rng.picks) == 1024 // 32
    assert all(0 <= b < 1024 for b in rng.picks)
    assert len(set(rng.picks)) > 16


def test_random_drop_only_touches_entries_in_visited_buckets() -> None:
    tab, clock = make_table(bits=8)
    conns = _fill(tab, 300, S.SYN_RECV)
    rng = CountingRandom(3)
    marked = tab.random_drop(rng)
    visited = set(rng.picks)
    expected = [c for c in conns if tab.bucket_of(c) in visited]
    assert marked == len(expected) > 0
    assert tab.tick() == len(expected)
    assert all(not c.hashed for c in expected)
    assert all(c.hashed for c in conns if tab.bucket_of(c) not in visited)


def test_random_drop_never_drops_templates() -> None:
    tab, clock = make_table(bits=8)
    dest = make_dest()
    for i in range(50):
        new_template(tab, dest, caddr=CLIENT + i)
    clock.advance(120)
    assert _drop_all_buckets(tab) == 0


def test_random_drop_drops_tcp_syn_recv_and_synack_regardless_of_age() -> None:
    tab, clock = make_table(bits=8)
    conns = _fill(tab, 20, S.SYN_RECV, in_pkts=100)
    dest = make_dest()
    for i in range(20):
        c = new_conn(tab, dest, cport=9000 + i, caddr=CLIENT + 500 + i)
        tab.set_state(c, S.SYNACK, 120)
        conns.append(c)
    assert _drop_all_buckets(tab) == 40
    assert tab.count == 0


def test_random_drop_keeps_other_tcp_states() -> None:
    tab, clock = make_table(bits=8)
    for st in (S.NONE, S.SYN_SENT, S.FIN_WAIT, S.TIME_WAIT, S.CLOSE, S.CLOSE_WAIT, S.LAST_ACK,
               S.LISTEN):
        _fill(tab, 5, st)
    clock.advance(100)
    assert _drop_all_buckets(tab) == 0


def test_random_drop_established_is_subject_to_todrop_entry() -> None:
    tab, clock = make_table(bits=8)
    young = _fill(tab, 10, S.ESTABLISHED)
    assert _drop_all_buckets(tab) == 0  # refreshed less than 60 s ago
    clock.advance(61)
    assert _drop_all_buckets(tab) == 10  # in_pkts == 1: every candidate
    assert not any(c.hashed for c in young)


def test_random_drop_non_tcp_is_subject_to_todrop_entry() -> None:
    tab, clock = make_table(bits=8)
    _fill(tab, 10, 0, protocol=UDP, in_pkts=1)
    _fill(tab, 10, 0, protocol=UDP, in_pkts=9)
    clock.advance(61)
    assert _drop_all_buckets(tab) == 10


def test_random_drop_also_expires_the_controlling_template() -> None:
    tab, clock = make_table(bits=8)
    dest = make_dest()
    t = new_template(tab, dest)
    c = new_conn(tab, dest)
    tab.control_add(c, t)
    tab.set_state(c, S.SYN_RECV, 60)
    assert _drop_all_buckets(tab) == 2  # c, then its template (no longer controlling)
    assert not c.hashed and not t.hashed and tab.count == 0


def test_random_drop_marks_template_of_a_dropped_entry_only() -> None:
    tab, _ = make_table(bits=8)
    dest = make_dest()
    t = new_template(tab, dest)
    tab.set_state(new_conn(tab, dest), S.SYN_RECV, 60)  # dropped, but not controlled by t
    assert _drop_all_buckets(tab) == 1
    assert t.hashed


def test_todrop_entry_keeps_entries_younger_than_60s() -> None:
    tab, clock = make_table()
    (c,) = _fill(tab, 1, S.ESTABLISHED)
    clock.advance(59.9)
    assert not tab.todrop_entry(c, clock.now)  # now + timeout < expires + 60
    clock.advance(0.1)
    assert tab.todrop_entry(c, clock.now)


def test_todrop_entry_keeps_entries_with_more_than_8_or_negative_in_pkts() -> None:
    tab, clock = make_table()
    hi, neg = _fill(tab, 2, S.ESTABLISHED)
    hi.in_pkts, neg.in_pkts = 9, -1
    clock.advance(100)
    assert not any(tab.todrop_entry(c, clock.now) for _ in range(20) for c in (hi, neg))


def test_todrop_entry_never_drops_entries_without_packets() -> None:
    tab, clock = make_table()
    (c,) = _fill(tab, 1, S.ESTABLISHED, in_pkts=0)
    clock.advance(100)
    assert not any(tab.todrop_entry(c, clock.now) for _ in range(20))


def test_todrop_entry_drops_one_in_i_per_in_pkts_value() -> None:
    tab, clock = make_table()
    conns = _fill(tab, 8, S.ESTABLISHED)
    clock.advance(100)
    for i, c in enumerate(conns, start=1):
        c.in_pkts = i
        verdicts = [tab.todrop_entry(c, clock.now) for _ in range(8 * i)]
        assert sum(verdicts) == 8, i
        # the countdown starts at 0: the first candidate of each value is dropped
        assert verdicts[0] and all(verdicts[k] == (k % i == 0) for k in range(8 * i))


def test_todrop_countdowns_are_independent_per_in_pkts_value() -> None:
    tab, clock = make_table()
    a, b = _fill(tab, 2, S.ESTABLISHED)
    a.in_pkts, b.in_pkts = 3, 4
    clock.advance(100)
    seq = [tab.todrop_entry(a, clock.now), tab.todrop_entry(b, clock.now),
           tab.todrop_entry(a, clock.now), tab.todrop_entry(b, clock.now)]
    assert seq == [True, True, False, False]
