"""`directorctl` commands that read a node or operate on it: list, status, get, check, apply,
drain, timeouts, failover, flush, zero, watch.

Each `cmd_*` builds requests, calls the node through `cli_base.Client` and prints tables laid out
like ipvsadm (`director.admin.cli_format`) or JSON with `--json`; long operations (`drain --wait`,
`failover`) print a progress line per poll. Each returns an exit code (`cli_base.EXIT`).
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import yaml

from director.admin import cli_format as clifmt
from director.admin.cli_base import (
    EXIT,
    Client,
    NotFoundError,
    UsageError,
    as_json,
    emit_json,
    parse_hostport,
    parse_svc,
    read_config_file,
    settle,
)
from lbd_pb import admin_pb2 as pb


def cmd_list(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.udp_service:
        if args.service:
            raise UsageError("give -t or -u, not both")
        args.service = f"udp/{args.udp_service}"
    if args.connection:
        return _list_conns(c, args, out)
    req = pb.ListServicesRequest(service=parse_svc(args.service) if args.service else None)
    if args.stats or args.rate:
        resp = c.call("GetStats", pb.GetStatsRequest())
        services = resp.services
        if args.service:
            services = [s for s in services if _svc_match(s.ref, req.service)]
    else:
        services = c.call("ListServices", req).services
    if args.json:
        emit_json([as_json(s) for s in services], out)
    elif args.stats:
        out.write(clifmt.stats_table(services))
    elif args.rate:
        out.write(clifmt.rate_table(services))
    else:
        st = c.call("Status", pb.StatusRequest())
        out.write(clifmt.services_table(services, conns=st.conns))
    return EXIT["ok"]


def _svc_match(ref: pb.ServiceRef, want: pb.ServiceRef) -> bool:
    if want.fwmark:
        return ref.fwmark == want.fwmark
    same_ip = ipaddress.ip_address(ref.vip) == ipaddress.ip_address(want.vip) if ref.vip else False
    return same_ip and ref.port == want.port and ref.protocol == want.protocol


def _list_conns(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    req = pb.ListConnsRequest(
        service=parse_svc(args.service) if args.service else None, caddr=args.client or "",
        state=args.state or "", templates_only=args.templates, page_size=args.limit or 0)
    if args.dest:
        req.daddr, req.dport = parse_hostport(args.dest, "--dest")
    conns: list[pb.Conn] = []
    more = ""
    for chunk in c.call("ListConns", req, stream=True):
        conns.extend(chunk.conns)
        more = chunk.next_page_token or more
    if args.json:
        emit_json({"conns": [as_json(x) for x in conns], "next_page_token": more}, out)
    else:
        out.write(clifmt.conns_table(conns))
        if more:
            out.write(f"(more entries: raise --limit, or page with the API's page_token {more})\n")
    return EXIT["ok"]


def cmd_status(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    st = c.call("Status", pb.StatusRequest())
    if args.json:
        emit_json(as_json(st), out)
    else:
        out.write(clifmt.status_text(st))
    return EXIT["ok"]


def cmd_get(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    resp = c.call("GetConfig", pb.GetConfigRequest())
    text = resp.yaml
    if args.name:
        doc = yaml.safe_load(text) or {}
        found = [s for s in doc.get("services") or [] if isinstance(s, dict) and s.get("name") == args.name]
        if not found:
            raise NotFoundError(f"no service named {args.name!r}; `directorctl get` lists them all")
        text = yaml.safe_dump({"services": found}, sort_keys=False)
    if args.json:
        emit_json({"revision": resp.revision, "config": yaml.safe_load(text)}, out)
    else:
        out.write(f"# revision {resp.revision}\n{text}")
        if text and not text.endswith("\n"):
            out.write("\n")
    return EXIT["ok"]


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """Validate a config file offline, like `keepalived -t`: no node, no etcd."""
    from director.config.services import parse_config
    from director.config.validate import ConfigError

    text = read_config_file(args.file)
    try:
        cfg = parse_config(text)
    except ConfigError as exc:
        out.write("".join(f"{line}\n" for line in exc.errors))
        return EXIT["usage"]
    n_dests = sum(len(s.dests) for s in cfg.services)
    out.write(f"{args.file}: ok ({len(cfg.services)} services, {n_dests} dests)\n")
    return EXIT["ok"]


def cmd_apply(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    return apply_document(c, read_config_file(args.file), args, out, prune=args.prune)


def apply_document(c: Client, text: str, args: argparse.Namespace, out: TextIO, *, prune: bool) -> int:
    """Show the diff of a whole document against the running config, then write it (not with
    --dry-run): `apply`, `restore` and `import-keepalived --apply`."""
    plan = c.call("ApplyConfig", pb.ApplyConfigRequest(yaml=text, dry_run=True, prune=prune))
    as_json_out = getattr(args, "json", False)
    if as_json_out and args.dry_run:
        emit_json(as_json(plan), out)
        return EXIT["ok"]
    if not as_json_out:
        out.write(render_diff(plan.changes))
    if args.dry_run or not plan.changes:
        if not as_json_out:
            out.write("dry run: nothing written\n" if args.dry_run else "")
        else:
            emit_json(as_json(plan), out)
        return EXIT["ok"]
    done = c.call("ApplyConfig", pb.ApplyConfigRequest(yaml=text, dry_run=False, prune=prune))
    settle(c, done.revision)
    if as_json_out:
        emit_json(as_json(done), out)
    else:
        out.write(f"applied {len(done.changes)} change(s) at revision {done.revision}\n")
    return EXIT["ok"]


def render_diff(changes: Sequence[pb.ConfigChange]) -> str:
    if not changes:
        return "no changes: the running config already matches\n"
    lines: list[str] = []
    for ch in changes:
        mark = {"add": "+", "delete": "-", "change": "~"}.get(ch.op, "?")
        lines.append(f"{mark} {ch.op} {ch.key}")
        diff = difflib.unified_diff(ch.before.splitlines(), ch.after.splitlines(), lineterm="", n=4)
        lines.extend("    " + d for d in list(diff)[2:])
    return "\n".join(lines) + "\n"


def cmd_drain(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    addr, port = parse_hostport(args.dest, "dest")
    svc = parse_svc(args.service)
    rev = c.call("DrainDest", pb.DrainDestRequest(service=svc, address=addr, port=port)).revision
    settle(c, rev)
    out.write(f"draining {args.dest} of {args.service}: weight 0 at revision {rev}\n")
    if not args.wait:
        return EXIT["ok"]
    return _wait_drained(c, svc, addr, port, args, out)


def _wait_drained(c: Client, svc: pb.ServiceRef, addr: str, port: int, args: argparse.Namespace,
                  out: TextIO) -> int:
    def left() -> int | None:
        for s in c.call("ListServices", pb.ListServicesRequest(service=svc)).services:
            for d in s.dests:
                if ipaddress.ip_address(d.address) == ipaddress.ip_address(addr) and d.port == port:
                    return int(d.active_conns + d.inactive_conns)
        return None

    def report(n: int | None, waited: float) -> bool:
        out.write(f"  {waited:5.1f}s  {n if n is not None else 0} connection(s) left\n")
        out.flush()
        return not n

    if poll(report, left, args.max_wait, args.interval):
        out.write("drained\n")
        return EXIT["ok"]
    out.write(f"still busy after {args.max_wait:.0f}s; the dest takes no new connections\n")
    return EXIT["timeout"]


def poll(report: Callable[[Any, float], bool], probe: Callable[[], Any], max_wait: float,
         interval: float) -> bool:
    """Call probe() every interval until report(value, waited) is true or max_wait passes."""
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        if report(probe(), waited):
            return True
        if waited >= max_wait:
            return False
        time.sleep(interval)


def cmd_timeouts(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    values = {k: getattr(args, k) for k in ("tcp", "tcpfin", "udp") if getattr(args, k) is not None}
    for item in args.set or []:
        name, sep, value = item.partition("=")
        try:
            values[name] = float(value)
        except ValueError:
            raise UsageError(f"bad --set {item!r}: write NAME=SECONDS, e.g. --set tcp=900") from None
        if not sep:
            raise UsageError(f"bad --set {item!r}: write NAME=SECONDS")
    if not values:
        raise UsageError("nothing to set: e.g. `directorctl timeouts --tcp 900 --tcpfin 120 --udp 300`")
    rev = c.call("SetTimeouts", pb.SetTimeoutsRequest(timeouts=values)).revision
    settle(c, rev)
    shown = " ".join(f"{k}={v:g}" for k, v in sorted(values.items()))
    out.write(f"timeouts {shown} written at revision {rev}\n")
    return EXIT["ok"]


def cmd_failover(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    before = c.call("Status", pb.StatusRequest())
    out.write(f"asking {before.node_id} (role {before.role}, epoch {before.epoch}) to resign...\n")
    out.flush()
    resp = c.call("Failover", pb.FailoverRequest(), timeout=max(args.max_wait, c.timeout))
    if resp.new_master_id:
        out.write(f"new master: {resp.new_master_id} (epoch {resp.epoch})\n")
        return EXIT["ok"]

    def report(st: Any, waited: float) -> bool:
        done = bool(st.master_id) and st.master_id != before.node_id
        out.write(f"  {waited:5.1f}s  master={st.master_id or '(none)'} epoch={st.epoch}\n")
        out.flush()
        return done

    if poll(report, lambda: c.call("Status", pb.StatusRequest()), args.max_wait, args.interval):
        out.write("failover done\n")
        return EXIT["ok"]
    out.write(f"no new master after {args.max_wait:.0f}s: check `directorctl status` on the backups\n")
    return EXIT["timeout"]


def cmd_flush(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    if not args.yes:
        raise UsageError("flush drops every connection entry on this node; repeat with --yes")
    removed = c.call("Flush", pb.FlushRequest()).removed
    out.write(f"flushed {removed} connection entr{'y' if removed == 1 else 'ies'}\n")
    return EXIT["ok"]


def cmd_zero(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    req = pb.ZeroCountersRequest(service=parse_svc(args.service) if args.service else None)
    c.call("ZeroCounters", req)
    out.write(f"counters zeroed ({args.service or 'all services'})\n")
    return EXIT["ok"]


def cmd_watch(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    kinds = [k for k in (args.kinds or "").split(",") if k]
    stream = c.call("WatchEvents", pb.WatchEventsRequest(kinds=kinds), stream=True, timeout=0)
    seen = 0
    try:
        for ev in stream:
            out.write(json.dumps(as_json(ev), sort_keys=True) + "\n" if args.json else clifmt.event_line(ev))
            out.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    finally:
        stream.cancel()
    return EXIT["ok"]
