"""Prometheus metrics: a `prometheus_client` collector over a node's `NodeApi`, served over HTTP.

Theory of operation
-------------------
`NodeCollector(api)` is a custom collector: each scrape takes one `status()` and one `stats()`
snapshot of the live node and turns them into metric families. The packet path pays nothing: the
counters it already keeps are read at scrape time, nothing is cached between scrapes. Names follow the
Prometheus conventions (docs/METRICS.md lists them): counters end in ``_total``, byte counters in
``_bytes_total``, the node's start as ``lbd_start_time_seconds``; rates are left to PromQL
(``rate(lbd_service_packets_total[1m])``), so no pre-computed rate gauge is exported. Traffic is
labelled ``direction`` (in, out), per-service families ``service``, per-dest ``service`` and ``dest``.
`registry(api)` adds the standard ``process_*`` and ``python_info`` collectors in a registry of its own
(nothing global: two nodes in one process do not mix).

`start_metrics_server(api, host, port)` serves `GET /metrics` (and `/` with a link) with a tiny
asyncio HTTP/1.1 server on the node's loop (one request per connection); the ``Accept`` header picks
the Prometheus text format or OpenMetrics, as prometheus_client's own server does. Port 0 picks a
free port; the bound one is in `MetricsServer.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from director.admin.api import (
    CounterValues,
    DestView,
    NodeApi,
    NodeStatus,
    ServiceView,
    fmt_hostport,
    svc_label,
)

log = logging.getLogger(__name__)

ROLES = ("master", "backup", "candidate", "stopped")
SYNC_STATES = ("snapshot", "streaming", "behind", "disconnected")
DEFENSE_STRATEGIES = ("drop_entry", "drop_packet", "secure_tcp")
DEFENSE_MODES = ("off", "auto", "always")

EXPORTED: dict[str, str] = {
    # node
    "lbd_node_info": "gauge", "lbd_role": "gauge", "lbd_epoch": "gauge", "lbd_role_changes": "counter",
    "lbd_elections": "counter", "lbd_ready": "gauge", "lbd_start_time_seconds": "gauge",
    "lbd_config_revision": "gauge", "lbd_connections": "gauge", "lbd_templates": "gauge",
    "lbd_services": "gauge", "lbd_dests": "gauge",
    # sync (master side, per backup)
    "lbd_sync_lag_events": "gauge", "lbd_sync_lag_seconds": "gauge", "lbd_sync_state": "gauge",
    # defense
    "lbd_defense_mode": "gauge", "lbd_defense_active": "gauge", "lbd_defense_pressure_ratio": "gauge",
    "lbd_defense_drop_rate": "gauge", "lbd_defense_max_connections": "gauge",
    "lbd_defense_connection_threshold": "gauge", "lbd_defense_rss_threshold_bytes": "gauge",
    "lbd_defense_rss_max_bytes": "gauge", "lbd_defense_entries_dropped": "counter",
    "lbd_defense_packets_dropped": "counter", "lbd_defense_table_full_drops": "counter",
    "lbd_defense_engaged": "counter",
    # health checks and notify hooks
    "lbd_health_probes": "counter", "lbd_health_probe_failures": "counter",
    "lbd_health_probes_killed": "counter",
    "lbd_notify_runs": "counter", "lbd_notify_failed": "counter", "lbd_notify_killed": "counter",
    "lbd_notify_dropped": "counter",
    # packet workers
    "lbd_worker_up": "gauge", "lbd_worker_packets": "counter", "lbd_worker_connections": "gauge",
    "lbd_worker_ring_drops": "counter", "lbd_worker_cpu_seconds": "counter", "lbd_worker_exits": "counter",
    # traffic: node, service, dest
    "lbd_packets_dropped": "counter",
    "lbd_scheduled_connections": "counter", "lbd_packets": "counter", "lbd_bytes": "counter",
    "lbd_service_scheduled_connections": "counter", "lbd_service_packets": "counter",
    "lbd_service_bytes": "counter",
    "lbd_dest_scheduled_connections": "counter", "lbd_dest_packets": "counter", "lbd_dest_bytes": "counter",
    "lbd_dest_weight": "gauge", "lbd_dest_active_connections": "gauge",
    "lbd_dest_inactive_connections": "gauge", "lbd_dest_persistent_connections": "gauge",
    "lbd_dest_overloaded": "gauge", "lbd_dest_up": "gauge", "lbd_dest_sorry": "gauge",
}
"""Every family `NodeCollector` exports -> its type (counters' samples carry ``_total``); docs/METRICS.md."""


class NodeCollector(Collector):
    """The node's metric families, read from `api` at each scrape."""

    def __init__(self, api: NodeApi) -> None:
        self.api = api

    def collect(self) -> Iterable[Metric]:
        st = self.api.status()
        stats = self.api.stats()
        yield from _node(st)
        yield from _sync(st)
        yield from _defense(st)
        yield from _health(st)
        yield from _workers(st)
        drops = CounterMetricFamily("lbd_packets_dropped", "Packets dropped by the packet path, by reason",
                                    labels=["reason"])
        for reason, n in sorted(stats.drops.items()):
            drops.add_metric([reason], n)
        yield drops
        yield from _traffic("lbd", "all services", [], [([], stats.totals)])
        yield from _services(stats.services)
        yield from _dests(stats.services)


def registry(api: NodeApi) -> CollectorRegistry:
    """A registry of its own: the node's families, ``process_*`` and ``python_info``."""
    reg = CollectorRegistry()
    reg.register(NodeCollector(api))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    return reg


def exposition(reg: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """(body, content type) in the format the ``Accept`` header asks for (text format by default)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(reg), content_type


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _node(st: NodeStatus) -> Iterator[Metric]:
    info = GaugeMetricFamily("lbd_node_info", "Node identity (always 1)", labels=["node", "version"])
    info.add_metric([st.node_id, st.version], 1)
    yield info
    role = GaugeMetricFamily("lbd_role", "1 for the node's current role", labels=["role"])
    for r in ROLES:
        role.add_metric([r], int(st.role == r))
    yield role
    yield _gauge("lbd_epoch", "Election epoch of the current master", st.epoch)
    yield CounterMetricFamily("lbd_role_changes", "Role changes of this node", value=st.role_changes)
    yield CounterMetricFamily("lbd_elections", "Elections observed (new masters)", value=st.elections)
    yield _gauge("lbd_ready", "1 when in sync with the master (eligible for takeover)", int(st.ready))
    yield _gauge("lbd_start_time_seconds", "Start time of the node since the Unix epoch",
                 round(time.time() - st.uptime, 3))
    yield _gauge("lbd_config_revision", "etcd revision of the applied config", st.config_revision)
    yield _gauge("lbd_connections", "Connection entries in the table (templates excluded)", st.conns)
    yield _gauge("lbd_templates", "Persistence templates in the table", st.templates)
    yield _gauge("lbd_services", "Virtual services", st.services)
    yield _gauge("lbd_dests", "Real servers (dests)", st.dests)


def _workers(st: NodeStatus) -> Iterator[Metric]:
    """Per packet worker (``workers:`` >= 2; no samples when the data plane runs in directord)."""
    lbl = ["worker"]
    fams: list[GaugeMetricFamily | CounterMetricFamily] = [
        GaugeMetricFamily("lbd_worker_up", "1 while the packet worker runs and reports", labels=lbl),
        CounterMetricFamily("lbd_worker_packets", "Packets forwarded by the worker", labels=lbl),
        GaugeMetricFamily("lbd_worker_connections", "Entries in the worker's shard", labels=lbl),
        CounterMetricFamily("lbd_worker_ring_drops", "Frames the kernel dropped on the worker's rings",
                            labels=lbl),
        CounterMetricFamily("lbd_worker_cpu_seconds", "CPU time of the worker process", labels=lbl)]
    for w in st.workers:
        values = (int(w.up), w.forwarded, w.conns, w.ring_drops, w.cpu_seconds)
        for fam, val in zip(fams, values, strict=True):
            fam.add_metric([str(w.index)], val)
    yield from fams
    yield CounterMetricFamily("lbd_worker_exits", "Packet workers that exited and were restarted",
                              value=st.worker_exits)


def _health(st: NodeStatus) -> Iterator[Metric]:
    h = st.health
    yield CounterMetricFamily("lbd_health_probes", "Health-check probes run", value=h.probes)
    yield CounterMetricFamily("lbd_health_probe_failures", "Health-check probes that failed",
                              value=h.failures)
    yield CounterMetricFamily("lbd_health_probes_killed", "Health-check commands killed at their timeout",
                              value=h.killed)
    for name, doc in (("runs", "Notify hook commands run"), ("failed", "Notify hook commands that failed"),
                      ("killed", "Notify hook commands killed at their timeout"),
                      ("dropped", "Notify hook events dropped (queue full)")):
        fam = CounterMetricFamily(f"lbd_notify_{name}", doc, labels=["hook"])
        for hook, view in h.hooks:
            fam.add_metric([hook], getattr(view, name))
        yield fam


def _sync(st: NodeStatus) -> Iterator[Metric]:
    """Per backup, as seen by the master (a backup exports no samples of these)."""
    lag = GaugeMetricFamily("lbd_sync_lag_events", "Sync events not yet applied by the backup",
                            labels=["backup"])
    lag_s = GaugeMetricFamily("lbd_sync_lag_seconds", "Age of the oldest sync event not yet applied",
                              labels=["backup"])
    state = GaugeMetricFamily("lbd_sync_state", "1 for the backup's sync state", labels=["backup", "state"])
    for f in st.backups:
        lag.add_metric([f.node_id], f.lag_events)
        lag_s.add_metric([f.node_id], f.lag_seconds)
        for s in SYNC_STATES:
            state.add_metric([f.node_id, s], int(f.state == s))
    yield from (lag, lag_s, state)


def _defense(st: NodeStatus) -> Iterator[Metric]:
    """IPVS defense strategies: mode and whether each acts now, pressure, thresholds, what they did."""
    d = st.defense
    mode = GaugeMetricFamily("lbd_defense_mode", "1 for each strategy's configured mode",
                             labels=["strategy", "mode"])
    active = GaugeMetricFamily("lbd_defense_active", "1 while the strategy acts (always, or auto engaged)",
                               labels=["strategy"])
    for strategy in DEFENSE_STRATEGIES:
        text: str = getattr(d, strategy)  # "off" | "auto" | "auto (engaged)" | "always"
        for m in DEFENSE_MODES:
            mode.add_metric([strategy, m], int(text.split(" ")[0] == m))
        active.add_metric([strategy], int(text == "always" or "engaged" in text))
    yield from (mode, active)
    for name, doc, attr in _DEFENSE_GAUGES:
        yield _gauge(name, doc, getattr(d, attr))
    for name, doc, attr in _DEFENSE_COUNTERS:
        yield CounterMetricFamily(name, doc, value=getattr(d, attr))


_DEFENSE_GAUGES = (
    ("lbd_defense_pressure_ratio", "How far past the defense thresholds (0 none, 1 maximum)", "pressure"),
    ("lbd_defense_drop_rate", "drop_packet: one new-conn packet in this many dropped", "drop_rate"),
    ("lbd_defense_max_connections", "Hard bound on the conn table", "max_conns"),
    ("lbd_defense_connection_threshold", "Conn table size where defense starts", "conn_threshold"),
    ("lbd_defense_rss_threshold_bytes", "Resident memory where defense starts", "rss_threshold"),
    ("lbd_defense_rss_max_bytes", "Resident memory at full defense pressure", "rss_max"),
)
_DEFENSE_COUNTERS = (
    ("lbd_defense_entries_dropped", "Entries dropped by drop_entry (random_drop)", "entries_dropped"),
    ("lbd_defense_packets_dropped", "New-conn packets dropped by drop_packet", "packets_dropped"),
    ("lbd_defense_table_full_drops", "New-conn packets dropped at max_connections", "table_full_drops"),
    ("lbd_defense_engaged", "Times defense pressure started", "engaged"),
)


def _traffic(prefix: str, what: str, label_names: list[str],
             rows: Iterable[tuple[list[str], CounterValues]]) -> Iterator[Metric]:
    """Scheduled connections, packets and bytes (``direction`` in/out) of a level: node, service or dest."""
    conns = CounterMetricFamily(f"{prefix}_scheduled_connections", f"Connections scheduled ({what})",
                                labels=label_names)
    pkts = CounterMetricFamily(f"{prefix}_packets", f"Packets forwarded ({what})",
                               labels=[*label_names, "direction"])
    octets = CounterMetricFamily(f"{prefix}_bytes", f"Bytes forwarded ({what})",
                                 labels=[*label_names, "direction"], unit="bytes")
    for lbl, c in rows:
        conns.add_metric(lbl, c.conns)
        pkts.add_metric([*lbl, "in"], c.inpkts)
        pkts.add_metric([*lbl, "out"], c.outpkts)
        octets.add_metric([*lbl, "in"], c.inbytes)
        octets.add_metric([*lbl, "out"], c.outbytes)
    yield from (conns, pkts, octets)


def _services(services: tuple[ServiceView, ...]) -> Iterator[Metric]:
    yield from _traffic("lbd_service", "per service", ["service"],
                        (([svc_label(s.ref.key)], s.counters) for s in services))


def _dests(services: tuple[ServiceView, ...]) -> Iterator[Metric]:
    rows = [([svc_label(s.ref.key), fmt_hostport(d.addr, d.port)], d) for s in services for d in s.dests]
    yield from _traffic("lbd_dest", "per dest", ["service", "dest"], ((lbl, d.counters) for lbl, d in rows))
    for name, doc, value in _DEST_GAUGES:
        fam = GaugeMetricFamily(name, doc, labels=["service", "dest"])
        for lbl, d in rows:
            fam.add_metric(lbl, value(d))
        yield fam
    up = GaugeMetricFamily("lbd_dest_up", "Health verdict: 1 up, 0 down (dests with a health check only)",
                           labels=["service", "dest"])
    for lbl, d in rows:
        if d.health:
            up.add_metric(lbl, int(d.health != "down"))
    yield up


_DEST_GAUGES: tuple[tuple[str, str, Callable[[DestView], float]], ...] = (
    ("lbd_dest_weight", "Effective weight (0 = quiesced)", lambda d: d.weight),
    ("lbd_dest_active_connections", "Active (ESTABLISHED) connections", lambda d: d.activeconns),
    ("lbd_dest_inactive_connections", "Inactive connections", lambda d: d.inactconns),
    ("lbd_dest_persistent_connections", "Persistence templates bound to the dest", lambda d: d.persistconns),
    ("lbd_dest_overloaded", "1 when over its upper threshold", lambda d: int(d.overloaded)),
    ("lbd_dest_sorry", "1 for the service's sorry server (its conns: lbd_dest_scheduled_connections_total)",
     lambda d: int(d.sorry)),
)


# ---- HTTP -------------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    server: asyncio.Server
    port: int

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_metrics_server(api: NodeApi, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    reg = registry(api)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(_serve(reg, reader, writer), 10.0)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port)
    bound = server.sockets[0].getsockname()[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(server, bound)


async def serve_metrics(api: NodeApi, listen: str) -> MetricsServer:
    """start_metrics_server on "host:port" (NodeConfig.metrics_listen; "[::1]:9712" for IPv6)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics.listen: want host:port, got {listen!r}")
    return await start_metrics_server(api, host.strip("[]") or "0.0.0.0", int(port))


async def _serve(reg: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = (await reader.readline()).decode("latin-1").split()
    accept = ""
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    method, path = (request + ["", ""])[:2]
    if method not in ("GET", "HEAD"):
        _respond(writer, 405, "text/plain", b"method not allowed\n", method == "HEAD")
    elif path.split("?")[0] == "/metrics":
        try:
            body, ctype = exposition(reg, accept)
        except Exception:  # a broken node view must not kill the scrape endpoint
            log.exception("rendering metrics failed")
            _respond(writer, 500, "text/plain", b"rendering metrics failed\n", False)
        else:
            _respond(writer, 200, ctype, body, method == "HEAD")
    elif path == "/":
        _respond(writer, 200, "text/html", b'<a href="/metrics">metrics</a>\n', method == "HEAD")
    else:
        _respond(writer, 404, "text/plain", b"not found: try /metrics\n", method == "HEAD")
    await writer.drain()


def _respond(writer: Any, status: int, ctype: str, body: bytes, head: bool) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}[status]
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + (b"" if head else body))
