"""Health-check settings of one dest (`HealthSpec`, parsed from the dest's `health:` YAML) and results.

YAML (per dest, inside a service's `dests:` list)::

    health:
      type: http          # tcp | http | https | dns | udp | grpc | misc | ping
      interval: 2         # seconds between probes (0.05..86400)
      timeout: 1          # seconds per probe (0.01..3600); misc: the command is killed after it
      rise: 2             # good probes to come back up (1..1000)
      fall: 3             # bad probes to go down (1..1000)
      port: 8080          # default: the dest's port (dns: 53; ping: unused)
      on_failure: quiesce # quiesce (weight 0) | remove
      # http / https
      path: /healthz      # visible ASCII, starting with '/'
      host: www.example   # Host header, a DNS name or address[:port] (default: the dest address)
      expect_status: [200, 204]   # default [200]
      expect_body: "ok"   # regular expression searched in the body (optional, bounded)
      digest: 9e107d9d372bb6826bd81d3542a419d6   # MD5 of the body, hex (keepalived's digest)
      # https only
      sni: www.example    # TLS server name (default: host without its port, none for an address)
      verify: false       # check the certificate chain and name (default false, like SSL_GET)
      ca_file: /etc/lbd/ca.pem    # CA bundle for verify (default: the system's)
      # dns (over UDP)
      query: www.example.com      # required
      qtype: A            # A AAAA CNAME MX NS SOA TXT PTR SRV
      expect_rcode: NOERROR       # NOERROR FORMERR SERVFAIL NXDOMAIN NOTIMP REFUSED
      expect_answer: [198.18.2.10]  # each must appear in the answer section (optional)
      # udp
      payload: "ping\n"   # or payload_hex: "0a0b"; default: an empty datagram
      expect: "^pong"     # regular expression searched in the reply (optional)
      require_reply: false  # false: up unless refused (ICMP port unreachable); true: a reply is needed
      # grpc (grpc.health.v1.Health/Check)
      grpc_service: ""    # default "": the server's overall health
      # misc
      command: [/usr/local/bin/check-db, --fast]   # argv, no shell (a string is split like a shell would)
      dynamic: false      # keepalived misc_dynamic: exit 2..255 -> up with weight exit-2

Validation goes through ``director.config.validate`` like every operator document: ``health_spec``
adds every problem to a collector (the service parser uses it, with paths such as
``services[0].dests[1].health.fall``); ``HealthSpec.from_dict`` raises one ``ConfigError`` listing them.
Values that end up in an HTTP request (path, host) cannot carry spaces or line breaks; regular
expressions are refused before compiling when they are long or ask for huge repetition counts. A field
that belongs to another type (``sni`` on a tcp check, ``command`` on dns...) is an error naming it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from director.config import validate as v
from director.config.validate import ConfigError, Errors

KINDS = ("tcp", "http", "https", "dns", "udp", "grpc", "misc", "ping")
ON_FAILURE = ("quiesce", "remove")
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33}
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
ONLY: dict[str, tuple[str, ...]] = {
    "digest": ("http", "https"), "sni": ("https",), "verify": ("https",), "ca_file": ("https",),
    "query": ("dns",), "qtype": ("dns",), "expect_rcode": ("dns",), "expect_answer": ("dns",),
    "payload": ("udp",), "payload_hex": ("udp",), "expect": ("udp",), "require_reply": ("udp",),
    "grpc_service": ("grpc",), "command": ("misc",), "dynamic": ("misc",)}
"""Fields of one type (or two): given on another type they are an error."""
FIELDS = ("type", "interval", "timeout", "rise", "fall", "port", "path", "host", "expect_status",
          "expect_body", "on_failure", *ONLY)
MAX_COUNT = 1000
MAX_STATUSES = 64
MAX_PATH = 2048
MAX_REGEX = 1024
MAX_REPEAT = 1000
MAX_PAYLOAD = 4096
MAX_ANSWERS = 32
MAX_ARGV = 64
DNS_PORT = 53

_PATH = re.compile(r"/[\x21-\x7e]*")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\.?$)(?:{_LABEL}\.)*{_LABEL}\.?")
_MD5 = re.compile(r"[0-9A-Fa-f]{32}")
_HEX = re.compile(rf"(?:[0-9A-Fa-f]{{2}}){{0,{MAX_PAYLOAD}}}")
_FILE = re.compile(r"[^\x00]{1,4096}")
_SERVICE = re.compile(r"[\x21-\x7e]{0,200}")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""
    weight: int | None = None
    """misc `dynamic`: the weight the check asks for (exit code - 2); None: keep the configured one."""
    killed: bool = False
    """The probe's command overran its timeout and was killed (counted by the runner)."""


@dataclass(frozen=True)
class HealthSpec:
    kind: str = "tcp"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    port: int | None = None
    path: str = "/"
    host: str | None = None
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None
    on_failure: str = "quiesce"
    digest: str | None = None
    sni: str | None = None
    verify: bool = False
    ca_file: str | None = None
    query: str = ""
    qtype: str = "A"
    expect_rcode: str = "NOERROR"
    expect_answer: tuple[str, ...] = ()
    payload: bytes = b""
    expect: str | None = None
    require_reply: bool = False
    grpc_service: str = ""
    command: tuple[str, ...] = ()
    dynamic: bool = False

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "health") -> HealthSpec:
        """Validate a `health:` mapping; `ConfigError` (a ValueError) lists every problem by field."""
        errs = Errors()
        spec = health_spec(d, where, errs)
        errs.raise_if_any()
        assert spec is not None
        return spec

    def port_for(self, dest_port: int) -> int:
        """The port probed: `port`, else 53 for dns, else the dest's."""
        if self.port is not None:
            return self.port
        return DNS_PORT if self.kind == "dns" else dest_port

    @property
    def server_name(self) -> str | None:
        """https: the SNI to send (`sni`, else `host` without its port when it is a name)."""
        if self.sni:
            return self.sni
        if not self.host:
            return None
        name = self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host
        return name if _DNS_NAME.fullmatch(name) and not name.replace(".", "").isdigit() else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "interval": self.interval, "timeout": self.timeout,
                               "rise": self.rise, "fall": self.fall, "on_failure": self.on_failure}
        if self.port is not None:
            out["port"] = self.port
        if self.kind in ("http", "https"):
            out.update(path=self.path, expect_status=list(self.expect_status))
            _put(out, host=self.host, expect_body=self.expect_body, digest=self.digest)
        if self.kind == "https":
            out["verify"] = self.verify
            _put(out, sni=self.sni, ca_file=self.ca_file)
        elif self.kind == "dns":
            out.update(query=self.query, qtype=self.qtype, expect_rcode=self.expect_rcode)
            if self.expect_answer:
                out["expect_answer"] = list(self.expect_answer)
        elif self.kind == "udp":
            out["require_reply"] = self.require_reply
            if self.payload:
                text = self.payload.decode("utf-8", "replace")
                printable = text.encode() == self.payload and text.isprintable()
                out.update({"payload": text} if printable else {"payload_hex": self.payload.hex()})
            _put(out, expect=self.expect)
        elif self.kind == "grpc":
            out["grpc_service"] = self.grpc_service
        elif self.kind == "misc":
            out.update(command=list(self.command), dynamic=self.dynamic)
        return out


def _put(out: dict[str, Any], **kw: Any) -> None:
    out.update({k: x for k, x in kw.items() if x is not None})


def health_spec(raw: Any, path: str, errs: Errors) -> HealthSpec | None:
    """Check a `health:` value, adding problems to `errs`; None if it had any."""
    n = errs.count
    d = v.mapping(raw, path, errs)
    v.keys(d, FIELDS, (), path, errs)
    kind = v.choice(d, "type", path, errs, KINDS, "tcp")
    for key, kinds in ONLY.items():
        if key in d and kind not in kinds:
            errs.add(v.join(path, key), f"applies to type {' and '.join(kinds)} only, this check is {kind}")
    spec = HealthSpec(
        kind=kind,
        interval=v.number(d, "interval", path, errs, 0.05, 86400.0, 2.0),
        timeout=v.number(d, "timeout", path, errs, 0.01, 3600.0, 1.0),
        rise=_count(d, "rise", path, errs, 2), fall=_count(d, "fall", path, errs, 3),
        port=None if d.get("port") is None else v.integer(d, "port", path, errs, 1, 65535, 1),
        path=v.string(d, "path", path, errs, "/", max_len=MAX_PATH, pattern=_PATH,
                      what="a URL path: '/' then visible ASCII, no spaces"),
        host=_host(d, path, errs), expect_status=_statuses(d, path, errs),
        expect_body=_regex(d, "expect_body", path, errs),
        on_failure=v.choice(d, "on_failure", path, errs, ON_FAILURE, "quiesce"),
        **_https(d, path, errs), **_dns(d, kind, path, errs), **_udp(d, path, errs),
        grpc_service=v.string(d, "grpc_service", path, errs, "", pattern=_SERVICE,
                              what="a gRPC service name (visible ASCII, at most 200)"),
        command=_command(d, kind, path, errs), dynamic=v.boolean(d, "dynamic", path, errs, False))
    return spec if errs.count == n else None


def _count(d: Mapping[str, Any], key: str, path: str, errs: Errors, default: int) -> int:
    """rise/fall: an integer 1..MAX_COUNT (an integral float such as 2.0 is taken too)."""
    x = d.get(key, default)
    if isinstance(x, float) and x.is_integer() and 1 <= x <= MAX_COUNT:
        return int(x)
    return v.integer(d, key, path, errs, 1, MAX_COUNT, default)


def _host(d: Mapping[str, Any], path: str, errs: Errors) -> str | None:
    host = v.optional_string(d, "host", path, errs, max_len=260)
    if host is None:
        return None
    name, sep, port = host.rpartition(":")
    if sep and port.isascii() and port.isdigit() and 0 < int(port) < 65536 and v.hostname_ok(name):
        return host
    if v.hostname_ok(host):
        return host
    errs.add(v.join(path, "host"),
             f"must be a host name or address (optionally :port), got {v.excerpt(host)}")
    return None


def _statuses(d: Mapping[str, Any], path: str, errs: Errors) -> tuple[int, ...]:
    x = d.get("expect_status", [200])
    items = [x] if isinstance(x, int) and not isinstance(x, bool) else x
    if (not isinstance(items, list) or not 0 < len(items) <= MAX_STATUSES
            or not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s < 600 for s in items)):
        errs.add(v.join(path, "expect_status"),
                 f"must be an HTTP status 100..599 or a list of 1..{MAX_STATUSES} of them, "
                 f"got {v.excerpt(x)}")
        return (200,)
    return tuple(items)


def _regex(d: Mapping[str, Any], key: str, path: str, errs: Errors) -> str | None:
    where = v.join(path, key)
    x = v.optional_string(d, key, path, errs, max_len=MAX_REGEX)
    if x is None:
        return None
    for m in _REPEAT.finditer(x):
        if any(g and (len(g) > 6 or int(g) > MAX_REPEAT) for g in m.groups()):
            errs.add(where, f"repetition counts are limited to {MAX_REPEAT}, got {v.excerpt(m.group())}")
            return None
    try:
        re.compile(x)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        errs.add(where, f"bad regular expression: {str(exc)[:120]}")
        return None
    return x


def _https(d: Mapping[str, Any], path: str, errs: Errors) -> dict[str, Any]:
    digest = v.optional_string(d, "digest", path, errs, pattern=_MD5, what="an MD5 digest: 32 hex digits")
    sni = v.optional_string(d, "sni", path, errs, max_len=253, pattern=_DNS_NAME, what="a DNS name")
    return {"digest": digest.lower() if digest else None, "sni": sni,
            "verify": v.boolean(d, "verify", path, errs, False),
            "ca_file": v.optional_string(d, "ca_file", path, errs, pattern=_FILE, what="a file path")}


def _dns(d: Mapping[str, Any], kind: str, path: str, errs: Errors) -> dict[str, Any]:
    if kind == "dns" and "query" not in d:
        errs.add(v.join(path, "query"), "required for type dns")
    query = v.optional_string(d, "query", path, errs, max_len=254, pattern=_DNS_NAME, what="a DNS name") or ""
    answers: list[str] = []
    if d.get("expect_answer") is not None:
        where = v.join(path, "expect_answer")
        raw = d["expect_answer"]
        items = [raw] if isinstance(raw, str) else v.sequence(raw, where, errs, max_items=MAX_ANSWERS)
        for i, a in enumerate(items):
            if isinstance(a, str) and 0 < len(a) <= 255:
                answers.append(a)
            else:
                errs.add(v.item(where, i), f"must be a string of 1..255 characters, got {v.excerpt(a)}")
    return {"query": query, "qtype": v.choice(d, "qtype", path, errs, QTYPES, "A"),
            "expect_rcode": v.choice(d, "expect_rcode", path, errs, RCODES, "NOERROR"),
            "expect_answer": tuple(answers)}


def _udp(d: Mapping[str, Any], path: str, errs: Errors) -> dict[str, Any]:
    payload = b""
    if "payload" in d and "payload_hex" in d:
        errs.add(v.join(path, "payload_hex"), "give payload or payload_hex, not both")
    elif "payload_hex" in d:
        text = v.string(d, "payload_hex", path, errs, "", max_len=2 * MAX_PAYLOAD, pattern=_HEX,
                        what="hex digits, two per byte")
        payload = bytes.fromhex(text)
    elif "payload" in d:
        payload = v.string(d, "payload", path, errs, "", max_len=MAX_PAYLOAD).encode()
        if len(payload) > MAX_PAYLOAD:
            errs.add(v.join(path, "payload"), f"must be at most {MAX_PAYLOAD} bytes in UTF-8")
    return {"payload": payload, "expect": _regex(d, "expect", path, errs),
            "require_reply": v.boolean(d, "require_reply", path, errs, False)}


def _command(d: Mapping[str, Any], kind: str, path: str, errs: Errors) -> tuple[str, ...]:
    where = v.join(path, "command")
    if "command" in d:
        return parse_argv(d["command"], where, errs)
    if kind == "misc":
        errs.add(where, "required for type misc")
    return ()


def parse_argv(raw: Any, where: str, errs: Errors) -> tuple[str, ...]:
    """A command: a list of 1..64 argument strings, or one string split like a shell would (no shell
    runs it). Arguments cannot hold NUL and are at most 4096 characters."""
    if isinstance(raw, str):
        try:
            raw = shlex.split(raw)
        except ValueError as exc:
            errs.add(where, f"cannot split the command: {exc}")
            return ()
    argv = v.sequence(raw, where, errs, max_items=MAX_ARGV)
    if isinstance(raw, list) and not raw:
        errs.add(where, "must name a program")
    for i, a in enumerate(argv):
        if not isinstance(a, str) or not _FILE.fullmatch(a):
            errs.add(v.item(where, i), f"must be a non-empty string without NUL, got {v.excerpt(a)}")
            return ()
    return tuple(argv)


__all__ = ["KINDS", "ON_FAILURE", "QTYPES", "RCODES", "CheckResult", "ConfigError", "HealthSpec",
           "health_spec", "parse_argv"]
