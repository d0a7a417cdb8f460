"""directord's node parts that are not wiring: sizing, the core config, the event log, static mode's files.

Theory of operation
-------------------
``director.daemon`` wires the layers into a running node; what it needs that is not wiring lives here
so that the daemon stays a readable list of reactions:

* :func:`core_config_for` turns the node YAML into the packet path's ``CoreConfig`` (virtual MAC,
  gateways, MTU, neighbour bounds); :func:`arp_sender_outside` picks the address the director's own
  ARP requests carry outside (the first VIP: owned by the virtual MAC, never a kernel address).
* :func:`defense_settings` sizes IPVS's defense strategies for the box (:func:`mem_total`,
  :func:`rss_bytes`).
* :class:`EventLog` appends role changes and takeover timings as JSON lines; :func:`publish_conns`
  hands conn events to `directorctl watch`-ers.
* Static mode (``cluster: none``, director.config.node): :func:`load_services` reads the services
  file (the ``directorctl apply`` schema; every problem named, prefixed with the path),
  :class:`FenceFile` follows the test/drill ``fence_file``, :class:`NoEtcd` stands where the etcd
  store stands (admin config writes are refused, naming the services file), :func:`write_json` writes the
  ``stats_file`` snapshots atomically (a reader never sees half a file).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from director.admin.hub import EventHub
from director.admin.views import conn_event
from director.cluster.store import ConfigSnapshot, EtcdStore, EtcdUnavailable
from director.config.node import STATIC, DefenseConfig, NodeConfig, read_deadline
from director.config.services import Config, ConfigError, load_config
from director.config.watch import ConfigUpdate
from director.dataplane.arp import vrrp_mac, vrrp_mac6
from director.dataplane.core import CoreConfig
from director.services.service import ServiceTable
from director.table.defense_policy import DefenseSettings, mode_of
from director.table.entry import is_v6
from director.table.events import ConnEvent

log = logging.getLogger("directord")


def _ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


def core_config_for(cfg: NodeConfig) -> CoreConfig:
    """The packet path's settings; the ARP sender inside is ``int_addr``, else the lowest IPv4 gateway
    (IPv6 gateways are owned through neighbour discovery: director.dataplane.nd)."""
    gws = frozenset(_ip(g) for g in cfg.gateways)
    v4 = [g for g in gws if not is_v6(g)]
    int_addr = _ip(cfg.int_addr) if cfg.int_addr else (min(v4) if v4 else 0)
    return CoreConfig(vmac=vrrp_mac(cfg.vmac_id), vmac6=vrrp_mac6(cfg.vmac_id), gw_addrs=gws,
                      int_addr=int_addr, mtu=cfg.int_mtu,
                      ext_mtu=cfg.ext_mtu, tun_src6=_ip(cfg.tun_src6) if cfg.tun_src6 else 0,
                      neigh_max_entries=cfg.neigh_max_entries, neigh_learn_rate=cfg.neigh_learn_rate,
                      forward_fragments=cfg.forward_fragments, icmp_echo=cfg.icmp_echo,
                      icmp_ratelimit=cfg.icmp_ratelimit)


MIB = 1 << 20


def default_lease_file() -> str | None:
    """Where the master records its etcd lease by default: ``$RUNTIME_DIRECTORY/lease`` under systemd."""
    rd = os.environ.get("RUNTIME_DIRECTORY")
    return os.path.join(rd.split(":")[0], "lease") if rd else None


def mem_total() -> int:
    """The box's memory in bytes (/proc/meminfo), 0 if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes() -> int:
    """This process's resident memory (/proc/self/statm), 0 if unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def defense_settings(d: DefenseConfig, memory: int) -> DefenseSettings:
    """The node's defense settings; sizes left out are sized for the box: RSS up to a quarter of its
    memory (defense from three quarters of that), the conn table up to one entry per 2 KiB of it
    (65536 .. 4M), defense from half of that."""
    rss_max = d.rss_max_mb * MIB if d.rss_max_mb is not None else memory // 4
    rss_thr = d.rss_threshold_mb * MIB if d.rss_threshold_mb is not None else rss_max * 3 // 4
    max_conns = d.max_conns if d.max_conns is not None else min(1 << 22, max(1 << 16, rss_max // 2048))
    conn_thr = d.conn_threshold if d.conn_threshold is not None else max_conns // 2
    return DefenseSettings(mode_of(d.drop_entry), mode_of(d.drop_packet), mode_of(d.secure_tcp),
                           d.am_droprate, conn_thr, max_conns, rss_thr, rss_max)


class EventLog:
    """Role changes and takeover timings as JSON lines (wall clock), for drills and operators."""

    def __init__(self, path: str | None, node_id: str) -> None:
        self.path = path
        self.node_id = node_id
        self.recent: list[dict[str, Any]] = []

    def write(self, kind: str, **fields: Any) -> None:
        rec = {"t": time.time(), "node": self.node_id, "event": kind, **fields}
        self.recent = [*self.recent[-199:], rec]
        log.info("event %s %s", kind, fields)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")




def publish_conns(hub: EventHub, events: Iterable[ConnEvent], clock: Callable[[], float], *,
                  synced: bool) -> None:
    """Conn events for `directorctl watch`, only while someone watches; never raises (a watcher must
    not break the sync drain or apply that calls this)."""
    if not hub.watchers:
        return
    now, wall = clock(), time.time()
    try:
        for ev in events:
            hub.publish(conn_event(ev, now, wall, synced=synced))
    except Exception:
        log.exception("publishing conn events to admin watchers failed")


def arp_sender_outside(services: ServiceTable) -> int:
    """The sender address of the director's ARP requests outside: the lowest IPv4 VIP (0 without one)."""
    vips = sorted(a for a in services.vaddrs() if not is_v6(a))
    return vips[0] if vips else 0


# -- static mode (cluster: none) --------------------------------------------------------------------
def load_services(path: str) -> Config:
    """The static node's services file, validated; ``ConfigError`` lines are prefixed with the path."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {line}" for line in exc.errors) from None


class _NoStubs:
    """Stands for the etcd stubs of a store that has none: every RPC attribute is None."""

    def __getattr__(self, name: str) -> None:
        return None


class NoEtcd(EtcdStore):
    """A static node's store: there is no etcd. Every KV call fails as unavailable, saying where the
    config is instead (admin config writes, which go through etcd, are refused with that reason)."""

    REASON = "static node (cluster: none): no etcd; the config is the services_file (edit it, then SIGHUP)"

    def __init__(self) -> None:
        super().__init__("unix:/nonexistent", cluster=STATIC)  # never dialled
        self._kv = _NoStubs()

    async def connect(self) -> None:
        raise EtcdUnavailable(self.REASON)

    async def _call(self, method: Any, req: Any, timeout: float | None) -> Any:
        raise EtcdUnavailable(self.REASON)


class FenceFile:
    """``fence_file``: the mastership deadline it holds, re-read when its mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: int | None = None

    def poll(self) -> tuple[bool, float | None]:
        """(changed, deadline): ``changed`` is False while the file is unchanged or unusable (logged)."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime == self._seen:
                return False, None
            with open(self.path, encoding="utf-8") as fh:
                deadline = read_deadline(fh.read(64))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("fence file %s unusable: %s", self.path, exc)
            return False, None
        self._seen = mtime
        return True, deadline


def read_services(path: str, revision: int) -> ConfigUpdate[ConfigSnapshot]:
    """The services file as a config update at ``revision``: its ``Config``, or the error refusing it."""
    snap = ConfigSnapshot(revision)
    try:
        return ConfigUpdate(snap, config=load_services(path))
    except ConfigError as err:
        return ConfigUpdate(snap, error=err)
    except OSError as err:
        return ConfigUpdate(snap, error=ConfigError([f"{path}: cannot read: {err.strerror or err}"]))


class NodeFiles:
    """The files a node polls every 200 ms: ``fence_file`` in (static mode), ``stats_file`` out."""

    def __init__(self, stats_path: str | None, fence: FenceFile | None,
                 snapshot: Callable[[], dict[str, Any]], set_master_until: Callable[[float | None], None],
                 events: EventLog) -> None:
        self.stats_path, self.fence = stats_path, fence
        self.snapshot, self.set_master_until, self.events = snapshot, set_master_until, events

    @property
    def wanted(self) -> bool:
        return bool(self.stats_path) or self.fence is not None

    def poll_fence(self) -> None:
        """Apply the fence file's deadline when it changed."""
        if self.fence is None:
            return
        changed, deadline = self.fence.poll()
        if changed:
            self.set_master_until(deadline)
            self.events.write("fence", master_until=deadline)

    def write_stats(self) -> None:
        if self.stats_path:
            try:
                write_json(self.stats_path, self.snapshot())
            except OSError as err:
                log.warning("stats file %s: %s", self.stats_path, err)

    async def run(self) -> None:
        while True:
            self.poll_fence()
            self.write_stats()
            await asyncio.sleep(0.2)


def write_json(path: str, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (a temporary file, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
