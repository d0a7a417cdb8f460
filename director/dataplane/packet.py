"""Parse Ethernet / IPv4 / TCP / UDP / ICMP headers in place, and why a frame is dropped.

Theory of operation
-------------------
The packet path never copies a frame to read it: :func:`parse_ipv4` reads the Ethernet and IPv4
headers with one precompiled ``struct.unpack_from`` and the L4 ports with a second, and returns a
plain tuple of the fields the director needs (or a :class:`Drop` reason). It never raises on bad
input: every malformed frame maps to one reason, and the caller counts it in
:class:`DropCounters` (a list indexed by reason, cheap to bump on the hot path).

Wire layout (offsets from the start of the frame)::

    0      6      12   14                                                 14+IHL
    +------+------+----+-------------------------------------------------+----------
    | dmac | smac |type| ver/ihl tos totlen id frag ttl proto csum sa da | opts | L4 ...
    +------+------+----+-------------------------------------------------+----------

Decisions
---------
* Only untagged Ethernet II IPv4 is parsed here (ARP is handled by the caller; IPv6 by
  :mod:`director.dataplane.packet6`; anything else: ``NOT_IPV4``; the packet path counts
  802.1Q/802.1ad frames as ``VLAN_TAGGED``, and the I/O
  layer puts a tag the kernel moved into packet metadata back into the frame, so it is seen).
* IP options (IHL > 5) are **handled**: the L4 header is found at ``14 + IHL*4`` and the options
  are forwarded untouched (the header checksum update is incremental, so they stay covered).
* Fragments are **dropped by default**, or (``CoreConfig.forward_fragments``) **forwarded without
  reassembly**: :func:`parse_ipv4` rejects every fragment
  (``FRAGMENT``) unless asked to accept first fragments (``first_fragment=True``: offset 0, MF
  set, the whole L4 header inside; the UDP length may then exceed the fragment). The caller
  forwards a first fragment like any packet (an incremental L4 checksum update is valid for the
  whole datagram) and remembers its ports in a :class:`FragTable` under (proto, saddr, daddr,
  IP id); later fragments (:func:`parse_fragment`) find the flow there and only get their IP
  header rewritten. A fragment arriving before its first fragment, or after
  ``FragTable.timeout`` (30 s, Linux's ``ipfrag_time``), is dropped as ``FRAGMENT``.
* Frames longer than ``14 + tot_len`` (Ethernet padding) are accepted; the padding is kept.
* The IPv4 header checksum is verified when asked (``verify=True``): ``BAD_IP_CSUM``.
"""

from __future__ import annotations

import struct
from enum import IntEnum

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# TCP flag bits (byte 13 of the TCP header)
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10

# Field offsets inside the frame for a 20-byte IPv4 header right after Ethernet.
OFF_TTL = 22
OFF_IP_CSUM = 24
OFF_SADDR = 26
OFF_DADDR = 30

ETH_IP = struct.Struct("!12xHBxHxxHBBxxII")
"""ethertype, ver_ihl, tot_len, frag_off, ttl, proto, saddr, daddr (34 bytes from frame start)."""
PORTS = struct.Struct("!HH")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
_MIN_FRAME = ETH_HLEN + 20


class Drop(IntEnum):
    """Why the packet path did not forward a frame (per-reason counter index)."""

    TRUNCATED = 1        # shorter than Ethernet + a minimal IPv4 header
    NOT_IPV4 = 2         # other ethertype: VLAN-tagged, LLDP, ... (IPv6: director.dataplane.packet6)
    BAD_VERSION = 3      # IP version field is not 4 (6 in an IPv6 frame)
    BAD_IHL = 4          # IHL < 5 or header longer than the frame / total length
    BAD_TOTLEN = 5       # total length < header or beyond the end of the frame
    BAD_IP_CSUM = 6      # IPv4 header checksum wrong
    FRAGMENT = 7         # a fragment of an unknown (or timed out) datagram (see module doc)
    UNKNOWN_PROTO = 8    # not TCP, UDP or ICMP
    BAD_L4 = 9           # L4 header truncated, bad TCP data offset, bad UDP length
    TTL_EXCEEDED = 10    # TTL (IPv6: hop limit) would reach 0 when forwarded
    NOT_ACTIVE = 11      # this node is a backup: count, never forward
    NO_SERVICE = 12      # to no virtual service and matching no conn
    NO_CONN = 13         # TCP not opening a conn (no SYN) and no entry, not sloppy
    NO_DEST = 14         # the scheduler found no usable dest
    DEST_UNAVAILABLE = 15  # the conn's dest was removed (expire_nodest_conn rules)
    NO_NEIGH = 16        # next hop MAC unknown yet (an ARP request was sent instead)
    ICMP_UNRELATED = 17  # ICMP neither an error about a known flow nor an echo we answer
    TOO_BIG = 18         # TUN: encapsulated packet exceeds the MTU (frag-needed sent if DF)
    ARP_IGNORED = 19     # ARP not answered: not for an owned address, malformed, or a reply
    RST_NO_CONN = 20     # TCP RST with no entry (never creates one)
    VLAN_TAGGED = 21     # 802.1Q / 802.1ad tagged (the data plane serves untagged links only)
    NOT_VMAC = 22        # addressed to another unicast MAC than the virtual MAC, or a group MAC but not ARP
    TO_HOST = 23         # addressed to the director's own interface MAC: its kernel's traffic, not ours
    NOT_MASTER = 24      # read while the mastership deadline had passed (fencing): never forwarded
    DEFENSE_DROP = 25    # a new-conn packet dropped by the drop_packet defense (one in drop_rate)
    TABLE_FULL = 26      # a new-conn packet while the conn table holds defense.max_conns entries
    BYPASS = 27          # to a VIP, but no service for its port or no usable dest (and no sorry server)
    LOCALNODE = 28       # a conn to a dest on the director itself (loopback): no local stack to hand it to
    BAD_EXTHDR = 29      # IPv6 extension headers: truncated, too many, hop-by-hop not first, a routing
    #                      header with segments left (the director is no routing hop)
    BAD_ADDR = 30        # IPv6 from/to ::/96 or ::ffff:0:0/96, or from a multicast source (never on a wire)
    ECHO_RATELIMIT = 31  # an echo request to an owned address past echo_ratelimit (not answered)


class DropCounters:
    """Per-reason drop counters. ``counts[reason]`` is bumped directly on the hot path."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: list[int] = [0] * (max(Drop) + 1)

    def __getitem__(self, reason: Drop) -> int:
        return self.counts[reason]

    def total(self) -> int:
        return sum(self.counts)

    def as_dict(self) -> dict[str, int]:
        return {r.name.lower(): self.counts[r] for r in Drop}

    def zero(self) -> None:
        self.counts[:] = [0] * len(self.counts)


IPv4Info = tuple[int, int, int, int, int, int, int, int, int]
"""(proto, saddr, sport, daddr, dport, l4_off, end, ttl, extra).

``end`` = 14 + tot_len (the IP packet's end in the frame). For TCP ``extra`` is the flag byte; for
UDP 0; for ICMP ``sport`` is the type, ``dport`` the code and ``extra`` 0.
"""


def parse_ipv4(frame: bytes | bytearray | memoryview, verify: bool = False,
               first_fragment: bool = False) -> IPv4Info | Drop:
    """Parse an Ethernet/IPv4 frame: the fields of :data:`IPv4Info`, or why it is unusable.

    Fragments are ``FRAGMENT``, except first fragments when ``first_fragment`` is set.
    """
    n = len(frame)
    if n < _MIN_FRAME:
        return Drop.TRUNCATED if n < 14 or frame[12:14] == b"\x08\x00" else Drop.NOT_IPV4
    etype, ver_ihl, tot_len, frag, ttl, proto, saddr, daddr = ETH_IP.unpack_from(frame, 0)
    if etype != ETH_P_IP:
        return Drop.NOT_IPV4
    if ver_ihl != 0x45:
        bad = _check_ihl(ver_ihl, tot_len)
        if bad is not None:
            return bad
    l4 = ETH_HLEN + (ver_ihl & 0x0F) * 4
    end = ETH_HLEN + tot_len
    if end > n or end < l4:
        return Drop.BAD_TOTLEN
    more = False
    if frag & 0x3FFF:
        if not first_fragment or frag & 0x1FFF:
            return Drop.FRAGMENT
        more = True
    if verify and not _ip_csum_ok(frame, l4):
        return Drop.BAD_IP_CSUM
    if proto == IPPROTO_TCP:
        if l4 + 20 > end or not 20 <= (frame[l4 + 12] >> 4) * 4 <= end - l4:
            return Drop.BAD_L4
        sport, dport = PORTS.unpack_from(frame, l4)
        return proto, saddr, sport, daddr, dport, l4, end, ttl, frame[l4 + 13]
    if proto == IPPROTO_UDP:
        if l4 + 8 > end:
            return Drop.BAD_L4
        sport, dport, ulen = _UDP.unpack_from(frame, l4)
        if ulen < 8 or (ulen > end - l4 and not more):
            return Drop.BAD_L4
        return proto, saddr, sport, daddr, dport, l4, end, ttl, 0
    if proto == IPPROTO_ICMP:
        if l4 + 8 > end:
            return Drop.BAD_L4
        return proto, saddr, frame[l4], daddr, frame[l4 + 1], l4, end, ttl, 0
    return Drop.UNKNOWN_PROTO


_UDP = struct.Struct("!HHH")


_FRAG = struct.Struct("!14xBxHHHB")  # ver_ihl, tot_len, id, frag_off, ttl


def parse_fragment(frame: bytes | bytearray | memoryview) -> tuple[int, int, int, int] | None:
    """(ip_id, frag_off, ttl, end) of a frame :func:`parse_ipv4` called ``FRAGMENT`` (its Ethernet
    and IPv4 header were validated there); None if it is not such a frame."""
    if len(frame) < _MIN_FRAME or frame[12:14] != b"\x08\x00":
        return None
    ver_ihl, tot_len, ipid, frag, ttl = _FRAG.unpack_from(frame, 0)
    if ver_ihl >> 4 != 4 or not frag & 0x3FFF or ETH_HLEN + tot_len > len(frame):
        return None
    return ipid, frag, ttl, ETH_HLEN + tot_len


FragKey = tuple[int, int, int, int]
"""(proto, saddr, daddr, ip_id): the datagram a fragment belongs to."""


class FragTable:
    """Ports of fragmented datagrams, learnt from their first fragment, for the fragments after it.

    Bounded (``capacity``, oldest evicted first) and timed (``timeout`` seconds), pure: the
    caller passes the time.
    """

    __slots__ = ("timeout", "capacity", "_tab")

    def __init__(self, timeout: float = 30.0, capacity: int = 4096) -> None:
        self.timeout = timeout
        self.capacity = capacity
        self._tab: dict[FragKey, tuple[int, int, float]] = {}

    def remember(self, key: FragKey, sport: int, dport: int, now: float) -> None:
        tab = self._tab
        tab.pop(key, None)
        if len(tab) >= self.capacity:
            for k in [k for k, v in tab.items() if v[2] <= now] or [next(iter(tab))]:
                del tab[k]
        tab[key] = (sport, dport, now + self.timeout)

    def ports(self, key: FragKey, now: float) -> tuple[int, int] | None:
        """(sport, dport) of the datagram, or None if unknown or timed out."""
        v = self._tab.get(key)
        if v is None:
            return None
        if v[2] <= now:
            del self._tab[key]
            return None
        return v[0], v[1]

    def __len__(self) -> int:
        return len(self._tab)


def _check_ihl(ver_ihl: int, tot_len: int) -> Drop | None:
    if ver_ihl >> 4 != 4:
        return Drop.BAD_VERSION
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < 20:
        return Drop.BAD_IHL
    if tot_len < ihl:
        return Drop.BAD_IHL if tot_len >= 20 else Drop.BAD_TOTLEN
    return None


def _ip_csum_ok(frame: bytes | bytearray | memoryview, l4: int) -> bool:
    x = int.from_bytes(frame[ETH_HLEN:l4], "big")
    return x % 0xFFFF == 0


def ip_str(addr: int) -> str:
    """Dotted quad of an int address (for logs and reprs, never on the hot path)."""
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    """``"00:00:5e:00:01:01"`` -> 6 bytes."""
    out = bytes(int(part, 16) for part in text.split(":"))
    if len(out) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return out


__all__ = [
    "ETH_HLEN", "ETH_IP", "ETH_P_ARP", "ETH_P_IP", "IPPROTO_ICMP", "IPPROTO_IPIP", "IPPROTO_TCP",
    "IPPROTO_UDP", "PORTS", "TH_ACK", "TH_FIN", "TH_PSH", "TH_RST", "TH_SYN", "U16", "U32", "Drop",
    "DropCounters", "FragKey", "FragTable", "IPv4Info", "ip_str", "mac_bytes", "mac_str", "parse_fragment",
    "parse_ipv4",
]
