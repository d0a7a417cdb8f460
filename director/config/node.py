"""Node settings for `directord` (one YAML file per node), validated with errors that name the field.

Example (deploy/examples/multihost/d1.yaml)::

    node_id: d1
    cluster: lab
    etcd: {endpoints: ["198.18.1.250:2379"], prefix: /lbd}
    interfaces: {external: ext0, internal: int0}
    vmac_id: 1                      # VRRP-style virtual MAC 00:00:5e:00:01:01 shared by all directors
    sync: {listen: "198.18.1.1:7100", advertise: "198.18.1.1:7100"}
    admin: {listen: "198.18.1.1:7200", unix: /run/lbd/d1.sock}
    lease_ttl: 1.0

Parsed like every operator document (``director.config.loader`` limits, ``director.config.validate``
checkers): every problem is collected into one ``NodeConfigError`` (a ``ConfigError``) whose
``errors`` hold "field.path: message" lines. Names that become etcd key parts (``node_id``,
``cluster``) are restricted to letters, digits, ``_ . -``; addresses are 'host:port'; numbers are
finite and in range.

Static mode (``cluster: none``): a single node without etcd, election or sync. ``etcd``, ``sync``,
``lease_ttl``, ``priority`` and ``preempt`` are refused there (each named: "not used with cluster:
none"); ``services_file`` is required: a YAML file in exactly the services/timeouts schema
``directorctl apply`` takes (director.config.services), read at start and on SIGHUP. The node starts
as ``static_role`` (master: it forwards and announces the VIPs; backup: it claims nothing) and is
never fenced unless ``fence_file`` says so (a test and drill aid, docs/CONFIG.md). Example
(deploy/examples/static/d1.yaml)::

    node_id: d1
    cluster: none
    interfaces: {external: ext0, internal: int0}
    vmac_id: 1
    gateways: [198.18.1.254]
    services_file: /etc/lbd/services.yaml
    admin: {unix: /run/lbd/d1.sock}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from director.config import validate as v
from director.config.loader import YamlError, load_yaml
from director.config.validate import ConfigError, Errors
from director.health.spec import parse_argv


class NodeConfigError(ConfigError):
    """Invalid node YAML; ``errors`` has one line per problem, each naming its field."""


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class DefenseConfig:
    """``defense:`` (IPVS defense strategies, director.table.defense_policy). Modes: off, auto, always.
    A size left out (None) is derived from the box's memory at start (director.daemon.defense_settings)."""

    drop_entry: str = "auto"
    drop_packet: str = "auto"
    secure_tcp: str = "auto"
    am_droprate: int = 10
    conn_threshold: int | None = None
    max_conns: int | None = None
    rss_threshold_mb: int | None = None
    rss_max_mb: int | None = None


@dataclass(frozen=True)
class NotifyConfig:
    """``notify:`` commands run on role changes and dest verdicts (director.admin.notify): argv lists,
    empty when not set; each is killed after ``timeout`` seconds."""

    master: tuple[str, ...] = ()
    backup: tuple[str, ...] = ()
    fault: tuple[str, ...] = ()
    dest_up: tuple[str, ...] = ()
    dest_down: tuple[str, ...] = ()
    timeout: float = 10.0


NOTIFY_HOOKS = ("master", "backup", "fault", "dest_up", "dest_down")


def _notify(d: Mapping[str, Any], errs: Errors) -> NotifyConfig:
    """``notify:``: each hook an argv list, or a string split like a shell would (run without one)."""
    if d.get("notify") is None:
        return NotifyConfig()
    sub = v.mapping(d["notify"], "notify", errs)
    v.keys(sub, (*NOTIFY_HOOKS, "timeout"), (), "notify", errs)
    hooks = {h: parse_argv(sub[h], v.join("notify", h), errs) for h in NOTIFY_HOOKS
             if sub.get(h) is not None}
    return NotifyConfig(**hooks, timeout=v.number(sub, "timeout", "notify", errs, 0.1, 3600.0, 10.0))


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    external: str
    internal: str
    etcd_endpoints: tuple[str, ...]
    sync_listen: str
    sync_advertise: str
    admin_listen: str | None = None
    admin_unix: str | None = None
    admin_token: str | None = None
    cluster: str = "default"
    etcd_prefix: str = "/lbd"
    vmac_id: int = 1
    lease_ttl: float = 1.0
    sloppy_grace: float = 30.0
    sync_tls: TlsFiles | None = None
    admin_tls: TlsFiles | None = None
    metrics_listen: str | None = None
    priority: int = 0
    preempt: bool = False
    log_json: bool = False
    gateways: tuple[str, ...] = ()
    """Addresses the active director answers ARP for on the internal side (the NAT real servers' gateway)."""
    int_addr: str | None = None
    """This node's own address on the internal side (ARP sender, IPIP source); default: the gateway."""
    int_mtu: int = 1500
    ext_mtu: int = 1500
    tun_src6: str | None = None
    """Outer source of ip6ip6 (TUN to IPv6 dests); default: the conn's VIP (``CoreConfig.tun_src6``)."""
    """The outside MTU: IPv6 NAT replies bigger than it get Packet Too Big back (``CoreConfig.ext_mtu``)."""
    table_bits: int = 16
    events_file: str | None = None
    """Append role changes and takeover timings as JSON lines here (drills read it)."""
    defense: DefenseConfig = DefenseConfig()
    workers: int = 1
    """Packet worker processes (1: the data plane runs in directord's own loop; the file's default,
    ``auto``, is the usable cores)."""
    notify: NotifyConfig = NotifyConfig()
    neigh_max_entries: int = 16384
    """Neighbour cache bound per side (``CoreConfig.neigh_max_entries``)."""
    neigh_learn_rate: float = 1000.0
    """Client entries learned from data frames per second (``CoreConfig.neigh_learn_rate``)."""
    rx_ring: bool = True
    """False: plain recvmsg + PACKET_AUXDATA instead of a PACKET_RX_RING (``workers: 1`` only)."""
    tx_ring: bool = True
    """False: one send() per frame instead of a PACKET_TX_RING (``workers: 1`` only)."""
    forward_fragments: bool = False
    """Forward IPv4 and IPv6 fragments without reassembly (``CoreConfig.forward_fragments``)."""
    icmp_echo: bool = True
    """The master answers pings to its VIPs and gateway addresses (``CoreConfig.icmp_echo``)."""
    icmp_ratelimit: int = 100
    """ICMP errors the director originates, per second (``CoreConfig.icmp_ratelimit``)."""
    stats_file: str | None = None
    """Write a JSON snapshot of the data plane's counters here every 200 ms (lab tests, benchmarks)."""
    services_file: str | None = None
    """``cluster: none``: the services/timeouts YAML (``directorctl apply``'s schema); SIGHUP re-reads it."""
    static_role: str = "master"
    """``cluster: none``: the role at start (master or backup); SIGUSR2 takes over, SIGUSR1 stands by."""
    fence_file: str | None = None
    """``cluster: none``, tests and drills: a file holding the mastership deadline (a CLOCK_MONOTONIC
    time, ``inf`` or ``none``; :func:`read_deadline`), applied to the data plane when it changes."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vmac(self) -> bytes:
        return bytes([0x00, 0x00, 0x5E, 0x00, 0x01, self.vmac_id])

    @property
    def static(self) -> bool:
        """``cluster: none``: a single static node (no etcd, no election, no sync)."""
        return self.cluster == STATIC


STATIC = "none"
"""``cluster: none``: static mode."""
_CLUSTER_ONLY = ("etcd", "sync", "lease_ttl", "priority", "preempt")
_STATIC_ONLY = ("services_file", "static_role", "fence_file")
_KNOWN = ("node_id", "cluster", "etcd", "interfaces", "vmac_id", "sync", "admin", "lease_ttl",
          "sloppy_grace", "metrics", "priority", "preempt", "log_json", "gateways", "int_addr", "int_mtu",
          "ext_mtu", "tun_src6", "table_bits", "events_file", "defense", "workers", "notify",
          "neigh_max_entries", "neigh_learn_rate", "rx_ring", "tx_ring", "stats_file", "forward_fragments",
          "icmp_echo", "icmp_ratelimit", *_STATIC_ONLY)
STATIC_ROLES = ("master", "backup")
MAX_NEIGH_ENTRIES = 1 << 24
_DEFENSE_KEYS = ("drop_entry", "drop_packet", "secure_tcp", "am_droprate", "conn_threshold", "max_conns",
                 "rss_threshold_mb", "rss_max_mb")
_MODES = ("off", "auto", "always")
MAX_CONNS_LIMIT = 1 << 26
MAX_RSS_MB = 1 << 22
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_NAME_WHAT = "1-63 letters, digits, '_', '-' or '.', starting with a letter or digit"
_PREFIX = re.compile(r"/?[A-Za-z0-9_.-]{1,63}(?:/[A-Za-z0-9_.-]{1,63}){0,7}/?")
_IFNAME = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9_.@-]{1,15}")
_PATH = re.compile(r"[^\x00]{1,4096}")
MAX_ENDPOINTS = 16
MAX_GATEWAYS = 64
MIN_MTU, MAX_MTU = 576, 65535
MIN_TABLE_BITS, MAX_TABLE_BITS = 8, 20


def _section(d: Mapping[str, Any], key: str, allowed: tuple[str, ...], required: tuple[str, ...],
             errs: Errors, *, optional: bool = False) -> dict[str, Any]:
    if key not in d and not optional:
        errs.add(key, "required")
        return {}
    raw = d.get(key)
    if raw is None and optional:
        return {}
    sub = v.mapping(raw, key, errs)
    v.keys(sub, allowed, required, key, errs)
    return sub


def _req_str(d: Mapping[str, Any], key: str, path: str, errs: Errors, **kw: Any) -> str:
    if key not in d:  # v.keys already said "required"
        return ""
    return v.string(d, key, path, errs, "", **kw)


def _tls(d: Mapping[str, Any], path: str, errs: Errors) -> TlsFiles | None:
    if d.get("tls") is None:
        return None
    tpath = v.join(path, "tls")
    t = v.mapping(d["tls"], tpath, errs)
    v.keys(t, ("ca", "cert", "key"), ("ca", "cert", "key"), tpath, errs)
    ca, cert, key = (_req_str(t, k, tpath, errs, pattern=_PATH, what="a file path")
                     for k in ("ca", "cert", "key"))
    return TlsFiles(ca, cert, key)


def _endpoints(etcd: Mapping[str, Any], errs: Errors) -> tuple[str, ...]:
    if "endpoints" not in etcd:
        return ()
    raw = v.sequence(etcd["endpoints"], "etcd.endpoints", errs, max_items=MAX_ENDPOINTS)
    if isinstance(etcd["endpoints"], list) and not etcd["endpoints"]:
        errs.add("etcd.endpoints", "must be a non-empty list of 'host:port'")
    out = []
    for i, e in enumerate(raw):
        bare = e.removeprefix("http://").removeprefix("https://") if isinstance(e, str) else e
        if v.hostport({"e": bare}, "e", "", Errors()) is None:
            errs.add(v.item("etcd.endpoints", i), f"must be 'host:port', got {v.excerpt(e)}")
        else:
            out.append(e)
    return tuple(out)


def _gateways(d: Mapping[str, Any], errs: Errors) -> tuple[str, ...]:
    raw = [] if d.get("gateways") is None else v.sequence(d["gateways"], "gateways", errs,
                                                           max_items=MAX_GATEWAYS)
    return tuple(v.ip_address({"g": g}, "g", "", _Rename(errs, v.item("gateways", i)), unicast=True)
                 for i, g in enumerate(raw))  # IPv6 ones are answered by neighbour discovery


def _defense(d: Mapping[str, Any], errs: Errors) -> DefenseConfig:
    sub = _section(d, "defense", _DEFENSE_KEYS, (), errs, optional=True)
    sub = {k: "off" if val is False else val for k, val in sub.items()}  # YAML 1.1 reads `off` as false

    def size(key: str, hi: int) -> int | None:
        return None if sub.get(key) is None else v.integer(sub, key, "defense", errs, 0, hi, 0)

    cfg = DefenseConfig(
        drop_entry=v.choice(sub, "drop_entry", "defense", errs, _MODES, "auto"),
        drop_packet=v.choice(sub, "drop_packet", "defense", errs, _MODES, "auto"),
        secure_tcp=v.choice(sub, "secure_tcp", "defense", errs, _MODES, "auto"),
        am_droprate=v.integer(sub, "am_droprate", "defense", errs, 1, 1_000_000, 10),
        conn_threshold=size("conn_threshold", MAX_CONNS_LIMIT), max_conns=size("max_conns", MAX_CONNS_LIMIT),
        rss_threshold_mb=size("rss_threshold_mb", MAX_RSS_MB), rss_max_mb=size("rss_max_mb", MAX_RSS_MB))
    for lo, hi in (("conn_threshold", "max_conns"), ("rss_threshold_mb", "rss_max_mb")):
        a, b = getattr(cfg, lo), getattr(cfg, hi)
        if a is not None and b and a >= b:
            errs.add(f"defense.{lo}", f"must be below defense.{hi} ({b}), got {a}")
    return cfg


MAX_WORKERS = 256


def _workers(d: Mapping[str, Any], errs: Errors) -> int:
    """``workers``: a count (1..256) or ``auto`` (the CPUs this process may run on)."""
    if d.get("workers", "auto") == "auto":  # the default: every core the operator gives directord
        return max(1, len(os.sched_getaffinity(0)))
    return v.integer(d, "workers", "", errs, 1, MAX_WORKERS, 1)


class _Rename(Errors):
    """Errors of a value checked out of its mapping, reported under ``path``."""

    def __init__(self, into: Errors, path: str) -> None:
        super().__init__()
        self.into, self.path = into, path

    def add(self, path: str, msg: str) -> None:
        self.into.add(self.path, msg)


def _mode(d: Mapping[str, Any], errs: Errors) -> bool:
    """Whether the node is static (``cluster: none``); keys of the other mode are refused by name."""
    static = d.get("cluster") == STATIC
    for key in _CLUSTER_ONLY if static else _STATIC_ONLY:
        if key in d:
            errs.add(key, "not used with cluster: none (a static node has no etcd, election or sync)"
                     if static else "only with cluster: none (a static node)")
    v.keys(d, _KNOWN, ("node_id", "interfaces", "services_file") if static
           else ("node_id", "etcd", "interfaces", "sync"), "", errs)
    return static


def _static(d: Mapping[str, Any], errs: Errors) -> dict[str, Any]:
    """``cluster: none``'s own keys (absent, and so defaults, in cluster mode)."""
    path = {"pattern": _PATH, "what": "a file path"}
    return {"services_file": v.optional_string(d, "services_file", "", errs, **path),
            "static_role": v.choice(d, "static_role", "", errs, STATIC_ROLES, "master"),
            "fence_file": v.optional_string(d, "fence_file", "", errs, **path)}


def _tun_src6(d: Mapping[str, Any], errs: Errors) -> str | None:
    """``tun_src6``: an IPv6 unicast address (the outer source of ip6ip6), or unset."""
    raw = d.get("tun_src6")
    if raw is None:
        return None
    addr = v.ip_address(d, "tun_src6", "", errs, unicast=True)
    if ":" not in addr and addr != "0.0.0.0":
        errs.add("tun_src6", f"must be an IPv6 address (the outer source of ip6ip6), got {addr}")
    return addr if ":" in addr else None


def _data_plane(d: Mapping[str, Any], workers: int, errs: Errors) -> dict[str, Any]:
    """Neighbour caches, packet I/O choices, fragments, the director's own ICMP and the stats file."""
    out = {"neigh_max_entries": v.integer(d, "neigh_max_entries", "", errs, 1, MAX_NEIGH_ENTRIES, 16384),
           "neigh_learn_rate": v.number(d, "neigh_learn_rate", "", errs, 0.0, 1e9, 1000.0),
           "rx_ring": v.boolean(d, "rx_ring", "", errs, True),
           "tx_ring": v.boolean(d, "tx_ring", "", errs, True),
           "forward_fragments": v.boolean(d, "forward_fragments", "", errs, False),
           "icmp_echo": v.boolean(d, "icmp_echo", "", errs, True),
           "icmp_ratelimit": v.integer(d, "icmp_ratelimit", "", errs, 0, 100000, 100),
           "stats_file": v.optional_string(d, "stats_file", "", errs, pattern=_PATH, what="a file path")}
    for key in ("rx_ring", "tx_ring"):
        if workers > 1 and not out[key]:
            errs.add(key, f"false only with workers: 1 (packet workers always use rings), got {workers}")
    return out


def node_config_from_dict(raw: Any) -> NodeConfig:
    """Validate an already-loaded node document; ``NodeConfigError`` lists every problem."""
    errs = Errors()
    d = v.mapping(raw, "", errs)
    static = _mode(d, errs)
    etcd = {} if static else _section(d, "etcd", ("endpoints", "prefix"), ("endpoints",), errs)
    ifs = _section(d, "interfaces", ("external", "internal"), ("external", "internal"), errs)
    sync = {} if static else _section(d, "sync", ("listen", "advertise", "tls"), ("listen",), errs)
    admin = _section(d, "admin", ("listen", "unix", "token", "tls"), (), errs, optional=True)
    metrics = _section(d, "metrics", ("listen",), (), errs, optional=True)
    listen = v.hostport(sync, "listen", "sync", errs, port_zero_ok=True) or ""
    ifname = {"pattern": _IFNAME, "what": "an interface name (1-15 letters, digits, '_', '.', '@', '-')"}
    workers = _workers(d, errs)
    cfg = NodeConfig(
        node_id=_req_str(d, "node_id", "", errs, pattern=_NAME, what=_NAME_WHAT),
        cluster=v.string(d, "cluster", "", errs, "default", pattern=_NAME, what=_NAME_WHAT),
        etcd_endpoints=_endpoints(etcd, errs),
        etcd_prefix=v.string(etcd, "prefix", "etcd", errs, "/lbd", pattern=_PREFIX,
                             what="a key prefix such as /lbd"),
        external=_req_str(ifs, "external", "interfaces", errs, **ifname),
        internal=_req_str(ifs, "internal", "interfaces", errs, **ifname),
        vmac_id=v.integer(d, "vmac_id", "", errs, 1, 255, 1),
        sync_listen=listen,
        sync_advertise=v.hostport(sync, "advertise", "sync", errs, listen) or listen,
        sync_tls=_tls(sync, "sync", errs),
        admin_listen=v.hostport(admin, "listen", "admin", errs, port_zero_ok=True),
        admin_unix=v.optional_string(admin, "unix", "admin", errs, pattern=_PATH, what="a file path"),
        admin_token=v.optional_string(admin, "token", "admin", errs, max_len=4096),
        admin_tls=_tls(admin, "admin", errs),
        metrics_listen=v.hostport(metrics, "listen", "metrics", errs, port_zero_ok=True),
        lease_ttl=v.number(d, "lease_ttl", "", errs, 1.0, 600.0, 1.0),
        sloppy_grace=v.number(d, "sloppy_grace", "", errs, 0.0, 3600.0, 30.0),
        priority=v.integer(d, "priority", "", errs, 0, 65535, 0),
        preempt=v.boolean(d, "preempt", "", errs, False),
        log_json=v.boolean(d, "log_json", "", errs, False),
        gateways=_gateways(d, errs),
        int_addr=v.ipv4(d, "int_addr", "", errs, unicast=True) if d.get("int_addr") is not None else None,
        int_mtu=v.integer(d, "int_mtu", "", errs, MIN_MTU, MAX_MTU, 1500),
        ext_mtu=v.integer(d, "ext_mtu", "", errs, MIN_MTU, MAX_MTU, 1500),
        tun_src6=_tun_src6(d, errs),
        table_bits=v.integer(d, "table_bits", "", errs, MIN_TABLE_BITS, MAX_TABLE_BITS, 16),
        events_file=v.optional_string(d, "events_file", "", errs, pattern=_PATH, what="a file path"),
        defense=_defense(d, errs),
        workers=workers,
        notify=_notify(d, errs),
        **_data_plane(d, workers, errs),
        **_static(d, errs),
    )
    errs.raise_if_any(NodeConfigError)
    return cfg


def read_deadline(text: str) -> float | None:
    """A ``fence_file``'s content: a CLOCK_MONOTONIC time, ``inf`` (no fencing) or ``none`` (not master).

    Raises ``ValueError`` for anything else (the node logs it and keeps the deadline it had)."""
    word = text.strip().lower()
    return None if word in ("", "none") else float(word)


def parse_node_config(text: str | bytes) -> NodeConfig:
    """Parse and validate a node YAML file's text (bytes are decoded as strict UTF-8)."""
    try:
        raw = load_yaml(text)
    except YamlError as exc:
        raise NodeConfigError([f"(top level): {exc}"]) from None
    return node_config_from_dict(raw)
