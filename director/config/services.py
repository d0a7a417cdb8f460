"""The cluster's virtual-service config: YAML schema and strict validation (the public entry points).

Theory of operation
-------------------
Operators write YAML (``deploy/examples/services.yaml`` shows every field): ``timeouts`` (tcp,
tcpfin, udp, like ``ipvsadm --set``) and ``services``, each with name, protocol (tcp|udp), vip,
port (0 = any, persistent only), scheduler (+ ``scheduler_options``, see
``director.services.sched.registry.OPTIONS``), persistence {timeout, netmask}, forward (nat|dr|tun, the
dests' default), expire_nodest_conn, expire_quiescent_template, sorry_server ("addr[:port]") with
sorry_forwarding, ops (UDP one-packet scheduling) and dests {address, port, weight, u_threshold,
l_threshold, forward, healthcheck}.

Refused, each with its field named: ``ops`` on TCP or with persistence (as ipvsadm refuses them); a dest
or sorry server at a VIP of the config (the director itself, IPVS's LOCALNODE, which a user-space
director cannot hand to its node's stack; a loopback dest is accepted and dropped by the packet path
as ``LOCALNODE``); a sorry server that is also a dest; a NAT dest of
an ``ops`` service that is a NAT dest of another UDP service too (its replies, which match no entry, are
translated by the dest's address and port: ``docs/DATAPLANE.md``, "One-packet scheduling").

Text is read by ``director.config.loader.load_yaml`` (size, depth, alias and tag limits, duplicate
keys refused, strict UTF-8) and checked field by field with ``director.config.validate`` into the
frozen dataclasses of ``director.config.model``. Every problem is collected, then one
``ConfigError`` is raised whose ``errors`` hold one line per problem, each starting with the field
path (``services[1].dests[0].weight: must be an integer in 0..65535, got -3``), showing at most a
short excerpt of the bad value; unknown keys are named too. Health checks are validated by
``director.health.spec.health_spec`` into the same collector. No input, however hostile, makes a
parser here raise anything but ``ConfigError``.

In etcd every service lives under ``config/services/<name>`` as YAML (``dump_service`` /
``parse_service``; paths then read ``services[web].dests[0].weight``) and the timeouts under
``config/timeouts`` (``dump_timeouts`` / ``parse_timeouts``); ``config_from_texts`` assembles
and cross-checks a whole snapshot.

The rest of the package, re-exported here so callers need one import: ``director.config.model``
(the dataclasses), ``director.config.dump`` (canonical YAML, ``service_dict``) and
``director.config.reconcile`` (``apply_to_services`` / ``apply_timeouts`` on the live tables).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from director.config import groups
from director.config import validate as v
from director.config.dump import dump_config, dump_service, dump_timeouts, service_dict
from director.config.loader import MAX_DOCUMENT_BYTES, YamlError, decode, load_yaml
from director.config.model import (
    DEFAULT_SCHEDULER,
    FORWARDS,
    MAX_SECONDS,
    MAX_THRESHOLD,
    MAX_WEIGHT,
    NAME_RE,
    PROTOCOLS,
    Config,
    DestConfig,
    Persistence,
    ServiceConfig,
    SorryServer,
    TimeoutsConfig,
)
from director.config.reconcile import apply_timeouts, apply_to_services
from director.config.validate import ConfigError, Errors
from director.health.spec import HealthSpec, health_spec
from director.services.sched import registry
from director.types import FwdMethod

MAX_SERVICES = 4096
MAX_DESTS = 4096
"""Per service; IPVS has no fixed bound, but a config this large is a mistake, not a plan."""
MAX_SNAPSHOT_BYTES = 16 << 20
"""All config texts of one etcd snapshot together."""

_SERVICE_KEYS = ("name", "protocol", "vip", "port", "scheduler", "scheduler_options", "persistence",
                 "forward", "expire_nodest_conn", "expire_quiescent_template", "dests", "sorry_server",
                 "sorry_forwarding", "ops", "fwmark", "group")
_DEST_KEYS = ("address", "port", "weight", "u_threshold", "l_threshold", "forward", "healthcheck",
              "health")
_OPTION_LIMIT = 2**31 - 1
MAX_SCHED_SLOTS = 1 << 26
"""Lookup-table slots of all sh/dh/mh schedulers together (8 bytes each: 512 MiB at most)."""
_MH_DEFAULT_SLOTS = 65537
_DEST_OK = ("loopback", "link-local")
"""A dest may be on a link-local segment, or loopback: IPVS's local node, which the live service marks
``FwdMethod.LOCALNODE`` and the packet path drops (``LOCALNODE``); health-checker tests use it."""
_LOCALNODE = ("must not be the director itself (IPVS local node: a user-space director cannot hand "
              "conns to its node's own stack); give a real server's address")


def _items(d: Mapping[str, Any], key: str, path: str, errs: Errors, limit: int) -> list[Any]:
    """A list-valued field; a missing or null one is empty, any other non-list is refused."""
    raw = d.get(key)
    return [] if raw is None else v.sequence(raw, v.join(path, key), errs, max_items=limit)


def _persistence(raw: Any, path: str, errs: Errors, v6: bool = False) -> Persistence | None:
    """``persistence: {timeout, netmask}``; an IPv6 service's netmask is a prefix length 0..128 (as
    ipvsadm's ``-M`` for IPv6), stored in its IPv6 netmask form."""
    if raw is None:
        return None
    d = v.mapping(raw, path, errs)
    v.keys(d, ("timeout", "netmask"), (), path, errs)
    timeout = v.integer(d, "timeout", path, errs, 1, MAX_SECONDS, 300)
    if v6:
        return _persistence6(d.get("netmask", 128), timeout, path, errs)
    mask = d.get("netmask", 32)
    try:
        if isinstance(mask, bool) or not isinstance(mask, int | str) or len(str(mask)) > 15:
            raise ValueError
        net = ipaddress.IPv4Network(f"0.0.0.0/{mask}")
    except ValueError:
        errs.add(v.join(path, "netmask"),
                 f"must be a netmask or a prefix length 0..32, got {v.excerpt(mask)}")
        return Persistence(timeout)
    return Persistence(timeout, str(net.netmask))


def _persistence6(mask: Any, timeout: int, path: str, errs: Errors) -> Persistence:
    """A prefix length (``64``, ``"64"``, ``"/64"``) or its netmask form (``ffff:ffff:ffff:ffff::``,
    what ``dump_service`` writes)."""
    text = str(mask).removeprefix("/") if isinstance(mask, int | str) and not isinstance(mask, bool) else ""
    try:
        if len(text) > 45:
            raise ValueError
        if ":" in text:
            bits = int(ipaddress.IPv6Address(text))
            plen = 128 - (~bits & (2**128 - 1)).bit_length()
            if bits != (2**128 - 1) ^ ((1 << (128 - plen)) - 1):
                raise ValueError
            text = str(plen)
        net = ipaddress.IPv6Network(f"::/{text}")
    except ValueError:
        errs.add(v.join(path, "netmask"),
                 f"must be a prefix length 0..128 (an IPv6 service), got {v.excerpt(mask)}")
        return Persistence(timeout, _HOST6)
    return Persistence(timeout, str(net.netmask))


_HOST6 = str(ipaddress.IPv6Network("::/128").netmask)


def _sched(d: Mapping[str, Any], path: str, errs: Errors) -> tuple[str, tuple[tuple[str, bool | int], ...]]:
    name = v.choice(d, "scheduler", path, errs, registry.NAMES, DEFAULT_SCHEDULER)
    opath = v.join(path, "scheduler_options")
    raw = d.get("scheduler_options")
    opts = {} if raw is None else v.mapping(raw, opath, errs)
    if name != d.get("scheduler", DEFAULT_SCHEDULER):
        return name, ()
    known = registry.OPTIONS[name]
    good: dict[str, bool | int] = {}
    for key, x in opts.items():
        if key not in known:
            errs.add(v.join(opath, key),
                     f"unknown option for scheduler {name} (allowed: {', '.join(sorted(known)) or 'none'})")
        elif not isinstance(x, bool | int) or (not isinstance(x, bool) and abs(x) > _OPTION_LIMIT):
            errs.add(v.join(opath, key), f"must be a boolean or an integer, got {v.excerpt(x)}")
        else:
            good[key] = x
    for problem in registry.check_options(name, good):
        field, _, msg = problem.partition(": ")
        errs.add(v.join(opath, field), msg)
    return name, tuple(sorted(good.items()))


def _healthcheck(d: Mapping[str, Any], path: str, errs: Errors) -> HealthSpec | None:
    if "healthcheck" in d and "health" in d:
        errs.add(v.join(path, "health"), "give healthcheck or its alias health, not both")
    key = "healthcheck" if "healthcheck" in d else "health"
    raw = d.get(key)
    return None if raw is None else health_spec(raw, v.join(path, key), errs)


def _dest(raw: Any, path: str, svc_port: int, errs: Errors) -> DestConfig:
    d = v.mapping(raw, path, errs)
    v.keys(d, _DEST_KEYS, ("address",), path, errs)
    port = v.integer(d, "port", path, errs, 0 if svc_port == 0 else 1, 65535, svc_port)
    u = v.integer(d, "u_threshold", path, errs, 0, MAX_THRESHOLD, 0)
    low = v.integer(d, "l_threshold", path, errs, 0, MAX_THRESHOLD, 0)
    if low > u:
        errs.add(v.join(path, "l_threshold"), f"must not exceed u_threshold ({u}), got {low}")
    return DestConfig(
        address=v.ip_address(d, "address", path, errs, unicast=True, allow=_DEST_OK), port=port,
        weight=v.integer(d, "weight", path, errs, 0, MAX_WEIGHT, 1), u_threshold=u, l_threshold=low,
        forward=None if d.get("forward") is None else v.choice(d, "forward", path, errs, FORWARDS, "nat"),
        healthcheck=_healthcheck(d, path, errs))


def _sorry(d: Mapping[str, Any], path: str, svc_port: int, errs: Errors) -> SorryServer | None:
    """``sorry_server: "addr[:port]"`` (port: the service's by default) and ``sorry_forwarding``."""
    raw = d.get("sorry_server")
    fwd = None if d.get("sorry_forwarding") is None else v.choice(d, "sorry_forwarding", path, errs,
                                                                   FORWARDS, "nat")
    if raw is None:
        if fwd is not None:
            errs.add(v.join(path, "sorry_forwarding"), "needs sorry_server")
        return None
    if not isinstance(raw, str) or len(raw) > 53:
        errs.add(v.join(path, "sorry_server"), f"must be 'address' or 'address:port', got {v.excerpt(raw)}")
        return None
    host, port_text = v.split_hostport(raw)
    address = v.ip_address({"sorry_server": host}, "sorry_server", path, errs, unicast=True, allow=_DEST_OK)
    port = svc_port
    if port_text is not None:
        port = v.integer({"sorry_server": int(port_text) if port_text.isascii() and port_text.isdigit()
                          and len(port_text) <= 5 else port_text},
                         "sorry_server", path, errs, 0 if svc_port == 0 else 1, 65535, svc_port)
    return SorryServer(address, port, fwd)


def _ops(d: Mapping[str, Any], path: str, protocols: frozenset[str], persistence: Persistence | None,
         errs: Errors) -> bool:
    """``ops``: UDP only and never with persistence, as ipvsadm refuses both; not in a group (its NAT
    replies are translated by the dest's address alone, docs/DATAPLANE.md)."""
    ops = v.boolean(d, "ops", path, errs, False)
    if ops and protocols - {"udp"}:
        errs.add(v.join(path, "ops"), f"one-packet scheduling is for UDP services only (like ipvsadm "
                 f"--ops), got protocol {', '.join(sorted(protocols))}")
    if ops and persistence is not None:
        errs.add(v.join(path, "ops"), "cannot be combined with persistence (like ipvsadm --ops)")
    if ops and "fwmark" in d:
        errs.add(v.join(path, "ops"), "not with fwmark: a reply without an entry could not tell which of the "
                 "group's VIPs and ports it answers")
    return ops


def _service_body(d: Mapping[str, Any], name: str, path: str, errs: Errors) -> ServiceConfig:
    fwmark, group = groups.group_fields(d, path, errs) if groups.is_group(d) else (0, ())
    port = 0 if fwmark else v.integer(d, "port", path, errs, 0, 65535, 1)
    v6 = (":" in group[0].vip) if group else (isinstance(d.get("vip"), str) and ":" in d["vip"])
    persistence = _persistence(d.get("persistence"), v.join(path, "persistence"), errs, v6)
    if port == 0 and "port" in d and persistence is None:
        errs.add(v.join(path, "port"), "0 (any port) needs persistence, like ipvsadm")
    scheduler, opts = _sched(d, path, errs)
    forward = v.choice(d, "forward", path, errs, FORWARDS, "nat")
    dpath = v.join(path, "dests")
    dests = tuple(_dest(x, v.item(dpath, i), port, errs)
                  for i, x in enumerate(_items(d, "dests", path, errs, MAX_DESTS)))
    if fwmark:
        protocol, vip = (group[0].protocol if group else "tcp"), "0.0.0.0"
        protocols = frozenset(x.protocol for x in group)
    else:
        protocol = v.choice(d, "protocol", path, errs, PROTOCOLS, "tcp")
        vip = v.ip_address(d, "vip", path, errs, unicast=True)
        protocols = frozenset((protocol,))
    svc = ServiceConfig(
        name=name, protocol=protocol, vip=vip, port=port, scheduler=scheduler,
        scheduler_options=opts, persistence=persistence, forward=forward,
        expire_nodest_conn=v.boolean(d, "expire_nodest_conn", path, errs, False),
        expire_quiescent_template=v.boolean(d, "expire_quiescent_template", path, errs, False),
        dests=dests, sorry=_sorry(d, path, port, errs), ops=_ops(d, path, protocols, persistence, errs),
        fwmark=fwmark, group=group)
    _check_dests(svc, path, errs)
    return svc


def _family_problem(svc: ServiceConfig, address: str) -> str | None:
    """A real server of the other family than the VIP: IPVS forwards within one family."""
    vip = svc.group[0].vip if svc.fwmark and svc.group else svc.vip
    if (":" in address) == (":" in vip) or address == "0.0.0.0":  # (0.0.0.0: already refused)
        return None
    return (f"must be an {'IPv6' if ':' in vip else 'IPv4'} address like the vip {vip} (a service forwards "
            f"within one family), got {address}")


def _check_dests(svc: ServiceConfig, path: str, errs: Errors) -> None:
    seen: dict[tuple[str, int], int] = {}
    for i, dest in enumerate(svc.dests):
        dpath = v.item(v.join(path, "dests"), i)
        if (why := _family_problem(svc, dest.address)) is not None:
            errs.add(v.join(dpath, "address"), why)
        first = seen.setdefault((dest.address, dest.port), i)
        if first != i:
            errs.add(dpath, f"duplicate dest {dest.ident} (also dests[{first}])")
        if svc.fwd_of(dest) != FwdMethod.NAT and dest.port != svc.port:
            errs.add(v.join(dpath, "port"), f"must equal the service port {svc.port} with forward "
                     f"{svc.fwd_of(dest).name.lower()} (no port translation), got {dest.port}")
    sorry = svc.sorry
    if sorry is None:
        return
    spath = v.join(path, "sorry_server")
    if (why := _family_problem(svc, sorry.address)) is not None:
        errs.add(spath, why)
    if (sorry.address, sorry.port) in seen:
        errs.add(spath, f"must not be one of the dests, got {sorry.ident} "
                 f"(also dests[{seen[(sorry.address, sorry.port)]}])")
    if svc.sorry_fwd() != FwdMethod.NAT and sorry.port != svc.port:
        errs.add(spath, f"port must equal the service port {svc.port} with forwarding "
                 f"{svc.sorry_fwd().name.lower()} (no port translation), got {sorry.port}")


def _service(raw: Any, path: str, errs: Errors, name: str | None = None) -> ServiceConfig:
    d = v.mapping(raw, path, errs)
    required = (("fwmark", "group") if groups.is_group(d) else ("protocol", "vip", "port")) + (
        ("name",) if name is None else ())
    v.keys(d, _SERVICE_KEYS, required, path, errs)
    raw_name = d.get("name", name)
    if name is not None and raw_name != name:
        errs.add(v.join(path, "name"),
                 f"must match the key's name {v.excerpt(name)}, got {v.excerpt(raw_name)}")
    if not isinstance(raw_name, str) or not NAME_RE.fullmatch(raw_name):
        if "name" in d or name is not None:
            errs.add(v.join(path, "name"), "must be 1-63 letters, digits, '_', '-' or '.', starting with a "
                     f"letter or digit, got {v.excerpt(raw_name)}")
        raw_name = "?"
    return _service_body(d, raw_name, path, errs)


def _timeouts(raw: Any, path: str, errs: Errors) -> TimeoutsConfig | None:
    if raw is None:
        return None
    d = v.mapping(raw, path, errs)
    v.keys(d, ("tcp", "tcpfin", "udp"), (), path, errs)
    return TimeoutsConfig(*(v.integer(d, k, path, errs, 1, MAX_SECONDS, getattr(TimeoutsConfig, k))
                            for k in ("tcp", "tcpfin", "udp")))


def _sched_slots(svc: ServiceConfig) -> int:
    opts = svc.sched_opts
    if svc.scheduler == "mh":
        return int(opts.get("table_size", _MH_DEFAULT_SLOTS))
    if svc.scheduler in ("sh", "dh"):
        return 1 << int(opts.get("tab_bits", 8))
    return 0


def _check_unique(services: Iterable[tuple[str, ServiceConfig]], errs: Errors) -> None:
    """Names and (protocol, vip, port) unique; scheduler tables within ``MAX_SCHED_SLOTS``; no dest on
    the director itself; ops NAT dests unambiguous."""
    services = list(services)
    slots = 0
    names: dict[str, str] = {}
    keys: dict[tuple[int, int, int], str] = {}
    for path, svc in services:
        if svc.name in names:
            errs.add(v.join(path, "name"), f"duplicate service name {svc.name!r} (also {names[svc.name]})")
        names.setdefault(svc.name, path)
        k = svc.key
        if not svc.fwmark and k in keys:
            errs.add(path, f"same protocol, vip and port as {keys[k]} ({svc.protocol} {svc.vip}:{svc.port})")
        if not svc.fwmark:
            keys.setdefault(k, path)
        slots += _sched_slots(svc)
    if slots > MAX_SCHED_SLOTS:
        errs.add("services", f"scheduler tables need {slots} slots together, more than {MAX_SCHED_SLOTS} "
                 "(use smaller mh table_size / sh, dh tab_bits, or fewer hashing services)")
    groups.check_selectors(services, errs)
    _check_localnode(services, errs)
    _check_ops_replies(services, errs)


def _real_servers(path: str, svc: ServiceConfig) -> Iterator[tuple[str, str, int, FwdMethod]]:
    """(field path, address, port, forwarding) of every dest of a service, the sorry server last."""
    for i, d in enumerate(svc.dests):
        yield v.join(v.item(v.join(path, "dests"), i), "address"), d.address, d.port, svc.fwd_of(d)
    if svc.sorry is not None:
        yield v.join(path, "sorry_server"), svc.sorry.address, svc.sorry.port, svc.sorry_fwd()


def _check_localnode(services: list[tuple[str, ServiceConfig]], errs: Errors) -> None:
    """A dest at a VIP of the config is the director itself (LOCALNODE): refused."""
    vips = {svc.vip: path for path, svc in services if not svc.fwmark}
    vips.update((sel.vip, path) for path, svc in services for sel in svc.group if sel.vip not in vips)
    for path, svc in services:
        for field, address, _port, _fwd in _real_servers(path, svc):
            if address in vips:
                errs.add(field, f"{_LOCALNODE}, got {address} (the vip of {vips[address]})")


def _check_ops_replies(services: Iterable[tuple[str, ServiceConfig]], errs: Errors) -> None:
    """A NAT dest of an ops service answers without an entry: its (address, port) alone must name the
    service, so it may be a NAT dest of no other UDP service (port 0, a group's "the packet's port",
    shares every port of the address)."""
    seen: dict[str, list[tuple[int, str]]] = {}  # address -> (port, service path): every UDP NAT dest
    ops: dict[str, list[tuple[int, str]]] = {}  # ... of ops services only (few; what a non-ops dest checks)
    for path, svc in services:
        if "udp" not in svc.protocols:
            continue
        for field, address, port, fwd in _real_servers(path, svc):
            if fwd != FwdMethod.NAT:
                continue
            against = seen.get(address, ()) if svc.ops else ops.get(address, ())
            prev = next((p for o, p in against if p != path and (o == port or not o or not port)), None)
            if prev is not None:
                errs.add(field, f"{address}:{port} is also a NAT dest of {prev}; a NAT dest of an ops "
                         "service may serve no other UDP service (its replies match no entry)")
            seen.setdefault(address, []).append((port, path))
            if svc.ops:
                ops.setdefault(address, []).append((port, path))


def _load(text: str | bytes, path: str) -> Any:
    try:
        return load_yaml(text)
    except YamlError as e:
        raise ConfigError([f"{path or '(top level)'}: {e}"]) from None


def config_from_dict(data: Any) -> Config:
    """Validate an already-loaded document (plain data, e.g. from ``load_yaml`` or the admin API)."""
    errs = Errors()
    d = v.mapping({} if data is None else data, "", errs)
    v.keys(d, ("services", "timeouts"), (), "", errs)
    services, clean = [], []
    for i, x in enumerate(_items(d, "services", "", errs, MAX_SERVICES)):
        n = errs.count
        path = v.item("services", i)
        services.append(_service(x, path, errs))
        if errs.count == n:  # cross-check only services that parsed cleanly
            clean.append((path, services[-1]))
    _check_unique(clean, errs)
    timeouts = _timeouts(d.get("timeouts"), "timeouts", errs)
    errs.raise_if_any()
    return Config(tuple(services), timeouts)


def parse_config(text: str | bytes) -> Config:
    """Parse and validate a whole config file; ``ConfigError`` lists every problem."""
    return config_from_dict(_load(text, ""))


def load_config(path: str) -> Config:
    """Read a config file (bytes: a non-UTF-8 file is a ``ConfigError``, not a crash)."""
    with open(path, "rb") as f:
        return parse_config(f.read())


def read_document(path: str) -> str:
    """A config file's text as a client sends it to a node (``directorctl apply -f``), checked for
    size and UTF-8 without a traceback: ``ConfigError`` names the file; ``OSError`` if unreadable."""
    with open(path, "rb") as f:
        raw = f.read(MAX_DOCUMENT_BYTES + 1)
    try:
        return decode(raw)
    except YamlError as e:
        raise ConfigError([f"{path}: {e}"]) from None


def parse_service(name: str, text: str | bytes) -> ServiceConfig:
    """One service as stored in etcd under config/services/<name>; paths read services[<name>]...."""
    path = v.item("services", name)
    data = _load(text, path)
    errs = Errors()
    svc = _service(data, path, errs, name=name)
    errs.raise_if_any()
    return svc


def parse_timeouts(text: str | bytes) -> TimeoutsConfig:
    """The timeouts as stored in etcd under config/timeouts."""
    data = _load(text, "timeouts")
    errs = Errors()
    t = _timeouts({} if data is None else data, "timeouts", errs)
    errs.raise_if_any()
    assert t is not None
    return t


def config_from_texts(services: Mapping[str, str | bytes], timeouts: str | bytes | None = None) -> Config:
    """A whole config from etcd texts (name -> service YAML, timeouts YAML), cross-checked.

    Services come out sorted by name. All problems of all keys are reported together (bounded).
    """
    errs = Errors()
    total = sum(len(t) for t in services.values()) + len(timeouts or "")
    if total > MAX_SNAPSHOT_BYTES:  # refuse before parsing anything
        raise ConfigError([f"services: {total} characters of config text, more than {MAX_SNAPSHOT_BYTES}"])
    parsed: list[ServiceConfig] = []
    for name in sorted(services)[:MAX_SERVICES]:
        try:
            parsed.append(parse_service(name, services[name]))
        except ConfigError as e:
            errs.extend(e.errors)
    if len(services) > MAX_SERVICES:
        errs.add("services", f"must have at most {MAX_SERVICES} items, got {len(services)}")
    t = None
    if timeouts is not None:
        try:
            t = parse_timeouts(timeouts)
        except ConfigError as e:
            errs.extend(e.errors)
    _check_unique(((v.item("services", s.name), s) for s in parsed), errs)
    errs.raise_if_any()
    return Config(tuple(parsed), t)


__all__ = [
    "DEFAULT_SCHEDULER", "FORWARDS", "MAX_SECONDS", "MAX_THRESHOLD", "MAX_WEIGHT", "NAME_RE", "PROTOCOLS",
    "Config", "ConfigError", "DestConfig", "Persistence", "ServiceConfig", "TimeoutsConfig",
    "apply_timeouts", "apply_to_services", "config_from_dict", "config_from_texts", "dump_config",
    "dump_service", "dump_timeouts", "load_config", "parse_config", "parse_service", "parse_timeouts",
    "read_document", "service_dict",
]
