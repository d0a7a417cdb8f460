"""Seed fill_cport, check_template invalidation and control links."""

from __future__ import annotations

import pytest

from director.services.service import Dest
from director.types import ConnFlags, DestFlags
from tests.director.table.conn_helpers import (
    CLIENT,
    RS1,
    TCP,
    VIP,
    make_dest,
    make_table,
    new_conn,
    new_template,
)

F = ConnFlags


def test_fill_cport_rehashes_with_the_port_and_clears_no_cport() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=0)
    assert tab.no_cport_count == 1
    tab.fill_cport(c, 5555)
    assert c.cport == 5555 and not c.flags & F.NO_CPORT and c.hashed
    assert tab.no_cport_count == 0 and tab.count == 1
    assert tab.in_get(TCP, CLIENT, 5555, VIP, 80) is c
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is None
    assert tab.out_get(TCP, RS1, 8080, CLIENT, 5555) is c


def test_fill_cport_leaves_entries_without_no_cport_alone() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=4444)
    tab.fill_cport(c, 5555)
    assert c.cport == 4444 and c.hashed
    assert tab.in_get(TCP, CLIENT, 4444, VIP, 80) is c


def test_fill_cport_on_unhashed_entry_does_nothing() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=0)
    tab.expire(c)
    tab.fill_cport(c, 5555)
    assert c.cport == 0 and not c.hashed and tab.no_cport_count == 0


def test_check_template_keeps_usable_template() -> None:
    tab, _ = make_table()
    t = new_template(tab, make_dest())
    assert tab.check_template(t, expire_quiescent_template=True)
    assert t.vport == 80 and tab.ct_in_get(TCP, CLIENT, 0, VIP, 80) is t


@pytest.mark.parametrize("why", ["no_dest", "unavailable", "quiescent"])
def test_check_template_invalidates_unusable_template(why: str) -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    if why == "no_dest":
        tab.unbind_dest(t)
    elif why == "unavailable":
        dest.svc.remove_dest(dest)
    else:
        dest.svc.edit_dest(dest, weight=0)
    assert tab.check_template(t, expire_quiescent_template=True) is False
    assert (t.vport, t.dport, t.cport) == (65535, 65535, 0)
    assert t.hashed and tab.count == 1
    assert tab.ct_in_get(TCP, CLIENT, 0, VIP, 80) is None  # can never match again
    assert tab.ct_in_get(TCP, CLIENT, 0, VIP, 65535) is t  # rehashed under the invalid port


def test_check_template_invalidation_zeroes_client_port() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = tab.new(TCP, CLIENT, 1234, VIP, 80, RS1, 8080, int(F.TEMPLATE), dest)
    tab.unbind_dest(t)
    assert not tab.check_template(t, False)
    assert t.cport == 0 and tab.ct_in_get(TCP, CLIENT, 0, VIP, 65535) is t
    assert tab.ct_in_get(TCP, CLIENT, 1234, VIP, 80) is None


def test_check_template_quiescent_dest_ok_without_the_setting() -> None:
    tab, _ = make_table()
    dest = make_dest(weight=0)
    t = new_template(tab, dest)
    assert tab.check_template(t, expire_quiescent_template=False)
    assert t.vport == 80


def test_check_template_already_invalidated_is_not_rehashed_again() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    dest.flags &= ~DestFlags.AVAILABLE
    tab.events.enabled = True
    assert not tab.check_template(t, False)
    assert len(tab.events.drain()) == 1
    assert not tab.check_template(t, False)
    assert tab.events.drain() == []
    assert (t.vport, t.dport) == (65535, 65535) and t.hashed


def test_invalidated_template_still_expires_normally() -> None:
    tab, clock = make_table()
    dest: Dest = make_dest()
    t = new_template(tab, dest, timeout=30)
    tab.unbind_dest(t)
    tab.check_template(t, False)
    clock.advance(30)
    assert tab.tick() == 1 and tab.count == 0


def test_control_add_links_and_counts_children() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    kids = [new_conn(tab, dest, cport=1000 + i) for i in range(3)]
    for k in kids:
        tab.control_add(k, t)
    assert t.n_control == 3 and all(k.control is t for k in kids)


def test_control_add_twice_relinks_and_is_reported() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t1 = new_template(tab, dest)
    t2 = new_template(tab, dest, caddr=CLIENT + 1)
    c = new_conn(tab, dest)
    tab.control_add(c, t1)
    tab.control_add(c, t2)
    assert c.control is t2 and (t1.n_control, t2.n_control) == (0, 1)
    assert tab.errors["control_add_twice"] == 1
