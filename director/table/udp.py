"""UDP (and ICMP) "state machine": one state, a timeout refreshed by every packet.

Theory of operation
-------------------
Linux IPVS keeps UDP conns in a single state (``IP_VS_UDP_S_NORMAL``) and re-arms them with
the UDP timeout (300 s, ``ipvsadm --set ... udp``) on every packet in either direction. UDP
conns never become "active": they stay counted in the dest's ``inactconns``, like ``ipvsadm -Ln``
shows. ICMP entries (when a flow is created for ICMP) work the same way with a 60 s timeout.
"""

from __future__ import annotations

from enum import IntEnum


class UdpState(IntEnum):
    NORMAL = 0


UDP_TIMEOUT = 300.0
ICMP_TIMEOUT = 60.0


def udp_transition(state: int, direction: int) -> UdpState:
    """Every packet leaves a UDP conn in NORMAL (the caller re-arms the timeout)."""
    del state, direction
    return UdpState.NORMAL


__all__ = ["ICMP_TIMEOUT", "UDP_TIMEOUT", "UdpState", "udp_transition"]
