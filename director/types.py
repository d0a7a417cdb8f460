"""Small shared nouns: protocols, conn flags, dest flags, the injected clock.

Values follow Linux IPVS (include/uapi/linux/ip_vs.h) so flags read the same as in
`ipvsadm -Lnc` and in the kernel sync protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum, IntFlag

Clock = Callable[[], float]
"""Monotonic seconds. The core never reads time itself: it is handed a clock."""


class Proto(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


class ConnFlags(IntFlag):
    MASQ = 0x0000
    LOCALNODE = 0x0001
    TUNNEL = 0x0002
    DROUTE = 0x0003
    BYPASS = 0x0004
    FWD_MASK = 0x0007
    SYNC = 0x0020
    HASHED = 0x0040
    NOOUTPUT = 0x0080
    INACTIVE = 0x0100
    NO_CPORT = 0x0800
    TEMPLATE = 0x1000
    ONE_PACKET = 0x2000


LOCAL_CONN_FLAGS = ConnFlags.HASHED | ConnFlags.SYNC
"""Flags that describe one node's copy of an entry, never synced."""


class FwdMethod(IntEnum):
    """Forwarding method; the value is the conn flag it sets (ConnFlags.FWD_MASK bits)."""

    NAT = 0x0000
    LOCALNODE = 0x0001
    TUN = 0x0002
    DR = 0x0003
    BYPASS = 0x0004


class DestFlags(IntFlag):
    AVAILABLE = 0x0001
    OVERLOAD = 0x0002


class SvcFlags(IntFlag):
    PERSISTENT = 0x0001
    HASHED = 0x0002
    ONEPACKET = 0x0004
