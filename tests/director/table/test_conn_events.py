"""The event feed: NEW / UPDATE / EXPIRE snapshots (templates included), bounded, overflow flagged."""

from __future__ import annotations

import logging

import pytest

from director.table.conn import snapshot
from director.table.events import EventFeed, EventKind
from director.table.tcp import TcpState
from director.types import ConnFlags
from tests.director.table.conn_helpers import (
    CLIENT,
    RS2,
    TCP,
    make_dest,
    make_table,
    new_conn,
    new_template,
)

EST = int(TcpState.ESTABLISHED)


def _kinds(tab_events: EventFeed) -> list[str]:
    return [e.kind.name for e in tab_events.drain()]


def test_disabled_feed_stores_nothing() -> None:
    tab, _ = make_table()
    new_conn(tab, make_dest())
    assert len(tab.events) == 0 and tab.events.drain() == []


def test_new_update_expire_events_with_snapshots() -> None:
    tab, clock = make_table()
    tab.events.enabled = True
    dest = make_dest()
    c = new_conn(tab, dest)
    tab.set_state(c, EST, 900)
    tab.set_state(c, EST, 900)  # no state change: no event
    tab.refresh(c)  # refresh emits nothing
    clock.advance(900)
    tab.tick()
    ev = tab.events.drain()
    assert [e.kind for e in ev] == [EventKind.NEW, EventKind.UPDATE, EventKind.EXPIRE]
    new, upd, exp = (e.snap for e in ev)
    assert new.key == c.key == upd.key == exp.key
    assert new.state == 0 and new.timeout == 3.0 and new.flags & ConnFlags.INACTIVE
    assert upd.state == EST and not upd.flags & ConnFlags.INACTIVE and upd.timeout == 900
    assert new.dest_key == dest.key == exp.dest_key
    assert exp.timeout == 60.0


def test_template_events_carry_control_links() -> None:
    tab, _ = make_table()
    tab.events.enabled = True
    dest = make_dest()
    t = new_template(tab, dest)
    c = new_conn(tab, dest)
    tab.control_add(c, t)
    ev = tab.events.drain()
    assert [e.kind for e in ev] == [EventKind.NEW, EventKind.NEW, EventKind.UPDATE]
    assert ev[0].snap.key[-1] is True  # a template
    assert ev[2].snap.control_key == t.key
    d = tab.new(TCP, CLIENT, 7, t.vaddr, 80, dest.addr, dest.port, 0, dest, control=t)
    (e,) = tab.events.drain()
    assert e.kind == EventKind.NEW and e.snap.control_key == t.key and e.snap.key == d.key


def test_dest_change_emits_update() -> None:
    tab, _ = make_table()
    dest, other = make_dest(), make_dest(addr=RS2)
    c = new_conn(tab, dest)
    tab.events.enabled = True
    tab.bind_dest(c, other)
    (e,) = tab.events.drain()
    assert e.kind == EventKind.UPDATE and e.snap.dest_key == other.key
    assert (dest.inactconns, other.inactconns) == (0, 1)
    tab.unbind_dest(c)
    (e,) = tab.events.drain()
    assert e.snap.dest_key is None and other.inactconns == 0


def test_key_change_is_an_update_with_old_key() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=0)
    old = c.key
    tab.events.enabled = True
    tab.fill_cport(c, 999)
    (e,) = tab.events.drain()
    assert e.kind == EventKind.UPDATE and e.old_key == old and e.snap.key == c.key
    assert e.snap.key[2] == 999


def test_overflow_is_flagged_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    feed = EventFeed(capacity=3)
    feed.enabled = True
    tab, _ = make_table()
    c = new_conn(tab, make_dest())
    with caplog.at_level(logging.WARNING, logger="director.table.events"):
        for _ in range(5):
            feed.push(EventKind.UPDATE, snapshot(c))
    assert len(feed) == 3 and feed.overflowed and feed.dropped == 2
    assert caplog.text.count("full") == 1  # once per episode
    assert len(feed.drain()) == 3
    assert feed.overflowed  # stays set until the consumer resyncs
    feed.clear_overflow()
    assert not feed.overflowed


def test_table_feed_overflow_does_not_block_the_table() -> None:
    clock_tab, _ = make_table()
    tab = type(clock_tab)(clock_tab._clock, bits=8, event_capacity=10)
    tab.events.enabled = True
    dest = make_dest()
    for i in range(50):
        new_conn(tab, dest, cport=1000 + i)
    assert tab.count == 50 and len(tab.events) == 10 and tab.events.overflowed


def test_on_ready_called_once_per_empty_to_nonempty_transition() -> None:
    tab, _ = make_table()
    calls: list[int] = []
    tab.events.enabled = True
    tab.events.on_ready = lambda: calls.append(len(tab.events))
    dest = make_dest()
    new_conn(tab, dest, cport=1)
    new_conn(tab, dest, cport=2)
    assert calls == [1]
    assert len(tab.events.drain(1)) == 1
    new_conn(tab, dest, cport=3)
    assert calls == [1]  # not empty in between
    tab.events.drain()
    new_conn(tab, dest, cport=4)
    assert calls == [1, 1]


def test_drain_respects_max_n_and_order() -> None:
    tab, _ = make_table()
    tab.events.enabled = True
    dest = make_dest()
    conns = [new_conn(tab, dest, cport=1000 + i) for i in range(10)]
    first = tab.events.drain(4)
    rest = tab.events.drain()
    assert [e.snap.key for e in first + rest] == [c.key for c in conns]
    assert len(first) == 4


def test_tap_sees_every_drained_batch_after_the_consumer() -> None:
    """The admin event watchers see exactly what the sync consumer drained, in order."""
    tab, _ = make_table()
    tab.events.enabled = True
    seen: list[tuple[object, ...]] = []
    tab.events.tap = seen.extend
    dest = make_dest()
    conns = [new_conn(tab, dest, cport=2000 + i) for i in range(6)]
    got = tab.events.drain(4) + tab.events.drain_raw()
    assert len(got) == 6
    assert [ev[0] for ev in seen] == [c.key for c in conns]  # raw events: the key first
    tab.events.drain()
    assert len(seen) == 6  # an empty drain shows nothing


def test_deferred_template_expiry_is_an_update_event() -> None:
    """A template whose timer fires while it controls conns waits 60 s more: its new timeout and
    deadline are an UPDATE, so backups learn them (issue 10, defect 6)."""
    tab, clock = make_table()
    tab.events.enabled = True
    dest = make_dest()
    tpl = new_template(tab, dest, timeout=3.0)
    c = new_conn(tab, dest)
    tab.control_add(c, tpl)
    tab.set_state(c, EST, 900.0)
    tab.events.drain()
    clock.advance(3.0)
    tab.tick()
    evs = tab.events.drain()
    assert [(e.kind, e.snap.key, e.snap.timeout, e.snap.expires) for e in evs] == [
        (EventKind.UPDATE, tpl.key, 60.0, clock.now + 60.0)]


def test_timeout_change_without_state_change_is_an_update_event() -> None:
    """set_state with the same state but a new timeout (a template re-armed, new config) is evented;
    the per-packet call with nothing new is not."""
    tab, _ = make_table()
    tab.events.enabled = True
    c = new_conn(tab, make_dest())
    tab.set_state(c, EST, 900.0)
    tab.events.drain()
    tab.set_state(c, EST, 900.0)
    assert tab.events.drain() == []
    tab.set_state(c, EST, 300.0)
    assert [(e.kind, e.snap.timeout) for e in tab.events.drain()] == [(EventKind.UPDATE, 300.0)]
