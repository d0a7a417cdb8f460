"""The cluster's virtual-service config: YAML schema, strict validation, dump, diff, live apply.

Theory of operation
-------------------
Operators write YAML (``deploy/examples/services.yaml`` shows every field): ``timeouts`` (tcp,
tcpfin, udp, like ``ipvsadm --set``) and ``services``, each with name, protocol (tcp|udp), vip,
port (0 = any, persistent only), scheduler (+ ``scheduler_options``, see
``director.services.sched.registry.OPTIONS``), persistence {timeout, netmask}, forward (nat|dr|tun, the
dests' default), expire_nodest_conn, expire_quiescent_template and dests {address, port, weight,
u_threshold, l_threshold, forward, healthcheck}.

Text is parsed with ``yaml.safe_load`` and checked field by field into frozen dataclasses
(``Config`` > ``ServiceConfig`` > ``DestConfig``; ``Persistence``, ``TimeoutsConfig``). Every
problem is collected, then one ``ConfigError`` is raised whose message has one line per problem,
each starting with the field path (``services[1].dests[0].weight: must be an integer in
0..65535, got -3``); unknown keys are named too. Health checks are validated by
``director.health.spec.HealthSpec`` (one schema for both modules).

In etcd every service lives under ``config/services/<name>`` as YAML (``dump_service`` /
``parse_service``; paths then read ``services[web].dests[0].weight``) and the timeouts under
``config/timeouts`` (``dump_timeouts`` / ``parse_timeouts``); ``config_from_texts`` assembles
and cross-checks a whole snapshot.

``dump_config`` writes canonical YAML (fixed key order, every default spelled out) that parses
back to an equal ``Config``. ``diff_config`` lists changes as human lines. ``apply_to_services``
reconciles a live ``ServiceTable`` in place: services are matched by (protocol, vip, port) and
dests by (address, port); objects that still exist are edited, never recreated, so existing
conns keep their ``Dest``; weights and thresholds change through ``VirtualService.edit_dest``,
removed dests go through ``remove_dest``; a scheduler is recreated only when its name or options
change. ``apply_timeouts`` sets a ``director.table.tcp.Timeouts``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import yaml

from director.health.spec import HealthSpec
from director.services.sched import registry
from director.services.service import Dest, DestKey, ServiceTable, VirtualService
from director.types import FwdMethod, Proto, SvcFlags

log = logging.getLogger(__name__)

PROTOCOLS: Mapping[str, Proto] = {"tcp": Proto.TCP, "udp": Proto.UDP}
FORWARDS: Mapping[str, FwdMethod] = {"nat": FwdMethod.NAT, "dr": FwdMethod.DR, "tun": FwdMethod.TUN}
DEFAULT_SCHEDULER = "wlc"
MAX_WEIGHT = 65535
MAX_THRESHOLD = 2**31 - 1
MAX_SECONDS = 2**31 // 1000  # what the kernel's jiffies-based timeouts hold
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class ConfigError(ValueError):
    """Invalid config. ``errors`` holds one "field.path: message" line per problem."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


# -- the model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Persistence:
    timeout: int = 300
    """Seconds a template (client -> dest binding) outlives its last conn."""
    netmask: str = "255.255.255.255"
    """Clients in one netmask-sized block share a template."""

    @property
    def mask(self) -> int:
        return int(ipaddress.IPv4Address(self.netmask))


@dataclass(frozen=True)
class DestConfig:
    address: str
    port: int
    weight: int = 1
    u_threshold: int = 0
    l_threshold: int = 0
    forward: str | None = None
    """nat | dr | tun; None inherits the service's."""
    healthcheck: HealthSpec | None = None

    @property
    def daddr(self) -> int:
        return int(ipaddress.IPv4Address(self.address))

    @property
    def ident(self) -> str:
        return f"{self.address}:{self.port}"


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

    @property
    def proto(self) -> Proto:
        return PROTOCOLS[self.protocol]

    @property
    def vaddr(self) -> int:
        return int(ipaddress.IPv4Address(self.vip))

    @property
    def key(self) -> tuple[int, int, int]:
        """(protocol, vaddr, vport): how the live ServiceTable knows the service."""
        return (int(self.proto), self.vaddr, self.port)

    @property
    def sched_opts(self) -> dict[str, bool | int]:
        return dict(self.scheduler_options)

    def fwd_of(self, dest: DestConfig) -> FwdMethod:
        """The dest's effective forwarding method."""
        return FORWARDS[dest.forward or self.forward]

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


# -- field checkers: each records a problem and returns a usable default ---------------------

class _Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, msg: str) -> None:
        self.lines.append(f"{path or '(top level)'}: {msg}")

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(self.lines)


def _mapping(v: Any, path: str, errs: _Errors) -> dict[str, Any]:
    if not isinstance(v, dict):
        errs.add(path, f"must be a mapping, got {_show(v)}")
        return {}
    bad = [k for k in v if not isinstance(k, str)]
    for k in bad:
        errs.add(path, f"keys must be strings, got {k!r}")
    return {k: x for k, x in v.items() if isinstance(k, str)}


def _keys(d: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str], path: str,
          errs: _Errors) -> None:
    allowed = set(allowed)
    for k in d:
        if k not in allowed:
            errs.add(_join(path, k), f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for k in required:
        if k not in d:
            errs.add(_join(path, k), "required")


def _int(d: Mapping[str, Any], key: str, path: str, errs: _Errors, lo: int, hi: int, default: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        errs.add(_join(path, key), f"must be an integer in {lo}..{hi}, got {_show(v)}")
        return default
    return v


def _bool(d: Mapping[str, Any], key: str, path: str, errs: _Errors, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        errs.add(_join(path, key), f"must be true or false, got {_show(v)}")
        return default
    return v


def _choice(d: Mapping[str, Any], key: str, path: str, errs: _Errors, options: Iterable[str],
            default: str) -> str:
    v = d.get(key, default)
    options = list(options)
    if v not in options:
        errs.add(_join(path, key), f"must be one of {', '.join(options)}, got {_show(v)}")
        return default
    return str(v)


def _ipv4(d: Mapping[str, Any], key: str, path: str, errs: _Errors) -> str:
    v = d.get(key)
    try:
        if not isinstance(v, str):
            raise ValueError
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        if key in d:
            errs.add(_join(path, key), f"must be an IPv4 address, got {_show(v)}")
        return "0.0.0.0"


def _ip(addr: int) -> str:
    return str(ipaddress.IPv4Address(addr))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(v: Any) -> str:
    return "a mapping" if isinstance(v, dict) else "a list" if isinstance(v, list) else repr(v)


# -- parsing ----------------------------------------------------------------------------------

_SERVICE_KEYS = ("name", "protocol", "vip", "port", "scheduler", "scheduler_options", "persistence",
                 "forward", "expire_nodest_conn", "expire_quiescent_template", "dests")
_DEST_KEYS = ("address", "port", "weight", "u_threshold", "l_threshold", "forward", "healthcheck",
              "health")


def _persistence(v: Any, path: str, errs: _Errors) -> Persistence | None:
    if v is None:
        return None
    d = _mapping(v, path, errs)
    _keys(d, ("timeout", "netmask"), (), path, errs)
    timeout = _int(d, "timeout", path, errs, 1, MAX_SECONDS, 300)
    raw = d.get("netmask", 32)
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError
        net = ipaddress.IPv4Network(f"0.0.0.0/{raw}")
    except ValueError:
        errs.add(_join(path, "netmask"), f"must be a netmask or a prefix length 0..32, got {raw!r}")
        return Persistence(timeout)
    return Persistence(timeout, str(net.netmask))


def _sched(d: Mapping[str, Any], path: str, errs: _Errors) -> tuple[str, tuple[tuple[str, bool | int], ...]]:
    name = _choice(d, "scheduler", path, errs, registry.NAMES, DEFAULT_SCHEDULER)
    raw = d.get("scheduler_options") or {}
    opts = _mapping(raw, _join(path, "scheduler_options"), errs)
    if name != d.get("scheduler", DEFAULT_SCHEDULER):
        return name, ()
    for problem in registry.check_options(name, opts):
        errs.add(_join(path, "scheduler_options") + "." + problem.split(": ", 1)[0],
                 problem.split(": ", 1)[-1])
    good = {k: v for k, v in opts.items() if isinstance(v, bool | int)}
    return name, tuple(sorted(good.items()))


def _healthcheck(d: Mapping[str, Any], path: str, errs: _Errors) -> HealthSpec | None:
    if "healthcheck" in d and "health" in d:
        errs.add(_join(path, "health"), "give healthcheck or its alias health, not both")
    key = "healthcheck" if "healthcheck" in d else "health"
    raw = d.get(key)
    if raw is None:
        return None
    try:
        return HealthSpec.from_dict(raw, _join(path, key))
    except ValueError as e:
        errs.lines.append(str(e))
        return None


def _dest(v: Any, path: str, svc_port: int, errs: _Errors) -> DestConfig:
    d = _mapping(v, path, errs)
    _keys(d, _DEST_KEYS, ("address",), path, errs)
    lo = 0 if svc_port == 0 else 1
    port = _int(d, "port", path, errs, lo, 65535, svc_port)
    u = _int(d, "u_threshold", path, errs, 0, MAX_THRESHOLD, 0)
    low = _int(d, "l_threshold", path, errs, 0, MAX_THRESHOLD, 0)
    if low > u:
        errs.add(_join(path, "l_threshold"), f"must not exceed u_threshold ({u}), got {low}")
    fwd = d.get("forward")
    return DestConfig(
        address=_ipv4(d, "address", path, errs), port=port,
        weight=_int(d, "weight", path, errs, 0, MAX_WEIGHT, 1), u_threshold=u, l_threshold=low,
        forward=None if fwd is None else _choice(d, "forward", path, errs, FORWARDS, "nat"),
        healthcheck=_healthcheck(d, path, errs))


def _service_body(d: Mapping[str, Any], name: str, path: str, errs: _Errors) -> ServiceConfig:
    port = _int(d, "port", path, errs, 0, 65535, 1)
    persistence = _persistence(d.get("persistence"), _join(path, "persistence"), errs)
    if port == 0 and "port" in d and persistence is None:
        errs.add(_join(path, "port"), "0 (any port) needs persistence, like ipvsadm")
    scheduler, opts = _sched(d, path, errs)
    forward = _choice(d, "forward", path, errs, FORWARDS, "nat")
    raw_dests = d.get("dests") or []
    if not isinstance(raw_dests, list):
        errs.add(_join(path, "dests"), f"must be a list, got {_show(raw_dests)}")
        raw_dests = []
    dests = tuple(_dest(x, f"{_join(path, 'dests')}[{i}]", port, errs) for i, x in enumerate(raw_dests))
    svc = ServiceConfig(
        name=name, protocol=_choice(d, "protocol", path, errs, PROTOCOLS, "tcp"),
        vip=_ipv4(d, "vip", path, errs), port=port, scheduler=scheduler, scheduler_options=opts,
        persistence=persistence, forward=forward,
        expire_nodest_conn=_bool(d, "expire_nodest_conn", path, errs, False),
        expire_quiescent_template=_bool(d, "expire_quiescent_template", path, errs, False),
        dests=dests)
    _check_dests(svc, path, errs)
    return svc


def _check_dests(svc: ServiceConfig, path: str, errs: _Errors) -> None:
    seen: dict[tuple[str, int], int] = {}
    for i, dest in enumerate(svc.dests):
        dpath = f"{_join(path, 'dests')}[{i}]"
        first = seen.setdefault((dest.address, dest.port), i)
        if first != i:
            errs.add(dpath, f"duplicate dest {dest.ident} (also dests[{first}])")
        if svc.fwd_of(dest) != FwdMethod.NAT and dest.port != svc.port:
            errs.add(_join(dpath, "port"), f"must equal the service port {svc.port} with forward "
                     f"{svc.fwd_of(dest).name.lower()} (no port translation), got {dest.port}")


def _service(v: Any, path: str, errs: _Errors, name: str | None = None) -> ServiceConfig:
    d = _mapping(v, path, errs)
    required = ("protocol", "vip", "port") + (("name",) if name is None else ())
    _keys(d, _SERVICE_KEYS, required, path, errs)
    raw_name = d.get("name", name)
    if name is not None and raw_name != name:
        errs.add(_join(path, "name"), f"must match the key's name {name!r}, got {raw_name!r}")
    if not isinstance(raw_name, str) or not NAME_RE.fullmatch(raw_name):
        if "name" in d or name is not None:
            errs.add(_join(path, "name"), "must be 1-63 letters, digits, '_', '-' or '.', starting with a "
                     f"letter or digit, got {raw_name!r}")
        raw_name = "?"
    return _service_body(d, raw_name, path, errs)


def _timeouts(v: Any, path: str, errs: _Errors) -> TimeoutsConfig | None:
    if v is None:
        return None
    d = _mapping(v, path, errs)
    _keys(d, ("tcp", "tcpfin", "udp"), (), path, errs)
    return TimeoutsConfig(*(_int(d, k, path, errs, 1, MAX_SECONDS, getattr(TimeoutsConfig, k))
                            for k in ("tcp", "tcpfin", "udp")))


def _check_unique(services: Iterable[tuple[str, ServiceConfig]], errs: _Errors) -> None:
    names: dict[str, str] = {}
    keys: dict[tuple[int, int, int], str] = {}
    for path, svc in services:
        if svc.name in names:
            errs.add(_join(path, "name"), f"duplicate service name {svc.name!r} (also {names[svc.name]})")
        names.setdefault(svc.name, path)
        k = svc.key
        if k in keys:
            errs.add(path, f"same protocol, vip and port as {keys[k]} ({svc.protocol} {svc.vip}:{svc.port})")
        keys.setdefault(k, path)


def _load(text: str, path: str, errs: _Errors) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        errs.add(path, f"not valid YAML: {e}".replace("\n", " "))
        return None


def config_from_dict(data: Any) -> Config:
    """Validate an already-loaded YAML document."""
    errs = _Errors()
    d = _mapping({} if data is None else data, "", errs)
    _keys(d, ("services", "timeouts"), (), "", errs)
    raw = d.get("services") or []
    if not isinstance(raw, list):
        errs.add("services", f"must be a list, got {_show(raw)}")
        raw = []
    services, clean = [], []
    for i, x in enumerate(raw):
        n = len(errs.lines)
        services.append(_service(x, f"services[{i}]", errs))
        if len(errs.lines) == n:  # cross-check only services that parsed cleanly
            clean.append((f"services[{i}]", services[-1]))
    _check_unique(clean, errs)
    timeouts = _timeouts(d.get("timeouts"), "timeouts", errs)
    errs.raise_if_any()
    return Config(tuple(services), timeouts)


def parse_config(text: str) -> Config:
    """Parse and validate a whole config file; ``ConfigError`` lists every problem."""
    errs = _Errors()
    data = _load(text, "", errs)
    errs.raise_if_any()
    return config_from_dict(data)


def load_config(path: str) -> Config:
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read())


def parse_service(name: str, text: str) -> ServiceConfig:
    """One service as stored in etcd under config/services/<name>; paths read services[<name>]...."""
    errs = _Errors()
    path = f"services[{name}]"
    data = _load(text, path, errs)
    errs.raise_if_any()
    svc = _service(data, path, errs, name=name)
    errs.raise_if_any()
    return svc


def parse_timeouts(text: str) -> TimeoutsConfig:
    """The timeouts as stored in etcd under config/timeouts."""
    errs = _Errors()
    data = _load(text, "timeouts", errs)
    errs.raise_if_any()
    t = _timeouts({} if data is None else data, "timeouts", errs)
    errs.raise_if_any()
    assert t is not None
    return t


def config_from_texts(services: Mapping[str, str], timeouts: str | None = None) -> Config:
    """A whole config from etcd texts (name -> service YAML, timeouts YAML), cross-checked.

    Services come out sorted by name. All problems of all keys are reported together.
    """
    lines: list[str] = []
    parsed: list[ServiceConfig] = []
    for name in sorted(services):
        try:
            parsed.append(parse_service(name, services[name]))
        except ConfigError as e:
            lines.extend(e.errors)
    t = None
    if timeouts is not None:
        try:
            t = parse_timeouts(timeouts)
        except ConfigError as e:
            lines.extend(e.errors)
    errs = _Errors()
    errs.lines = lines
    _check_unique(((f"services[{s.name}]", s) for s in parsed), errs)
    errs.raise_if_any()
    return Config(tuple(parsed), t)


# -- dumping ----------------------------------------------------------------------------------

def _dest_dict(d: DestConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"address": d.address, "port": d.port, "weight": d.weight,
                           "u_threshold": d.u_threshold, "l_threshold": d.l_threshold}
    if d.forward is not None:
        out["forward"] = d.forward
    if d.healthcheck is not None:
        out["healthcheck"] = d.healthcheck.as_dict()
    return out


def service_dict(svc: ServiceConfig) -> dict[str, Any]:
    """The canonical plain-data form of a service (what dump_service writes)."""
    out: dict[str, Any] = {"name": svc.name, "protocol": svc.protocol, "vip": svc.vip, "port": svc.port,
                           "scheduler": svc.scheduler}
    if svc.scheduler_options:
        out["scheduler_options"] = dict(svc.scheduler_options)
    if svc.persistence is not None:
        out["persistence"] = {"timeout": svc.persistence.timeout, "netmask": svc.persistence.netmask}
    out.update(forward=svc.forward, expire_nodest_conn=svc.expire_nodest_conn,
               expire_quiescent_template=svc.expire_quiescent_template,
               dests=[_dest_dict(d) for d in svc.dests])
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


# -- diffing ----------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list | tuple):
        return yaml.safe_dump(v, default_flow_style=True, sort_keys=False).strip()
    return str(v)


def _diff_dicts(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        if a != b:
            out.append(f"~ {prefix} {key} {_fmt(a)} -> {_fmt(b)}")
    return out


def _flat(d: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """Nested mappings flattened to dotted keys (persistence.timeout, healthcheck.fall)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in skip:
            continue
        if isinstance(v, dict) and k != "scheduler_options":
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _diff_service(old: ServiceConfig, new: ServiceConfig) -> list[str]:
    p = f"service {new.name}"
    skip = ("dests", "name")
    lines = _diff_dicts(p, _flat(service_dict(old), skip), _flat(service_dict(new), skip))
    for d in old.dests:
        if new.dest(d.address, d.port) is None:
            lines.append(f"- {p} dest {d.ident}")
    for d in new.dests:
        was = old.dest(d.address, d.port)
        if was is None:
            lines.append(f"+ {p} dest {d.ident} weight {d.weight}")
        else:
            lines += _diff_dicts(f"{p} dest {d.ident}", _flat(_dest_dict(was), ("address", "port")),
                                 _flat(_dest_dict(d), ("address", "port")))
    return lines


def diff_config(old: Config, new: Config) -> list[str]:
    """Human lines: "+ service web", "- service web", "~ service web dest 198.18.2.10:80 weight 1 -> 0"."""
    lines: list[str] = []
    if old.timeouts != new.timeouts:
        if new.timeouts is None:
            lines.append("- timeouts (running values stay)")
        else:
            before = old.timeouts or TimeoutsConfig()
            for f in fields(TimeoutsConfig):
                a, b = getattr(before, f.name), getattr(new.timeouts, f.name)
                if a != b:
                    lines.append(f"~ timeouts {f.name} {a} -> {b}")
    for svc in old.services:
        if new.service(svc.name) is None:
            lines.append(f"- service {svc.name}")
    for svc in new.services:
        was = old.service(svc.name)
        if was is None:
            lines.append(f"+ service {svc.name}")
            lines += [f"+ service {svc.name} dest {d.ident} weight {d.weight}" for d in svc.dests]
        else:
            lines += _diff_service(was, svc)
    return lines


# -- applying to a live ServiceTable --------------------------------------------------------------

def apply_to_services(cfg: Config, services: ServiceTable, *, down: Container[DestKey] = ()) -> None:
    """Reconcile ``services`` with ``cfg`` in place (see the module docstring for the rules).

    ``down``: keys of dests that health checks hold down. Such a dest (if it has a healthcheck)
    stays as the verdict left it: weight 0 for ``on_failure: quiesce``, unlinked for ``remove``,
    so a config change never revives a dead server. Only address-keyed services (fwmark 0) are
    managed; fwmark services are left alone.
    """
    wanted = {s.key: s for s in cfg.services}
    for svc in [s for s in services if not s.fwmark]:
        if (svc.protocol, svc.addr, svc.port) not in wanted:
            log.info("config: removing service %s", svc.name or svc.key)
            services.remove(svc)
    for key, sc in wanted.items():
        live = services.get(*key)
        if live is None or live.port != sc.port:
            sched = registry.create(sc.scheduler, **sc.sched_opts)
            live = VirtualService(int(sc.proto), sc.vaddr, sc.port, sched)
            log.info("config: adding service %s (%s %s:%d)", sc.name, sc.protocol, sc.vip, sc.port)
            _set_service(live, sc)
            services.add(live)
        else:
            _set_service(live, sc)
        _sync_dests(live, sc, down)


def _set_service(live: VirtualService, sc: ServiceConfig) -> None:
    live.name = sc.name
    live.expire_nodest_conn = sc.expire_nodest_conn
    live.expire_quiescent_template = sc.expire_quiescent_template
    if sc.persistence is None:
        live.flags &= ~SvcFlags.PERSISTENT
    else:
        live.flags |= SvcFlags.PERSISTENT
        live.timeout = float(sc.persistence.timeout)
        live.netmask = sc.persistence.mask
    fresh = registry.create(sc.scheduler, **sc.sched_opts)
    if (live.scheduler.name, getattr(live.scheduler, "opts", 0)) != (fresh.name, getattr(fresh, "opts", 0)):
        log.info("config: service %s scheduler %s -> %s", sc.name, live.scheduler.name, sc.scheduler)
        live.scheduler = fresh
        fresh.update(live.dests)


def _wanted_dests(sc: ServiceConfig,
                  down: Container[DestKey]) -> dict[tuple[int, int], tuple[DestConfig, int]]:
    """(daddr, dport) -> (config, weight to run with) for the dests that should be linked."""
    out = {}
    for d in sc.dests:
        hc = d.healthcheck
        is_down = hc is not None and (int(sc.proto), sc.vaddr, sc.port, 0, d.daddr, d.port) in down
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
        fwd = sc.fwd_of(dc)
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


class _TimeoutSetter(Protocol):
    def set(self, name: str, seconds: float) -> None: ...


def apply_timeouts(t: TimeoutsConfig | None, timeouts: _TimeoutSetter) -> None:
    """Set a ``director.table.tcp.Timeouts`` (or anything with ``set(name, seconds)``); None: no change."""
    if t is None:
        return
    for f in fields(TimeoutsConfig):
        timeouts.set(f.name, float(getattr(t, f.name)))
