"""`directorctl` plumbing shared by its command modules: exit codes, typed usage errors, the
service/dest argument syntax, the gRPC client and JSON output.

Services are written `tcp/198.18.0.10:80`, `udp/198.18.0.10:53`, `198.18.0.10:80` (tcp) or `fwm/5`
(ipvsadm's `-t`/`-u`/`-f` options are accepted too: `service_arg`); dests `198.18.1.2:8080`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from director.config.model import PROTOCOLS
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
    if proto not in PROTOCOLS:
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


def write_file(path: str, text: str, mode: str = "w") -> None:
    """Write (or with mode "a" append) UTF-8 text; a UsageError names what is wrong."""
    try:
        with open(path, mode, encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def service_arg(args: argparse.Namespace, *, required: bool = True) -> str | None:
    """The service of a command: its SERVICE argument or ipvsadm's -t/-u/-f VIP:PORT (one of them)."""
    given = [text for text in (
        getattr(args, "service", None),
        f"tcp/{args.tcp_service}" if getattr(args, "tcp_service", None) else None,
        f"udp/{args.udp_service}" if getattr(args, "udp_service", None) else None,
        f"fwm/{args.fwmark_service}" if getattr(args, "fwmark_service", None) else None) if text]
    if len(given) > 1:
        raise UsageError(f"two services given ({' and '.join(given)}): give SERVICE or one of -t/-u/-f")
    if not given and required:
        raise UsageError("which service? give SERVICE (tcp/VIP:PORT) or -t VIP:PORT / -u VIP:PORT")
    return given[0] if given else None


def dest_arg(args: argparse.Namespace) -> str:
    """The dest of a command: its DEST argument or ipvsadm's -r ADDR:PORT (one of them)."""
    given = [str(text) for text in (getattr(args, "dest", None), getattr(args, "real_server", None)) if text]
    if len(given) != 1:
        raise UsageError("which dest? give DEST or -r ADDR:PORT (once)")
    return given[0]


def flow_mapping(text: str, what: str) -> dict[str, Any]:
    """A YAML mapping given on the command line, e.g. --health '{type: tcp, interval: 2}'."""
    from director.config.loader import YamlError, load_yaml

    try:
        data = load_yaml(text)
    except YamlError as exc:
        raise UsageError(f"{what}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what}: write a YAML mapping, e.g. '{{type: tcp, interval: 2}}'")
    return data


def warn(args: argparse.Namespace, text: str) -> None:
    """One line on the command's error stream (`main` puts it on args.err_stream)."""
    err: TextIO = getattr(args, "err_stream", None) or sys.stderr
    err.write(f"directorctl {text}\n")


SETTLE_MAX = 2.0
"""At most this long a write command waits for its node to apply the revision it wrote."""


def settle(c: Client, revision: int) -> None:
    """Read-your-writes on this node: wait (bounded) until it runs `revision` from its config watch,
    so the next `directorctl list` shows the change. A write that changed nothing returns etcd's
    current revision, which the node's config never reaches: hence the bound, and no complaint."""
    import time

    from lbd_pb import admin_pb2 as pb

    deadline = time.monotonic() + min(SETTLE_MAX, c.timeout if c.timeout > 0 else SETTLE_MAX)
    while int(c.call("Status", pb.StatusRequest()).config_revision) < revision:
        if time.monotonic() >= deadline:
            return
        time.sleep(0.02)
