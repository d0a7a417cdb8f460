"""Neighbours: the bounded per-side cache, the learning rule and the ARP responder (pure: time passed in).

Theory of operation
-------------------
:class:`NeighCache` maps a neighbour's IPv4 address to its MAC for one side (segment) of the
director and keeps, per address, the ready 12-byte Ethernet prefix ``dst MAC + own MAC`` (``hdr``)
so the transmitters rewrite MACs with one slice assignment. It is bounded: at most
``max_entries`` addresses (the least recently *confirmed* one is evicted to make room: the dict's
insertion order is the LRU order, an ARP confirmation moves an entry to the end) and none older
than ``max_age`` seconds without confirmation (:meth:`NeighCache.expire`, walked from the oldest).
Using an entry on the packet path does not confirm it (that would cost a write per packet): an
entry in use ages out like any other and is resolved again by ARP.

:class:`Neighbours` holds both sides' caches and decides what may write into them. The rule,
as a router's (and documented in ``docs/DATAPLANE.md``):

* **ARP** is the source of truth. An ARP request for an address this node owns (a VIP outside, a
  NAT gateway inside) or a reply addressed to this node (or from an address it probed) creates or
  updates the sender's entry; any other ARP frame only updates an entry that already exists (as
  Linux with ``arp_accept=0``). Nobody may claim an owned address (``arp_conflicts``).
* **Configured** MACs (a dest's ``mac``) and the configured client-side gateway: off-link clients
  are reached through ``ext_gateway`` (resolved by ARP), never learned one by one.
* **Data frames** (the first frame of a client's conn, outside only) create an entry only when none
  exists, at most ``learn_rate`` new entries per second; they **never overwrite** a known entry (a
  frame whose source MAC disagrees is counted in ``neigh_refused_data``). Nothing is learned from
  data frames on the inside: the real servers are resolved by ARP (``probe_neighbours``).

Every ARP frame ends in exactly one ``arp_*`` counter of :class:`NeighEvent`, and every write to or
removal from a cache in one ``neigh_*`` counter (``arp_conflicts`` counts in addition).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from enum import IntEnum

from director.dataplane.arp import (
    ARP_REPLY,
    ARP_REQUEST,
    arp_reply,
    arp_request,
    gratuitous_arp,
    parse_arp,
    usable_mac,
)
from director.dataplane.config import CoreConfig
from director.dataplane.packet import Drop

_U32 = 0xFFFFFFFF
"""Addresses above are IPv6 (director.table.entry): no ARP for them (ND: director.dataplane.nd)."""

EXT = 0
"""Side facing the clients (the VIPs live here)."""
INT = 1
"""Side facing the real servers."""

Action = tuple[int, bytes | bytearray]
"""(out_side, frame): what the I/O layer sends."""


class NeighEvent(IntEnum):
    """What happened to an ARP frame (``ARP_*``: one per frame), an NS/NA (``ND_*``) or to a cache
    entry (``NEIGH_*``)."""

    ARP_REQUEST_ANSWERED = 0     # a request for an owned address, answered from the virtual MAC
    ARP_REQUEST_IGNORED = 1      # a request for an address this node does not own (or a self-probe)
    ARP_REQUEST_NOT_ACTIVE = 2   # a request for an owned address while backup: not answered
    ARP_REPLY_LEARNED = 3        # a reply to this node (or from a probed address): stored / confirmed
    ARP_REPLY_IGNORED = 4        # an unsolicited reply about an address not in the cache
    ARP_UNKNOWN_OP = 5           # an opcode other than request (1) and reply (2)
    ARP_MALFORMED = 6            # not Ethernet/IPv4 ARP, or too short
    ARP_CONFLICTS = 7            # somebody else claims an address this node owns
    NEIGH_LEARNED_ARP = 8        # new entry from ARP
    NEIGH_UPDATED_ARP = 9        # an entry's MAC changed by ARP
    NEIGH_LEARNED_DATA = 10      # new entry from the first data frame of a client
    NEIGH_REFUSED_DATA = 11      # a data frame whose source MAC disagrees with the entry: kept
    NEIGH_RATE_LIMITED = 12      # not learned from a data frame: over ``learn_rate``
    NEIGH_EVICTED = 13           # the least recently confirmed entry made room (cache full)
    NEIGH_EXPIRED = 14           # not confirmed for ``max_age`` seconds
    ND_NS_ANSWERED = 15          # IPv6 (director.dataplane.nd): an NS for an owned address, answered
    ND_NS_IGNORED = 16           # an NS for an address this node does not own (or our own, looped back)
    ND_NS_NOT_ACTIVE = 17        # an NS for an owned address while backup: not answered
    ND_NA_LEARNED = 18           # an NA to this node, about a probed or a known address: stored / confirmed
    ND_NA_IGNORED = 19           # an unsolicited NA about an address not in the cache
    ND_MALFORMED = 20            # NS/NA failing RFC 4861's checks (hop limit, checksum, options, ...)
    ND_CONFLICTS = 21            # somebody else claims (or probes for) an IPv6 address this node owns
    NEIGH_LEARNED_ND = 22        # new entry from ND
    NEIGH_UPDATED_ND = 23        # an entry's MAC changed by ND


class NeighStats:
    """Counters indexed by :class:`NeighEvent` (one list shared by both sides' caches)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: list[int] = [0] * len(NeighEvent)

    def __getitem__(self, event: NeighEvent) -> int:
        return self.counts[event]

    def as_dict(self) -> dict[str, int]:
        return {e.name.lower(): self.counts[e] for e in NeighEvent}


class NeighCache:
    """IPv4 -> MAC for one side of the director, bounded in size and age (see the module doc).

    ``hdr`` is read directly by the packet path: ``hdr.get(ip)`` -> 12 bytes or None.
    """

    __slots__ = ("own_mac", "own_mac6", "hdr", "macs", "seen", "_probed", "probe_interval", "max_entries",
                 "max_age", "stats")

    def __init__(self, own_mac: bytes, probe_interval: float = 1.0, max_entries: int = 16384,
                 max_age: float = 3600.0, stats: NeighStats | None = None, own_mac6: bytes | None = None
                 ) -> None:
        self.own_mac = own_mac
        self.own_mac6 = own_mac if own_mac6 is None else own_mac6
        """Source MAC of the prefixes of IPv6 entries (ints above 32 bits): IPv6's virtual MAC."""
        self.hdr: dict[int, bytes] = {}
        self.macs: dict[int, bytes] = {}
        self.seen: dict[int, float] = {}
        """Last confirmation per address, oldest first (the LRU order)."""
        self._probed: dict[int, float] = {}
        self.probe_interval = probe_interval
        self.max_entries = max(1, max_entries)
        self.max_age = max_age
        self.stats = stats if stats is not None else NeighStats()

    def learn(self, ip: int, mac: bytes, now: float) -> bool:
        """Record (or confirm) ``ip`` at ``mac``; True if new or changed. Broadcast/zero MACs are
        ignored. A new entry in a full cache evicts the least recently confirmed one."""
        if not ip or not usable_mac(mac):
            return False
        mac = bytes(mac)
        seen = self.seen
        self._probed.pop(ip, None)
        if seen.pop(ip, None) is None and len(seen) >= self.max_entries:
            self._forget(next(iter(seen)))
            self.stats.counts[NeighEvent.NEIGH_EVICTED] += 1
        seen[ip] = now
        if self.macs.get(ip) == mac:
            return False
        self.macs[ip] = mac
        self.hdr[ip] = mac + (self.own_mac6 if ip > _U32 else self.own_mac)
        return True

    def get(self, ip: int) -> bytes | None:
        return self.macs.get(ip)

    def _forget(self, ip: int) -> None:
        for d in (self.macs, self.hdr, self.seen, self._probed):
            d.pop(ip, None)

    def forget(self, ip: int) -> None:
        self._forget(ip)

    def set_own_mac(self, mac: bytes, mac6: bytes | None = None) -> None:
        """Change the source MAC of frames sent on this side (and of IPv6 ones, ``mac6``); rebuilds
        every prefix."""
        self.own_mac = bytes(mac)
        self.own_mac6 = self.own_mac if mac6 is None else bytes(mac6)
        self.hdr.clear()  # in place: the packet path holds a reference to this dict
        self.hdr.update((ip, m + (self.own_mac6 if ip > _U32 else self.own_mac))
                        for ip, m in self.macs.items())

    def should_probe(self, ip: int, now: float) -> bool:
        """True at most once per ``probe_interval`` per address: time to send an ARP request."""
        last = self._probed.get(ip)
        if last is not None and now - last < self.probe_interval:
            return False
        if last is None and len(self._probed) >= self.max_entries:
            self._probed.pop(next(iter(self._probed)))
        self._probed[ip] = now
        return True

    def probed(self, ip: int, now: float) -> bool:
        """Was ``ip`` asked for (ARP request sent) within the last ``max_age``?"""
        last = self._probed.get(ip)
        return last is not None and now - last <= self.max_age

    def expire(self, now: float, max_age: float | None = None) -> int:
        """Forget entries not confirmed for ``max_age`` (default: the cache's) seconds; returns how many."""
        age = self.max_age if max_age is None else max_age
        old = []
        for ip, t in self.seen.items():  # oldest first: stop at the first young entry
            if now - t <= age:
                break
            old.append(ip)
        for ip in old:
            self._forget(ip)
        for ip in [ip for ip, t in self._probed.items() if now - t > age]:
            del self._probed[ip]
        self.stats.counts[NeighEvent.NEIGH_EXPIRED] += len(old)
        return len(old)

    def __len__(self) -> int:
        return len(self.macs)

    def __contains__(self, ip: object) -> bool:
        return ip in self.macs


class Neighbours:
    """Both sides' caches, the learning rule and the ARP responder of one director."""

    def __init__(self, cfg: CoreConfig, vaddrs: Callable[[], Collection[int]], drops: list[int]) -> None:
        self.cfg = cfg
        self.stats = NeighStats()
        self.caches = tuple(NeighCache(cfg.vmac, max_entries=cfg.neigh_max_entries, max_age=cfg.neigh_max_age,
                                       stats=self.stats, own_mac6=cfg.vmac6) for _ in (EXT, INT))
        self._vaddrs = vaddrs
        self._drops = drops
        self._tokens = float(cfg.neigh_learn_burst)
        self._token_time: float | None = None

    def owned(self, side: int) -> set[int] | frozenset[int]:
        """Addresses this node answers ARP for on ``side`` while active."""
        if side == INT:
            return self.cfg.gw_addrs
        return set(self._vaddrs()) | self.cfg.extra_vips

    # ---- ARP in ----------------------------------------------------------------------------------

    def arp(self, frame: bytes | bytearray, side: int, active: bool, now: float,
            fenced: bool = False) -> Action | None:
        """Learn from an ARP frame by the rule above and answer requests for owned addresses (only if
        ``active``). ``fenced``: the frame is already counted as a drop elsewhere (never answered)."""
        counts = self.stats.counts
        drops = self._drops if not fenced else [0] * len(self._drops)
        active = active and not fenced
        a = parse_arp(frame)
        if a is None:
            counts[NeighEvent.ARP_MALFORMED] += 1
            drops[Drop.ARP_IGNORED] += 1
            return None
        op, sha, spa, _tha, tpa = a
        if op not in (ARP_REQUEST, ARP_REPLY):
            counts[NeighEvent.ARP_UNKNOWN_OP] += 1
            drops[Drop.ARP_IGNORED] += 1
            return None
        owned = self.owned(side)
        cache = self.caches[side]
        if spa in owned and sha != self.cfg.vmac:
            counts[NeighEvent.ARP_CONFLICTS] += 1  # (besides the frame's own counter below)
        if op == ARP_REPLY:
            own = self.cfg.int_addr if side == INT else self.cfg.ext_addr
            if spa not in owned and (spa in cache or tpa in owned or (own and tpa == own)
                                     or cache.probed(spa, now)):
                counts[NeighEvent.ARP_REPLY_LEARNED] += 1
                self._learn_arp(cache, spa, sha, now)
            else:
                counts[NeighEvent.ARP_REPLY_IGNORED] += 1
            return None
        if spa not in owned and (tpa in owned or spa in cache):
            self._learn_arp(cache, spa, sha, now)
        if tpa not in owned or spa == tpa:
            counts[NeighEvent.ARP_REQUEST_IGNORED] += 1
            drops[Drop.ARP_IGNORED] += 1
            return None
        if not active:
            counts[NeighEvent.ARP_REQUEST_NOT_ACTIVE] += 1
            drops[Drop.NOT_ACTIVE] += 1
            return None
        counts[NeighEvent.ARP_REQUEST_ANSWERED] += 1
        return side, arp_reply(self.cfg.vmac, tpa, sha, spa)

    def _learn_arp(self, cache: NeighCache, ip: int, mac: bytes, now: float) -> None:
        known = ip in cache
        if cache.learn(ip, mac, now):
            self.stats.counts[NeighEvent.NEIGH_UPDATED_ARP if known else NeighEvent.NEIGH_LEARNED_ARP] += 1

    # ---- data frames -----------------------------------------------------------------------------

    def learn_client(self, ip: int, mac: bytes, now: float) -> None:
        """A client's data frame (outside): create its entry only if none exists (rate-limited),
        never change a known one; off-link clients are reached through the configured gateway."""
        cache = self.caches[EXT]
        known = cache.macs.get(ip)
        if known is not None:
            if known != mac:
                self.stats.counts[NeighEvent.NEIGH_REFUSED_DATA] += 1
            return
        if self.nexthop(ip) != ip or not usable_mac(mac):
            return
        last = self._token_time
        rate = self.cfg.neigh_learn_rate
        if last is not None:
            self._tokens = min(float(self.cfg.neigh_learn_burst), self._tokens + (now - last) * rate)
        self._token_time = now
        if self._tokens < 1.0:
            self.stats.counts[NeighEvent.NEIGH_RATE_LIMITED] += 1
            return
        self._tokens -= 1.0
        if cache.learn(ip, mac, now):
            self.stats.counts[NeighEvent.NEIGH_LEARNED_DATA] += 1

    # ---- resolution --------------------------------------------------------------------------------

    def nexthop(self, addr: int) -> int:
        """The client-side next hop towards ``addr``: the gateway for off-link clients, else ``addr``."""
        cfg = self.cfg
        if cfg.ext_gateway and cfg.ext_prefixlen and addr <= 0xFFFFFFFF:  # (IPv6: no gateway yet, on-link)
            mask = (0xFFFFFFFF << (32 - cfg.ext_prefixlen)) & 0xFFFFFFFF
            if addr & mask != cfg.ext_net & mask:
                return cfg.ext_gateway
        return addr

    def route(self, addr: int) -> bytes | None:
        """Ethernet prefix towards ``addr`` through its next hop (gateway for off-link clients)."""
        nh = self.nexthop(addr)
        return self.caches[EXT].hdr.get(nh) if nh != addr else None

    def probe(self, side: int, addr: int, configured: bytes | None, now: float) -> Action | None:
        """No MAC for ``addr``: take a configured one, else an ARP request (rate-limited per address)."""
        cache = self.caches[side]
        if configured is not None:
            cache.learn(addr, configured, now)
        if not cache.should_probe(addr, now):
            return None
        own = self.cfg.int_addr if side == INT else self.cfg.ext_addr
        return side, arp_request(self.cfg.vmac, own, addr)

    def garp_actions(self) -> list[Action]:
        """Gratuitous ARPs for every owned address, both sides (sent on takeover)."""
        vmac = self.cfg.vmac
        out: list[Action] = [(EXT, gratuitous_arp(vmac, ip)) for ip in sorted(self.owned(EXT)) if ip <= _U32]
        out += [(INT, gratuitous_arp(vmac, ip)) for ip in sorted(self.owned(INT)) if ip <= _U32]
        return out

    def expire(self, now: float) -> int:
        """Age both caches (each by its ``max_age``); returns how many entries went."""
        return sum(c.expire(now) for c in self.caches)


__all__ = ["EXT", "INT", "Action", "NeighCache", "NeighEvent", "NeighStats", "Neighbours"]
