"""The virtual-service config model: frozen dataclasses, their constants and derived keys.

``Config`` > ``ServiceConfig`` > ``DestConfig`` (with ``Persistence``, ``SorryServer``, ``TimeoutsConfig``
and the dest's ``director.health.spec.HealthSpec``) is what ``director.config.services`` builds from YAML
after validation; every value here has been checked, so the properties (``vaddr``, ``key``,
``fwd_of``) cannot fail.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from director.health.spec import HealthSpec
from director.types import FwdMethod, Proto

PROTOCOLS: Mapping[str, Proto] = {"tcp": Proto.TCP, "udp": Proto.UDP}
FORWARDS: Mapping[str, FwdMethod] = {"nat": FwdMethod.NAT, "dr": FwdMethod.DR, "tun": FwdMethod.TUN}
DEFAULT_SCHEDULER = "wlc"
MAX_WEIGHT = 65535
MAX_THRESHOLD = 2**31 - 1
MAX_SECONDS = 2**31 // 1000  # what the kernel's jiffies-based timeouts hold
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def default_name(protocol: str, vip: str, port: int, fwmark: int = 0) -> str:
    """A service's name when none is given: ``tcp-198.18.0.10-80``, ``tcp-2001.db8..10-80`` (an IPv6
    VIP's colons as dots: a name has no colon), or ``fwm-MARK`` for a service group."""
    return f"fwm-{fwmark}" if fwmark else f"{protocol}-{vip.replace(':', '.')}-{port}"


@dataclass(frozen=True)
class Persistence:
    timeout: int = 300
    """Seconds a template (client -> dest binding) outlives its last conn."""
    netmask: str = "255.255.255.255"
    """Clients in one netmask-sized block share a template (an IPv6 service's in its IPv6 form,
    ``ffff:ffff:ffff:ffff::`` for a /64)."""

    @property
    def mask(self) -> int:
        return int(ipaddress.ip_address(self.netmask))


class _Endpoint:
    """``address`` and ``port`` of a real server (a dest or a sorry server), as the table keys them."""

    address: str
    port: int

    @property
    def daddr(self) -> int:
        return int(ipaddress.ip_address(self.address))

    @property
    def ident(self) -> str:
        """``addr:port``, ``[addr]:port`` for IPv6 (what ``sorry_server`` reads back)."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class DestConfig(_Endpoint):
    address: str
    port: int
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    forward: str | None = None
    """nat | dr | tun; None inherits the service's."""
    healthcheck: HealthSpec | None = None


@dataclass(frozen=True)
class Selector:
    """One selector of a service group (fwmark semantics): protocol, VIP and a port or port range."""

    protocol: str
    vip: str
    port: int
    port_hi: int
    """Last port of the range (== ``port`` for a single port)."""

    @property
    def proto(self) -> Proto:
        return PROTOCOLS[self.protocol]

    @property
    def vaddr(self) -> int:
        return int(ipaddress.ip_address(self.vip))

    @property
    def ports(self) -> str:
        return str(self.port) if self.port == self.port_hi else f"{self.port}-{self.port_hi}"


@dataclass(frozen=True)
class SorryServer(_Endpoint):
    """keepalived's ``sorry_server``: where new conns go while no dest of the service is usable."""

    address: str
    port: int
    forward: str | None = None
    """nat | dr | tun (``sorry_forwarding``); None inherits the service's."""


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    protocol: str
    vip: str
    port: int
    scheduler: str = DEFAULT_SCHEDULER
    scheduler_options: tuple[tuple[str, bool | int], ...] = ()
    """Sorted (option, value) pairs; ``sched_opts`` gives them as a dict."""
    persistence: Persistence | None = None
    forward: str = "nat"
    expire_nodest_conn: bool = False
    expire_quiescent_template: bool = False
    dests: tuple[DestConfig, ...] = ()
    sorry: SorryServer | None = None
    """``sorry_server`` / ``sorry_forwarding``: the fallback dest (never scheduled among ``dests``)."""
    ops: bool = False
    """One-packet scheduling (``ipvsadm --ops``, UDP only): every datagram scheduled on its own."""
    fwmark: int = 0
    """A service group (IPVS fwmark service): known by this number; ``group`` selects its packets and
    ``protocol``/``vip``/``port`` are placeholders (the first selector's protocol, 0.0.0.0, 0)."""
    group: tuple[Selector, ...] = ()

    @property
    def proto(self) -> Proto:
        return PROTOCOLS[self.protocol]

    @property
    def vaddr(self) -> int:
        return int(ipaddress.ip_address(self.vip))

    @property
    def family(self) -> int:
        """4 or 6: the family of the VIP (a group's: its selectors'), which every dest shares."""
        vip = self.group[0].vip if self.fwmark and self.group else self.vip
        return 6 if ":" in vip else 4

    @property
    def key(self) -> tuple[int, int, int]:
        """(protocol, vaddr, vport): how the live ServiceTable knows an address service."""
        return (int(self.proto), self.vaddr, self.port)

    @property
    def svc_key(self) -> tuple[int, int, int, int]:
        """(protocol, vaddr, vport, fwmark): the live ``VirtualService.key`` (first four of a DestKey)."""
        return (int(self.proto), self.vaddr, self.port, self.fwmark)

    @property
    def protocols(self) -> frozenset[str]:
        """Protocols of the service (a group's selectors may mix tcp and udp)."""
        return frozenset(x.protocol for x in self.group) if self.fwmark else frozenset((self.protocol,))

    @property
    def sched_opts(self) -> dict[str, bool | int]:
        return dict(self.scheduler_options)

    def fwd_of(self, dest: DestConfig) -> FwdMethod:
        """The dest's effective forwarding method."""
        return FORWARDS[dest.forward or self.forward]

    def sorry_fwd(self) -> FwdMethod:
        """The sorry server's forwarding method (its own, else the service's)."""
        return FORWARDS[(self.sorry.forward if self.sorry is not None else None) or self.forward]

    def dest(self, address: str, port: int) -> DestConfig | None:
        return next((d for d in self.dests if d.address == address and d.port == port), None)


@dataclass(frozen=True)
class TimeoutsConfig:
    """Like ``ipvsadm --set tcp tcpfin udp`` (seconds)."""

    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


@dataclass(frozen=True)
class Config:
    services: tuple[ServiceConfig, ...] = ()
    timeouts: TimeoutsConfig | None = None
    """None: not given (the running timeouts stay as they are)."""

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)
