"""The IPVS defense levels (director.table.defense_policy) and their effect on the packet path."""

from __future__ import annotations

import pytest

from director.dataplane.core import EXT
from director.dataplane.packet import Drop
from director.table.defense_policy import (
    DefensePolicy,
    DefenseSettings,
    DropCounter,
    Mode,
    band,
    drop_rate_for,
    mode_name,
    mode_of,
)
from director.table.tcp import TCP_TIMEOUTS_DOS_CAP, TcpState
from tests.director.dataplane.test_core import client_pkt, drops, make_lab, send
from tests.director.table.conn_helpers import TEMPLATE, make_dest, make_table, new_conn

MIB = 1 << 20
S = DefenseSettings(conn_threshold=1000, max_conns=2000, rss_threshold=100 * MIB, rss_max=200 * MIB)


def test_band_and_ipvs_drop_rate() -> None:
    assert band(1000, 1000, 2000) == 0.0
    assert band(1500, 1000, 2000) == 0.5
    assert band(5000, 1000, 2000) == 1.0
    assert band(5000, 1000, 0) == 0.0  # no maximum: resource not watched
    # amemthresh / (amemthresh - availmem): just past the threshold few drops, at the maximum all
    assert drop_rate_for(0.0) == 0
    assert drop_rate_for(0.01) == 100
    assert drop_rate_for(0.5) == 2
    assert drop_rate_for(1.0) == 1


def test_auto_engages_under_pressure_and_releases() -> None:
    p = DefensePolicy(S)
    assert p.decision == p.update(10, 10 * MIB, 1.0)
    assert (p.drop_entry, p.drop_packet, p.secure_tcp) == (Mode.AUTO,) * 3
    assert not p.decision.drop_entry and p.decision.drop_rate == 0 and not p.decision.secure_tcp
    d = p.update(1500, 10 * MIB, 2.0)  # the table half way into its band
    assert (p.drop_entry, p.drop_packet, p.secure_tcp) == (Mode.ENGAGED,) * 3
    assert d.drop_entry and d.drop_rate == 2 and d.secure_tcp
    assert p.stats.engaged == 1 and p.stats.since == 2.0
    d = p.update(10, 190 * MIB, 3.0)  # memory 90 % into its band: nearly every new conn dropped
    assert d.drop_rate == 1 and p.stats.engaged == 1
    d = p.update(10, 10 * MIB, 4.0)
    assert (p.drop_entry, p.drop_packet, p.secure_tcp) == (Mode.AUTO,) * 3
    assert d == p.decision and not d.drop_entry and d.drop_rate == 0 and not d.secure_tcp
    assert p.stats.since is None
    p.update(1999, 0, 5.0)
    assert p.stats.engaged == 2
    assert mode_name(p.drop_entry) == "auto (engaged)"


def test_off_and_always_ignore_pressure() -> None:
    p = DefensePolicy(DefenseSettings(Mode.OFF, Mode.OFF, Mode.OFF, conn_threshold=1, max_conns=2))
    d = p.update(10, 0, 1.0)
    assert not d.drop_entry and d.drop_rate == 0 and not d.secure_tcp
    p = DefensePolicy(DefenseSettings(Mode.ALWAYS, Mode.ALWAYS, Mode.ALWAYS, am_droprate=7))
    d = p.update(0, 0, 1.0)
    assert d.drop_entry and d.drop_rate == 7 and d.secure_tcp
    assert mode_name(p.drop_packet) == "always"


def test_mode_names() -> None:
    assert [mode_of(n) for n in ("off", "auto", "always")] == [Mode.OFF, Mode.AUTO, Mode.ALWAYS]
    with pytest.raises(ValueError, match="off, auto, always"):
        mode_of("engaged")


def test_drop_counter_drops_one_in_rate() -> None:
    c = DropCounter()
    assert not any(c.todrop() for _ in range(100))
    c.set_rate(4)
    assert [c.todrop() for _ in range(8)] == [False, False, False, True] * 2
    c.set_rate(1)
    assert all(c.todrop() for _ in range(5))


def test_packet_path_drop_packet_and_table_full() -> None:
    lab = make_lab()
    d = lab.director
    d.gate.todrop.set_rate(2)
    created = [send(lab, client_pkt("S", sport=41000 + i), EXT) is not None for i in range(10)]
    assert created.count(True) == 5 and drops(lab, Drop.DEFENSE_DROP) == 5
    assert lab.table.count == 5
    # established flows are untouched: their packets never reach the defense
    d.gate.todrop.set_rate(1)
    assert send(lab, client_pkt("A", sport=41000), EXT) is not None
    d.gate.todrop.set_rate(0)
    d.gate.max_conns = lab.table.count + 2
    for i in range(10):
        send(lab, client_pkt("S", sport=42000 + i), EXT)
    assert lab.table.count == d.gate.max_conns and drops(lab, Drop.TABLE_FULL) == 8


def test_secure_tcp_uses_dos_table_and_short_half_open_timeouts() -> None:
    lab = make_lab()
    tmo = lab.director.cfg.timeouts
    send(lab, client_pkt("S", sport=43000), EXT)
    c = next(iter(lab.table))
    assert c.state == TcpState.SYN_RECV and c.timeout == tmo.tcp[TcpState.SYN_RECV] == 60.0
    tmo.secure_tcp = True
    send(lab, client_pkt("S", sport=43001), EXT)
    c2 = next(x for x in lab.table if x.cport == 43001)
    assert c2.state == TcpState.SYN_RECV and c2.timeout == TCP_TIMEOUTS_DOS_CAP[TcpState.SYN_RECV] == 10.0
    # the DoS table: a client ACK alone does not establish a NAT conn
    send(lab, client_pkt("A", sport=43001), EXT)
    assert c2.state == TcpState.SYN_RECV
    assert TCP_TIMEOUTS_DOS_CAP[TcpState.ESTABLISHED] >= tmo.tcp[TcpState.ESTABLISHED]


def test_templates_counted_without_a_walk() -> None:
    tab, clock = make_table()
    dest = make_dest()
    t = tab.new(6, 0x0A000000, 0, 1, 80, 2, 8080, TEMPLATE, dest, timeout=5.0)
    c = new_conn(tab, dest)
    tab.control_add(c, t)
    assert tab.template_count == 1 and tab.count == 2
    tab.expire_now(c)
    clock.advance(1.0)
    tab.tick()
    assert tab.template_count == 1
    clock.advance(10.0)
    tab.tick()
    assert tab.template_count == 0 and tab.count == 0
