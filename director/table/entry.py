"""One conn-table entry (``Conn``), its immutable ``snapshot`` and the constants they share.

Theory of operation
-------------------
A ``Conn`` is one flow, or a persistence template (``TEMPLATE`` flag). Its client triple
(protocol, caddr, cport) is packed into one int ``_key = caddr << 24 | protocol << 16 | cport``;
``protocol``/``caddr``/``cport`` are read-only views of it. Flags are plain ints (``ConnFlags``
values, canonical objects from ``canon``); ``ConnTable`` is the only writer. The plain-int flag
and state constants below are the one definition the table, the packet path and syncd use
(IntFlag arithmetic is far too slow for the packet path).

*Addresses of both families* are plain ints in one space: an IPv4 address is below 2**32 and an
IPv6 address is at or above it (:func:`is_v6`), because no IPv6 address in ``::/96`` (unspecified,
loopback, the deprecated IPv4-compatible block) is ever admitted: the config refuses them as VIPs
and dests, the packet path drops packets from or to them (``Drop.BAD_ADDR``), and sync must refuse
a 16-byte address below 2**32 (:func:`addr_fits`). So the packed key of an IPv6 client (a 152-bit
int) never equals an IPv4 client's, the v4 key and its hot path stay exactly as they were, and the
family of any address (and so of any conn, VIP or dest) is read off the int itself. The sync wire
already sends an address as 4 bytes below 2**32 and as 16 bytes above.

``snapshot(conn)`` is the immutable ``ConnSnapshot`` the event feed and sync snapshots carry;
``dest_key(dest)`` serves a dest's key from a bounded identity cache.
"""

from __future__ import annotations

from director.services.service import Dest, DestKey
from director.table.events import ConnKey, ConnSnapshot
from director.table.tcp import TcpState
from director.table.timer import Timed
from director.types import ConnFlags, DestFlags, Proto

INITIAL_TIMEOUT = 3.0  # a new entry's timeout until its protocol sets one
EXPIRE_LATER = 60.0  # ip_vs_conn_expire: timeout when the entry must wait
INVALID_PORT = 65535  # check_template: vport/dport of an invalidated template
TODROP_RATE = (0, 1, 2, 3, 4, 5, 6, 7, 8)  # todrop_entry: drop 1 in i for in_pkts == i

# Plain-int flag values: IntFlag arithmetic is far too slow for the packet path.
F_FWD_MASK = int(ConnFlags.FWD_MASK)
F_BYPASS = int(ConnFlags.BYPASS)
F_SYNC = int(ConnFlags.SYNC)
F_HASHED = int(ConnFlags.HASHED)
F_NOOUTPUT = int(ConnFlags.NOOUTPUT)
F_INACTIVE = int(ConnFlags.INACTIVE)
F_NO_CPORT = int(ConnFlags.NO_CPORT)
F_TEMPLATE = int(ConnFlags.TEMPLATE)
D_AVAILABLE = int(DestFlags.AVAILABLE)
D_OVERLOAD = int(DestFlags.OVERLOAD)
TCP = int(Proto.TCP)
S_ESTABLISHED = int(TcpState.ESTABLISHED)
S_SYN_RECV = int(TcpState.SYN_RECV)
S_SYNACK = int(TcpState.SYNACK)

_FLAG_OBJS = tuple(range(0x4000))  # canonical int objects for flag values (saves 32 B/conn)


def canon(flags: int) -> int:
    """The shared int object of a flag value (entries hold one of these, not a private int)."""
    return _FLAG_OBJS[flags] if 0 <= flags < 0x4000 else flags


V6_MIN = 1 << 32
"""The lowest IPv6 address int the table admits (``::1:0:0``); every lower int is IPv4."""
ADDR_MAX = (1 << 128) - 1


def is_v6(addr: int) -> bool:
    """An IPv6 address (the table's one address space: module docstring)."""
    return addr >= V6_MIN


def addr_fits(addr: int, length: int) -> bool:
    """``addr`` decoded from ``length`` bytes (4 or 16) is of that family: what sync must check so a
    16-byte ``::a.b.c.d`` never stands for the IPv4 ``a.b.c.d``."""
    return 0 <= addr < V6_MIN if length == 4 else length == 16 and V6_MIN <= addr <= ADDR_MAX


def make_key(protocol: int, caddr: int, cport: int) -> int:
    """The packed client triple a conn is hashed by."""
    return (caddr << 24) | (protocol << 16) | cport


class Conn(Timed):
    """One table entry. Read anything; only ``ConnTable`` writes (``in_pkts``: packet path)."""

    __slots__ = ("_key", "vaddr", "vport", "daddr", "dport", "fwmark", "flags", "state", "timeout",
                 "dest", "control", "n_control", "in_pkts", "created", "_next")

    def __init__(self, key: int, vaddr: int, vport: int, daddr: int, dport: int, fwmark: int,
                 flags: int, state: int, timeout: float, created: float) -> None:
        self._key = key
        self.vaddr = vaddr
        self.vport = vport
        self.daddr = daddr
        self.dport = dport
        self.fwmark = fwmark
        self.flags = flags
        self.state = state
        self.timeout = timeout
        self.expires = created + timeout
        self.created = created
        self.dest: Dest | None = None
        self.control: Conn | None = None
        self.n_control = 0
        self.in_pkts = 0
        self._next: Conn | None = None
        self._tslot = None

    @property
    def protocol(self) -> int:
        return (self._key >> 16) & 0xFF

    @property
    def caddr(self) -> int:
        return self._key >> 24

    @property
    def cport(self) -> int:
        return self._key & 0xFFFF

    @property
    def hashed(self) -> bool:
        return bool(self.flags & F_HASHED)

    @property
    def key(self) -> ConnKey:
        k = self._key
        return ((k >> 16) & 0xFF, k >> 24, k & 0xFFFF, self.vaddr, self.vport, self.daddr,
                self.dport, self.fwmark, bool(self.flags & F_TEMPLATE))

    def __repr__(self) -> str:
        return (f"Conn(p={self.protocol} c={self.caddr:#x}:{self.cport} v={self.vaddr:#x}:{self.vport} "
                f"d={self.daddr:#x}:{self.dport} flags={self.flags:#x} state={self.state})")


_tuple_new = tuple.__new__  # builds NamedTuples without their Python-level __new__


DEST_KEYS: dict[Dest, DestKey] = {}
DEST_KEYS_MAX = 4096


def chain(bucket: dict[int, Conn]) -> list[Conn]:
    """Every entry of one bucket of the table (each key's chain, newest first)."""
    out: list[Conn] = []
    for head in bucket.values():
        c: Conn | None = head
        while c is not None:
            out.append(c)
            c = c._next
    return out


def dest_key(dest: Dest) -> DestKey:
    """``dest.key`` from an identity cache (a dest's key never changes; the cache is bounded)."""
    k = DEST_KEYS.get(dest)
    if k is None:
        if len(DEST_KEYS) >= DEST_KEYS_MAX:
            DEST_KEYS.clear()
        k = DEST_KEYS[dest] = dest.key
    return k


def snapshot(conn: Conn) -> ConnSnapshot:
    """Immutable copy of an entry for the event feed / sync snapshots."""
    k, f, d, ct = conn._key, conn.flags, conn.dest, conn.control
    key = ((k >> 16) & 0xFF, k >> 24, k & 0xFFFF, conn.vaddr, conn.vport, conn.daddr, conn.dport,
           conn.fwmark, bool(f & F_TEMPLATE))
    return _tuple_new(ConnSnapshot, (key, f, conn.state, conn.timeout, conn.expires,
                                     dest_key(d) if d is not None else None,
                                     ct.key if ct is not None else None, conn.in_pkts))


# Ranges of the entry fields, checked where entries come from outside (sync decode).
KNOWN_PROTOCOLS = frozenset(int(p) for p in Proto)
KNOWN_CONN_FLAGS = int(F_FWD_MASK | ConnFlags.SYNC | ConnFlags.HASHED | ConnFlags.NOOUTPUT
                       | ConnFlags.INACTIVE | ConnFlags.NO_CPORT | ConnFlags.TEMPLATE | ConnFlags.ONE_PACKET)
"""Every conn flag bit this table knows; any other bit is garbage."""
MAX_PORT = 0xFFFF
MAX_TIMEOUT_MS = 2**31 - 1
"""Longest timer an entry takes, in ms (what the kernel's jiffies-based timeouts hold; the config's
``MAX_SECONDS`` is the same bound)."""
ADDR_LENGTHS = (4, 16)
"""Bytes of an address on the wire: IPv4, IPv6."""
MAX_STATE = {int(Proto.TCP): max(int(s) for s in TcpState), int(Proto.UDP): 0, int(Proto.ICMP): 0}
"""Highest valid ``state`` per protocol (TCP: TcpState; UDP and ICMP have one state, 0)."""


__all__ = [
    "ADDR_LENGTHS", "ADDR_MAX", "DEST_KEYS", "D_AVAILABLE", "D_OVERLOAD", "EXPIRE_LATER", "F_BYPASS",
    "F_FWD_MASK",
    "F_HASHED", "F_INACTIVE", "F_NOOUTPUT", "F_NO_CPORT", "F_SYNC", "F_TEMPLATE", "INITIAL_TIMEOUT",
    "INVALID_PORT", "KNOWN_CONN_FLAGS", "KNOWN_PROTOCOLS", "MAX_PORT", "MAX_STATE", "MAX_TIMEOUT_MS",
    "S_ESTABLISHED", "S_SYNACK", "S_SYN_RECV", "TCP", "TODROP_RATE", "Conn", "canon", "chain", "dest_key",
    "V6_MIN", "addr_fits", "is_v6", "make_key", "snapshot",
]
