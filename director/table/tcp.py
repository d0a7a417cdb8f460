"""TCP state machine of IPVS as transition tables, and the run-time adjustable timeouts.

Theory of operation
-------------------
IPVS does not track TCP like an endpoint: it watches the flags of packets crossing the
director and moves the conn through a small state set (``TcpState``) using a table indexed by
(direction rows, flag class, current state). The flag class is the first of RST, SYN, FIN, ACK
present in the packet (in that order); a packet with none of them sends the conn to CLOSE.

Rows come in three groups like ``ip_vs_proto_tcp.c``:

* ``INPUT``  - client -> director packets of a NAT conn (both directions are seen);
* ``OUTPUT`` - real server -> client packets of a NAT conn;
* ``INPUT_ONLY`` - client packets of a conn whose replies bypass us (DR, TUN, local node).

``TCP_STATES`` is the normal table; ``TCP_STATES_DOS`` is the ``secure_tcp`` defense table,
which keeps half-open conns in SYNACK longer. Each state has a timeout (``Timeouts``); the
table user (``director.table.proto_state``) applies the new state and its timeout to the conn via
``ConnTable.set_state``, which also moves the conn between the dest's active and inactive
counters when it enters or leaves ESTABLISHED.
"""

from __future__ import annotations

from enum import IntEnum

from director.table.udp import ICMP_TIMEOUT, UDP_TIMEOUT


class TcpState(IntEnum):
    NONE = 0
    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT = 4
    TIME_WAIT = 5
    CLOSE = 6
    CLOSE_WAIT = 7
    LAST_ACK = 8
    LISTEN = 9
    SYNACK = 10


class Direction(IntEnum):
    """Packet direction relative to the conn (``IP_VS_DIR_*``)."""

    INPUT = 0  # client -> vip
    OUTPUT = 1  # real server -> client (NAT only)
    INPUT_ONLY = 2  # client -> vip on a conn whose replies we never see


# TCP header flag bits.
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

TCP_TIMEOUTS: dict[TcpState, float] = {
    TcpState.NONE: 2.0,
    TcpState.ESTABLISHED: 900.0,
    TcpState.SYN_SENT: 120.0,
    TcpState.SYN_RECV: 60.0,
    TcpState.FIN_WAIT: 120.0,
    TcpState.TIME_WAIT: 120.0,
    TcpState.CLOSE: 10.0,
    TcpState.CLOSE_WAIT: 60.0,
    TcpState.LAST_ACK: 30.0,
    TcpState.LISTEN: 120.0,
    TcpState.SYNACK: 120.0,
}

TCP_TIMEOUTS_DOS_CAP: tuple[float, ...] = (
    2.0, float("inf"), 60.0, 10.0, 60.0, 60.0, 10.0, 60.0, 30.0, 60.0, 30.0,
)
"""secure_tcp: a state's timeout is at most this (indexed by TcpState) while the DoS table is in use, like
the short timeout table of IPVS's secure_tcp defense: half-open entries (SYN_RECV 10 s, SYNACK 30 s) and
closing ones go sooner; ESTABLISHED keeps its configured timeout (live flows are not shortened)."""

_S = TcpState
NO, ES, SS, SR, FW, TW, CL, CW, LA, LI, SA = (
    _S.NONE, _S.ESTABLISHED, _S.SYN_SENT, _S.SYN_RECV, _S.FIN_WAIT, _S.TIME_WAIT,
    _S.CLOSE, _S.CLOSE_WAIT, _S.LAST_ACK, _S.LISTEN, _S.SYNACK,
)

Row = tuple[TcpState, ...]

# Columns: current state NO ES SS SR FW TW CL CW LA LI SA. Rows: syn fin ack rst per group.
TCP_STATES: tuple[Row, ...] = (
    # INPUT
    (SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR),  # syn
    (CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW),  # fin
    (CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES),  # ack
    (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR),  # rst
    # OUTPUT
    (SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR),  # syn
    (TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW),  # fin
    (ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES),  # ack
    (CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL),  # rst
    # INPUT_ONLY
    (SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR),  # syn
    (CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW),  # fin
    (CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES),  # ack
    (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL),  # rst
)

TCP_STATES_DOS: tuple[Row, ...] = (
    # INPUT
    (SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA),  # syn
    (CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA),  # fin
    (CL, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA),  # ack
    (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL),  # rst
    # OUTPUT
    (SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA),  # syn
    (TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW),  # fin
    (ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES),  # ack
    (CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL),  # rst
    # INPUT_ONLY
    (SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA),  # syn
    (CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW),  # fin
    (CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES),  # ack
    (CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL),  # rst
)

def _flag_index(flags: int) -> int:
    if flags & RST:
        return 3
    if flags & SYN:
        return 0
    if flags & FIN:
        return 1
    if flags & ACK:
        return 2
    return -1


_FLAG_INDEX = tuple(_flag_index(f) for f in range(256))


def tcp_transition(state: int, direction: int, tcp_flags: int, input_only: bool,
                   secure: bool = False) -> TcpState:
    """Next state for a packet with ``tcp_flags`` seen in ``direction``.

    ``input_only`` (DR/TUN/local conns) switches client packets to the INPUT_ONLY rows; an
    OUTPUT packet always uses the OUTPUT rows. ``secure`` selects the secure_tcp table.
    Raises ``ValueError`` for an unknown state or direction (a caller bug, not bad input).
    """
    if not 0 <= state <= 10:
        raise ValueError(f"unknown TCP state {state}")
    if direction == 1:  # OUTPUT (plain ints: this runs per packet)
        off = 4
    elif direction == 0:  # INPUT
        off = 8 if input_only else 0
    elif direction == 2:  # INPUT_ONLY
        off = 8
    else:
        raise ValueError(f"unknown direction {direction}")
    idx = _FLAG_INDEX[tcp_flags & 0xFF]
    if idx < 0:
        return TcpState.CLOSE
    return (TCP_STATES_DOS if secure else TCP_STATES)[off + idx][state]


_ALIASES = {"tcp": "established", "tcpfin": "fin_wait"}


class Timeouts:
    """Per-state timeouts (seconds), changeable at run time like ``ipvsadm --set tcp tcpfin udp``.

    ``tcp[state]`` is a list indexed by ``TcpState`` (fast on the packet path); ``udp`` and
    ``icmp`` are single values; ``secure_tcp`` selects ``TCP_STATES_DOS``.
    """

    __slots__ = ("tcp", "udp", "icmp", "secure_tcp")

    def __init__(self) -> None:
        self.tcp: list[float] = [TCP_TIMEOUTS[s] for s in TcpState]
        self.udp = UDP_TIMEOUT
        self.icmp = ICMP_TIMEOUT
        self.secure_tcp = False

    def set(self, name: str, seconds: float) -> None:
        """Set one timeout by name: a TCP state name (``fin_wait``), ``tcp``, ``tcpfin``,
        ``udp`` or ``icmp``. Raises ``ValueError`` for unknown names or non-positive values."""
        if not seconds > 0:
            raise ValueError(f"timeout {name}={seconds!r} must be > 0")
        key = _ALIASES.get(name.lower(), name.lower())
        if key == "udp":
            self.udp = float(seconds)
        elif key == "icmp":
            self.icmp = float(seconds)
        elif key.upper() in TcpState.__members__:
            self.tcp[TcpState[key.upper()]] = float(seconds)
        else:
            raise ValueError(f"unknown timeout name {name!r}")

    def get(self, name: str) -> float:
        key = _ALIASES.get(name.lower(), name.lower())
        if key == "udp":
            return self.udp
        if key == "icmp":
            return self.icmp
        if key.upper() in TcpState.__members__:
            return self.tcp[TcpState[key.upper()]]
        raise ValueError(f"unknown timeout name {name!r}")

    def set_ipvsadm(self, tcp: float = 0, tcpfin: float = 0, udp: float = 0) -> None:
        """``ipvsadm --set tcp tcpfin udp``: a 0 leaves that value unchanged."""
        for name, value in (("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)):
            if value:
                self.set(name, value)

    def as_dict(self) -> dict[str, float]:
        out = {s.name.lower(): self.tcp[s] for s in TcpState}
        out["udp"] = self.udp
        out["icmp"] = self.icmp
        return out


__all__ = [
    "ACK", "FIN", "PSH", "RST", "SYN", "TCP_STATES", "TCP_STATES_DOS", "TCP_TIMEOUTS", "TCP_TIMEOUTS_DOS_CAP",
    "Direction", "TcpState", "Timeouts", "tcp_transition",
]
