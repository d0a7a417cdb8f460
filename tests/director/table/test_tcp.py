"""TCP state tables, timeouts (ipvsadm --set), and proto_state applying them to conns."""

from __future__ import annotations

import pytest

from director.table import proto_state
from director.table.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TCP_STATES,
    TCP_STATES_DOS,
    Direction,
    TcpState,
    Timeouts,
    tcp_transition,
)
from director.types import ConnFlags, FwdMethod
from tests.director.table.conn_helpers import ICMP, UDP, make_dest, make_table, new_conn

S = TcpState
IN, OUT = Direction.INPUT, Direction.OUTPUT


def test_states_in_linux_order() -> None:
    assert [s.name for s in TcpState] == [
        "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
        "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"]


def test_default_timeouts() -> None:
    t = Timeouts()
    assert t.as_dict() == {
        "none": 2, "established": 900, "syn_sent": 120, "syn_recv": 60, "fin_wait": 120,
        "time_wait": 120, "close": 10, "close_wait": 60, "last_ack": 30, "listen": 120,
        "synack": 120, "udp": 300, "icmp": 60}


def test_tables_have_three_row_groups_of_four_by_eleven() -> None:
    for table in (TCP_STATES, TCP_STATES_DOS):
        assert len(table) == 12 and all(len(row) == 11 for row in table)


def _run(seq: list[tuple[Direction, int]], input_only: bool = False, secure: bool = False) -> list[S]:
    state = S.NONE
    out = []
    for direction, flags in seq:
        state = tcp_transition(state, direction, flags, input_only, secure)
        out.append(state)
    return out


def test_nat_handshake_data_and_close() -> None:
    assert _run([(IN, SYN), (OUT, SYN | ACK), (IN, ACK), (IN, ACK | PSH), (IN, FIN | ACK),
                 (OUT, ACK), (OUT, FIN | ACK), (IN, ACK)]) == [
        S.SYN_RECV, S.SYN_RECV, S.ESTABLISHED, S.ESTABLISHED, S.CLOSE_WAIT, S.CLOSE_WAIT,
        S.TIME_WAIT, S.TIME_WAIT]


def test_server_closes_first() -> None:
    assert _run([(IN, SYN), (OUT, SYN | ACK), (IN, ACK), (OUT, FIN | ACK), (IN, ACK)]) == [
        S.SYN_RECV, S.SYN_RECV, S.ESTABLISHED, S.FIN_WAIT, S.FIN_WAIT]


def test_input_only_table_for_dr_tun() -> None:
    assert _run([(IN, SYN), (IN, ACK), (IN, FIN | ACK)], input_only=True) == [
        S.SYN_RECV, S.ESTABLISHED, S.FIN_WAIT]
    # the two-direction table would have gone to CLOSE_WAIT on the client FIN
    assert _run([(IN, SYN), (IN, ACK), (IN, FIN | ACK)])[-1] == S.CLOSE_WAIT
    assert tcp_transition(S.ESTABLISHED, Direction.INPUT_ONLY, FIN, False) == S.FIN_WAIT


def test_rst_closes_established() -> None:
    assert tcp_transition(S.ESTABLISHED, IN, RST | ACK, False) == S.CLOSE
    assert tcp_transition(S.ESTABLISHED, OUT, RST, False) == S.CLOSE


def test_flag_priority_rst_syn_fin_ack() -> None:
    assert tcp_transition(S.ESTABLISHED, IN, RST | SYN | FIN | ACK, False) == S.CLOSE
    assert tcp_transition(S.ESTABLISHED, IN, SYN | FIN | ACK, False) == S.ESTABLISHED
    assert tcp_transition(S.ESTABLISHED, IN, FIN | ACK, False) == S.CLOSE_WAIT


def test_packet_without_known_flags_goes_to_close() -> None:
    assert tcp_transition(S.ESTABLISHED, IN, PSH, False) == S.CLOSE
    assert tcp_transition(S.ESTABLISHED, IN, 0, False) == S.CLOSE


def test_secure_tcp_table_keeps_half_open_in_synack() -> None:
    assert _run([(IN, SYN), (OUT, SYN | ACK)], secure=True) == [S.SYN_RECV, S.SYNACK]
    assert _run([(IN, SYN)], input_only=True, secure=True) == [S.SYNACK]
    assert tcp_transition(S.SYN_RECV, IN, ACK, False, secure=True) == S.SYN_RECV


def test_unknown_state_or_direction_raises() -> None:
    with pytest.raises(ValueError):
        tcp_transition(11, IN, SYN, False)
    with pytest.raises(ValueError):
        tcp_transition(0, 7, SYN, False)


def test_timeouts_set_like_ipvsadm() -> None:
    t = Timeouts()
    t.set_ipvsadm(tcp=3600, tcpfin=30, udp=0)
    assert t.tcp[S.ESTABLISHED] == 3600 and t.tcp[S.FIN_WAIT] == 30 and t.udp == 300
    t.set("udp", 10)
    t.set("close_wait", 5)
    t.set("ICMP", 7)
    assert (t.udp, t.tcp[S.CLOSE_WAIT], t.icmp) == (10, 5, 7)
    assert t.get("tcpfin") == 30
    with pytest.raises(ValueError):
        t.set("bogus", 1)
    with pytest.raises(ValueError):
        t.set("tcp", 0)


def test_update_moves_conn_between_inactive_and_active_counters() -> None:
    tab, _ = make_table()
    dest = make_dest()
    c = new_conn(tab, dest)
    to = Timeouts()
    assert (dest.activeconns, dest.inactconns) == (0, 1)
    proto_state.update(tab, c, IN, SYN, to)
    assert c.state == S.SYN_RECV and c.timeout == 60 and c.flags & ConnFlags.INACTIVE
    proto_state.update(tab, c, OUT, SYN | ACK, to)
    proto_state.update(tab, c, IN, ACK, to)
    assert c.state == S.ESTABLISHED and c.timeout == 900
    assert (dest.activeconns, dest.inactconns) == (1, 0) and not c.flags & ConnFlags.INACTIVE
    proto_state.update(tab, c, IN, FIN | ACK, to)
    assert c.state == S.CLOSE_WAIT and c.timeout == 60
    assert (dest.activeconns, dest.inactconns) == (0, 1) and c.flags & ConnFlags.INACTIVE


def test_update_uses_input_only_rows_for_dr() -> None:
    tab, _ = make_table()
    dest = make_dest(FwdMethod.DR)
    c = new_conn(tab, dest)
    to = Timeouts()
    for flags in (SYN, ACK, FIN | ACK):
        proto_state.update(tab, c, IN, flags, to)
    assert c.state == S.FIN_WAIT and c.timeout == 120


def test_runtime_timeout_change_applies_to_next_packet() -> None:
    tab, clock = make_table()
    c = new_conn(tab, make_dest())
    to = Timeouts()
    to.set("tcp", 50)
    proto_state.update(tab, c, IN, SYN, to)
    proto_state.update(tab, c, IN, ACK, to)
    assert c.timeout == 50 and c.expires == clock.now + 50


def test_udp_and_icmp_take_their_timeouts_and_stay_inactive() -> None:
    tab, _ = make_table()
    dest = make_dest()
    u = new_conn(tab, dest, protocol=UDP)
    i = new_conn(tab, dest, protocol=ICMP, cport=1)
    to = Timeouts()
    assert proto_state.update(tab, u, IN, 0, to) == 0
    assert proto_state.update(tab, i, OUT, 0, to) == 0
    assert (u.timeout, i.timeout) == (300, 60)
    assert (dest.activeconns, dest.inactconns) == (0, 2)


def test_set_state_on_template_never_touches_active_counters() -> None:
    tab, _ = make_table()
    dest = make_dest()
    t = tab.new(6, 1, 0, 2, 80, dest.addr, dest.port, int(ConnFlags.TEMPLATE), dest)
    tab.set_state(t, int(S.ESTABLISHED), 900)
    assert (dest.activeconns, dest.inactconns, dest.persistconns) == (0, 0, 1)
