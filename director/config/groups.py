"""Service groups (IPVS fwmark services): the ``fwmark`` + ``group`` schema and its cross-checks.

Theory of operation
-------------------
IPVS schedules packets that netfilter marked with a firewall mark as one virtual service (``ipvsadm -A
-f N``): e.g. ports 80 and 443 of a VIP persisted together, or a port range for FTP-like protocols. A
user-space director has no netfilter to mark packets, so the selection that the iptables rules would
make is written in the service itself::

    - name: shop
      fwmark: 1                       # the number the group is known by (sync, CLI ``FWM 1``, metrics)
      group:                          # the selectors: protocol, VIP and a port or a port range
        - {protocol: tcp, vip: 198.18.0.10, port: 80}
        - {protocol: tcp, vip: 198.18.0.10, port: 443}
        - {protocol: tcp, vip: 198.18.0.11, ports: 10000-10100}
      persistence: {timeout: 300}
      dests: [{address: 198.18.2.1}, {address: 198.18.2.2}]   # port 0 (default): the packet's port

A group is IPv4 or IPv6 as a whole: its selectors' VIPs and its dests are of one family (IPv6 VIPs
like ``2001:db8::10``; the persistence netmask is then a prefix length). IPVS keys a fwmark service
by (family, mark); here a mark names one group, so IPv4 and IPv6 VIPs sticky to the same real
servers take two groups with two marks.

A group service has no ``protocol``/``vip``/``port`` of its own (refused with ``fwmark``); its dests'
port defaults to 0, which keeps the packet's port (a dest port translates every selected port to
it, NAT only). ``group_fields`` parses the two keys; ``check_selectors`` refuses, across the whole
config, two fwmark services with one number and any selector that overlaps another selector or an
address service (same protocol and VIP, a common port): a packet belongs to one service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from director.config import validate as v
from director.config.model import PROTOCOLS, Selector, ServiceConfig
from director.config.validate import Errors

MAX_SELECTORS = 256
MAX_FWMARK = 2**32 - 1
_SELECTOR_KEYS = ("protocol", "vip", "port", "ports")


def is_group(d: Mapping[str, Any]) -> bool:
    """The document describes a service group (it has ``fwmark`` or ``group``)."""
    return "fwmark" in d or "group" in d


def group_fields(d: Mapping[str, Any], path: str, errs: Errors) -> tuple[int, tuple[Selector, ...]]:
    """``fwmark`` and ``group`` of a group service (both required: ``v.keys`` names a missing one)."""
    fwmark = v.integer(d, "fwmark", path, errs, 1, MAX_FWMARK, 1)
    for key in ("protocol", "vip", "port"):
        if key in d:
            errs.add(v.join(path, key), "not with fwmark: the group's selectors give protocols, VIPs and "
                     "ports")
    gpath = v.join(path, "group")
    raw = d.get("group")
    items = [] if raw is None else v.sequence(raw, gpath, errs, max_items=MAX_SELECTORS)
    if not items and "group" in d and isinstance(raw, list | type(None)):
        errs.add(gpath, "must list at least one selector {protocol, vip, port or ports}")
    selectors = tuple(_selector(x, v.item(gpath, i), errs) for i, x in enumerate(items))
    _one_family(selectors, gpath, errs)
    return fwmark, selectors


def _one_family(selectors: tuple[Selector, ...], gpath: str, errs: Errors) -> None:
    """A group forwards within one family (its dests are that family's): every VIP like the first."""
    for i, sel in enumerate(selectors[1:], 1):
        if (":" in sel.vip) != (":" in selectors[0].vip) and sel.vip != "0.0.0.0":
            fam, other = ("IPv6", "IPv4") if ":" in selectors[0].vip else ("IPv4", "IPv6")
            errs.add(v.join(v.item(gpath, i), "vip"),
                     f"must be an {fam} address like {v.item(gpath, 0)}.vip {selectors[0].vip} (a group "
                     f"forwards within one family: give the {other} VIPs a group of their own), "
                     f"got {sel.vip}")


def _selector(raw: Any, path: str, errs: Errors) -> Selector:
    d = v.mapping(raw, path, errs)
    v.keys(d, _SELECTOR_KEYS, ("protocol", "vip"), path, errs)
    protocol = v.choice(d, "protocol", path, errs, PROTOCOLS, "tcp")
    vip = v.ip_address(d, "vip", path, errs, unicast=True)
    if ("port" in d) == ("ports" in d):
        errs.add(path, "give port (one port) or ports (a range 'lo-hi'), one of them")
        return Selector(protocol, vip, 1, 1)
    if "port" in d:
        port = v.integer(d, "port", path, errs, 1, 65535, 1)
        return Selector(protocol, vip, port, port)
    text = d["ports"]
    lo, sep, hi = text.partition("-") if isinstance(text, str) and len(text) <= 11 else ("", "", "")
    if (sep and lo.isascii() and lo.isdigit() and hi.isascii() and hi.isdigit()
            and 1 <= int(lo) <= int(hi) <= 65535):
        return Selector(protocol, vip, int(lo), int(hi))
    errs.add(v.join(path, "ports"),
             f"must be a range 'lo-hi' with 1 <= lo <= hi <= 65535, got {v.excerpt(text)}")
    return Selector(protocol, vip, 1, 1)


def check_selectors(services: list[tuple[str, ServiceConfig]], errs: Errors) -> None:
    """Unique fwmarks; no selector overlapping another selector or an address service's port."""
    marks: dict[int, str] = {}
    taken: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for path, svc in services:  # address services first: a selector is the one named in the error
        if not svc.fwmark and svc.port:
            taken.setdefault((svc.protocol, svc.vip), []).append((svc.port, svc.port, path))
    for path, svc in services:
        if not svc.fwmark:
            continue
        if svc.fwmark in marks:
            errs.add(v.join(path, "fwmark"), f"duplicate fwmark {svc.fwmark} (also {marks[svc.fwmark]})")
        marks.setdefault(svc.fwmark, path)
        for i, sel in enumerate(svc.group):
            spath = v.item(v.join(path, "group"), i)
            ranges = taken.setdefault((sel.protocol, sel.vip), [])
            other = next((p for lo, hi, p in ranges if lo <= sel.port_hi and sel.port <= hi), None)
            if other is not None:
                errs.add(spath, f"{sel.protocol} {sel.vip}:{sel.ports} overlaps {other}: a packet belongs to "
                         "one service")
            ranges.append((sel.port, sel.port_hi, spath))


__all__ = ["MAX_FWMARK", "MAX_SELECTORS", "check_selectors", "group_fields", "is_group"]
