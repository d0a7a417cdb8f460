"""Node-level settings of the packet path (:class:`CoreConfig`), read by :class:`..core.Director`."""

from __future__ import annotations

from dataclasses import dataclass, field

from director.dataplane.arp import vrrp_mac, vrrp_mac6
from director.table.tcp import Timeouts


@dataclass
class CoreConfig:
    """Node-level settings of the packet path."""

    vmac: bytes = field(default_factory=lambda: vrrp_mac(1))
    """Virtual MAC: source of every IPv4 frame sent and the answer to ARP for owned addresses."""
    vmac6: bytes = field(default_factory=lambda: vrrp_mac6(1))
    """IPv6's virtual MAC (VRRP's ``00:00:5e:00:02:XX``): source of every IPv6 frame sent, the answer
    to NS for owned addresses, the base of the link-local address."""
    ext_addr: int = 0
    """The director's own address on the external side (sender of its ARP requests; 0 = probe)."""
    int_addr: int = 0
    """The director's own address on the internal side (ARP sender, IPIP outer source)."""
    gw_addrs: frozenset[int] = frozenset()
    """Addresses answered on the INT side: the real servers' default gateway for NAT."""
    extra_vips: frozenset[int] = frozenset()
    """Addresses answered on the EXT side besides the services' VIPs."""
    ext_gateway: int = 0
    """Router for clients not on the external subnet (0 = every client is on-link)."""
    ext_net: int = 0
    ext_prefixlen: int = 0
    tun_src: int = 0
    """Outer source address of IPIP packets (0 = int_addr)."""
    tun_src6: int = 0
    """Outer source address of ip6ip6 packets (TUN to an IPv6 dest; 0 = the conn's VIP)."""
    mtu: int = 1500
    """MTU of the internal side (TUN: bigger packets get frag-needed)."""
    ext_mtu: int = 1500
    """MTU of the external side: an IPv6 NAT reply bigger than it gets Packet Too Big back to its dest."""
    expire_nodest_conn: bool = False
    expire_quiescent_template: bool = False
    verify_ip_csum: bool = True
    """Drop IPv4 headers with a bad checksum (BAD_IP_CSUM); read once, at Director creation."""
    forward_fragments: bool = False
    """Forward IP fragments without reassembly (see director.dataplane.packet); False: drop them all
    (``FRAGMENT``). Read once, at Director creation."""
    icmp_ratelimit: int = 100
    """ICMP and ICMPv6 errors the director itself originates (time exceeded, frag-needed, Packet Too
    Big), at most per second."""
    icmp_echo: bool = True
    """The master answers ICMP / ICMPv6 echo requests to its owned addresses (VIPs, gateways)."""
    echo_ratelimit: int = 1000
    """Echo replies, at most per second (past it: ``ECHO_RATELIMIT`` drops)."""
    neigh_max_entries: int = 16384
    """Neighbour cache bound per side; a new entry in a full cache evicts the least recently confirmed."""
    neigh_max_age: float = 3600.0
    """Seconds an entry lives without an ARP confirmation (``Director.expire_neighbours``)."""
    neigh_learn_rate: float = 1000.0
    """New client entries learned from data frames, per second (token bucket; then ARP resolves)."""
    neigh_learn_burst: int = 1000
    """... and the bucket's depth."""
    timeouts: Timeouts = field(default_factory=Timeouts)


__all__ = ["CoreConfig"]
