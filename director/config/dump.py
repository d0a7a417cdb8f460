"""Canonical YAML of the service config: fixed key order, every default spelled out.

``service_dict`` is the plain-data form of a service (what the admin API edits and what
``dump_service`` writes under ``config/services/<name>``); ``dump_config`` writes a whole file that
``director.config.services.parse_config`` reads back to an equal ``Config``.
"""

from __future__ import annotations

from typing import Any

import yaml

from director.config.model import Config, DestConfig, Selector, ServiceConfig, TimeoutsConfig


def _dest_dict(d: DestConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"address": d.address, "port": d.port, "weight": d.weight,
                           "u_threshold": d.u_threshold, "l_threshold": d.l_threshold}
    if d.forward is not None:
        out["forward"] = d.forward
    if d.healthcheck is not None:
        out["healthcheck"] = d.healthcheck.as_dict()
    return out


def _selector_dict(x: Selector) -> dict[str, Any]:
    ports: dict[str, Any] = {"port": x.port} if x.port == x.port_hi else {"ports": x.ports}
    return {"protocol": x.protocol, "vip": x.vip, **ports}


def service_dict(svc: ServiceConfig) -> dict[str, Any]:
    """The canonical plain-data form of a service (what dump_service writes)."""
    out: dict[str, Any] = {"name": svc.name}
    if svc.fwmark:  # a service group: its selectors instead of protocol, vip and port
        out["fwmark"] = svc.fwmark
        out["group"] = [_selector_dict(x) for x in svc.group]
    else:
        out.update(protocol=svc.protocol, vip=svc.vip, port=svc.port)
    out["scheduler"] = svc.scheduler
    if svc.scheduler_options:
        out["scheduler_options"] = dict(svc.scheduler_options)
    if svc.persistence is not None:
        out["persistence"] = {"timeout": svc.persistence.timeout, "netmask": svc.persistence.netmask}
    out.update(forward=svc.forward, expire_nodest_conn=svc.expire_nodest_conn,
               expire_quiescent_template=svc.expire_quiescent_template,
               dests=[_dest_dict(d) for d in svc.dests])
    if svc.sorry is not None:  # optional keys only when set: documents written before them stay equal
        out["sorry_server"] = svc.sorry.ident
        if svc.sorry.forward is not None:
            out["sorry_forwarding"] = svc.sorry.forward
    if svc.ops:
        out["ops"] = True
    return out


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_service(svc: ServiceConfig) -> str:
    """Canonical YAML of one service (the value of config/services/<name>)."""
    return _yaml(service_dict(svc))


def dump_timeouts(t: TimeoutsConfig) -> str:
    """Canonical YAML of the timeouts (the value of config/timeouts)."""
    return _yaml({"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp})


def dump_config(cfg: Config) -> str:
    """Canonical YAML of a whole config; ``parse_config(dump_config(c)) == c``."""
    data: dict[str, Any] = {}
    if cfg.timeouts is not None:
        data["timeouts"] = {"tcp": cfg.timeouts.tcp, "tcpfin": cfg.timeouts.tcpfin, "udp": cfg.timeouts.udp}
    data["services"] = [service_dict(s) for s in cfg.services]
    return _yaml(data)
