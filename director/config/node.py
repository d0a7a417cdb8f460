"""Node settings for `directord` (one YAML file per node), validated with errors that name the field.

Example (deploy/examples/node.yaml)::

    node_id: d1
    cluster: lab
    etcd: {endpoints: ["198.18.1.250:2379"], prefix: /lbd}
    interfaces: {external: ext0, internal: int0}
    vmac_id: 1                      # VRRP-style virtual MAC 00:00:5e:00:01:01 shared by all directors
    sync: {listen: "198.18.1.1:7100", advertise: "198.18.1.1:7100"}
    admin: {listen: "198.18.1.1:7200", unix: /run/lbd/d1.sock}
    lease_ttl: 1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml


class NodeConfigError(ValueError):
    """Invalid node YAML; the message names the field."""


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str
    key: str


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
    log_json: bool = True
    gateways: tuple[str, ...] = ()
    """Addresses the active director answers ARP for on the internal side (the NAT real servers' gateway)."""
    int_addr: str | None = None
    """This node's own address on the internal side (ARP sender, IPIP source); default: the gateway."""
    int_mtu: int = 1500
    table_bits: int = 16
    events_file: str | None = None
    """Append role changes and takeover timings as JSON lines here (drills read it)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vmac(self) -> bytes:
        return bytes([0x00, 0x00, 0x5E, 0x00, 0x01, self.vmac_id])


_KNOWN = {"node_id", "cluster", "etcd", "interfaces", "vmac_id", "sync", "admin", "lease_ttl",
          "sloppy_grace", "metrics", "priority", "preempt", "log_json", "gateways", "int_addr", "int_mtu",
          "table_bits", "events_file"}


def _req(d: dict[str, Any], key: str, path: str, typ: type) -> Any:
    if key not in d:
        raise NodeConfigError(f"{path}{key}: required")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise NodeConfigError(f"{path}{key}: must be {typ.__name__}, got {v!r}")
    return v


def _opt(d: dict[str, Any], key: str, path: str, typ: type | tuple[type, ...], default: Any) -> Any:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise NodeConfigError(f"{path}{key}: wrong type, got {v!r}")
    return v


def _tls(d: dict[str, Any], path: str) -> TlsFiles | None:
    t = d.get("tls")
    if t is None:
        return None
    if not isinstance(t, dict):
        raise NodeConfigError(f"{path}tls: must be a mapping with ca, cert, key")
    return TlsFiles(_req(t, "ca", f"{path}tls.", str), _req(t, "cert", f"{path}tls.", str),
                    _req(t, "key", f"{path}tls.", str))


def parse_node_config(text: str) -> NodeConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise NodeConfigError(f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise NodeConfigError("top level: must be a mapping")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise NodeConfigError(f"{sorted(unknown)[0]}: unknown field (known: {', '.join(sorted(_KNOWN))})")
    etcd = _req(raw, "etcd", "", dict)
    endpoints = _req(etcd, "endpoints", "etcd.", list)
    if not endpoints or not all(isinstance(e, str) and ":" in e for e in endpoints):
        raise NodeConfigError("etcd.endpoints: must be a non-empty list of 'host:port'")
    ifs = _req(raw, "interfaces", "", dict)
    sync = _req(raw, "sync", "", dict)
    admin = _opt(raw, "admin", "", dict, {})
    metrics = _opt(raw, "metrics", "", dict, {})
    vmac_id = _opt(raw, "vmac_id", "", int, 1)
    if not 1 <= vmac_id <= 255:
        raise NodeConfigError(f"vmac_id: must be 1..255, got {vmac_id}")
    ttl = float(_opt(raw, "lease_ttl", "", (int, float), 1.0))
    if ttl < 1:
        raise NodeConfigError(f"lease_ttl: must be >= 1 second (etcd's minimum), got {ttl}")
    listen = _req(sync, "listen", "sync.", str)
    return NodeConfig(
        node_id=_req(raw, "node_id", "", str),
        cluster=_opt(raw, "cluster", "", str, "default"),
        etcd_endpoints=tuple(endpoints),
        etcd_prefix=_opt(etcd, "prefix", "etcd.", str, "/lbd"),
        external=_req(ifs, "external", "interfaces.", str),
        internal=_req(ifs, "internal", "interfaces.", str),
        vmac_id=vmac_id,
        sync_listen=listen,
        sync_advertise=_opt(sync, "advertise", "sync.", str, listen),
        sync_tls=_tls(sync, "sync."),
        admin_listen=_opt(admin, "listen", "admin.", str, None),
        admin_unix=_opt(admin, "unix", "admin.", str, None),
        admin_token=_opt(admin, "token", "admin.", str, None),
        admin_tls=_tls(admin, "admin."),
        metrics_listen=_opt(metrics, "listen", "metrics.", str, None),
        lease_ttl=ttl,
        sloppy_grace=float(_opt(raw, "sloppy_grace", "", (int, float), 30.0)),
        priority=_opt(raw, "priority", "", int, 0),
        preempt=_opt(raw, "preempt", "", bool, False),
        log_json=_opt(raw, "log_json", "", bool, True),
        gateways=tuple(_str_list(raw, "gateways")),
        int_addr=_opt(raw, "int_addr", "", str, None),
        int_mtu=_opt(raw, "int_mtu", "", int, 1500),
        table_bits=_opt(raw, "table_bits", "", int, 16),
        events_file=_opt(raw, "events_file", "", str, None),
    )


def _str_list(d: dict[str, Any], key: str) -> list[str]:
    v = d.get(key) or []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise NodeConfigError(f"{key}: must be a list of strings, got {v!r}")
    return v
