"""ARP (RFC 826) frames and the neighbour cache (pure: frames and time in, frames out).

Theory of operation
-------------------
Nothing on the director's kernel owns a VIP, so the packet path answers ARP for the VIPs itself,
from a VRRP-style virtual MAC ``00:00:5e:00:01:<vrid>`` (RFC 5798 §7.3). Every director of a
cluster uses the same virtual MAC, so a takeover only has to make the switches learn the new port:
the new master sends gratuitous ARPs (:func:`gratuitous_arp`) and from then on sources all its
frames from the virtual MAC. A backup answers nothing (the core checks ``active``).

The neighbour cache, the rule of what may write into it and the ARP responder's decisions are in
:mod:`director.dataplane.neigh`; this module only reads and builds the frames.

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


def vrrp_mac6(vrid: int) -> bytes:
    """The VRRP (RFC 5798) virtual MAC of an IPv6 router ``vrid``: ``00:00:5e:00:02:vrid``."""
    return VRRP_MAC_PREFIX[:4] + bytes((2,)) + vrrp_mac(vrid)[5:]


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


__all__ = [
    "ARP_FRAME_LEN", "ARP_REPLY", "ARP_REQUEST", "BROADCAST", "arp_frame", "arp_reply",
    "arp_request", "gratuitous_arp", "parse_arp", "usable_mac", "vrrp_mac", "vrrp_mac6",
]
