"""`directorctl`'s command line: the argparse tree, every argument with its help text.

Connection options (`--addr`, `--token`, TLS files, `--timeout`...) are accepted before the command
and after it (`directorctl list --addr host:7200`): each subcommand carries a copy whose default is
`SUPPRESS`, so a copy that was not given never overrides the value parsed before the command.
ipvsadm's letters are aliases where they mean the same thing (see `director.admin.cli_edit`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from director import __version__
from director.admin.cli_base import DEFAULT_ADDR
from director.config.model import FORWARDS
from director.services.sched import registry


def _connection_options(p: argparse.ArgumentParser | Any, *, top: bool) -> None:
    def d(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("connection (before or after the command)")
    g.add_argument("--addr", default=d(os.environ.get("DIRECTORCTL_ADDR", DEFAULT_ADDR)),
                   help="the node's admin API: unix:/path or host:port (default $DIRECTORCTL_ADDR or "
                   f"{DEFAULT_ADDR})")
    g.add_argument("--token", default=d(None), help="bearer token for TCP (default $DIRECTORCTL_TOKEN)")
    g.add_argument("--ca", default=d(None), help="CA bundle (PEM) to verify the node")
    g.add_argument("--cert", default=d(None), help="client certificate (PEM) for mutual TLS")
    g.add_argument("--key", default=d(None), help="client key (PEM) for mutual TLS")
    g.add_argument("--server-name", default=d(None), help="expected TLS name of the node")
    g.add_argument("--insecure", action="store_true", default=d(False), help="plain TCP (labs only)")
    g.add_argument("--timeout", type=float, default=d(10.0), help="per-call deadline, seconds (default 10)")


class _Sub:
    """add_parser with the connection options on every subcommand."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub

    def add(self, name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = self.sub.add_parser(name, help=help_text, description=help_text, **kw)
        _connection_options(p, top=False)
        return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="directorctl", description="Manage an lbd director cluster "
                                "through a node's admin API (like ipvsadm and keepalived together).")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                   help="print directorctl's version and exit")
    _connection_options(p, top=True)
    sub = _Sub(p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="what to do"))
    _add_reads(sub)
    _add_config(sub)
    _add_service_edits(sub)
    _add_dest_edits(sub)
    _add_operations(sub)
    _add_offline(sub)
    return p


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's answer as JSON")


def _add_reads(sub: _Sub) -> None:
    ls = sub.add("list", "services and dests, like ipvsadm -Ln", aliases=["ls"])
    ls.add_argument("-t", "--service", help="only this service, e.g. tcp/198.18.0.10:80 or 198.18.0.10:80")
    ls.add_argument("-u", "--udp-service", metavar="VIP:PORT", help="only this UDP service (ipvsadm -u)")
    ls.add_argument("-c", "--connection", action="store_true", help="connection entries (ipvsadm -Lnc)")
    ls.add_argument("--stats", action="store_true", help="counters (ipvsadm --stats)")
    ls.add_argument("--rate", action="store_true", help="rates (ipvsadm --rate)")
    ls.add_argument("-n", "--numeric", action="store_true", help="accepted for ipvsadm habits: output is "
                    "always numeric")
    _json(ls)
    ls.add_argument("--client", help="-c: only this client address")
    ls.add_argument("--dest", help="-c: only this dest ADDRESS:PORT")
    ls.add_argument("--state", help="-c: only this state, e.g. ESTABLISHED")
    ls.add_argument("--templates", action="store_true", help="-c: persistence templates only")
    ls.add_argument("--limit", type=int, help="-c: at most N entries")
    _json(sub.add("status", "role, master, sync lag, table sizes, defense"))
    g = sub.add("get", "print the running config (YAML), or one service of it")
    g.add_argument("name", nargs="?", help="a service name")
    _json(g)


def _add_config(sub: _Sub) -> None:
    a = sub.add("apply", "validate, diff and write a config file")
    a.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    a.add_argument("--dry-run", action="store_true", help="validate and show the diff only")
    a.add_argument("--prune", action="store_true", help="delete services missing from the file")
    _json(a)
    s = sub.add("save", "print the running config as YAML or as ipvsadm -S -n rules")
    s.add_argument("--format", choices=("yaml", "ipvsadm"), default="yaml", help="yaml (the apply -f "
                   "schema, default) or ipvsadm (rules for ipvsadm -R / directorctl restore)")
    s.add_argument("-n", "--numeric", action="store_true",
                   help="accepted for ipvsadm habits (always numeric)")
    s.add_argument("-o", "--output", help="write to this file instead of stdout")
    r = sub.add("restore", "write a saved config: YAML or ipvsadm -S rules (like ipvsadm -R)")
    r.add_argument("-f", "--file", default="-", help="the saved file, or - for stdin (default)")
    r.add_argument("--format", choices=("auto", "yaml", "ipvsadm"), default="auto",
                   help="the input's format (default: auto-detect)")
    r.add_argument("--dry-run", action="store_true", help="validate and show the diff only")
    r.add_argument("--prune", action="store_true", help="delete services missing from the input "
                   "(implied by a -C line in ipvsadm rules)")
    r.add_argument("--partial", action="store_true", help="ipvsadm rules: write what translates even if "
                   "some lines do not (they are listed either way)")
    _json(r)
    k = sub.add("import-keepalived", "translate a keepalived.conf into the service YAML (stdout) or "
                "--apply it")
    k.add_argument("conf", help="the keepalived.conf to read (- for stdin)")
    k.add_argument("--apply", action="store_true", help="write the result through the admin API")
    k.add_argument("--dry-run", action="store_true", help="with --apply: show the diff only")
    k.add_argument("--prune", action="store_true", help="with --apply: delete services the file lacks")
    k.add_argument("-o", "--output", help="write the service YAML to this file instead of stdout")
    k.add_argument("--node-config", help="write the node-config fragment (notify hooks) to this file "
                   "instead of appending it as comments")
    k.add_argument("--report", help="write what was not translated as JSON to this file")
    k.add_argument("--strict", action="store_true", help="exit 2 when anything was not translated")


def _service_ref(p: argparse.ArgumentParser, *, positional: bool = True) -> None:
    if positional:
        p.add_argument("service", nargs="?", help="tcp/VIP:PORT, udp/VIP:PORT or VIP:PORT (or -t/-u)")
    p.add_argument("-t", "--tcp-service", metavar="VIP:PORT", help="a TCP service (ipvsadm -t)")
    p.add_argument("-u", "--udp-service", metavar="VIP:PORT", help="a UDP service (ipvsadm -u)")
    p.add_argument("-f", "--fwmark-service", metavar="MARK", help="a firewall-mark service, i.e. a service "
                   "group (ipvsadm -f)")


def _forward(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("-g", "--gatewaying", dest="forward", action="store_const", const="dr",
                   help=f"{what}: direct routing (ipvsadm -g)")
    g.add_argument("-i", "--ipip", dest="forward", action="store_const", const="tun",
                   help=f"{what}: IPIP tunnel (ipvsadm -i)")
    g.add_argument("-m", "--masquerading", dest="forward", action="store_const", const="nat",
                   help=f"{what}: NAT (ipvsadm -m)")
    g.add_argument("--forward", dest="forward", choices=tuple(FORWARDS), help=f"{what} by name")


def _service_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--scheduler", choices=registry.NAMES, help="scheduler (ipvsadm -s)")
    p.add_argument("-b", "--sched-flags", metavar="FLAGS", help="scheduler flags, e.g. sh-port,sh-fallback "
                   "(ipvsadm -b)")
    p.add_argument("--sched-option", action="append", metavar="NAME=VALUE", help="any scheduler option, "
                   "e.g. table_size=65537 (repeatable)")
    p.add_argument("-p", "--persistent", nargs="?", type=int, const=300, metavar="TIMEOUT",
                   help="persistence, seconds (ipvsadm -p; default 300)")
    p.add_argument("-M", "--netmask", help="persistence granularity, e.g. 255.255.255.0 or 24 (ipvsadm -M)")
    _forward(p, "the dests' default forwarding")
    p.add_argument("--group", action="append", metavar="PROTO/VIP:PORT", help="with -f: a selector of the "
                   "service group, e.g. tcp/198.18.0.10:443 or udp/198.18.0.10:10000-10100 (repeatable; "
                   "edit-service replaces them all)")
    p.add_argument("--expire-nodest-conn", action=argparse.BooleanOptionalAction, default=None,
                   help="drop conns of a removed dest at once")
    p.add_argument("--expire-quiescent-template", action=argparse.BooleanOptionalAction, default=None,
                   help="drop persistence templates of a weight-0 dest")


def _add_service_edits(sub: _Sub) -> None:
    a = sub.add("add-service", "add a virtual service (ipvsadm -A)")
    _service_ref(a)
    a.add_argument("--name", help="its name in the config (default tcp-VIP-PORT)")
    _service_options(a)
    a.add_argument("--replace", action="store_true", help="overwrite a service of that name (dests too)")
    e = sub.add("edit-service", "change some options of a service; the rest stays (ipvsadm -E)")
    _service_ref(e)
    _service_options(e)
    e.add_argument("--no-persistent", action="store_true", help="turn persistence off")
    d = sub.add("delete-service", "delete a virtual service and its dests (ipvsadm -D)")
    _service_ref(d)


def _dest_ref(p: argparse.ArgumentParser) -> None:
    _service_ref(p)
    p.add_argument("dest", nargs="?", help="the dest ADDRESS:PORT (or -r)")
    p.add_argument("-r", "--real-server", metavar="ADDR:PORT", help="the dest (ipvsadm -r)")


def _dest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-w", "--weight", type=int, help="weight 0..65535 (ipvsadm -w; 0 = quiesced)")
    p.add_argument("-x", "--u-threshold", dest="u_threshold", type=int,
                   help="upper conn threshold: no new conns above it (ipvsadm -x)")
    p.add_argument("-y", "--l-threshold", dest="l_threshold", type=int,
                   help="lower conn threshold: new conns again below it (ipvsadm -y)")
    _forward(p, "forwarding")
    p.add_argument("--health", metavar="YAML", help="health check as a YAML mapping, e.g. "
                   "'{type: http, path: /healthz}'")


def _add_dest_edits(sub: _Sub) -> None:
    a = sub.add("add-dest", "add a real server to a service (ipvsadm -a)")
    _dest_ref(a)
    _dest_options(a)
    a.add_argument("--replace", action="store_true", help="overwrite a dest of that address and port")
    e = sub.add("edit-dest", "change some options of a dest; the rest stays (ipvsadm -e)")
    _dest_ref(e)
    _dest_options(e)
    e.add_argument("--no-health", action="store_true", help="remove the dest's health check")
    d = sub.add("delete-dest", "remove a real server from a service (ipvsadm -d)")
    _dest_ref(d)


def _waits(p: argparse.ArgumentParser, max_wait: float) -> None:
    p.add_argument("--max-wait", type=float, default=max_wait, help="seconds (default %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, help="progress every N seconds (default 1)")


def _add_operations(sub: _Sub) -> None:
    d = sub.add("drain", "set a dest's weight to 0 (optionally wait for its conns to end)")
    d.add_argument("service", help="tcp/VIP:PORT, udp/VIP:PORT or VIP:PORT")
    d.add_argument("dest", help="the dest ADDRESS:PORT")
    d.add_argument("--wait", action="store_true", help="wait until it has no connection left")
    _waits(d, 300.0)
    t = sub.add("timeouts", "set protocol timeouts (like ipvsadm --set)")
    for name in ("tcp", "tcpfin", "udp"):
        t.add_argument(f"--{name}", type=float, help=f"{name} timeout, seconds")
    t.add_argument("--set", action="append", metavar="NAME=SECONDS", help="any named timeout (repeatable)")
    _waits(sub.add("failover", "the master resigns; a synced backup takes over"), 30.0)
    sub.add("flush", "drop all connection entries on this node").add_argument(
        "--yes", action="store_true", help="yes, really (it drops every entry)")
    z = sub.add("zero", "zero the counters")
    z.add_argument("service", nargs="?", help="only this service (default all)")
    w = sub.add("watch", "stream conn, role, config and health events")
    w.add_argument("--kinds", help="comma list: conn,role,config,health")
    w.add_argument("--count", type=int, default=0, help="stop after N events")
    _json(w)


def _add_offline(sub: _Sub) -> None:
    sub.sub.add_parser("drill", help="failover drill on a lab (see `directorctl drill -h`)", add_help=False)
    k = sub.add("check", "validate a config file offline (no node needed), like keepalived -t")
    k.add_argument("-f", "--file", required=True, help="YAML file, or - for stdin")
    r = sub.add("release-lease", "revoke a dead directord's etcd lease (the process-exit hook; talks to "
                "etcd, not to a node)")
    r.add_argument("lease_file", help="the file directord --lease-file wrote")
    r.add_argument("--force", action="store_true", help="even if the recorded pid is alive")
