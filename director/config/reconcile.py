"""Live reconcile: bring a running ``ServiceTable`` and the protocol timeouts in line with a ``Config``.

``apply_to_services`` reconciles in place: services are matched by (protocol, vip, port) (service
groups by their fwmark; their selectors are re-indexed when they change) and dests
by (address, port); objects that still exist are edited, never recreated, so existing conns keep
their ``Dest``; weights and thresholds change through ``VirtualService.edit_dest``, removed dests
go through ``remove_dest``; a scheduler is recreated only when its name or options change.
``apply_timeouts`` sets a ``director.table.tcp.Timeouts``. The config was validated when it was
built, so nothing here checks input.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Container
from dataclasses import fields
from typing import Protocol

from director.config.model import Config, DestConfig, ServiceConfig, TimeoutsConfig
from director.services.sched import registry
from director.services.service import Dest, DestKey, ServiceTable, VirtualService
from director.types import FwdMethod, SvcFlags

log = logging.getLogger(__name__)


def _ip(addr: int) -> str:
    return str(ipaddress.ip_address(addr))


def apply_to_services(cfg: Config, services: ServiceTable, *, down: Container[DestKey] = ()) -> None:
    """Reconcile ``services`` with ``cfg`` in place (see the module docstring for the rules).

    ``down``: keys of dests that health checks hold down. Such a dest (if it has a healthcheck)
    stays as the verdict left it: weight 0 for ``on_failure: quiesce``, unlinked for ``remove``,
    so a config change never revives a dead server. Address services are matched by (protocol, vip,
    port), service groups (fwmark services) by their fwmark.
    """
    wanted = {s.key: s for s in cfg.services if not s.fwmark}
    groups = {s.fwmark: s for s in cfg.services if s.fwmark}
    for svc in list(services):
        if (svc.fwmark not in groups) if svc.fwmark else ((svc.protocol, svc.addr, svc.port) not in wanted):
            log.info("config: removing service %s", svc.name or svc.key)
            services.remove(svc, index=False)
    for sc in cfg.services:
        live = services.get_fwmark(sc.fwmark) if sc.fwmark else services.get_addr(*sc.key)
        if live is None:
            sched = registry.create(sc.scheduler, **sc.sched_opts)
            live = VirtualService(int(sc.proto), sc.vaddr, sc.port, sched, fwmark=sc.fwmark)
            log.info("config: adding service %s (%s)", sc.name, f"fwmark {sc.fwmark}" if sc.fwmark else
                     f"{sc.protocol} {sc.vip}:{sc.port}")
            _set_service(live, sc)
            live.selectors = _selectors(sc)
            services.add(live, index=False)
        else:
            _set_service(live, sc)
            live.selectors = _selectors(sc)
        _sync_dests(live, sc, down)
        _sync_sorry(live, sc)
    services.reindex()  # once, after every change: selectors, ops dests, VIPs


def _selectors(sc: ServiceConfig) -> tuple[tuple[int, int, int, int], ...]:
    return tuple((int(x.proto), x.vaddr, x.port, x.port_hi) for x in sc.group)


@functools.lru_cache(maxsize=256)
def _sched_identity(name: str, opts: tuple[tuple[str, bool | int], ...]) -> tuple[str, object]:
    """(name, normalized options) a scheduler built from this config has; cached, so a re-apply
    (every health verdict triggers one) does not build and drop a scheduler table per service."""
    sched = registry.create(name, **dict(opts))
    return sched.name, getattr(sched, "opts", 0)


def _set_service(live: VirtualService, sc: ServiceConfig) -> None:
    live.name = sc.name
    live.expire_nodest_conn = sc.expire_nodest_conn
    live.expire_quiescent_template = sc.expire_quiescent_template
    if sc.ops:
        live.flags |= SvcFlags.ONEPACKET
    else:
        live.flags &= ~SvcFlags.ONEPACKET
    if sc.persistence is None:
        live.flags &= ~SvcFlags.PERSISTENT
    else:
        live.flags |= SvcFlags.PERSISTENT
        live.timeout = float(sc.persistence.timeout)
        live.netmask = sc.persistence.mask
    if (live.scheduler.name, getattr(live.scheduler, "opts", 0)) != _sched_identity(sc.scheduler,
                                                                                    sc.scheduler_options):
        fresh = registry.create(sc.scheduler, **sc.sched_opts)
        log.info("config: service %s scheduler %s -> %s", sc.name, live.scheduler.name, sc.scheduler)
        live.scheduler = fresh
        fresh.update(live.dests)


def _wanted_dests(sc: ServiceConfig,
                  down: Container[DestKey]) -> dict[tuple[int, int], tuple[DestConfig, int]]:
    """(daddr, dport) -> (config, weight to run with) for the dests that should be linked."""
    out = {}
    for d in sc.dests:
        hc = d.healthcheck
        is_down = hc is not None and (*sc.svc_key, d.daddr, d.port) in down
        if is_down and hc is not None and hc.on_failure == "remove":
            continue
        out[(d.daddr, d.port)] = (d, 0 if is_down else d.weight)
    return out


def _sync_dests(live: VirtualService, sc: ServiceConfig, down: Container[DestKey]) -> None:
    wanted = _wanted_dests(sc, down)
    for dest in list(live.dests):
        if (dest.addr, dest.port) not in wanted:
            log.info("config: service %s removing dest %s:%d", sc.name, _ip(dest.addr), dest.port)
            live.remove_dest(dest)
    for (daddr, dport), (dc, weight) in wanted.items():
        fwd = _fwd(daddr, sc.fwd_of(dc))
        found = live.find_dest(daddr, dport)
        if found is None:
            log.info("config: service %s adding dest %s", sc.name, dc.ident)
            live.add_dest(Dest(live, daddr, dport, weight=weight, fwd=fwd,
                               u_threshold=dc.u_threshold, l_threshold=dc.l_threshold))
            continue
        dest = found
        if dest.fwd != fwd:
            dest.fwd = fwd
            dest.conn_flags = int(fwd)
        if (dest.weight, dest.u_threshold, dest.l_threshold) != (weight, dc.u_threshold, dc.l_threshold):
            log.info("config: service %s dest %s weight %d -> %d", sc.name, dc.ident, dest.weight, weight)
            live.edit_dest(dest, weight=weight, u_threshold=dc.u_threshold, l_threshold=dc.l_threshold)


def _fwd(daddr: int, configured: FwdMethod) -> FwdMethod:
    """A loopback dest is the director itself: IPVS's LOCALNODE (the packet path drops its conns)."""
    return FwdMethod.LOCALNODE if daddr >> 24 == 127 else configured


def _sync_sorry(live: VirtualService, sc: ServiceConfig) -> None:
    """The sorry dest: kept while its address, port and forwarding stay (its conns with it), else
    replaced (the old one's conns then drop like a removed dest's)."""
    want, cur = sc.sorry, live.sorry
    if want is None:
        live.set_sorry(None)
        return
    fwd = _fwd(want.daddr, sc.sorry_fwd())
    if cur is None or (cur.addr, cur.port, cur.fwd) != (want.daddr, want.port, fwd):
        log.info("config: service %s sorry server %s", sc.name, want.ident)
        live.set_sorry(Dest(live, want.daddr, want.port, fwd=fwd))


class _TimeoutSetter(Protocol):
    def set(self, name: str, seconds: float) -> None: ...


def apply_timeouts(t: TimeoutsConfig | None, timeouts: _TimeoutSetter) -> None:
    """Set a ``director.table.tcp.Timeouts`` (or anything with ``set(name, seconds)``); None: no change."""
    if t is None:
        return
    for f in fields(TimeoutsConfig):
        timeouts.set(f.name, float(getattr(t, f.name)))
