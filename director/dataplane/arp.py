"""ARP (RFC 826) frames and the neighbour cache (pure: frames and time in, frames out).

Theory of operation
-------------------
Nothing on the director's kernel owns a VIP, so the packet path answers ARP for the VIPs itself,
from a VRRP-style virtual MAC ``00:00:5e:00:01:<vrid>`` (RFC 5798 §7.3). Every director of a
cluster uses the same virtual MAC, so a takeover only has to make the switches learn the new port:
the new master sends gratuitous ARPs (:func:`gratuitous_arp`) and from then on sources all its
frames from the virtual MAC. A backup answers nothing (the core checks ``active``).

:class:`NeighCache` maps a neighbour's IPv4 address to its MAC for one side (segment) of the
director. It is fed by every ARP frame seen (sender address/MAC) and by the first frame of each
new conn. It keeps, per address, the ready 12-byte Ethernet prefix ``dst MAC + own MAC`` so the
transmitters rewrite MACs with one slice assignment. Misses are resolved by sending an ARP request
(rate-limited per address with :meth:`NeighCache.should_probe`).

ARP frame layout (42 bytes, Ethernet II, no padding)::

    dst(6) src(6) 0x0806 | htype=1 ptype=0x0800 hlen=6 plen=4 op | sha(6) spa(4) tha(6) tpa(4)
"""

from __future__ import annotations

import struct

ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
VRRP_MAC_PREFIX = b"\x00\x00\x5e\x00\x01"

_ARP = struct.Struct("!6s6sHHHBBH6sI6sI")
ARP_FRAME_LEN = 42


def vrrp_mac(vrid: int) -> bytes:
    """The VRRP virtual MAC for router id ``vrid`` (1..255): ``00:00:5e:00:01:vrid``."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"VRRP router id out of range 1..255: {vrid}")
    return VRRP_MAC_PREFIX + bytes((vrid,))


def parse_arp(frame: bytes | bytearray | memoryview) -> tuple[int, bytes, int, bytes, int] | None:
    """(op, sha, spa, tha, tpa) of an Ethernet/IPv4 ARP frame, or None if it is not one."""
    if len(frame) < ARP_FRAME_LEN:
        return None
    _, _, etype, htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, 0)
    if etype != 0x0806 or htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    return op, sha, spa, tha, tpa


def arp_frame(dst: bytes, src: bytes, op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytearray:
    return bytearray(_ARP.pack(dst, src, 0x0806, 1, 0x0800, 6, 4, op, sha, spa, tha, tpa))


def arp_reply(mac: bytes, ip: int, req_sha: bytes, req_spa: int) -> bytearray:
    """Reply "``ip`` is at ``mac``" to the requester (unicast to its MAC)."""
    return arp_frame(req_sha, mac, ARP_REPLY, mac, ip, req_sha, req_spa)


def arp_request(mac: bytes, ip: int, target: int) -> bytearray:
    """Broadcast "who has ``target``? tell ``ip``" (``ip`` may be 0: an RFC 5227 probe)."""
    return arp_frame(BROADCAST, mac, ARP_REQUEST, mac, ip, ZERO_MAC, target)


def gratuitous_arp(mac: bytes, ip: int, op: int = ARP_REQUEST) -> bytearray:
    """Gratuitous ARP announcing ``ip`` at ``mac``: broadcast, sender = target = ``ip``.

    A request (the default, as keepalived sends) updates neighbours' caches and switch tables.
    """
    return arp_frame(BROADCAST, mac, op, mac, ip, ZERO_MAC if op == ARP_REQUEST else mac, ip)


def usable_mac(mac: bytes) -> bool:
    """A unicast, non-zero MAC (group bit clear) that may be learned."""
    return mac != ZERO_MAC and not mac[0] & 1


class NeighCache:
    """IPv4 -> MAC for one side of the director, plus ready Ethernet prefixes (dst MAC + own MAC).

    ``hdr`` is read directly by the packet path: ``hdr.get(ip)`` -> 12 bytes or None.
    """

    __slots__ = ("own_mac", "hdr", "macs", "seen", "_probed", "probe_interval")

    def __init__(self, own_mac: bytes, probe_interval: float = 1.0) -> None:
        self.own_mac = own_mac
        self.hdr: dict[int, bytes] = {}
        self.macs: dict[int, bytes] = {}
        self.seen: dict[int, float] = {}
        self._probed: dict[int, float] = {}
        self.probe_interval = probe_interval

    def learn(self, ip: int, mac: bytes, now: float) -> bool:
        """Record ``ip`` at ``mac``; True if this is new or changed. Broadcast/zero MACs are ignored."""
        if not ip or not usable_mac(mac):
            return False
        mac = bytes(mac)
        self.seen[ip] = now
        self._probed.pop(ip, None)
        if self.macs.get(ip) == mac:
            return False
        self.macs[ip] = mac
        self.hdr[ip] = mac + self.own_mac
        return True

    def get(self, ip: int) -> bytes | None:
        return self.macs.get(ip)

    def forget(self, ip: int) -> None:
        for d in (self.macs, self.hdr, self.seen, self._probed):
            d.pop(ip, None)

    def set_own_mac(self, mac: bytes) -> None:
        """Change the source MAC of frames sent on this side; rebuilds every prefix."""
        self.own_mac = bytes(mac)
        self.hdr = {ip: m + self.own_mac for ip, m in self.macs.items()}

    def should_probe(self, ip: int, now: float) -> bool:
        """True at most once per ``probe_interval`` per address: time to send an ARP request."""
        last = self._probed.get(ip)
        if last is not None and now - last < self.probe_interval:
            return False
        self._probed[ip] = now
        return True

    def expire(self, now: float, max_age: float) -> int:
        """Forget entries not confirmed for ``max_age`` seconds; returns how many."""
        old = [ip for ip, t in self.seen.items() if now - t > max_age]
        for ip in old:
            self.forget(ip)
        return len(old)

    def __len__(self) -> int:
        return len(self.macs)

    def __contains__(self, ip: object) -> bool:
        return ip in self.macs


__all__ = [
    "ARP_FRAME_LEN", "ARP_REPLY", "ARP_REQUEST", "BROADCAST", "NeighCache", "arp_frame", "arp_reply",
    "arp_request", "gratuitous_arp", "parse_arp", "usable_mac", "vrrp_mac",
]
