"""Seed expiry: timeout 60, deferral while controlling, unhash/unbind/counters, overload clearing,
expire_now, flush; and the timer wheel (O(1) refresh, O(due) ticks)."""

from __future__ import annotations

import logging

import pytest

from director.table.conn import ConnTable
from director.table.tcp import TcpState
from director.types import ConnFlags, DestFlags
from tests.director.table.conn_helpers import (
    CLIENT,
    RS1,
    TCP,
    VIP,
    FakeClock,
    make_dest,
    make_table,
    new_conn,
    new_template,
)

F = ConnFlags
EST = int(TcpState.ESTABLISHED)


def test_expire_sets_timeout_to_60s() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    tab.control_add(new_conn(tab, dest, cport=2), t)
    assert tab.expire(t) is False
    assert t.timeout == 60.0


def test_expire_deferred_while_entry_controls_others() -> None:
    tab, clock = make_table()
    dest = make_dest()
    t = new_template(tab, dest, timeout=10)
    c = new_conn(tab, dest)
    tab.control_add(c, t)
    tab.set_state(c, EST, 900)
    clock.advance(10)
    assert tab.tick() == 0
    assert t.hashed and t.expires == clock.now + 60  # re-armed for later
    assert tab.ct_in_get(TCP, CLIENT, 0, VIP, 80) is t
    assert tab.expire(c)
    assert t.n_control == 0
    clock.advance(60)
    assert tab.tick() == 1
    assert not t.hashed and tab.count == 0


def test_expire_unhashes_and_counts_down() -> None:
    tab, clock = make_table()
    dest = make_dest()
    c = new_conn(tab, dest, cport=0)
    assert (tab.count, tab.no_cport_count) == (1, 1)
    clock.advance(3)
    assert tab.tick() == 1
    assert not c.hashed
    assert (tab.count, tab.no_cport_count) == (0, 0)
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is None
    assert list(tab) == []


def test_expire_detaches_from_controlling_template() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    c = new_conn(tab, dest)
    tab.control_add(c, t)
    assert t.n_control == 1
    assert tab.expire(c)
    assert c.control is None and t.n_control == 0


def test_control_del_below_zero_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    c = new_conn(tab, dest)
    tab.control_add(c, t)
    t.n_control = 0  # corrupt it: the delete would go below zero
    with caplog.at_level(logging.ERROR, logger="director.table.conn"):
        assert tab.expire(c)
    assert t.n_control == 0
    assert tab.errors["control_del_underflow"] == 1
    assert "n=0" in caplog.text


def test_expire_unbinds_dest_by_kind() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    inactive = new_conn(tab, dest, cport=1)
    active = new_conn(tab, dest, cport=2)
    tab.set_state(active, EST, 900)
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (1, 1, 1)
    assert tab.expire(active)
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 1, 1)
    assert tab.expire(inactive)
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 0, 1)
    assert tab.expire(t)
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 0, 0)
    assert t.dest is None


def test_overload_cleared_below_lower_threshold() -> None:
    tab, _ = make_table()
    dest = make_dest(u_threshold=4, l_threshold=2)
    conns = [new_conn(tab, dest, cport=1 + i) for i in range(4)]
    assert dest.flags & DestFlags.OVERLOAD
    tab.expire(conns[0])
    tab.expire(conns[1])  # total 2: not < 2
    assert dest.flags & DestFlags.OVERLOAD
    tab.expire(conns[2])  # total 1 < 2
    assert not dest.flags & DestFlags.OVERLOAD


def test_overload_cleared_below_three_quarters_of_upper_without_lower() -> None:
    tab, _ = make_table()
    dest = make_dest(u_threshold=8)
    conns = [new_conn(tab, dest, cport=1 + i) for i in range(8)]
    assert dest.flags & DestFlags.OVERLOAD
    tab.expire(conns[0])
    tab.expire(conns[1])  # total 6: 24 < 24 is false
    assert dest.flags & DestFlags.OVERLOAD
    tab.expire(conns[2])  # total 5: 20 < 24
    assert not dest.flags & DestFlags.OVERLOAD


def test_overload_cleared_on_unbind_without_thresholds() -> None:
    tab, _ = make_table()
    dest = make_dest()
    conns = [new_conn(tab, dest, cport=1 + i) for i in range(3)]
    dest.flags |= DestFlags.OVERLOAD  # e.g. set while a threshold was configured
    tab.expire(conns[0])
    assert not dest.flags & DestFlags.OVERLOAD
    assert dest.flags & DestFlags.AVAILABLE


def test_timer_fires_at_deadline_not_before() -> None:
    tab, clock = make_table()
    c = new_conn(tab, make_dest())
    clock.advance(2.9)
    assert tab.tick() == 0 and c.hashed
    clock.advance(0.1)
    assert tab.tick() == 1 and not c.hashed


def test_refresh_moves_the_deadline_without_an_event() -> None:
    tab, clock = make_table()
    tab.events.enabled = True
    c = new_conn(tab, make_dest())
    tab.events.drain()
    items = tab.timer_items()
    clock.advance(2)
    tab.refresh(c)
    assert c.expires == clock.now + 3
    assert tab.timer_items() == items  # O(1): the wheel is not touched
    clock.advance(2)
    assert tab.tick() == 0 and c.hashed
    clock.advance(1)
    assert tab.tick() == 1
    assert [e.kind.name for e in tab.events.drain()] == ["EXPIRE"]


def test_refresh_with_shorter_timeout_fires_earlier() -> None:
    tab, clock = make_table()
    c = new_conn(tab, make_dest())
    tab.set_state(c, EST, 900)
    tab.refresh(c, 5)
    assert c.timeout == 900  # the duration used by later refreshes is unchanged
    clock.advance(5)
    assert tab.tick() == 1


def test_set_state_rearms_with_new_timeout() -> None:
    tab, clock = make_table()
    c = new_conn(tab, make_dest())
    tab.set_state(c, EST, 900)
    clock.advance(899)
    assert tab.tick() == 0
    tab.set_state(c, int(TcpState.CLOSE), 10)
    clock.advance(10)
    assert tab.tick() == 1


def test_tick_cost_is_proportional_to_due_entries() -> None:
    clock = FakeClock()
    tab = ConnTable(clock, bits=12, timer_horizon=10_000)
    dest = make_dest()
    for i in range(5000):
        tab.set_state(new_conn(tab, dest, cport=1 + i), EST, 900)
    clock.advance(3)
    # lazy wheel: entries whose deadline moved are re-slotted once, when their old slot fires
    assert tab.tick() == 0
    assert tab.timer_swept == 5000
    short = [new_conn(tab, dest, cport=10000 + i) for i in range(10)]
    clock.advance(3)
    swept = tab.timer_swept
    assert tab.tick() == len(short)
    assert tab.timer_swept - swept == len(short)  # the 5000 long-lived entries are not visited
    for _ in range(100):
        clock.advance(1)
        assert tab.tick() == 0
    assert tab.timer_swept - swept == len(short)
    clock.advance(900)
    assert tab.tick() == 5000


def test_long_timeouts_hop_once_per_horizon() -> None:
    clock = FakeClock()
    tab = ConnTable(clock, bits=8, timer_horizon=32)
    dest = make_dest()
    for i in range(100):
        tab.set_state(new_conn(tab, dest, cport=1 + i), EST, 900)
    swept = tab.timer_swept
    for _ in range(899):
        clock.advance(1)
        assert tab.tick() == 0
    assert tab.timer_swept - swept <= 100 * (900 // 32 + 2)
    clock.advance(1)
    assert tab.tick() == 100


def test_removed_entries_are_released_by_the_wheel_within_the_horizon() -> None:
    clock = FakeClock()
    tab = ConnTable(clock, bits=8, timer_horizon=32)
    dest = make_dest()
    conns = [new_conn(tab, dest, cport=1 + i) for i in range(200)]
    for c in conns:
        tab.set_state(c, EST, 900)
    clock.advance(3)
    tab.tick()  # now slotted (at most) 32 s ahead
    for c in conns:
        tab.set_state(c, int(TcpState.CLOSE), 10)  # earlier: re-slot, stale item left behind
    clock.advance(10)
    assert tab.tick() == 200
    assert tab.timer_items() >= 200  # stale items still reference the removed conns...
    clock.advance(33)
    tab.tick()
    assert tab.timer_items() == 0  # ...but only until the horizon


def test_expire_now_fires_at_next_tick() -> None:
    tab, clock = make_table()
    c = new_conn(tab, make_dest())
    tab.set_state(c, EST, 900)
    tab.expire_now(c)
    assert c.hashed
    assert tab.next_deadline() == clock.now
    assert tab.tick() == 1 and not c.hashed


def test_expire_now_on_controlling_template_defers_it() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    tab.control_add(new_conn(tab, dest), t)
    tab.expire_now(t)
    assert tab.tick() == 0 and t.hashed


def test_flush_expires_everything_including_templates() -> None:
    tab, _ = make_table()
    dest = make_dest()
    for n in range(3):
        t = new_template(tab, dest, caddr=CLIENT + n)
        for i in range(4):
            c = tab.new(TCP, CLIENT + n, 1000 + i, VIP, 80, RS1, 8080, 0, dest)
            tab.set_state(c, EST, 900)
            tab.control_add(c, t)
    new_conn(tab, None, cport=0)
    tab.flush()
    assert tab.count == 0 and tab.no_cport_count == 0 and list(tab) == []
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 0, 0)


def test_expire_on_removed_entry_is_a_noop() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest())
    assert tab.expire(c)
    assert tab.expire(c) is False
    assert tab.count == 0
    tab.refresh(c)
    tab.expire_now(c)
    assert tab.tick() == 0 and tab.count == 0


def test_next_deadline_tracks_earliest_timer() -> None:
    tab, clock = make_table()
    assert tab.next_deadline() is None
    new_conn(tab, make_dest())
    assert tab.next_deadline() == clock.now + 3
