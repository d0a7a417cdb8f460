"""`directorctl`: the operator's CLI for the admin gRPC API (feels like ipvsadm and keepalived).

Theory of operation
-------------------
`main(argv)` parses the command line, opens one synchronous gRPC channel (local unix socket by
default; TCP with TLS / mTLS and a bearer token otherwise), runs one subcommand and returns the
exit code. Subcommands only build requests and print answers: tables laid out like `ipvsadm -Ln`
(`director.admin.cli_format`), or JSON with `--json` (the protobuf messages in their JSON mapping). Long
operations (`drain --wait`, `failover`) print a progress line per poll. A gRPC error becomes one
line on stderr that says what to do, and an exit code per status (see `EXIT`).

Addresses: `--addr unix:/run/lbd/admin.sock` (default; $DIRECTORCTL_ADDR) or `host:port`.
Services are written `tcp/198.18.0.10:80`, `udp/198.18.0.10:53`, `198.18.0.10:80` (tcp) or
`fwm/5`; dests `198.18.1.2:8080`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import grpc
import yaml
from google.protobuf import json_format

from director.admin import cli_format as clifmt
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc

DEFAULT_ADDR = "unix:/run/lbd/admin.sock"

EXIT = {
    "ok": 0, "error": 1, "usage": 2, "unavailable": 3, "not_found": 4, "denied": 5,
    "precondition": 6, "invalid": 7, "timeout": 8,
}
_CODE_EXIT = {
    grpc.StatusCode.UNAVAILABLE: ("unavailable", "is directord running and --addr right? "
                                  "(--addr / $DIRECTORCTL_ADDR; default " + DEFAULT_ADDR + ")"),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("timeout", "the node did not answer in time; "
                                        "retry or raise --timeout"),
    grpc.StatusCode.NOT_FOUND: ("not_found", "check the name with `directorctl list`"),
    grpc.StatusCode.UNAUTHENTICATED: ("denied", "pass --token (or $DIRECTORCTL_TOKEN), a client "
                                      "certificate (--cert/--key), or use the local unix socket"),
    grpc.StatusCode.PERMISSION_DENIED: ("denied", "use a credential with the operator or admin role"),
    grpc.StatusCode.FAILED_PRECONDITION: ("precondition", "run it against the master "
                                          "(`directorctl status` shows it)"),
    grpc.StatusCode.INVALID_ARGUMENT: ("invalid", "fix the named field and retry"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("error", "the node limits admin calls per client; wait a moment "
                                         "and retry"),
}


class UsageError(Exception):
    pass


class NotFoundError(Exception):
    pass


# ---- argument parsing helpers -----------------------------------------------------------------


def parse_svc(text: str) -> pb.ServiceRef:
    """`tcp/1.2.3.4:80`, `1.2.3.4:80`, `udp/[2001:db8::1]:53`, `fwm/5`."""
    proto, _, rest = text.rpartition("/")
    proto = proto.lower() or "tcp"
    if proto in ("fwm", "fwmark"):
        if not rest.isdigit() or int(rest) == 0:
            raise UsageError(f"bad fwmark service {text!r}: write fwm/<mark>, e.g. fwm/5")
        return pb.ServiceRef(fwmark=int(rest))
    if proto not in ("tcp", "udp"):
        raise UsageError(f"bad service {text!r}: protocol must be tcp, udp or fwm")
    addr, port = parse_hostport(rest, f"service {text!r}")
    return pb.ServiceRef(protocol=proto, vip=addr, port=port)


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"bad {what}: write ADDRESS:PORT, e.g. 198.18.0.10:80") from None
    return host, int(port)


# ---- connection -------------------------------------------------------------------------------


class Client:
    """The stub plus call options (metadata, timeout)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.addr = args.addr
        self.timeout = args.timeout
        self.channel = _channel(args)
        self.stub = pb_grpc.AdminStub(self.channel)
        token = args.token or os.environ.get("DIRECTORCTL_TOKEN")
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def call(self, method: str, request: Any, *, stream: bool = False, timeout: float | None = None) -> Any:
        fn = getattr(self.stub, method)
        t = self.timeout if timeout is None else timeout
        return fn(request, metadata=self.metadata, timeout=t if t > 0 else None)

    def close(self) -> None:
        self.channel.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _channel(args: argparse.Namespace) -> Any:
    if args.addr.startswith("unix:") or args.insecure:
        return grpc.insecure_channel(args.addr)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca) if args.ca else None,
        private_key=_read(args.key) if args.key else None,
        certificate_chain=_read(args.cert) if args.cert else None)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.addr, creds, options=options)


def as_json(msg: Any) -> Any:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)


def emit_json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ---- subcommands ------------------------------------------------------------------------------


def cmd_list(c: Client, args: argparse.Namespace, out: TextIO) -> int:
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


def read_config_file(path: str) -> str:
    """The file (or stdin for -) as UTF-8 text, size-checked; a UsageError names what is wrong."""
    from director.config.loader import YamlError, decode
    from director.config.services import read_document
    from director.config.validate import ConfigError

    try:
        return decode(sys.stdin.buffer.read()) if path == "-" else read_document(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except YamlError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except ConfigError as exc:
        raise UsageError("\n".join(exc.errors)) from None


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
    text = read_config_file(args.file)
    plan = c.call("ApplyConfig", pb.ApplyConfigRequest(yaml=text, dry_run=True, prune=args.prune))
    if args.json and args.dry_run:
        emit_json(as_json(plan), out)
        return EXIT["ok"]
    if not args.json:
        out.write(render_diff(plan.changes))
    if args.dry_run or not plan.changes:
        if not args.json:
            out.write("dry run: nothing written\n" if args.dry_run else "")
        else:
            emit_json(as_json(plan), out)
        return EXIT["ok"]
    done = c.call("ApplyConfig", pb.ApplyConfigRequest(yaml=text, dry_run=False, prune=args.prune))
    if args.json:
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


def cmd_edit_dest(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.weight is None and args.u_threshold is None and args.l_threshold is None:
        raise UsageError("nothing to change: give --weight, --u-threshold and/or --l-threshold")
    addr, port = parse_hostport(args.dest, "dest")
    req = pb.EditDestRequest(service=parse_svc(args.service), address=addr, port=port)
    for name in ("weight", "u_threshold", "l_threshold"):
        if getattr(args, name) is not None:
            setattr(req, name, getattr(args, name))
    rev = c.call("EditDest", req).revision
    out.write(f"dest {args.dest} of {args.service} updated at revision {rev}\n")
    return EXIT["ok"]


def cmd_drain(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    addr, port = parse_hostport(args.dest, "dest")
    svc = parse_svc(args.service)
    rev = c.call("DrainDest", pb.DrainDestRequest(service=svc, address=addr, port=port)).revision
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


def cmd_drill(args: argparse.Namespace, rest: list[str]) -> int:
    try:  # lazy and by name: the drill is the lab harness (deploy/), not part of the node
        drill = importlib.import_module("deploy.drill")
    except ModuleNotFoundError as exc:
        print(f"directorctl drill: the lab harness is not installed ({exc}); run `make demo` from a "
              "source checkout", file=sys.stderr)
        return 2
    main_fn: Callable[[list[str]], int] = drill.main
    return main_fn(rest)


# ---- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="directorctl", description="Manage an lbd director cluster.")
    p.add_argument("--addr", default=os.environ.get("DIRECTORCTL_ADDR", DEFAULT_ADDR),
                   help="unix:/path or host:port (default $DIRECTORCTL_ADDR or %(default)s)")
    p.add_argument("--token", help="bearer token for TCP (default $DIRECTORCTL_TOKEN)")
    p.add_argument("--ca", help="CA bundle (PEM) to verify the node")
    p.add_argument("--cert", help="client certificate (PEM) for mutual TLS")
    p.add_argument("--key", help="client key (PEM) for mutual TLS")
    p.add_argument("--server-name", help="expected TLS name of the node")
    p.add_argument("--insecure", action="store_true", help="plain TCP (labs only)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_list(sub)
    sub.add_parser("status", help="role, master, sync lag, table sizes").add_argument(
        "--json", action="store_true")
    g = sub.add_parser("get", help="print the running config (YAML), or one service of it")
    g.add_argument("name", nargs="?", help="a service name")
    g.add_argument("--json", action="store_true")
    a = sub.add_parser("apply", help="validate, diff and write a config file")
    a.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    a.add_argument("--dry-run", action="store_true", help="validate and show the diff only")
    a.add_argument("--prune", action="store_true", help="delete services missing from the file")
    a.add_argument("--json", action="store_true")
    e = sub.add_parser("edit-dest", help="change a dest's weight or thresholds")
    e.add_argument("service")
    e.add_argument("dest")
    e.add_argument("-w", "--weight", type=int)
    e.add_argument("-x", "--u-threshold", dest="u_threshold", type=int)
    e.add_argument("-y", "--l-threshold", dest="l_threshold", type=int)
    d = sub.add_parser("drain", help="set a dest's weight to 0 (optionally wait for its conns to end)")
    d.add_argument("service")
    d.add_argument("dest")
    d.add_argument("--wait", action="store_true")
    _add_waits(d, 300.0)
    t = sub.add_parser("timeouts", help="set protocol timeouts (like ipvsadm --set)")
    for name in ("tcp", "tcpfin", "udp"):
        t.add_argument(f"--{name}", type=float)
    t.add_argument("--set", action="append", metavar="NAME=SECONDS", help="any named timeout")
    f = sub.add_parser("failover", help="the master resigns; a synced backup takes over")
    _add_waits(f, 30.0)
    sub.add_parser("flush", help="drop all connection entries on this node").add_argument(
        "--yes", action="store_true")
    z = sub.add_parser("zero", help="zero the counters")
    z.add_argument("service", nargs="?")
    w = sub.add_parser("watch", help="stream conn, role, config and health events")
    w.add_argument("--kinds", help="comma list: conn,role,config,health")
    w.add_argument("--count", type=int, default=0, help="stop after N events")
    w.add_argument("--json", action="store_true")
    sub.add_parser("drill", help="failover drill on a lab (see `directorctl drill -h`)", add_help=False)
    k = sub.add_parser("check", help="validate a config file offline (no node needed), like keepalived -t")
    k.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    r = sub.add_parser("release-lease", help="revoke a dead directord's etcd lease (the process-exit hook; "
                       "talks to etcd, not to a node)")
    r.add_argument("lease_file", help="the file directord --lease-file wrote")
    r.add_argument("--force", action="store_true", help="even if the recorded pid is alive")
    return p


def _add_list(sub: Any) -> None:
    ls = sub.add_parser("list", aliases=["ls"], help="services and dests, like ipvsadm -Ln")
    ls.add_argument("-t", "--service", help="only this service, e.g. tcp/198.18.0.10:80")
    ls.add_argument("-c", "--connection", action="store_true", help="connection entries (ipvsadm -Lnc)")
    ls.add_argument("--stats", action="store_true", help="counters (ipvsadm --stats)")
    ls.add_argument("--rate", action="store_true", help="rates (ipvsadm --rate)")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--client", help="-c: only this client address")
    ls.add_argument("--dest", help="-c: only this dest ADDRESS:PORT")
    ls.add_argument("--state", help="-c: only this state, e.g. ESTABLISHED")
    ls.add_argument("--templates", action="store_true", help="-c: persistence templates only")
    ls.add_argument("--limit", type=int, help="-c: at most N entries")


def _add_waits(p: argparse.ArgumentParser, max_wait: float) -> None:
    p.add_argument("--max-wait", type=float, default=max_wait, help="seconds (default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, help="progress every N seconds")


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, TextIO], int]] = {
    "list": cmd_list, "ls": cmd_list, "status": cmd_status, "get": cmd_get, "apply": cmd_apply,
    "edit-dest": cmd_edit_dest, "drain": cmd_drain, "timeouts": cmd_timeouts, "failover": cmd_failover,
    "flush": cmd_flush, "zero": cmd_zero, "watch": cmd_watch,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "drill":
        return cmd_drill(args, rest)
    if args.cmd == "check":
        try:
            return cmd_check(args, out)
        except UsageError as exc:
            err.write(f"directorctl: {exc}\n")
            return EXIT["usage"]
    if args.cmd == "release-lease":
        from director.cluster import release  # no admin connection: the node is gone

        return release.main([args.lease_file, *(["--force"] if args.force else [])])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    client = None
    try:
        client = Client(args)
        return COMMANDS[args.cmd](client, args, out)
    except UsageError as exc:
        err.write(f"directorctl: {exc}\n")
        return EXIT["usage"]
    except NotFoundError as exc:
        err.write(f"directorctl: {exc}\n")
        return EXIT["not_found"]
    except grpc.RpcError as exc:
        return report_rpc_error(exc, args.addr, err)
    except KeyboardInterrupt:
        return 130
    finally:
        if client is not None:
            client.close()


def report_rpc_error(exc: Any, addr: str, err: TextIO) -> int:
    code = exc.code()
    if code == grpc.StatusCode.CANCELLED:
        return EXIT["ok"]
    name, hint = _CODE_EXIT.get(code, ("error", "see directord's log for details"))
    detail = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE:
        detail = f"cannot reach the admin API at {addr}"
    err.write(f"directorctl: {detail}\n  -> {hint}\n")
    return EXIT[name]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
