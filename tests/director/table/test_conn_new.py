"""Seed creation rules: initial state/timeout, NO_CPORT, dest binding, counters, OVERLOAD, hashing."""

from __future__ import annotations

import logging

import pytest

from director.types import ConnFlags, DestFlags, FwdMethod
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


def test_new_entry_starts_in_state_0_with_3s_timeout() -> None:
    tab, clock = make_table()
    c = new_conn(tab, make_dest())
    assert c.state == 0
    assert c.timeout == 3.0
    assert c.expires == clock.now + 3.0
    assert c.created == clock.now


def test_new_with_cport_0_sets_no_cport_flag_and_count() -> None:
    tab, _ = make_table()
    dest = make_dest()
    assert tab.no_cport_count == 0
    c = new_conn(tab, dest, cport=0)
    assert c.flags & F.NO_CPORT
    assert tab.no_cport_count == 1
    d = new_conn(tab, dest, cport=1234)
    assert not d.flags & F.NO_CPORT
    assert tab.no_cport_count == 1


def test_new_template_with_cport_0_is_not_a_no_cport_entry() -> None:
    tab, _ = make_table()
    t = new_template(tab, make_dest())
    assert t.cport == 0 and not t.flags & F.NO_CPORT
    assert tab.no_cport_count == 0


def test_new_increments_conn_count() -> None:
    tab, _ = make_table()
    dest = make_dest()
    for i in range(5):
        new_conn(tab, dest, cport=2000 + i)
    assert tab.count == 5 == len(tab) == len(list(tab))


@pytest.mark.parametrize("fwd,flag", [(FwdMethod.NAT, F.MASQ), (FwdMethod.DR, F.DROUTE),
                                      (FwdMethod.TUN, F.TUNNEL), (FwdMethod.LOCALNODE, F.LOCALNODE)])
def test_bind_dest_takes_forwarding_method_flags(fwd: FwdMethod, flag: ConnFlags) -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(fwd))
    assert c.flags & F.FWD_MASK == flag
    assert c.dest is not None and c.dest.fwd == fwd


def test_new_without_dest_is_bypass_and_counts_nothing() -> None:
    tab, _ = make_table()
    c = tab.new(TCP, CLIENT, 1000, VIP, 80, 0, 0, int(F.BYPASS), None)
    assert c.dest is None and c.flags & F.FWD_MASK == F.BYPASS
    assert tab.in_get(TCP, CLIENT, 1000, VIP, 80) is c


def test_bind_normal_conn_counts_as_inactive() -> None:
    tab, _ = make_table()
    dest = make_dest()
    c = new_conn(tab, dest)
    assert c.flags & F.INACTIVE
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 1, 0)


def test_bind_template_counts_as_persistent() -> None:
    tab, _ = make_table()
    dest = make_dest()
    new_template(tab, dest)
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 0, 1)


def test_bind_sync_conn_keeps_its_activity_flag() -> None:
    tab, _ = make_table()
    dest = make_dest(FwdMethod.DR)
    active = tab.new(TCP, CLIENT, 1, VIP, 80, RS1, 8080, int(F.SYNC), dest, state=1, timeout=900)
    inactive = tab.new(TCP, CLIENT, 2, VIP, 80, RS1, 8080, int(F.SYNC | F.INACTIVE), dest)
    assert not active.flags & F.INACTIVE and inactive.flags & F.INACTIVE
    assert active.flags & F.FWD_MASK == F.DROUTE  # forwarding method from the local dest
    assert (dest.activeconns, dest.inactconns) == (1, 1)


def test_bind_sets_overload_when_total_reaches_upper_threshold() -> None:
    tab, _ = make_table()
    dest = make_dest(u_threshold=3)
    new_conn(tab, dest, cport=1)
    new_conn(tab, dest, cport=2)
    assert not dest.flags & DestFlags.OVERLOAD
    new_template(tab, dest)  # templates are not counted in totalconns
    assert not dest.flags & DestFlags.OVERLOAD
    new_conn(tab, dest, cport=3)
    assert dest.flags & DestFlags.OVERLOAD


def test_no_upper_threshold_never_sets_overload() -> None:
    tab, _ = make_table()
    dest = make_dest()
    for i in range(50):
        new_conn(tab, dest, cport=1000 + i)
    assert not dest.flags & DestFlags.OVERLOAD


def test_new_hashes_the_entry() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest())
    assert c.flags & F.HASHED and c.hashed


def test_double_hash_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest())
    with caplog.at_level(logging.ERROR, logger="director.table.conn"):
        assert tab._hash(c) is False
    assert tab.errors["double_hash"] == 1
    assert "already hashed" in caplog.text
    assert len(list(tab)) == 1 and tab.count == 1


def test_new_with_control_links_to_template() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = new_template(tab, dest)
    c = tab.new(TCP, CLIENT, 5000, VIP, 80, RS1, 8080, 0, dest, control=t)
    assert c.control is t and t.n_control == 1


def test_conn_fields_are_views_of_the_packed_key() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=65535, caddr=0xFFFFFFFF)
    assert (c.protocol, c.caddr, c.cport) == (TCP, 0xFFFFFFFF, 65535)
    v6 = (0x20010DB8 << 96) | 1  # 128-bit client address
    d = tab.new(TCP, v6, 1, VIP, 80, RS1, 8080, 0, None)
    assert d.caddr == v6 and tab.in_get(TCP, v6, 1, VIP, 80) is d
