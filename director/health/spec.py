"""Health-check settings of one dest (`HealthSpec`, parsed from the dest's `health:` YAML) and results.

YAML (per dest, inside a service's `dests:` list)::

    health:
      type: http          # tcp | http
      interval: 2         # seconds between probes (0.05..86400)
      timeout: 1          # seconds per probe (0.01..3600)
      rise: 2             # good probes to come back up (1..1000)
      fall: 3             # bad probes to go down (1..1000)
      port: 8080          # default: the dest's port
      path: /healthz      # http only: visible ASCII, starting with '/'
      host: www.example   # http only: Host header, a DNS name or address[:port] (default: the dest address)
      expect_status: [200, 204]   # http only (default [200])
      expect_body: "ok"   # http only: regular expression searched in the body (optional, bounded)
      on_failure: quiesce # quiesce (weight 0) | remove

Validation goes through ``director.config.validate`` like every operator document: ``health_spec``
adds every problem to a collector (the service parser uses it, with paths such as
``services[0].dests[1].health.fall``); ``HealthSpec.from_dict`` raises one ``ConfigError`` listing them.
Values that end up in an HTTP request (path, host) cannot carry spaces or line breaks; the body
regex is refused before compiling when it is long or asks for huge repetition counts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from director.config import validate as v
from director.config.validate import ConfigError, Errors

KINDS = ("tcp", "http")
ON_FAILURE = ("quiesce", "remove")
FIELDS = ("type", "interval", "timeout", "rise", "fall", "port", "path", "host", "expect_status",
          "expect_body", "on_failure")
MAX_COUNT = 1000
MAX_STATUSES = 64
MAX_PATH = 2048
MAX_REGEX = 1024
MAX_REPEAT = 1000

_PATH = re.compile(r"/[\x21-\x7e]*")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str = ""


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

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "health") -> HealthSpec:
        """Validate a `health:` mapping; `ConfigError` (a ValueError) lists every problem by field."""
        errs = Errors()
        spec = health_spec(d, where, errs)
        errs.raise_if_any()
        assert spec is not None
        return spec

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "interval": self.interval, "timeout": self.timeout,
                               "rise": self.rise, "fall": self.fall, "on_failure": self.on_failure}
        if self.port is not None:
            out["port"] = self.port
        if self.kind == "http":
            out.update(path=self.path, expect_status=list(self.expect_status))
            if self.host:
                out["host"] = self.host
            if self.expect_body is not None:
                out["expect_body"] = self.expect_body
        return out


def health_spec(raw: Any, path: str, errs: Errors) -> HealthSpec | None:
    """Check a `health:` value, adding problems to `errs`; None if it had any."""
    n = errs.count
    d = v.mapping(raw, path, errs)
    v.keys(d, FIELDS, (), path, errs)
    spec = HealthSpec(
        kind=v.choice(d, "type", path, errs, KINDS, "tcp"),
        interval=v.number(d, "interval", path, errs, 0.05, 86400.0, 2.0),
        timeout=v.number(d, "timeout", path, errs, 0.01, 3600.0, 1.0),
        rise=_count(d, "rise", path, errs, 2), fall=_count(d, "fall", path, errs, 3),
        port=None if d.get("port") is None else v.integer(d, "port", path, errs, 1, 65535, 1),
        path=v.string(d, "path", path, errs, "/", max_len=MAX_PATH, pattern=_PATH,
                      what="a URL path: '/' then visible ASCII, no spaces"),
        host=_host(d, path, errs), expect_status=_statuses(d, path, errs), expect_body=_regex(d, path, errs),
        on_failure=v.choice(d, "on_failure", path, errs, ON_FAILURE, "quiesce"))
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


def _regex(d: Mapping[str, Any], path: str, errs: Errors) -> str | None:
    where = v.join(path, "expect_body")
    x = v.optional_string(d, "expect_body", path, errs, max_len=MAX_REGEX)
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


__all__ = ["KINDS", "ON_FAILURE", "CheckResult", "ConfigError", "HealthSpec", "health_spec"]
