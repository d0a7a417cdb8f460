"""Views of the real tables for the admin API: services, dests, conns, events, config diffs.

Every `NodeApi` implementation (the daemon's, the tests' fake) renders through these helpers, so a
view looks the same whoever serves it. Plain functions over the tables; no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from director.admin.api import (
    ConfigChange,
    ConnFilter,
    ConnView,
    CounterValues,
    DestView,
    InvalidArgument,
    NodeEvent,
    NotFound,
    RateValues,
    ServiceView,
    SvcRef,
    fmt_hostport,
    svc_label,
)
from director.services.service import Counters, Dest, DestKey, ServiceTable, VirtualService
from director.services.stats import StatsEstimator
from director.table.conn import Conn, ConnTable
from director.table.events import ConnEvent, ConnSnapshot
from director.types import ConnFlags, DestFlags, Proto


def parse_addr(text: str, field_name: str) -> int:
    try:
        return int(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InvalidArgument(field_name, f"not an IP address: {text!r}") from None


def parse_proto(text: str, field_name: str) -> int:
    try:
        return int(Proto[text.strip().upper()])
    except KeyError:
        raise InvalidArgument(field_name, f"unknown protocol {text!r} (tcp, udp)") from None


def dest_label(key: DestKey) -> str:
    return f"{svc_label(key[:4])} -> {fmt_hostport(key[4], key[5])}"


NO_RATES = RateValues()


def dest_view(d: Dest, *, health: str = "", configured_weight: int | None = None,
              rates: RateValues = NO_RATES, sorry: bool = False) -> DestView:
    return DestView(
        addr=d.addr, port=d.port, fwd=d.fwd, weight=d.weight, u_threshold=d.u_threshold,
        l_threshold=d.l_threshold, activeconns=d.activeconns, inactconns=d.inactconns,
        persistconns=d.persistconns, available=bool(d.flags & DestFlags.AVAILABLE),
        overloaded=bool(d.flags & DestFlags.OVERLOAD), health=health,
        configured_weight=configured_weight, counters=CounterValues.of(d.counters), rates=rates, sorry=sorry)


def service_view(svc: VirtualService, *, health: Mapping[DestKey, str] | None = None,
                 configured: Mapping[DestKey, int] | None = None,
                 estimator: StatsEstimator | None = None) -> ServiceView:
    """A ServiceView of a live VirtualService; health, configured weights and rates are optional overlays."""
    health = health or {}
    configured = configured or {}

    def rates(c: Counters) -> RateValues:
        return RateValues(*estimator.rates(c)) if estimator is not None else RateValues()

    dests = tuple(
        dest_view(d, health=health.get(d.key, ""), configured_weight=configured.get(d.key),
                  rates=rates(d.counters))
        for d in svc.dests)
    if svc.sorry is not None:
        dests += (dest_view(svc.sorry, rates=rates(svc.sorry.counters), sorry=True),)
    return ServiceView(
        ref=SvcRef(svc.protocol, svc.addr, svc.port, svc.fwmark), scheduler=svc.scheduler.name,
        persistent=svc.persistent, timeout=svc.timeout, netmask=svc.netmask, dests=dests,
        counters=CounterValues.of(svc.counters), rates=rates(svc.counters), name=svc.name,
        ops=svc.one_packet)


def configured_weights(services: Iterable[Any]) -> dict[DestKey, int]:
    """DestKey -> weight in the config, from config ServiceConfig objects (for `configured`)."""
    return {(*sc.svc_key, dc.daddr, dc.port): dc.weight for sc in services for dc in sc.dests}


def find_service(services: ServiceTable, ref: SvcRef) -> VirtualService:
    svc = services.get_fwmark(ref.fwmark) if ref.fwmark else None
    if svc is None and not ref.fwmark:
        svc = next((s for s in services if s.key == ref.key), None)
    if svc is None:
        raise NotFound(f"no service {ref}")
    return svc


def find_dest(services: ServiceTable, ref: SvcRef, daddr: int, dport: int) -> Dest:
    d = find_service(services, ref).find_dest(daddr, dport)
    if d is None:
        raise NotFound(f"no dest {fmt_hostport(daddr, dport)} in service {ref}")
    return d


def select_conns(views: Iterable[ConnView], flt: ConnFilter) -> list[ConnView]:
    return [c for c in views if flt.accepts(c)]


def table_conns(table: ConnTable, flt: ConnFilter, now: float, after: tuple[int, ...] | None = None
                 ) -> Iterator[ConnView]:
    """Lazily yield views of the matching entries of a ConnTable (cheap raw checks first), in a stable
    paging order: bucket by bucket, each bucket's few entries by `ConnView.sort_key`. Each view's
    `cursor` is (bucket, *sort_key); with `after` the walk starts in its bucket, past it. No page ever
    sorts (or copies) the table: an entry present across pages is listed exactly once, in order.

    Suitable as `NodeApi.conns`: the walk reads one bucket at a time, so the admin layer may consume it
    in slices while the event loop keeps forwarding (and changing the table between slices).
    """
    svc = flt.service
    start = after[0] if after else 0
    for b in range(max(0, start), table.size):
        entries = table.bucket(b)
        if not entries:
            continue
        views: list[ConnView] = []
        for c in entries:
            if flt.templates_only and not c.flags & ConnFlags.TEMPLATE:
                continue
            if flt.caddr is not None and c.caddr != flt.caddr:
                continue
            if flt.daddr is not None and c.daddr != flt.daddr:
                continue
            if svc is not None and not svc.matches((c.protocol, c.vaddr, c.vport, c.fwmark)):
                continue
            v = conn_view(c, now)
            if flt.accepts(v):
                views.append(v)
        views.sort(key=_sort_key)
        for v in views:
            cur = (b, *v.sort_key)
            if after is None or cur > after:
                yield replace(v, cursor=cur)


def _sort_key(v: ConnView) -> tuple[int, ...]:
    return v.sort_key



def diff_documents(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]],
                   *, prune: bool) -> tuple[ConfigChange, ...]:
    """Changes from `old` to `new` (both: key -> plain document); deletes only when pruning."""
    out: list[ConfigChange] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before is None and after is not None:
            out.append(ConfigChange("add", key, None, after))
        elif after is None and before is not None:
            if prune:
                out.append(ConfigChange("delete", key, before, None))
        elif before != after:
            out.append(ConfigChange("change", key, before, after))
    return tuple(out)


TCP_STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
                   "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
"""director.table.tcp.TcpState names in Linux order (the value is the index)."""


def state_name(protocol: int, state: int) -> str:
    if protocol == Proto.TCP and 0 <= state < len(TCP_STATE_NAMES):
        return TCP_STATE_NAMES[state]
    if protocol == Proto.UDP:
        return "UDP"
    if protocol == Proto.ICMP:
        return "ICMP"
    return "NONE" if state == 0 else str(state)


def conn_view(c: Conn, now: float) -> ConnView:
    return ConnView(
        protocol=c.protocol, caddr=c.caddr, cport=c.cport, vaddr=c.vaddr, vport=c.vport, daddr=c.daddr,
        dport=c.dport, fwmark=c.fwmark, state=state_name(c.protocol, c.state), flags=int(c.flags),
        expires_in=max(0.0, c.expires - now), timeout=c.timeout, in_pkts=c.in_pkts,
        has_control=c.control is not None, n_control=c.n_control)


def snapshot_view(snap: ConnSnapshot, now: float) -> ConnView:
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, _ = snap.key
    return ConnView(
        protocol=proto, caddr=caddr, cport=cport, vaddr=vaddr, vport=vport, daddr=daddr, dport=dport,
        fwmark=fwmark, state=state_name(proto, snap.state), flags=snap.flags,
        expires_in=max(0.0, snap.expires - now), timeout=snap.timeout, in_pkts=snap.in_pkts,
        has_control=snap.control_key is not None, n_control=0)


def conn_event(ev: ConnEvent, now: float, wall: float, *, synced: bool = False) -> NodeEvent:
    """A conn-table event as a NodeEvent (`now`: the table's clock; `wall`: unix time for display;
    `synced`: applied on a backup from its master's stream)."""
    return NodeEvent(kind="conn", time=wall, conn=snapshot_view(ev.snap, now),
                     conn_event=ev.kind.name.lower(), synced=synced)
