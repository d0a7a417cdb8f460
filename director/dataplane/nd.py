"""IPv6 neighbour discovery (RFC 4861): NS/NA frames and the responder (pure: frames and time in, frames out).

Theory of operation
-------------------
IPv6's ARP. Nothing on the director's kernel owns a VIP, so the packet path answers Neighbor
Solicitations for the IPv6 addresses it owns, from IPv6's virtual MAC (VRRP's ``00:00:5e:00:02:XX``,
``CoreConfig.vmac6``), as it answers ARP from ``00:00:5e:00:01:XX``
(:mod:`director.dataplane.neigh`): the IPv6 VIPs outside, IPv6 NAT gateway addresses inside, and
on both sides the director's **link-local address** ``fe80::`` + EUI-64 of that MAC
(:func:`link_local`: ``fe80::200:5eff:fe00:201`` for vmac id 1). That link-local address is what a
VRRPv3 router's IPv6 virtual address is; it is the source of the director's own solicitations and
the natural default route of IPv6 real servers behind a NAT director (``via fe80::200:5eff:fe00:2XX``).

:class:`NeighbourDiscovery` shares the :class:`~director.dataplane.neigh.Neighbours` caches, stats
and rule (IPv6 addresses are ints >= 2**32 in the same caches):

* an NS for an owned address creates or updates the solicitor's entry (its source link-layer
  address option), and is answered (solicited, override; router flag inside) only while active;
  a DAD probe for an owned address (source ``::``) is answered to all-nodes (we defend it);
* an NA creates or updates the target's entry when it is addressed to us, is about an address
  we solicited, or about a known entry; an unsolicited NA about an unknown address is ignored;
* any other NS only updates an existing entry; nobody may claim an owned address (``nd_conflicts``);
* malformed ND (hop limit not 255, bad checksum, code not 0, short, multicast target, zero-length
  option, DAD with a source option, a multicast NA with the solicited flag) is dropped and counted.

On takeover :meth:`NeighbourDiscovery.announce` gives one unsolicited NA (override) per owned
IPv6 address to all-nodes (``ff02::1``); :meth:`NeighbourDiscovery.probe` resolves an IPv6 next hop
by an NS to its solicited-node multicast address, rate-limited per address like an ARP probe.
:func:`ns_frame` with source ``0`` is the quiet probe (a DAD-form NS: it claims nothing; the target
answers to all-nodes).

Frame layout (no extension headers are accepted on ND)::

    eth(14) | IPv6(40, nh=58, hlim=255) | type code csum | NS: reserved(4) / NA: R S O flags + 3 | target(16)
            | options: type(1) len(1, units of 8) data   (1: source, 2: target link-layer address)
"""

from __future__ import annotations

import struct

from director.dataplane.arp import usable_mac
from director.dataplane.checksum import checksum
from director.dataplane.neigh import INT, Action, Neighbours, NeighEvent
from director.dataplane.packet import Drop

ND_NS = 135
ND_NA = 136
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
OPT_SLLA = 1
OPT_TLLA = 2
ALL_NODES = 0xFF02 << 112 | 1
SOLICITED_PREFIX = 0xFF02 << 112 | 1 << 32 | 0xFF << 24
_V4_MAX = 0xFFFFFFFF
_LL_PREFIX = 0xFE80 << 112

_IP6 = struct.Struct("!6s6sHIHBB16s16s")  # dst src etype vtf plen nh hlim saddr daddr
_ND = struct.Struct("!BBHB3x16s")         # type code csum flags(NA; 0 in NS) target
_L4 = 54
NOT_ND = 0
MALFORMED = 1

NdMsg = tuple[int, int, int, int, int, bytes | None, bytes]
"""(type, saddr, daddr, target, NA flags, link-layer address option or None, Ethernet source)."""


def link_local(mac: bytes) -> int:
    """``fe80::`` + modified EUI-64 of ``mac`` (RFC 4291 appendix A)."""
    eui = bytes((mac[0] ^ 2,)) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return _LL_PREFIX | int.from_bytes(eui, "big")


def solicited_node(addr: int) -> int:
    """``ff02::1:ff00:0/104`` plus the low 24 bits of ``addr``: the multicast group an NS for ``addr``
    goes to (RFC 4291 §2.7.1)."""
    return SOLICITED_PREFIX | addr & 0xFFFFFF


def multicast_mac(group: int) -> bytes:
    """``33:33`` + the group's low 32 bits (RFC 2464 §7)."""
    return b"\x33\x33" + (group & 0xFFFFFFFF).to_bytes(4, "big")


def _csum(saddr: int, daddr: int, icmp: bytes | bytearray | memoryview) -> int:
    return checksum(icmp, saddr + daddr + len(icmp) + 58)


def _frame(dst_mac: bytes, src_mac: bytes, saddr: int, daddr: int, icmp: bytearray) -> bytearray:
    struct.pack_into("!H", icmp, 2, _csum(saddr, daddr, icmp))
    out = bytearray(_IP6.pack(dst_mac, src_mac, 0x86DD, 0x60000000, len(icmp), 58, 255,
                              saddr.to_bytes(16, "big"), daddr.to_bytes(16, "big")))
    return out + icmp


def na_frame(dst_mac: bytes, src_mac: bytes, saddr: int, daddr: int, target: int, flags: int) -> bytearray:
    """Neighbor Advertisement "``target`` is at ``src_mac``" (with the target link-layer option)."""
    icmp = bytearray(_ND.pack(ND_NA, 0, 0, flags, target.to_bytes(16, "big")))
    icmp += bytes((OPT_TLLA, 1)) + src_mac
    return _frame(dst_mac, src_mac, saddr, daddr, icmp)


def ns_frame(src_mac: bytes, saddr: int, target: int) -> bytearray:
    """Neighbor Solicitation for ``target`` to its solicited-node group; ``saddr`` 0: a DAD-form
    (quiet) probe without the source link-layer option."""
    group = solicited_node(target)
    icmp = bytearray(_ND.pack(ND_NS, 0, 0, 0, target.to_bytes(16, "big")))
    if saddr:
        icmp += bytes((OPT_SLLA, 1)) + src_mac
    return _frame(multicast_mac(group), src_mac, saddr, group, icmp)


def unsolicited_na(mac: bytes, saddr: int, target: int, router: bool) -> bytearray:
    """Unsolicited NA (override) to all-nodes: the takeover announcement of ``target``."""
    return na_frame(multicast_mac(ALL_NODES), mac, saddr, ALL_NODES, target,
                    NA_OVERRIDE | (NA_ROUTER if router else 0))


def parse_nd(frame: bytes | bytearray | memoryview) -> NdMsg | int:
    """An NS or NA frame's fields (RFC 4861 §7.1 validity checks), ``NOT_ND`` or ``MALFORMED``."""
    if len(frame) < _L4 + 24:
        return MALFORMED if len(frame) > _L4 and frame[20] == 58 and frame[_L4] in (ND_NS, ND_NA) else NOT_ND
    _dst, src, etype, vtf, plen, nh, hlim, sb, db = _IP6.unpack_from(frame, 0)
    typ, code, _csum_field, flags, tb = _ND.unpack_from(frame, _L4)
    if etype != 0x86DD or vtf >> 28 != 6 or nh != 58 or typ not in (ND_NS, ND_NA):
        return NOT_ND
    end = _L4 + plen
    saddr, daddr, target = (int.from_bytes(b, "big") for b in (sb, db, tb))
    if (hlim != 255 or code or plen < 24 or end > len(frame) or target >> 120 == 0xFF
            or _csum(saddr, daddr, memoryview(frame)[_L4:end])):
        return MALFORMED
    lla = _lladdr(frame, _L4 + 24, end, OPT_SLLA if typ == ND_NS else OPT_TLLA)
    if lla == b"":
        return MALFORMED
    if typ == ND_NS and not saddr and (lla is not None or daddr != solicited_node(target)):
        return MALFORMED
    if typ == ND_NA and daddr >> 120 == 0xFF and flags & NA_SOLICITED:
        return MALFORMED
    return typ, saddr, daddr, target, flags & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE), lla, bytes(src)


def _lladdr(frame: bytes | bytearray | memoryview, off: int, end: int, want: int) -> bytes | None:
    """The Ethernet address of the first option ``want``; None without one; ``b""``: a malformed option."""
    found: bytes | None = None
    while off < end:
        if off + 2 > end or not frame[off + 1] or off + frame[off + 1] * 8 > end:
            return b""
        if frame[off] == want and found is None and frame[off + 1] == 1:
            found = bytes(frame[off + 2:off + 8])
        off += frame[off + 1] * 8
    return found


class NeighbourDiscovery:
    """The ND responder and resolver over one director's :class:`Neighbours` (see the module doc)."""

    def __init__(self, nb: Neighbours, drops: list[int]) -> None:
        self.nb = nb
        self.vmac = nb.cfg.vmac6
        self.ll = link_local(nb.cfg.vmac6)
        self._drops = drops

    def owned(self, side: int) -> set[int]:
        """IPv6 addresses answered on ``side`` while active: owned ones, and the link-local on both
        sides as soon as the node owns any IPv6 address (an IPv4-only node stays silent in IPv6)."""
        own = {a for a in self.nb.owned(side) if a > _V4_MAX}
        if own or any(a > _V4_MAX for a in self.nb.owned(INT - side)):
            own.add(self.ll)
        return own

    # ---- ND in -----------------------------------------------------------------------------------

    def handle(self, frame: bytes | bytearray, side: int, active: bool, now: float) -> Action | None:
        """One ICMPv6 frame (to the virtual MAC or a multicast MAC): learn and maybe answer."""
        m = parse_nd(frame)
        counts = self.nb.stats.counts
        if isinstance(m, int):
            if m == MALFORMED:
                counts[NeighEvent.ND_MALFORMED] += 1
                self._drops[Drop.ARP_IGNORED] += 1
            else:  # other ICMPv6 (router/multicast listener messages, echo, errors)
                self._drops[Drop.NOT_VMAC if frame[0] & 1 else Drop.ICMP_UNRELATED] += 1
            return None
        if m[6] == self.vmac:  # our own frame, looped back
            counts[NeighEvent.ND_NS_IGNORED if m[0] == ND_NS else NeighEvent.ND_NA_IGNORED] += 1
            self._drops[Drop.ARP_IGNORED] += 1
            return None
        if m[0] == ND_NA:
            self._na(m, side, now)
            return None
        return self._ns(m, side, active, now)

    def _na(self, m: NdMsg, side: int, now: float) -> None:
        _typ, _saddr, daddr, target, _flags, lla, src = m
        counts = self.nb.stats.counts
        cache = self.nb.caches[side]
        owned = self.owned(side)
        if target in owned:
            counts[NeighEvent.ND_CONFLICTS] += 1
            counts[NeighEvent.ND_NA_IGNORED] += 1
        elif target in cache or daddr in owned or cache.probed(target, now):
            counts[NeighEvent.ND_NA_LEARNED] += 1
            self._learn(side, target, lla or src, now)
        else:
            counts[NeighEvent.ND_NA_IGNORED] += 1

    def learn(self, frame: bytes | bytearray, side: int, now: float) -> None:
        """Not master (fenced): learn from an NS or NA as :meth:`handle` would, answer nothing, count
        no drop (the I/O layer counts the frame as ``NOT_MASTER``). This is how a backup's IPv6 dests
        resolve: the NAs answering its quiet probes go to all-nodes and are heard here."""
        m = parse_nd(frame)
        if isinstance(m, int) or m[6] == self.vmac:
            return
        if m[0] == ND_NA:
            self._na(m, side, now)
        else:
            self._ns_learn(m, side, self.owned(side), now)

    def _ns_learn(self, m: NdMsg, side: int, owned: set[int], now: float) -> None:
        _typ, saddr, _daddr, target, _flags, lla, _src = m
        if saddr in owned or (not saddr and target in owned):  # someone uses (or wants) our address
            self.nb.stats.counts[NeighEvent.ND_CONFLICTS] += 1
        elif saddr and lla is not None and (target in owned or saddr in self.nb.caches[side]):
            self._learn(side, saddr, lla, now)

    def _ns(self, m: NdMsg, side: int, active: bool, now: float) -> Action | None:
        _typ, saddr, _daddr, target, _flags, lla, src = m
        counts = self.nb.stats.counts
        owned = self.owned(side)
        self._ns_learn(m, side, owned, now)
        if target not in owned:
            counts[NeighEvent.ND_NS_IGNORED] += 1
            self._drops[Drop.ARP_IGNORED] += 1
            return None
        if not active:
            counts[NeighEvent.ND_NS_NOT_ACTIVE] += 1
            self._drops[Drop.NOT_ACTIVE] += 1
            return None
        counts[NeighEvent.ND_NS_ANSWERED] += 1
        router = NA_ROUTER if side == INT else 0
        if not saddr:  # DAD for our address: defend it to all-nodes
            return side, unsolicited_na(self.vmac, self.ll, target, bool(router))
        return side, na_frame(lla or src, self.vmac, target, saddr, target,
                              NA_SOLICITED | NA_OVERRIDE | router)

    def _learn(self, side: int, ip: int, mac: bytes, now: float) -> None:
        cache = self.nb.caches[side]
        known = ip in cache
        if usable_mac(mac) and cache.learn(ip, mac, now):
            self.nb.stats.counts[NeighEvent.NEIGH_UPDATED_ND if known else NeighEvent.NEIGH_LEARNED_ND] += 1

    # ---- ND out ----------------------------------------------------------------------------------

    def probe(self, side: int, addr: int, configured: bytes | None, now: float) -> Action | None:
        """No MAC for IPv6 ``addr``: take a configured one, else an NS (rate-limited per address)."""
        cache = self.nb.caches[side]
        if configured is not None:
            cache.learn(addr, configured, now)
        if not cache.should_probe(addr, now):
            return None
        return side, ns_frame(self.vmac, self.ll, addr)

    def announce(self) -> list[Action]:
        """Unsolicited NAs for every owned IPv6 address, both sides (sent on takeover)."""
        return [(side, unsolicited_na(self.vmac, self.ll, a, side == INT))
                for side in (0, INT) for a in sorted(self.owned(side))]


__all__ = [
    "ALL_NODES", "MALFORMED", "ND_NA", "ND_NS", "NOT_ND", "NA_OVERRIDE", "NA_ROUTER", "NA_SOLICITED",
    "NdMsg", "NeighbourDiscovery", "link_local", "multicast_mac", "na_frame", "ns_frame", "parse_nd",
    "solicited_node", "unsolicited_na",
]
