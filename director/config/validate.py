"""One way to check every operator-written document: collected, field-named, bounded errors.

Theory of operation
-------------------
The service YAML (``director.config.services``), the node YAML (``director.config.node``) and the
health-check spec (``director.health.spec``) are all checked the same way: a validator walks the
loaded data along its schema with an ``Errors`` collector and the checkers below. A checker never
raises on bad input; it records one line ``"<field path>: <message>"`` and returns a usable
default, so one pass reports every problem. At the end ``Errors.raise_if_any`` raises one
``ConfigError`` (or a subclass) whose ``errors`` tuple holds the lines.

Errors are bounded so a hostile document cannot amplify itself into the error text: a value is
shown by ``excerpt`` (at most ``MAX_EXCERPT`` characters, containers by their kind, huge numbers by
their size, never a full ``repr``), user-chosen keys in a path are cut the same way, each line is
capped at ``MAX_LINE`` characters and at most ``MAX_ERRORS`` lines are kept (the rest are counted in
a last line). A whole error message therefore stays under ~13 KiB.

Checkers take the mapping, the key and the path of the mapping (``errs``, ``path``, ``key``) and
treat a missing key as its default. Numbers are finite and in range; ``bool`` is never an integer.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

MAX_EXCERPT = 60
"""Characters of a bad value shown in an error."""
MAX_ERRORS = 40
"""Error lines kept; more are counted in one last line."""
MAX_LINE = 300
"""Characters per error line."""
MAX_STRING = 4096
"""Default bound on any string field."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")


class ConfigError(ValueError):
    """Invalid config. ``errors`` holds one "field.path: message" line per problem."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


# -- bounded rendering ----------------------------------------------------------------------------

def excerpt(v: Any, limit: int = MAX_EXCERPT) -> str:
    """A short, single-line description of ``v`` for an error message (never more than ``limit``)."""
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, list | tuple):
        return "a list"
    if v is None or isinstance(v, bool | float):
        text = repr(v)
    elif isinstance(v, int):
        text = repr(v) if v.bit_length() <= 128 else f"an integer of {v.bit_length()} bits"
    elif isinstance(v, str):
        text = repr(v[: limit + 1])
        if len(v) > limit:
            text = text[: limit - 4] + "...'"
    else:
        text = f"a {type(v).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_part(key: Any) -> str:
    """A user-chosen mapping key as a bounded path component."""
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return key
    return excerpt(key, 40)


def join(path: str, key: Any) -> str:
    k = key_part(key)
    return f"{path}.{k}" if path else k


def item(path: str, i: int | str) -> str:
    return f"{path}[{i if isinstance(i, int) else key_part(i)}]"


# -- the collector --------------------------------------------------------------------------------

class Errors:
    """Problem lines of one document; ``count`` includes the ones not kept."""

    def __init__(self, max_lines: int = MAX_ERRORS) -> None:
        self.lines: list[str] = []
        self.count = 0
        self.max_lines = max_lines

    def add(self, path: str, msg: str) -> None:
        self.line(f"{path or '(top level)'}: {msg}")

    def line(self, text: str) -> None:
        self.count += 1
        if len(self.lines) < self.max_lines:
            text = " ".join(text.split("\n"))
            self.lines.append(text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "...")

    def extend(self, lines: Iterable[str]) -> None:
        for text in lines:
            self.line(text)

    def result(self) -> list[str]:
        more = self.count - len(self.lines)
        return self.lines + ([f"... and {more} more problems"] if more > 0 else [])

    def raise_if_any(self, cls: type[ConfigError] = ConfigError) -> None:
        if self.count:
            raise cls(self.result())


# -- checkers -------------------------------------------------------------------------------------

def mapping(v: Any, path: str, errs: Errors) -> dict[str, Any]:
    """``v`` as a dict with string keys ({} and a problem if it is not a mapping)."""
    if not isinstance(v, Mapping):
        errs.add(path, f"must be a mapping, got {excerpt(v)}")
        return {}
    out: dict[str, Any] = {}
    for k, x in v.items():
        if isinstance(k, str):
            out[k] = x
        else:
            errs.add(path, f"keys must be strings, got {excerpt(k)}")
    return out


def keys(d: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str], path: str,
         errs: Errors) -> None:
    allowed = set(allowed)
    for k in d:
        if k not in allowed:
            errs.add(join(path, k), f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for k in required:
        if k not in d:
            errs.add(join(path, k), "required")


def sequence(v: Any, path: str, errs: Errors, *, max_items: int | None = None) -> list[Any]:
    """``v`` as a list ([] and a problem if it is not one, or longer than ``max_items``)."""
    if not isinstance(v, list):
        errs.add(path, f"must be a list, got {excerpt(v)}")
        return []
    if max_items is not None and len(v) > max_items:
        errs.add(path, f"must have at most {max_items} items, got {len(v)}")
        return []
    return v


def integer(d: Mapping[str, Any], key: str, path: str, errs: Errors, lo: int, hi: int, default: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        errs.add(join(path, key), f"must be an integer in {lo}..{hi}, got {excerpt(v)}")
        return default
    return v


def number(d: Mapping[str, Any], key: str, path: str, errs: Errors, lo: float, hi: float,
           default: float) -> float:
    """A finite int or float in [lo, hi], as a float."""
    v = d.get(key, default)
    ok = not isinstance(v, bool) and isinstance(v, int | float)
    if ok and isinstance(v, int) and v.bit_length() > 64:
        ok = False
    if not ok or not math.isfinite(v) or not lo <= v <= hi:
        errs.add(join(path, key), f"must be a number in {lo:g}..{hi:g}, got {excerpt(v)}")
        return default
    return float(v)


def boolean(d: Mapping[str, Any], key: str, path: str, errs: Errors, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        errs.add(join(path, key), f"must be true or false, got {excerpt(v)}")
        return default
    return v


def choice(d: Mapping[str, Any], key: str, path: str, errs: Errors, options: Iterable[str],
           default: str) -> str:
    v = d.get(key, default)
    opts: Sequence[str] = tuple(options)
    if not isinstance(v, str) or v not in opts:
        errs.add(join(path, key), f"must be one of {', '.join(opts)}, got {excerpt(v)}")
        return default
    return v


def string(d: Mapping[str, Any], key: str, path: str, errs: Errors, default: str, *,
           max_len: int = MAX_STRING, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    """A string of at most ``max_len`` characters, fully matching ``pattern`` if given (``what`` says
    what the pattern means in the message)."""
    v = d.get(key, default)
    if not isinstance(v, str):
        errs.add(join(path, key), f"must be a string, got {excerpt(v)}")
        return default
    if len(v) > max_len:
        errs.add(join(path, key), f"must be at most {max_len} characters, got {len(v)}")
        return default
    if pattern is not None and not pattern.fullmatch(v):
        errs.add(join(path, key), f"must be {what or 'a valid value'}, got {excerpt(v)}")
        return default
    return v


def optional_string(d: Mapping[str, Any], key: str, path: str, errs: Errors, **kw: Any) -> str | None:
    if d.get(key) is None:
        return None
    return string(d, key, path, errs, "", **kw) or None


_NOT_A_VIP = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "this network"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved or broadcast"),
)


def address_class_problem(addr: ipaddress.IPv4Address, *, allow: Container[str] = ()) -> str | None:
    """Why ``addr`` cannot be a unicast VIP, or None; ``allow`` names classes that are fine here
    ("loopback", "link-local")."""
    return _first_class(addr, _NOT_A_VIP, allow)


def _first_class(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 classes: tuple[tuple[Any, str], ...], allow: Container[str]) -> str | None:
    """The reason of the first class in ``classes`` holding ``addr`` that ``allow`` does not name."""
    return next((why for net, why in classes if addr in net and why not in allow), None)


def ipv4(d: Mapping[str, Any], key: str, path: str, errs: Errors, *, unicast: bool = False,
         allow: Container[str] = ()) -> str:
    """An IPv4 address in dotted form ("0.0.0.0" and a problem if missing or bad). With ``unicast``,
    addresses that make no sense as a VIP (0/8, loopback, link-local, multicast, 240/4 and
    broadcast) are refused, except the classes named in ``allow``."""
    v = d.get(key)
    try:
        if not isinstance(v, str) or len(v) > 15:
            raise ValueError
        addr = ipaddress.IPv4Address(v)
    except ValueError:
        if key in d:
            errs.add(join(path, key), f"must be an IPv4 address, got {excerpt(v)}")
        return "0.0.0.0"
    why = address_class_problem(addr, allow=allow) if unicast else None
    if why is not None:
        errs.add(join(path, key), f"must be a unicast address a host can own, got {addr} ({why})")
        return "0.0.0.0"
    return str(addr)


_NOT_A_VIP6 = (
    (ipaddress.IPv6Network("::/96"), "unspecified, loopback or IPv4-compatible"),
    (ipaddress.IPv6Network("::ffff:0:0/96"), "IPv4-mapped: give the IPv4 address"),
    (ipaddress.IPv6Network("fe80::/10"), "link-local"),
    (ipaddress.IPv6Network("ff00::/8"), "multicast"),
)
"""``::/96`` also keeps every IPv6 address at or above 2**32, so an address int is IPv4 exactly when
it is below 2**32 (``director.table.entry.is_v6``): the conn table's keys of both families never meet."""


def address_class_problem6(addr: ipaddress.IPv6Address, *, allow: Container[str] = ()) -> str | None:
    """Why ``addr`` cannot be a unicast IPv6 VIP or dest, or None (``allow`` as for IPv4; "loopback"
    lets ``::1`` through, never the rest of ``::/96``)."""
    if addr == ipaddress.IPv6Address(1) and "loopback" in allow:
        return None
    return _first_class(addr, _NOT_A_VIP6, allow)


def ip_address(d: Mapping[str, Any], key: str, path: str, errs: Errors, *, unicast: bool = False,
               allow: Container[str] = ()) -> str:
    """An IPv4 (dotted) or IPv6 address, as its canonical text ("0.0.0.0" and a problem if missing or
    bad). With ``unicast`` the classes :func:`ipv4` refuses are refused, for IPv6 those of
    :func:`address_class_problem6` (``::/96``, v4-mapped, link-local, multicast)."""
    v = d.get(key)
    if not (isinstance(v, str) and ":" in v):
        return ipv4(d, key, path, errs, unicast=unicast, allow=allow)
    try:
        if len(v) > 45:
            raise ValueError
        addr = ipaddress.IPv6Address(v)
    except ValueError:
        errs.add(join(path, key), f"must be an IPv4 or IPv6 address, got {excerpt(v)}")
        return "0.0.0.0"
    why = address_class_problem6(addr, allow=allow) if unicast else None
    if why is not None:
        errs.add(join(path, key), f"must be a unicast address a host can own, got {addr} ({why})")
        return "0.0.0.0"
    return str(addr)


def split_hostport(text: str) -> tuple[str, str | None]:
    """``'addr'``, ``'addr:port'``, ``'[v6]'``, ``'[v6]:port'`` or a bare ``'v6'`` -> (address text,
    port text or None). Never raises; a malformed form leaves the brackets in, for the address
    check to refuse."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            return text, None
        if not rest:
            return host, None
        return (host, rest[1:]) if rest.startswith(":") else (text, None)
    if text.count(":") > 1:  # a bare IPv6 address: no port
        return text, None
    host, sep, port = text.rpartition(":")
    return (host, port) if sep else (text, None)


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                   r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")


def hostname_ok(host: str) -> bool:
    """A DNS name or an IPv4/IPv6 literal (IPv6 may be in brackets)."""
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        return True
    except ValueError:
        return bool(_HOST.fullmatch(host))


def hostport(d: Mapping[str, Any], key: str, path: str, errs: Errors, default: str | None = None, *,
             port_zero_ok: bool = False) -> str | None:
    """'host:port' (IPv6 as '[addr]:port'); returns the string as given, or ``default``."""
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, str) and len(v) <= 260:
        host, sep, port = v.rpartition(":")
        lo = 0 if port_zero_ok else 1
        if sep and port.isascii() and port.isdigit() and lo <= int(port) <= 65535 and hostname_ok(host):
            return v
    errs.add(join(path, key), f"must be 'host:port', got {excerpt(v)}")
    return default
