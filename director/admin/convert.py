"""Admin views (`director.admin.api`) to protobuf messages (lbd.admin.v1): the gRPC edge's output side.

Pure functions, one per message; the servicer (`director.admin.server`) calls them last, so the node
never sees protobuf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from director.admin.api import (
    ApplyResult,
    ConnView,
    CounterValues,
    DestView,
    NodeEvent,
    NodeStatus,
    RateValues,
    ServiceView,
    StatsView,
    SvcRef,
    fmt_addr,
    proto_name,
)
from lbd_pb import admin_pb2 as pb


def counters_pb(c: CounterValues) -> pb.Counters:
    return pb.Counters(conns=c.conns, inpkts=c.inpkts, outpkts=c.outpkts, inbytes=c.inbytes,
                       outbytes=c.outbytes)


def rates_pb(r: RateValues) -> pb.Rates:
    return pb.Rates(cps=r.cps, inpps=r.inpps, outpps=r.outpps, inbps=r.inbps, outbps=r.outbps)


def ref_pb(r: SvcRef) -> pb.ServiceRef:
    if r.fwmark:
        return pb.ServiceRef(fwmark=r.fwmark)
    return pb.ServiceRef(protocol=proto_name(r.protocol), vip=fmt_addr(r.vaddr), port=r.vport)


def dest_pb(d: DestView) -> pb.Dest:
    return pb.Dest(
        address=fmt_addr(d.addr), port=d.port, fwd=d.fwd.name.lower(), weight=d.weight,
        u_threshold=d.u_threshold, l_threshold=d.l_threshold, active_conns=d.activeconns,
        inactive_conns=d.inactconns, persistent_conns=d.persistconns, available=d.available,
        overloaded=d.overloaded, health=d.health, counters=counters_pb(d.counters),
        rates=rates_pb(d.rates),
        configured_weight=d.weight if d.configured_weight is None else d.configured_weight, sorry=d.sorry)


def service_pb(s: ServiceView) -> pb.Service:
    return pb.Service(
        ref=ref_pb(s.ref), scheduler=s.scheduler, persistent=s.persistent,
        persistence_timeout=s.timeout, netmask=fmt_addr(s.netmask), dests=[dest_pb(d) for d in s.dests],
        counters=counters_pb(s.counters), rates=rates_pb(s.rates), name=s.name, ops=s.ops)


def conn_pb(c: ConnView) -> pb.Conn:
    return pb.Conn(
        protocol=proto_name(c.protocol), caddr=fmt_addr(c.caddr), cport=c.cport, vaddr=fmt_addr(c.vaddr),
        vport=c.vport, daddr=fmt_addr(c.daddr), dport=c.dport, fwmark=c.fwmark, state=c.state,
        flags=c.flags, fwd=c.fwd.name.lower(), template=c.is_template, expires_in=c.expires_in,
        timeout=c.timeout, in_pkts=c.in_pkts, has_control=c.has_control, n_control=c.n_control)


def status_pb(s: NodeStatus) -> pb.StatusResponse:
    return pb.StatusResponse(
        node_id=s.node_id, role=s.role, epoch=s.epoch, master_id=s.master_id,
        master_sync_addr=s.master_sync_addr,
        backups=[pb.BackupSync(node_id=f.node_id, state=f.state, lag_events=f.lag_events,
                                   lag_seconds=f.lag_seconds) for f in s.backups],
        conns=s.conns, templates=s.templates, services=s.services, dests=s.dests,
        uptime_seconds=s.uptime, version=s.version, config_revision=s.config_revision,
        role_changes=s.role_changes, elections=s.elections, ready=s.ready, cluster=s.cluster,
        defense=pb.Defense(**dataclasses.asdict(s.defense)))  # the same field names


def stats_pb(s: StatsView) -> pb.GetStatsResponse:
    return pb.GetStatsResponse(
        services=[service_pb(v) for v in s.services], totals=counters_pb(s.totals),
        total_rates=rates_pb(s.total_rates), drops=dict(s.drops), conns=s.conns, templates=s.templates)


def apply_pb(r: ApplyResult) -> pb.ApplyConfigResponse:
    import yaml

    def dump(d: Mapping[str, Any] | None) -> str:
        return "" if d is None else yaml.safe_dump(dict(d), sort_keys=True)

    return pb.ApplyConfigResponse(
        revision=r.revision,
        changes=[pb.ConfigChange(op=c.op, key=c.key, before=dump(c.before), after=dump(c.after))
                 for c in r.changes])


def event_pb(e: NodeEvent) -> pb.Event:
    return pb.Event(
        kind=e.kind, time=e.time, message=e.message, conn=conn_pb(e.conn) if e.conn else None,
        conn_event=e.conn_event, role=e.role, epoch=e.epoch, revision=e.revision, dest=e.dest, up=e.up,
        synced=e.synced)
