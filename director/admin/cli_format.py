"""Human output of `directorctl`: tables laid out like `ipvsadm -Ln`, `--stats`, `--rate`, `-Lnc`.

Theory of operation
-------------------
Pure functions from admin protobuf messages (lbd_pb.admin_pb2) to text. Column widths follow
ipvsadm's printf formats so operators' eyes (and scripts written for ipvsadm) find things where
they expect them: services as `TCP  198.18.0.10:80 wlc persistent 300`, dests as
`  -> %-28s %-7s %-6d %-10u %-10u`; large counters shrink to K/M/G like ipvsadm's print_largenum.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from typing import Any

FWD_NAME = {"nat": "Masq", "dr": "Route", "tun": "Tunnel", "local": "Local", "bypass": "Bypass"}


def hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def persist_mask(netmask: str) -> str:
    """ipvsadm's ``mask`` column: an IPv4 netmask as is, an IPv6 one as its prefix length; "" for a
    host mask (255.255.255.255, /128), which ipvsadm leaves out."""
    if ":" not in netmask:
        return "" if netmask in ("", "255.255.255.255") else netmask
    bits = int(ipaddress.IPv6Address(netmask))
    plen = bin(bits).count("1")
    return "" if plen == 128 else str(plen)


def svc_name(ref: Any) -> str:
    if ref.fwmark:
        return f"FWM  {ref.fwmark}"
    return f"{ref.protocol.upper():<3}  {hostport(ref.vip, ref.port)}"


def svc_line(s: Any) -> str:
    line = f"{svc_name(s.ref)} {s.scheduler}"
    if s.persistent:
        line += f" persistent {s.persistence_timeout:g}"
        mask = persist_mask(s.netmask)
        if mask:
            line += f" mask {mask}"
    if s.ops:
        line += " ops"
    return line


def dest_flags(d: Any) -> str:
    notes = ["sorry"] if d.sorry else []
    if d.health == "down":
        notes.append("down")
    if d.configured_weight != d.weight:
        notes.append(f"cfg-weight {d.configured_weight}")
    if d.overloaded:
        notes.append("overloaded")
    if not d.available:
        notes.append("unavailable")
    return ("  " + " ".join(notes)) if notes else ""


def services_table(services: Iterable[Any], *, conns: int = 0) -> str:
    lines = [
        f"IP Virtual Server (lbd) conns={conns}",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for s in services:
        lines.append(svc_line(s))
        for d in s.dests:
            fwd = FWD_NAME.get(d.fwd, d.fwd)
            lines.append(f"  -> {hostport(d.address, d.port):<28} {fwd:<7} {d.weight:<6} "
                         f"{d.active_conns:<10} {d.inactive_conns:<10}".rstrip() + dest_flags(d))
    return "\n".join(lines) + "\n"


def largenum(n: float) -> str:
    """ipvsadm print_largenum: up to 8 digits as is, then K, M, G, T with 7 digits."""
    n = int(n)
    if n < 100_000_000:
        return f"{n:8d}"
    for unit in "KMGT":
        n //= 1000
        if n < 10_000_000:
            return f"{n:7d}{unit}"
    return f"{n:7d}P"


def _counter_table(services: Iterable[Any], header: str, values: Any) -> str:
    lines = [header, "  -> RemoteAddress:Port"]
    for s in services:
        lines.append(f"{svc_name(s.ref):<33}" + "".join(" " + largenum(v) for v in values(s)))
        for d in s.dests:
            name = f"  -> {hostport(d.address, d.port)}"
            lines.append(f"{name:<33}" + "".join(" " + largenum(v) for v in values(d)))
    return "\n".join(lines) + "\n"


def stats_table(services: Iterable[Any]) -> str:
    return _counter_table(
        services, "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        lambda x: (x.counters.conns, x.counters.inpkts, x.counters.outpkts, x.counters.inbytes,
                   x.counters.outbytes))


def rate_table(services: Iterable[Any]) -> str:
    return _counter_table(
        services, "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        lambda x: (x.rates.cps, x.rates.inpps, x.rates.outpps, x.rates.inbps, x.rates.outbps))


def conns_table(conns: Iterable[Any]) -> str:
    lines = ["IPVS connection entries",
             "pro expire state       source                virtual               destination"]
    for c in conns:
        secs = int(c.expires_in)
        lines.append(f"{c.protocol.upper():<3} {secs // 60:02d}:{secs % 60:02d}  {c.state:<11} "
                     f"{hostport(c.caddr, c.cport):<21} {hostport(c.vaddr, c.vport):<21} "
                     f"{hostport(c.daddr, c.dport)}")
    return "\n".join(lines) + "\n"


def status_text(st: Any) -> str:
    lines = [
        f"node        {st.node_id}  ({st.version})",
        f"role        {st.role}   epoch {st.epoch}   {'ready' if st.ready else 'NOT ready (syncing)'}"
        + ("   static (cluster: none)" if st.cluster == "none" else ""),
        f"master      {st.master_id or '(none)'}   sync {st.master_sync_addr or '-'}",
        f"conns       {st.conns}   templates {st.templates}",
        f"services    {st.services}   dests {st.dests}",
        f"config      revision {st.config_revision}",
        f"uptime      {st.uptime_seconds:.0f}s   role changes {st.role_changes}   elections {st.elections}",
    ]
    if st.HasField("defense"):
        d = st.defense
        lines.append(f"defense     drop_entry {d.drop_entry}   drop_packet {d.drop_packet}"
                     f"{f' (1 in {d.drop_rate})' if d.drop_rate else ''}   secure_tcp {d.secure_tcp}")
        lines.append(f"            pressure {d.pressure:.2f}   conns {st.conns + st.templates}/{d.max_conns}"
                     f" (from {d.conn_threshold})   rss {d.rss >> 20}/{d.rss_max >> 20} MiB"
                     f" (from {d.rss_threshold >> 20})")
        lines.append(f"            dropped: entries {d.entries_dropped}   packets {d.packets_dropped}"
                     f"   table full {d.table_full_drops}   engaged {d.engaged}x")
    if st.backups:
        lines.append("sync        node              state         lag(events)  lag(s)")
        for f in st.backups:
            lines.append(f"            {f.node_id:<17} {f.state:<13} {f.lag_events:<12} {f.lag_seconds:.3f}")
    return "\n".join(lines) + "\n"


def event_line(ev: Any) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.time)) if ev.time else "--:--:--"
    if ev.kind == "conn":
        c = ev.conn
        what = (f"{ev.conn_event:<6} {c.protocol.upper()} {c.state} {hostport(c.caddr, c.cport)} -> "
                f"{hostport(c.vaddr, c.vport)} -> {hostport(c.daddr, c.dport)}"
                + (" template" if c.template else "") + (" (synced)" if ev.synced else ""))
    elif ev.kind == "role":
        what = f"role {ev.role} epoch {ev.epoch}"
    elif ev.kind == "config":
        what = f"revision {ev.revision}"
    elif ev.kind == "health":
        what = f"{ev.dest} {'up' if ev.up else 'down'}"
    else:
        what = ""
    text = " ".join(x for x in (what, ev.message) if x)
    return f"{stamp} {ev.kind:<7} {text}\n"
