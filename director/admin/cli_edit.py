"""`directorctl` commands that edit the config like ipvsadm: add/edit/delete a service or a dest,
`save` and `restore`.

Theory of operation
-------------------
ipvsadm's `-A -E -D` (services) and `-a -e -d` (dests) become one admin RPC each (`PutService`,
`EditService`, `DeleteService`, `PutDest`, `EditDest`, `DeleteDest`). Each is an *intent* the node
applies to the stored config as a compare-and-swap (re-applied on a fresh read when another writer
got in between), so an edit only touches the fields the operator named: `edit-service -s rr` never
reverts a dest another operator added a moment before. ipvsadm's option letters are accepted as
aliases (`-t/-u/-f` service, `-s` scheduler, `-b` scheduler flags, `-p [TIMEOUT]` persistence, `-M`
netmask, `-r` real server, `-w` weight, `-x/-y` thresholds, `-g/-i/-m` forwarding). Unlike
`ipvsadm -E`, options left out of `edit-service` stay as they are.

`save` prints the running config as YAML (the `apply -f` schema) or, with `--format ipvsadm`, as
`ipvsadm -S -n` rules (`director.config.ipvsadm`; what rules cannot say is listed on stderr).
`restore` reads YAML or ipvsadm rules (a file, or stdin like `ipvsadm -R`), so an existing IPVS box
is imported with `ipvsadm -S -n | directorctl restore`; rules it cannot translate are listed with
their line numbers and nothing is written unless `--partial`.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import yaml
from google.protobuf import struct_pb2

from director.admin.cli_base import (
    EXIT,
    Client,
    UsageError,
    dest_arg,
    flow_mapping,
    parse_hostport,
    parse_svc,
    read_config_file,
    service_arg,
    settle,
    warn,
    write_file,
)
from director.admin.cli_ops import apply_document
from director.config.model import PROTOCOLS, default_name
from lbd_pb import admin_pb2 as pb


def _struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _ref(args: argparse.Namespace) -> tuple[pb.ServiceRef, str]:
    ipvsadm_style = args.tcp_service or args.udp_service or args.fwmark_service
    if ipvsadm_style and args.service and hasattr(args, "dest") and not args.dest:
        args.dest, args.service = args.service, None  # `add-dest -t VIP:PORT ADDR:PORT`
    text = service_arg(args)
    assert text is not None
    return parse_svc(text), text


def _sched_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """-b sh-port,sh-fallback (ipvsadm) and --sched-option NAME=VALUE, as scheduler_options."""
    if args.sched_flags is None and not args.sched_option:
        return None
    opts: dict[str, Any] = {}
    for flag in (args.sched_flags or "").split(","):
        if flag:
            _, _, name = flag.partition("-")
            if name not in ("port", "fallback"):
                raise UsageError(f"bad -b flag {flag!r}: sh-port, sh-fallback, mh-port or mh-fallback")
            opts[name] = True
    for item in args.sched_option or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"bad --sched-option {item!r}: write NAME=VALUE, e.g. table_size=65537")
        opts[name] = yaml.safe_load(value)
    return opts


def _service_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The service fields the command line names (None: remove the field)."""
    fields: dict[str, Any] = {}
    if args.scheduler is not None:
        fields["scheduler"] = args.scheduler
        fields["scheduler_options"] = None  # options belong to a scheduler: -b again to keep some
    opts = _sched_options(args)
    if opts is not None:
        fields["scheduler_options"] = opts
    if args.persistent is not None:
        fields["persistence"] = {"timeout": args.persistent}
        if args.netmask is not None:
            fields["persistence"]["netmask"] = args.netmask
    elif args.netmask is not None:
        raise UsageError("-M/--netmask goes with -p/--persistent (the persistence granularity)")
    if getattr(args, "no_persistent", False):
        fields["persistence"] = None
    for name in ("forward", "expire_nodest_conn", "expire_quiescent_template"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return fields


def _edit_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = _service_fields(args)
    group = _selectors(args.group)
    if group is not None:
        fields["group"] = group
    return fields


def _selectors(items: list[str] | None) -> list[dict[str, Any]] | None:
    """--group tcp/VIP:PORT or tcp/VIP:LO-HI (repeated): a service group's selectors."""
    if not items:
        return None
    out: list[dict[str, Any]] = []
    for item in items:
        proto, _, rest = item.rpartition("/")
        vip, _, ports = rest.rpartition(":")
        lo, dash, hi = ports.partition("-")
        if proto not in PROTOCOLS or not vip or not lo.isdigit() or (dash and not hi.isdigit()):
            raise UsageError(f"bad --group {item!r}: write tcp/VIP:PORT or udp/VIP:LO-HI")
        out.append({"protocol": proto, "vip": vip.strip("[]"), **({"ports": ports} if dash else
                                                                  {"port": int(lo)})})
    return out


def cmd_add_service(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    ref, text = _ref(args)
    group = _selectors(args.group)
    if ref.fwmark:
        if group is None:
            raise UsageError("a fwmark service (service group) needs its selectors: --group tcp/VIP:PORT "
                             "(repeat it; ranges as tcp/VIP:LO-HI)")
        where: dict[str, Any] = {"fwmark": ref.fwmark, "group": group}
    elif group is not None:
        raise UsageError("--group goes with -f MARK (a service group)")
    else:
        where = {"protocol": ref.protocol, "vip": ref.vip, "port": ref.port}
    name = args.name or default_name(ref.protocol, ref.vip, ref.port, ref.fwmark)
    spec = {"name": name, **where, **_service_fields(args)}
    spec = {k: v for k, v in spec.items() if v is not None}
    rev = c.call("PutService", pb.PutServiceRequest(service=_struct(spec), create_only=not args.replace))
    settle(c, rev.revision)
    done = "written" if args.replace else "added"
    out.write(f"service {name} ({text}) {done} at revision {rev.revision}\n")
    return EXIT["ok"]


def cmd_edit_service(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    ref, text = _ref(args)
    fields = _edit_fields(args)
    if not fields:
        raise UsageError("nothing to change: give -s, -b, -p/--no-persistent, -M, -g/-i/-m, --group or "
                         "--expire-*")
    rev = c.call("EditService", pb.EditServiceRequest(service=ref, set=_struct(fields))).revision
    settle(c, rev)
    out.write(f"service {text} updated at revision {rev}\n")
    return EXIT["ok"]


def cmd_delete_service(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    ref, text = _ref(args)
    rev = c.call("DeleteService", pb.DeleteServiceRequest(service=ref)).revision
    settle(c, rev)
    out.write(f"service {text} deleted at revision {rev}\n")
    return EXIT["ok"]


def _dest_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("weight", "u_threshold", "l_threshold", "forward"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.health is not None:
        fields["healthcheck"] = flow_mapping(args.health, "--health")
    return fields


def cmd_add_dest(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    ref, text = _ref(args)
    dtext = dest_arg(args)
    addr, port = parse_hostport(dtext, "dest")
    spec = {"address": addr, "port": port, **_dest_fields(args)}
    rev = c.call("PutDest", pb.PutDestRequest(service=ref, dest=_struct(spec),
                                               create_only=not args.replace)).revision
    settle(c, rev)
    out.write(f"dest {dtext} {'written' if args.replace else 'added'} to {text} at revision {rev}\n")
    return EXIT["ok"]


def cmd_edit_dest(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    ref, text = _ref(args)
    dtext = dest_arg(args)
    addr, port = parse_hostport(dtext, "dest")
    req = pb.EditDestRequest(service=ref, address=addr, port=port)
    extra = _dest_fields(args)
    for name in ("weight", "u_threshold", "l_threshold"):
        if name in extra:
            setattr(req, name, extra.pop(name))
    if args.no_health:
        extra["healthcheck"] = None
    if extra:
        req.set.CopyFrom(_struct(extra))
    if not extra and args.weight is None and args.u_threshold is None and args.l_threshold is None:
        raise UsageError("nothing to change: give --weight, --u-threshold, --l-threshold, -g/-i/-m, "
                         "--health or --no-health")
    rev = c.call("EditDest", req).revision
    settle(c, rev)
    out.write(f"dest {dtext} of {text} updated at revision {rev}\n")
    return EXIT["ok"]


def cmd_delete_dest(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    ref, text = _ref(args)
    dtext = dest_arg(args)
    addr, port = parse_hostport(dtext, "dest")
    rev = c.call("DeleteDest", pb.DeleteDestRequest(service=ref, address=addr, port=port)).revision
    settle(c, rev)
    out.write(f"dest {dtext} deleted from {text} at revision {rev}\n")
    return EXIT["ok"]


# ---- save / restore ---------------------------------------------------------------------------


def _running(c: Client) -> tuple[str, int]:
    resp = c.call("GetConfig", pb.GetConfigRequest())
    return resp.yaml, resp.revision


def _write(text: str, path: str | None, out: TextIO) -> None:
    if path is None or path == "-":
        out.write(text)
    else:
        write_file(path, text)


def cmd_save(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    from director.config.ipvsadm import format_rules
    from director.config.services import parse_config

    text, rev = _running(c)
    if args.format == "yaml":
        _write(f"# saved at revision {rev}\n{text}", args.output, out)
        return EXIT["ok"]
    rules, dropped = format_rules(parse_config(text))
    _write(rules, args.output, out)
    for what in dropped:
        warn(args, f"save: not expressible in ipvsadm rules: {what}")
    return EXIT["ok"]


def looks_like_rules(text: str) -> bool:
    """ipvsadm rules start (after comments) with an option or the word ipvsadm; YAML does not."""
    for line in text.splitlines():
        word = line.strip()
        if word and not word.startswith("#"):
            return word.startswith("-") and not word.startswith("- ") or word.split()[0].endswith("ipvsadm")
    return False


def cmd_restore(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    from director.config.ipvsadm import parse_rules, running_documents
    from director.config.services import parse_config

    text = read_config_file(args.file)
    fmt = args.format if args.format != "auto" else ("ipvsadm" if looks_like_rules(text) else "yaml")
    prune = args.prune
    if fmt == "ipvsadm":
        running, _ = _running(c)
        rules = parse_rules(text, running_documents(parse_config(running)) if running else {})
        for problem in rules.problems:
            warn(args, f"restore: {args.file}: {problem}")
        if rules.problems and not args.partial:
            warn(args, f"restore: {len(rules.problems)} rule(s) not translated; nothing written "
                 "(--partial writes the rest)")
            return EXIT["usage"]
        prune = prune or rules.clear
        text = yaml.safe_dump(rules.document(), sort_keys=False)
    return apply_document(c, text, args, out, prune=prune)
