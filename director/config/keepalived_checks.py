"""keepalived checkers (HTTP_GET, SSL_GET, TCP_CHECK, MISC_CHECK, DNS_CHECK, UDP_CHECK, PING_CHECK) to a
dest's ``health:`` mapping (``director.health.spec``), for ``director.config.keepalived``.

Theory of operation
-------------------
``translate(ctx, checker, defaults)`` reads one checker block. Common options map one to one:
``delay_loop`` -> ``interval``, ``connect_timeout`` -> ``timeout``, ``retry`` (``nb_get_retry``) ->
``fall``, ``connect_port`` -> ``port``; values the virtual or real server gave (``defaults``) apply
unless the checker overrides them. Per type: ``url { path digest status_code regex }`` (the first url
only), ``virtualhost`` -> ``host``, ``enable_sni`` -> ``sni``; ``misc_path`` split like a shell
into ``command``, ``misc_timeout``, ``misc_dynamic`` -> ``dynamic``; DNS ``type``/``name`` ->
``qtype``/``query``; UDP ``payload`` (hex) -> ``payload_hex``, ``require_reply``. Every option
without an equivalent is reported through ``ctx.skip`` with its line (``Untranslated``); a checker
type with no checker here (SMTP_CHECK, BFD_CHECK, FILE_CHECK) is reported whole and gives None.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CHECKERS = {"HTTP_GET": "http", "SSL_GET": "https", "TCP_CHECK": "tcp", "MISC_CHECK": "misc",
            "DNS_CHECK": "dns", "UDP_CHECK": "udp", "PING_CHECK": "ping", "SMTP_CHECK": None,
            "BFD_CHECK": None, "FILE_CHECK": None}
MAX_STATUSES = 64
HTTP_CODES = frozenset((*range(100, 104), *range(200, 209), 226, *range(300, 309), *range(400, 419),
                        *range(421, 427), 428, 429, 431, 451, *range(500, 509), 510, 511))
"""The registered HTTP status codes: what a status range stands for."""
ANY_2XX = sorted(c for c in HTTP_CODES if 200 <= c < 300)
"""keepalived's default when a url gives no status_code: any 2xx."""
INHERITED = {"delay_loop": "interval", "connect_timeout": "timeout", "retry": "fall", "nb_get_retry": "fall"}
"""Checker options a virtual or real server may give for its checkers (keepalived inherits them)."""
_COMMON = {**INHERITED, "connect_port": "port"}
_URL_KEYS = {"path": "path", "digest": "digest", "regex": "expect_body"}
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


@dataclass(frozen=True)
class Stmt:
    """One keepalived.conf statement: keyword, arguments, line, and its block (None: no braces)."""

    key: str
    args: tuple[str, ...]
    line: int
    block: tuple[Stmt, ...] | None = None


@dataclass(frozen=True)
class Untranslated:
    line: int
    where: str
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.where}: {self.why}"


@dataclass
class Ctx:
    """Where the walk is (for messages) and the list of what it could not translate."""

    untranslated: list[Untranslated] = field(default_factory=list)
    path: str = ""
    groups: dict[str, Stmt] = field(default_factory=dict)
    """The virtual_server_group blocks by name."""

    def skip(self, s: Stmt, why: str) -> None:
        text = " ".join((s.key, *s.args))
        where = f"{self.path} > {text}" if self.path else text
        self.untranslated.append(Untranslated(s.line, where[:160], why))


def _one(ctx: Ctx, s: Stmt) -> str | None:
    if len(s.args) != 1:
        ctx.skip(s, "needs one value")
        return None
    return s.args[0]


def _number(ctx: Ctx, s: Stmt, lo: int, hi: int) -> int | None:
    value = _one(ctx, s)
    if value is None:
        return None
    if not value.isdigit() or not lo <= int(value) <= hi:
        ctx.skip(s, f"needs an integer in {lo}..{hi}")
        return None
    return int(value)


def _statuses(ctx: Ctx, s: Stmt) -> list[int] | None:
    """`status_code 200`, `status_code 200 204`, `status_code 200-299` (a range: the registered codes
    in it, so `200-299` is keepalived's default, any 2xx)."""
    codes: list[int] = []
    for arg in s.args:
        lo, _, hi = arg.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            ctx.skip(s, f"not a status code or range: {arg}")
            return None
        if hi:
            codes.extend(c for c in range(int(lo), int(hi) + 1) if c in HTTP_CODES)
        else:
            codes.append(int(lo))
    if not codes or len(codes) > MAX_STATUSES:
        ctx.skip(s, f"needs 1..{MAX_STATUSES} status codes")
        return None
    return codes


def _url(ctx: Ctx, s: Stmt, out: dict[str, Any]) -> None:
    for c in s.block or ():
        if c.key == "status_code":
            if (codes := _statuses(ctx, c)) is not None:
                out["expect_status"] = codes
        elif c.key in _URL_KEYS:
            if (value := _one(ctx, c)) is not None:
                out[_URL_KEYS[c.key]] = value.lower() if c.key == "digest" else value
        else:
            ctx.skip(c, "no equivalent in the http check")


def _http(ctx: Ctx, c: Stmt, out: dict[str, Any], state: dict[str, Any]) -> bool:
    if c.key == "url":
        if state.get("url") is None:
            state["url"] = c.line
            _url(ctx, c, out)
        else:
            ctx.skip(c, f"one path per check: the first url (line {state['url']}) is kept")
    elif c.key == "virtualhost":
        if (value := _one(ctx, c)) is not None:
            out["host"] = value
    elif c.key == "enable_sni" and out["type"] == "https":
        state["sni"] = c
    else:
        return False
    return True


def _misc(ctx: Ctx, c: Stmt, out: dict[str, Any]) -> bool:
    if c.key == "misc_path":
        try:
            argv = [w for a in c.args for w in shlex.split(a)]
        except ValueError as exc:
            ctx.skip(c, f"cannot split the command: {exc}")
            return True
        if argv:
            out["command"] = argv
        else:
            ctx.skip(c, "needs a command")
    elif c.key == "misc_timeout":
        if (value := _number(ctx, c, 1, 3600)) is not None:
            out["timeout"] = value
    elif c.key == "misc_dynamic":
        out["dynamic"] = True
    else:
        return False
    return True


def _dns(ctx: Ctx, c: Stmt, out: dict[str, Any]) -> bool:
    if c.key not in ("type", "name"):
        return False
    if (value := _one(ctx, c)) is not None:
        out["qtype" if c.key == "type" else "query"] = value.upper() if c.key == "type" else value
    return True


def _udp(ctx: Ctx, c: Stmt, out: dict[str, Any]) -> bool:
    if c.key == "payload":
        value = "".join(c.args)
        if _HEX.fullmatch(value):
            out["payload_hex"] = value.lower()
        else:
            ctx.skip(c, "the payload must be hex digits")
    elif c.key == "require_reply":
        out["require_reply"] = True
        if c.args:
            ctx.skip(c, "an exact reply is not checked (give expect: a regular expression)")
    else:
        return False
    return True


def _specific(ctx: Ctx, c: Stmt, kind: str, out: dict[str, Any], state: dict[str, Any]) -> bool:
    """The option of one checker type, if `c` is one (True: handled or reported)."""
    if kind in ("http", "https"):
        return _http(ctx, c, out, state)
    handler = {"misc": _misc, "dns": _dns, "udp": _udp}.get(kind)
    return handler is not None and handler(ctx, c, out)


def translate(ctx: Ctx, s: Stmt, defaults: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``health:`` mapping of one checker block, or None when there is no such checker."""
    kind = CHECKERS.get(s.key)
    if kind is None:
        ctx.skip(s, "no such checker here (tcp, http, https, dns, udp, grpc, misc, ping)")
        return None
    where = ctx.path
    ctx.path = f"{where} > {s.key}" if where else s.key
    try:
        out = _translate(ctx, s, kind, defaults)
    finally:
        ctx.path = where
    return _complete(ctx, s, kind, out)


def _translate(ctx: Ctx, s: Stmt, kind: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    for key in ("interval", "timeout", "fall", "port"):
        if key in defaults:
            out[key] = defaults[key]
    if kind in ("http", "https") and "host" in defaults:
        out["host"] = defaults["host"]
    state: dict[str, Any] = {}
    for c in s.block or ():
        if c.key in _COMMON:
            value = _number(ctx, c, 1, 86400 if c.key != "connect_port" else 65535)
            if value is not None:
                out[_COMMON[c.key]] = value
        elif _specific(ctx, c, kind, out, state):
            continue
        elif c.key == "connect_ip":
            ctx.skip(c, "checks always go to the dest's own address")
        else:
            ctx.skip(c, "no equivalent")
    if kind in ("http", "https") and "expect_status" not in out:
        out["expect_status"] = list(ANY_2XX)
    if "sni" in state:
        if "host" in out:
            out["sni"] = str(out["host"]).rsplit(":", 1)[0]
        else:
            ctx.skip(state["sni"], "needs virtualhost (the name to send)")
    return out


def _complete(ctx: Ctx, s: Stmt, kind: str, out: dict[str, Any]) -> dict[str, Any] | None:
    """Refuse a checker that misses what it needs (reported at its own line)."""
    if kind == "misc" and "command" not in out:
        ctx.skip(s, "MISC_CHECK without misc_path: nothing to run")
        return None
    if kind == "dns" and "query" not in out:
        ctx.skip(s, "DNS_CHECK without name: keepalived asks for '.', give the name to query")
        return None
    if kind == "ping":
        out.pop("port", None)
    return out
