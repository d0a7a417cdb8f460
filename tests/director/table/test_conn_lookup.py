"""Seed lookups: in_get with the NO_CPORT rule and port-0 retry, ct_in_get, out_get, table size."""

from __future__ import annotations

import random

from director.table.conn import DEFAULT_BITS, ConnTable
from director.types import ConnFlags
from tests.director.table.conn_helpers import (
    CLIENT,
    CLIENT2,
    RS1,
    TCP,
    UDP,
    VIP,
    VIP2,
    FakeClock,
    make_dest,
    make_table,
    new_conn,
    new_template,
)

NO_CPORT = int(ConnFlags.NO_CPORT)


def test_in_get_matches_protocol_client_and_vip() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=40000)
    assert tab.in_get(TCP, CLIENT, 40000, VIP, 80) is c
    assert tab.in_get(UDP, CLIENT, 40000, VIP, 80) is None
    assert tab.in_get(TCP, CLIENT2, 40000, VIP, 80) is None
    assert tab.in_get(TCP, CLIENT, 40001, VIP, 80) is None
    assert tab.in_get(TCP, CLIENT, 40000, VIP2, 80) is None
    assert tab.in_get(TCP, CLIENT, 40000, VIP, 81) is None


def test_in_get_port0_lookup_matches_only_no_cport_entries() -> None:
    tab, _ = make_table()
    dest = make_dest()
    tmpl = new_template(tab, dest)  # cport 0 but no NO_CPORT flag
    assert not tmpl.flags & NO_CPORT
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is None
    c = new_conn(tab, dest, cport=0)
    assert c.flags & NO_CPORT
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is c


def test_in_get_real_port_never_matches_no_cport_entry_directly() -> None:
    tab, _ = make_table()
    dest = make_dest()
    # an entry created with NO_CPORT and a port is skipped by the xor rule for that port...
    c = tab.new(TCP, CLIENT, 5000, VIP, 80, RS1, 8080, NO_CPORT, dest)
    assert tab.in_get(TCP, CLIENT, 5000, VIP, 80) is None
    # ...but a port-0 lookup does not find it either (it is hashed under port 5000)
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is None
    assert tab.no_cport_count == 1 and c.flags & NO_CPORT


def test_in_get_port0_retry_finds_no_cport_entry_for_any_client_port() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=0)
    assert tab.in_get(TCP, CLIENT, 33333, VIP, 80) is c
    assert tab.in_get(TCP, CLIENT, 44444, VIP, 80) is c
    assert tab.in_get(TCP, CLIENT2, 33333, VIP, 80) is None


def test_in_get_port0_retry_only_when_no_cport_entries_exist() -> None:
    tab, _ = make_table()
    c = new_conn(tab, make_dest(), cport=0)
    assert tab.in_get(TCP, CLIENT, 33333, VIP, 80) is c
    tab.no_cport_count = 0  # the retry is gated by the count, not by what is in the bucket
    assert tab.in_get(TCP, CLIENT, 33333, VIP, 80) is None
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is c  # direct port-0 lookups still match


def test_in_get_prefers_exact_port_over_port0_retry() -> None:
    tab, _ = make_table()
    dest = make_dest()
    wild = new_conn(tab, dest, cport=0)
    exact = new_conn(tab, dest, cport=33333)
    assert tab.in_get(TCP, CLIENT, 33333, VIP, 80) is exact
    assert tab.in_get(TCP, CLIENT, 33334, VIP, 80) is wild


def test_ct_in_get_finds_templates_only() -> None:
    tab, _ = make_table()
    dest = make_dest()
    c = new_conn(tab, dest, cport=0)  # NO_CPORT normal conn with the same tuple
    assert tab.ct_in_get(TCP, CLIENT, 0, VIP, 80) is None
    t = new_template(tab, dest)
    assert tab.ct_in_get(TCP, CLIENT, 0, VIP, 80) is t
    assert tab.in_get(TCP, CLIENT, 0, VIP, 80) is c


def test_ct_in_get_has_no_port0_retry() -> None:
    tab, _ = make_table()
    new_template(tab, make_dest())
    assert tab.ct_in_get(TCP, CLIENT, 40000, VIP, 80) is None


def test_out_get_matches_real_server_and_client() -> None:
    tab, _ = make_table()
    dest = make_dest()
    c = new_conn(tab, dest, cport=40000)
    assert tab.out_get(TCP, RS1, 8080, CLIENT, 40000) is c
    assert tab.out_get(TCP, RS1, 8081, CLIENT, 40000) is None
    assert tab.out_get(TCP, RS1 + 1, 8080, CLIENT, 40000) is None
    assert tab.out_get(TCP, RS1, 8080, CLIENT, 40001) is None
    assert tab.out_get(UDP, RS1, 8080, CLIENT, 40000) is None


def test_both_directions_hash_by_client_triple_into_one_bucket() -> None:
    tab, _ = make_table(bits=8)
    dest = make_dest()
    rng = random.Random(5)
    conns = [new_conn(tab, dest, cport=rng.randrange(1024, 65536), caddr=CLIENT + rng.randrange(4096))
             for i in range(200)]
    assert len({tab.bucket_of(c) for c in conns}) > 64  # spread over the bucket array
    for c in conns:
        assert tab.in_get(TCP, c.caddr, c.cport, VIP, 80) is c
        assert tab.out_get(TCP, RS1, 8080, c.caddr, c.cport) is c


def test_same_client_port_to_two_services_are_distinct_entries() -> None:
    tab, _ = make_table()
    dest = make_dest()
    a = tab.new(TCP, CLIENT, 40000, VIP, 80, RS1, 8080, 0, dest)
    b = tab.new(TCP, CLIENT, 40000, VIP2, 80, RS1, 8081, 0, dest)
    assert tab.in_get(TCP, CLIENT, 40000, VIP, 80) is a
    assert tab.in_get(TCP, CLIENT, 40000, VIP2, 80) is b
    assert tab.out_get(TCP, RS1, 8081, CLIENT, 40000) is b
    assert tab.expire(a)
    assert tab.in_get(TCP, CLIENT, 40000, VIP2, 80) is b
    assert tab.in_get(TCP, CLIENT, 40000, VIP, 80) is None


def test_get_finds_exact_key() -> None:
    tab, _ = make_table()
    dest = make_dest()
    c = new_conn(tab, dest)
    t = new_template(tab, dest)
    assert tab.get(c.key) is c
    assert tab.get(t.key) is t
    assert c.key == (TCP, CLIENT, 40000, VIP, 80, RS1, 8080, 0, False)
    assert tab.get((TCP, CLIENT, 40000, VIP, 80, RS1, 8080, 0, True)) is None


def test_table_bits_clamped_to_8_20_default_12() -> None:
    clock = FakeClock()
    assert DEFAULT_BITS == 12
    assert ConnTable(clock).size == 1 << 12
    assert ConnTable(clock, bits=3).size == 1 << 8
    assert ConnTable(clock, bits=8).size == 1 << 8
    assert ConnTable(clock, bits=20).bits == 20
    assert ConnTable(clock, bits=30).bits == 20
    assert len(ConnTable(clock, bits=9)._tab) == 512  # the bucket array really exists
