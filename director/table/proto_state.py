"""Apply a packet's protocol state transition to a conn (TCP table, UDP/ICMP timeouts).

Theory of operation
-------------------
The packet path calls ``update(table, conn, direction, tcp_flags, timeouts)`` once per packet
of a known conn. For TCP the next state comes from ``director.table.tcp.tcp_transition``: NAT conns
use the two-direction rows, conns whose replies bypass the director (DR, TUN, local node:
forwarding method other than MASQ) use the INPUT_ONLY rows for client packets, and
``timeouts.secure_tcp`` switches to the secure_tcp (DoS) table and caps each state's timeout by
``TCP_TIMEOUTS_DOS_CAP`` (shorter half-open timeouts). The result and the state's
timeout are applied with ``ConnTable.set_state``, which re-arms the timer, moves the conn
between its dest's active/inactive counters on entering/leaving ESTABLISHED and emits UPDATE
when the state changed. UDP and ICMP have one state; each packet re-arms the conn with the
UDP (300 s) or ICMP (60 s) timeout. Other protocols are just refreshed.

``step`` is what the packet path runs per packet: an ESTABLISHED TCP conn hit by a plain ACK, or a
UDP conn, whose timeout stays the same only needs its timer refreshed (no transition, no event);
anything else is ``update``. The IPv4 hot path (``director.dataplane.core``) inlines the same rule.
"""

from __future__ import annotations

from director.table.conn import Conn, ConnTable
from director.table.tcp import (
    ACK,
    FIN,
    RST,
    SYN,
    TCP_TIMEOUTS_DOS_CAP,
    Direction,
    TcpState,
    Timeouts,
    tcp_transition,
)
from director.types import ConnFlags, Proto

__all__ = ["Direction", "TcpState", "Timeouts", "step", "update"]

_TCP, _UDP, _ICMP = int(Proto.TCP), int(Proto.UDP), int(Proto.ICMP)
_FWD_MASK = int(ConnFlags.FWD_MASK)
_MASQ = int(ConnFlags.MASQ)
_DOS_CAP = TCP_TIMEOUTS_DOS_CAP


def update(table: ConnTable, conn: Conn, direction: int, tcp_flags: int, timeouts: Timeouts) -> int:
    """Run the state machine for one packet; returns the conn's new state."""
    proto = conn.protocol
    if proto == _TCP:
        input_only = (conn.flags & _FWD_MASK) != _MASQ
        secure = timeouts.secure_tcp
        new = tcp_transition(conn.state, direction, tcp_flags, input_only, secure)
        t = timeouts.tcp[new]
        if secure and t > _DOS_CAP[new]:
            t = _DOS_CAP[new]
        table.set_state(conn, new, t)
        return new
    if proto == _UDP:
        table.set_state(conn, 0, timeouts.udp)
        return 0
    if proto == _ICMP:
        table.set_state(conn, 0, timeouts.icmp)
        return 0
    table.refresh(conn)
    return conn.state


_ESTABLISHED = int(TcpState.ESTABLISHED)
_ACK_ONLY_MASK = FIN | SYN | RST | ACK


def step(table: ConnTable, conn: Conn, direction: int, tcp_flags: int, timeouts: Timeouts) -> None:
    """One packet of a known conn: a timer refresh when nothing else can change, else ``update``."""
    t = conn.timeout
    if conn.protocol == _TCP:
        if (conn.state == _ESTABLISHED and tcp_flags & _ACK_ONLY_MASK == ACK
                and t == timeouts.tcp[_ESTABLISHED]):
            table.refresh(conn)
            return
    elif conn.protocol == _UDP and t == timeouts.udp:
        table.refresh(conn)
        return
    update(table, conn, direction, tcp_flags if conn.protocol == _TCP else 0, timeouts)
