"""Prometheus metrics: text exposition (format 0.0.4) of a node's `NodeApi`, served over HTTP.

Theory of operation
-------------------
`render(api)` takes one `status()` and one `stats()` snapshot and writes every family in the
Prometheus text format: node role, epoch, role changes and elections; table sizes; sync lag per
backup; config revision; per-service and per-dest counters (as `_total` counters), rates (gauges),
conn counts, weights and health; drops by reason. Nothing is cached: a scrape reads the live node.

`start_metrics_server(api, host, port)` serves `GET /metrics` (and `/` with a link) with a tiny
asyncio HTTP/1.1 server (one request per connection), so no dependency is needed. Port 0 picks
a free port; the bound one is in `MetricsServer.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from director.admin.api import (
    CounterValues,
    DefenseView,
    DestView,
    NodeApi,
    RateValues,
    ServiceView,
    fmt_hostport,
    svc_label,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLES = ("master", "backup", "candidate", "stopped")
SYNC_STATES = ("snapshot", "streaming", "behind", "disconnected")

_COUNTERS = (("conns", "connections scheduled"), ("inpkts", "packets in"), ("outpkts", "packets out"),
             ("inbytes", "bytes in"), ("outbytes", "bytes out"))
_RATES = (("cps", "connections per second"), ("inpps", "packets in per second"),
          ("outpps", "packets out per second"), ("inbps", "bytes in per second"),
          ("outbps", "bytes out per second"))


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**kv: str) -> str:
    if not kv:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in kv.items()) + "}"


class Exposition:
    """Collects families in order; each family: HELP, TYPE, then its samples."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float, **lbl: str) -> None:
        fam = self._families.setdefault(name, (kind, help_text, []))
        fam[2].append(f"{name}{labels(**lbl)} {_num(value)}")

    def text(self) -> str:
        out: list[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def render(api: NodeApi) -> str:
    st = api.status()
    stats = api.stats()
    e = Exposition()
    e.add("lbd_node_info", "gauge", "Node identity", 1, node=st.node_id, version=st.version)
    for role in ROLES:
        e.add("lbd_role", "gauge", "1 for the node's current role", int(st.role == role), role=role)
    e.add("lbd_epoch", "gauge", "Election epoch of the current master", st.epoch)
    e.add("lbd_role_changes_total", "counter", "Role changes of this node", st.role_changes)
    e.add("lbd_elections_total", "counter", "Elections observed (new masters)", st.elections)
    e.add("lbd_ready", "gauge", "1 when in sync with the master (eligible for takeover)", int(st.ready))
    e.add("lbd_uptime_seconds", "gauge", "Seconds since the node started", st.uptime)
    e.add("lbd_config_revision", "gauge", "etcd revision of the applied config", st.config_revision)
    e.add("lbd_conns", "gauge", "Connection entries (templates excluded)", st.conns)
    e.add("lbd_templates", "gauge", "Persistence templates", st.templates)
    e.add("lbd_services", "gauge", "Virtual services", st.services)
    e.add("lbd_dests", "gauge", "Real servers (dests)", st.dests)
    _defense(e, st.defense)
    for f in st.backups:
        e.add("lbd_sync_lag_events", "gauge", "Sync events not yet applied by the backup", f.lag_events,
              backup=f.node_id)
        e.add("lbd_sync_lag_seconds", "gauge", "Age of the oldest unapplied sync event", f.lag_seconds,
              backup=f.node_id)
        for state in SYNC_STATES:
            e.add("lbd_sync_state", "gauge", "1 for the backup's sync state", int(f.state == state),
                  backup=f.node_id, state=state)
    for reason, n in sorted(stats.drops.items()):
        e.add("lbd_drops_total", "counter", "Packets dropped, by reason", n, reason=reason)
    _traffic(e, "lbd", {}, stats.totals, stats.total_rates)
    _services(e, stats.services)
    return e.text()


def _defense(e: Exposition, d: DefenseView) -> None:
    for strategy in ("drop_entry", "drop_packet", "secure_tcp"):
        mode = getattr(d, strategy)
        for m in ("off", "auto", "auto (engaged)", "always"):
            e.add("lbd_defense_mode", "gauge", "1 for each strategy's current mode", int(mode == m),
                  strategy=strategy, mode=m)
    e.add("lbd_defense_pressure", "gauge", "How far past the defense thresholds (0 none, 1 maximum)",
          d.pressure)
    e.add("lbd_defense_drop_rate", "gauge", "drop_packet: one new-conn packet in this many is dropped",
          d.drop_rate)
    e.add("lbd_defense_max_conns", "gauge", "Hard bound on the conn table", d.max_conns)
    e.add("lbd_defense_conn_threshold", "gauge", "Conn table size where defense starts", d.conn_threshold)
    e.add("lbd_rss_bytes", "gauge", "Resident memory of directord", d.rss)
    e.add("lbd_defense_rss_threshold_bytes", "gauge", "RSS where defense starts", d.rss_threshold)
    e.add("lbd_defense_rss_max_bytes", "gauge", "RSS at full defense pressure", d.rss_max)
    e.add("lbd_defense_entries_dropped_total", "counter", "Entries dropped by drop_entry (random_drop)",
          d.entries_dropped)
    e.add("lbd_defense_packets_dropped_total", "counter", "New-conn packets dropped by drop_packet",
          d.packets_dropped)
    e.add("lbd_defense_table_full_total", "counter", "New-conn packets dropped at max_conns",
          d.table_full_drops)
    e.add("lbd_defense_engaged_total", "counter", "Times defense pressure started", d.engaged)


def _traffic(e: Exposition, prefix: str, lbl: dict[str, str], c: CounterValues, r: RateValues) -> None:
    what = prefix.removeprefix("lbd_") if prefix != "lbd" else "all services"
    for name, help_text in _COUNTERS:
        e.add(f"{prefix}_{name}_total", "counter", f"{help_text.capitalize()} ({what})", getattr(c, name),
              **lbl)
    for name, help_text in _RATES:
        e.add(f"{prefix}_{name}", "gauge", f"{help_text.capitalize()} ({what})", getattr(r, name), **lbl)


def _services(e: Exposition, services: Iterable[ServiceView]) -> None:
    for s in services:
        svc = svc_label(s.ref.key)
        _traffic(e, "lbd_service", {"service": svc}, s.counters, s.rates)
        for d in s.dests:
            _dest(e, svc, d)


def _dest(e: Exposition, svc: str, d: DestView) -> None:
    lbl = {"service": svc, "dest": fmt_hostport(d.addr, d.port)}
    _traffic(e, "lbd_dest", lbl, d.counters, d.rates)
    e.add("lbd_dest_weight", "gauge", "Effective weight (0 = quiesced)", d.weight, **lbl)
    e.add("lbd_dest_active_conns", "gauge", "Active (ESTABLISHED) conns", d.activeconns, **lbl)
    e.add("lbd_dest_inactive_conns", "gauge", "Inactive conns", d.inactconns, **lbl)
    e.add("lbd_dest_persistent_conns", "gauge", "Persistence templates bound", d.persistconns, **lbl)
    e.add("lbd_dest_overloaded", "gauge", "1 when over its upper threshold", int(d.overloaded), **lbl)
    if d.health:
        e.add("lbd_dest_up", "gauge", "Health verdict: 1 up, 0 down", int(d.health != "down"), **lbl)


# ---- HTTP -------------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    server: asyncio.Server
    port: int

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_metrics_server(api: NodeApi, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(_serve(api, reader, writer), 10.0)
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
    """start_metrics_server on "host:port" (NodeConfig.metrics_listen; "[::1]:9120" for IPv6)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics.listen: want host:port, got {listen!r}")
    return await start_metrics_server(api, host.strip("[]") or "0.0.0.0", int(port))


async def _serve(api: NodeApi, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = (await reader.readline()).decode("latin-1").split()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass  # headers are not needed
    method, path = (request + ["", ""])[:2]
    if method not in ("GET", "HEAD"):
        _respond(writer, 405, "text/plain", b"method not allowed\n", method == "HEAD")
    elif path.split("?")[0] == "/metrics":
        try:
            body = render(api).encode()
        except Exception:  # a broken node view must not kill the scrape endpoint
            log.exception("rendering metrics failed")
            _respond(writer, 500, "text/plain", b"rendering metrics failed\n", False)
        else:
            _respond(writer, 200, CONTENT_TYPE, body, method == "HEAD")
    elif path == "/":
        _respond(writer, 200, "text/html", b'<a href="/metrics">metrics</a>\n', method == "HEAD")
    else:
        _respond(writer, 404, "text/plain", b"not found: try /metrics\n", method == "HEAD")
    await writer.drain()


def _respond(writer: Any, status: int, ctype: str, body: bytes, head: bool) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}[status]
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + (b"" if head else body))
