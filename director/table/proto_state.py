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
"""

from __future__ import annotations

from director.table.conn import Conn, ConnTable
from director.table.tcp import TCP_TIMEOUTS_DOS_CAP, Direction, TcpState, Timeouts, tcp_transition
from director.types import ConnFlags, Proto

__all__ = ["Direction", "TcpState", "Timeouts", "update"]

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
