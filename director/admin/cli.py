"""`directorctl`: the operator's CLI for the admin gRPC API (feels like ipvsadm and keepalived).

Theory of operation
-------------------
`main(argv)` parses the command line (`director.admin.cli_parser`), opens one synchronous gRPC
channel (local unix socket by default; TCP with TLS / mTLS and a bearer token otherwise), runs one
subcommand and returns the exit code. The subcommands live by job: reads and operations
(`cli_ops`: list, status, get, apply, drain, timeouts, failover, flush, zero, watch), ipvsadm-style
config edits and save/restore (`cli_edit`), the keepalived importer (`cli_import`); the offline ones
(`check`, `import-keepalived` without `--apply`, `release-lease`, `drill`) need no node. A gRPC
error becomes one line on stderr that says what to do, and an exit code per status (see `EXIT`).

Addresses: `--addr unix:/run/lbd/admin.sock` (default; $DIRECTORCTL_ADDR) or `host:port`, before
or after the command. Services are written `tcp/198.18.0.10:80`, `udp/198.18.0.10:53`,
`198.18.0.10:80` (tcp) or `fwm/5` (or ipvsadm's `-t/-u VIP:PORT`); dests `198.18.1.2:8080`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import grpc

from director.admin import cli_edit, cli_ops
from director.admin.cli_base import (
    _CODE_EXIT,
    DEFAULT_ADDR,
    EXIT,
    Client,
    NotFoundError,
    UsageError,
    parse_hostport,
    parse_svc,
)
from director.admin.cli_import import cmd_import_keepalived, cmd_import_offline
from director.admin.cli_parser import build_parser

__all__ = ["DEFAULT_ADDR", "EXIT", "Client", "NotFoundError", "UsageError", "build_parser", "main",
           "parse_hostport", "parse_svc", "report_rpc_error"]

Command = Callable[[Client, argparse.Namespace, TextIO], int]
COMMANDS: dict[str, Command] = {
    "list": cli_ops.cmd_list, "ls": cli_ops.cmd_list, "status": cli_ops.cmd_status, "get": cli_ops.cmd_get,
    "apply": cli_ops.cmd_apply, "drain": cli_ops.cmd_drain, "timeouts": cli_ops.cmd_timeouts,
    "failover": cli_ops.cmd_failover, "flush": cli_ops.cmd_flush, "zero": cli_ops.cmd_zero,
    "watch": cli_ops.cmd_watch,
    "add-service": cli_edit.cmd_add_service, "edit-service": cli_edit.cmd_edit_service,
    "delete-service": cli_edit.cmd_delete_service, "add-dest": cli_edit.cmd_add_dest,
    "edit-dest": cli_edit.cmd_edit_dest, "delete-dest": cli_edit.cmd_delete_dest,
    "save": cli_edit.cmd_save, "restore": cli_edit.cmd_restore,
    "import-keepalived": cmd_import_keepalived,
}
OFFLINE: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "check": cli_ops.cmd_check,
    "import-keepalived": cmd_import_offline,
}
"""Commands that need no node (import-keepalived only without --apply)."""


def cmd_drill(args: argparse.Namespace, rest: list[str]) -> int:
    try:  # lazy and by name: the drill is the lab harness (deploy/), not part of the node
        drill = importlib.import_module("deploy.drill")
    except ModuleNotFoundError as exc:
        print(f"directorctl drill: the lab harness is not installed ({exc}); run `make demo` from a "
              "source checkout", file=sys.stderr)
        return 2
    main_fn: Callable[[list[str]], int] = drill.main
    return main_fn(rest)


def _offline(args: argparse.Namespace, out: TextIO) -> int | None:
    if args.cmd == "release-lease":
        from director.cluster import release  # no admin connection: the node is gone

        return release.main([args.lease_file, *(["--force"] if args.force else [])])
    if args.cmd in OFFLINE and not getattr(args, "apply", False):
        return OFFLINE[args.cmd](args, out)
    return None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.cmd == "drill":
        return cmd_drill(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.err_stream = err
    client = None
    try:
        code = _offline(args, out)
        if code is not None:
            return code
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
    if code == grpc.StatusCode.FAILED_PRECONDITION and " exists" in detail:
        hint = "it exists already: edit it (edit-service / edit-dest), or add it with --replace"
    err.write(f"directorctl: {detail}\n  -> {hint}\n")
    return EXIT[name]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
