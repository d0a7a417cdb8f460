"""IPv6 entries in the one conn table: 128-bit addresses, no v4/v6 key collisions, same seed semantics."""

from __future__ import annotations

import ipaddress
import random

from director.services.service import Dest, VirtualService
from director.table.entry import V6_MIN, addr_fits, is_v6, make_key, snapshot
from director.types import ConnFlags, FwdMethod
from tests.director.table.conn_helpers import (
    CLIENT,
    TCP,
    TEMPLATE,
    UDP,
    NullSched,
    make_table,
)

NO_CPORT = int(ConnFlags.NO_CPORT)


def a6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


VIP6 = a6("2001:db8::10")
RS6 = a6("fd00:2::1")
CLIENT6 = a6("2001:db8:1::77")


def dest6(addr: int = RS6, port: int = 8080) -> Dest:
    svc = VirtualService(TCP, VIP6, 80, NullSched())
    d = Dest(svc, addr, port, fwd=FwdMethod.NAT)
    svc.add_dest(d)
    return d


def test_family_is_read_off_the_int() -> None:
    assert not is_v6(CLIENT) and not is_v6(0xFFFFFFFF)
    assert is_v6(V6_MIN) and is_v6(CLIENT6) and is_v6(a6("::ffff:198.19.0.10"))
    assert addr_fits(CLIENT, 4) and addr_fits(CLIENT6, 16)
    assert not addr_fits(a6("::198.19.0.10"), 16)  # ::a.b.c.d must never stand for a.b.c.d
    assert not addr_fits(CLIENT6, 4) and not addr_fits(CLIENT, 3) and not addr_fits(2**128, 16)


def test_v6_and_v4_keys_never_collide() -> None:
    rng = random.Random(13)
    v4 = {make_key(p, rng.getrandbits(32), rng.getrandbits(16)) for p in (TCP, UDP) for _ in range(2000)}
    v6 = {make_key(p, V6_MIN + rng.getrandbits(96) + (rng.getrandbits(32) << 96), rng.getrandbits(16))
          for p in (TCP, UDP) for _ in range(2000)}
    assert not v4 & v6
    # the closest pairs: the v6 address whose low 32 bits are a v4 client, and ::ffff:a.b.c.d
    for caddr6 in (CLIENT | V6_MIN, a6("::ffff:198.19.0.10"), CLIENT6 & ~0xFFFFFFFF | CLIENT):
        assert make_key(TCP, caddr6, 40000) != make_key(TCP, CLIENT, 40000)


def test_v6_entry_round_trips_its_fields_and_lookups() -> None:
    tab, _ = make_table()
    d = dest6()
    c = tab.new(TCP, CLIENT6, 40000, VIP6, 80, RS6, 8080, 0, d)
    assert (c.protocol, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport) == (
        TCP, CLIENT6, 40000, VIP6, 80, RS6, 8080)
    assert snapshot(c).key[:7] == (TCP, CLIENT6, 40000, VIP6, 80, RS6, 8080)
    assert tab.in_get(TCP, CLIENT6, 40000, VIP6, 80) is c
    assert tab.out_get(TCP, RS6, 8080, CLIENT6, 40000) is c
    assert tab.get(c.key) is c
    assert tab.in_get(UDP, CLIENT6, 40000, VIP6, 80) is None
    assert d.inactconns == 1 and tab.count == 1


def test_a_v4_client_with_the_same_low_bits_sees_nothing_of_the_v6_flow() -> None:
    tab, _ = make_table()
    low = CLIENT6 & 0xFFFFFFFF
    c6 = tab.new(TCP, CLIENT6, 40000, VIP6, 80, RS6, 8080, 0, dest6())
    assert tab.in_get(TCP, low, 40000, VIP6 & 0xFFFFFFFF, 80) is None
    assert tab.out_get(TCP, RS6 & 0xFFFFFFFF, 8080, low, 40000) is None
    c4 = tab.new(TCP, low, 40000, VIP6 & 0xFFFFFFFF, 80, RS6 & 0xFFFFFFFF, 8080, 0, None)
    assert tab.bucket_of(c4) == tab.bucket_of(c6)  # one bucket, two keys
    assert tab.in_get(TCP, CLIENT6, 40000, VIP6, 80) is c6
    assert tab.in_get(TCP, low, 40000, VIP6 & 0xFFFFFFFF, 80) is c4
    assert tab.expire(c6) and tab.in_get(TCP, low, 40000, VIP6 & 0xFFFFFFFF, 80) is c4


def test_v6_no_cport_retry_and_templates_with_a_prefix() -> None:
    tab, _ = make_table()
    d = dest6()
    c = tab.new(UDP, CLIENT6, 0, VIP6, 80, RS6, 8080, 0, d)
    assert c.flags & NO_CPORT and tab.in_get(UDP, CLIENT6, 5353, VIP6, 80) is c
    mask64 = int(ipaddress.IPv6Network("::/64").netmask)
    net = CLIENT6 & mask64
    t = tab.new(TCP, net, 0, VIP6, 80, RS6, 8080, TEMPLATE, d, timeout=300.0)
    other = a6("2001:db8:1::abcd")
    assert tab.ct_in_get(TCP, other & mask64, 0, VIP6, 80) is t
    assert tab.ct_in_get(TCP, a6("2001:db8:2::1") & mask64, 0, VIP6, 80) is None
    assert d.persistconns == 1


def test_v6_entries_expire_and_flush_like_v4() -> None:
    tab, clock = make_table()
    d = dest6()
    for i in range(50):
        tab.new(TCP, CLIENT6 + i, 40000 + i, VIP6, 80, RS6, 8080, 0, d, timeout=10.0)
    clock.advance(11)
    tab.tick()
    assert tab.count == 0 and d.inactconns == 0
    tab.new(TCP, CLIENT6, 1, VIP6, 80, RS6, 8080, 0, d)
    tab.flush()
    assert tab.count == 0
