"""Health-check settings of one dest (`HealthSpec`, parsed from the dest's `health:` YAML) and results.

YAML (per dest, inside a service's `dests:` list)::

    health:
      type: http          # tcp | http
      interval: 2         # seconds between probes
      timeout: 1          # seconds per probe
      rise: 2             # good probes to come back up
      fall: 3             # bad probes to go down
      port: 8080          # default: the dest's port
      path: /healthz      # http only
      host: www.example   # http only: Host header (default: the dest address)
      expect_status: [200, 204]   # http only (default [200])
      expect_body: "ok"   # http only: regular expression searched in the body (optional)
      on_failure: quiesce # quiesce (weight 0) | remove
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("tcp", "http")
ON_FAILURE = ("quiesce", "remove")


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
        """Validate a `health:` mapping; ValueError names the field (e.g. `dests[0].health.fall`)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        unknown = set(d) - {"type", "interval", "timeout", "rise", "fall", "port", "path", "host",
                            "expect_status", "expect_body", "on_failure"}
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown field")
        kind = _choice(d, "type", KINDS, "tcp", where)
        spec = HealthSpec(
            kind=kind, interval=_num(d, "interval", 2.0, where, 0.05),
            timeout=_num(d, "timeout", 1.0, where, 0.01),
            rise=int(_num(d, "rise", 2, where, 1, integer=True)),
            fall=int(_num(d, "fall", 3, where, 1, integer=True)),
            port=_port(d, where), path=_str(d, "path", "/", where), host=d.get("host"),
            expect_status=_statuses(d, where), expect_body=_regex(d, where),
            on_failure=_choice(d, "on_failure", ON_FAILURE, "quiesce", where))
        if not spec.path.startswith("/"):
            raise ValueError(f"{where}.path: must start with '/', got {spec.path!r}")
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


def _num(d: Mapping[str, Any], key: str, default: float, where: str, minimum: float,
         integer: bool = False) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not float(v).is_integer()):
        raise ValueError(f"{where}.{key}: must be {'an integer' if integer else 'a number'}, got {v!r}")
    if v < minimum:
        raise ValueError(f"{where}.{key}: must be >= {minimum}, got {v!r}")
    return float(v)


def _choice(d: Mapping[str, Any], key: str, options: tuple[str, ...], default: str, where: str) -> str:
    v = d.get(key, default)
    if v not in options:
        raise ValueError(f"{where}.{key}: must be one of {', '.join(options)}, got {v!r}")
    return str(v)


def _str(d: Mapping[str, Any], key: str, default: str, where: str) -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"{where}.{key}: must be a string, got {v!r}")
    return v


def _port(d: Mapping[str, Any], where: str) -> int | None:
    v = d.get("port")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 65536:
        raise ValueError(f"{where}.port: must be 1..65535, got {v!r}")
    return v


def _statuses(d: Mapping[str, Any], where: str) -> tuple[int, ...]:
    v = d.get("expect_status", [200])
    items = [v] if isinstance(v, int) else v
    if not isinstance(items, list) or not items or not all(
            isinstance(x, int) and not isinstance(x, bool) and 100 <= x < 600 for x in items):
        raise ValueError(f"{where}.expect_status: must be an HTTP status or a list of them, got {v!r}")
    return tuple(items)


def _regex(d: Mapping[str, Any], where: str) -> str | None:
    v = d.get("expect_body")
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{where}.expect_body: must be a string (a regular expression), got {v!r}")
    try:
        re.compile(v)
    except re.error as exc:
        raise ValueError(f"{where}.expect_body: bad regular expression: {exc}") from None
    return v
