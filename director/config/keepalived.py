"""keepalived.conf to the service YAML (and a node-config fragment): `directorctl import-keepalived`.

Theory of operation
-------------------
Pure text in, plain data out; no I/O, never raises on bad input.

1. ``tokenize`` splits the text into tokens with their line numbers: ``{`` and ``}`` are tokens of
   their own, ``#`` and ``!`` start a comment (outside quotes), ``"..."`` is one token.
2. ``parse`` groups the tokens into statements (``Stmt``: keyword, arguments, line, and the block
   that follows it, whether its ``{`` is on the same line or the next). Unbalanced braces are
   reported with the line of the brace.
3. ``translate`` walks the tree: every ``virtual_server IP PORT`` becomes a service (``lb_algo``,
   ``lb_kind``, ``persistence_timeout``/``_granularity``, ``protocol``, ``sorry_server``...), every
   ``real_server`` a dest (``weight``, ``uthreshold``/``lthreshold``, ``inhibit_on_failure``), its
   checker a ``health:`` mapping (``director.config.keepalived_checks``); ``vrrp_instance`` notify
   scripts and priority go to the node-config fragment (``notify:``, ``priority``, ``preempt``).

Every statement the walk does not translate is listed (``Untranslated``: line, where, why): unknown
keywords, ``include`` (not followed), fwmark and group virtual servers, a second checker on one real
server, checker options with no equivalent. Nothing is dropped silently; the caller validates the
result with the real config parser.
"""

from __future__ import annotations

import copy
import ipaddress
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from director.config import keepalived_checks as checks
from director.config.keepalived_checks import Ctx, Stmt, Untranslated
from director.config.model import FORWARDS, MAX_SECONDS, MAX_THRESHOLD, MAX_WEIGHT, default_name
from director.services.sched import registry

LB_KINDS = {name.upper(): name for name in FORWARDS}
"""keepalived's ``lb_kind`` (NAT, DR, TUN) -> the config's forwarding name."""
SCHED_FLAGS = {"sh-port": "port", "sh-fallback": "fallback", "mh-port": "port", "mh-fallback": "fallback"}


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    quoted: bool = False


def tokenize(text: str) -> Iterator[Token]:
    for n, raw in enumerate(text.splitlines(), 1):
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch in "#!":
                break
            if ch.isspace():
                i += 1
            elif ch in "{}":
                yield Token(ch, n)
                i += 1
            elif ch == '"':
                end = raw.find('"', i + 1)
                end = len(raw) if end < 0 else end
                yield Token(raw[i + 1:end], n, quoted=True)
                i = end + 1
            else:
                j = i
                while j < len(raw) and not raw[j].isspace() and raw[j] not in '{}"#!':
                    j += 1
                yield Token(raw[i:j], n)
                i = j


@dataclass
class _Open:
    key: str
    args: list[str]
    line: int
    block: list[_Open] | None = None


def parse(text: str, problems: list[Untranslated] | None = None) -> tuple[Stmt, ...]:
    """Statements of a keepalived.conf; brace problems go to `problems` with their line."""
    probs = problems if problems is not None else []
    root: list[_Open] = []
    stack: list[tuple[_Open | None, list[_Open]]] = [(None, root)]
    cur: _Open | None = None
    for tok in tokenize(text):
        if cur is not None and tok.line != cur.line and not (tok.text == "{" and not tok.quoted):
            stack[-1][1].append(cur)
            cur = None
        if tok.text == "{" and not tok.quoted:
            target = cur if cur is not None else (stack[-1][1][-1] if stack[-1][1] else None)
            if cur is not None:
                stack[-1][1].append(cur)
                cur = None
            if target is None or target.block is not None:
                probs.append(Untranslated(tok.line, "{", "a block without a keyword before it"))
                target = _Open("{", [], tok.line)
            target.block = []
            stack.append((target, target.block))
        elif tok.text == "}" and not tok.quoted:
            if cur is not None:
                stack[-1][1].append(cur)
                cur = None
            if len(stack) == 1:
                probs.append(Untranslated(tok.line, "}", "closes no block"))
            else:
                stack.pop()
        elif cur is None:
            cur = _Open(tok.text, [], tok.line)
        else:
            cur.args.append(tok.text)
    if cur is not None:
        stack[-1][1].append(cur)
    for opened, _ in stack[1:]:
        assert opened is not None
        probs.append(Untranslated(opened.line, opened.key, "its block is never closed"))
    return tuple(_freeze(o) for o in root)


def _freeze(o: _Open) -> Stmt:
    block = None if o.block is None else tuple(_freeze(x) for x in o.block)
    return Stmt(o.key, tuple(o.args), o.line, block)


# ---- the result -------------------------------------------------------------------------------


@dataclass
class Imported:
    services: list[dict[str, Any]] = field(default_factory=list)
    notify: dict[str, Any] = field(default_factory=dict)
    node: dict[str, Any] = field(default_factory=dict)
    """Other node-config fields (priority, preempt)."""
    notes: list[str] = field(default_factory=list)
    """Node-level facts worth a comment in the fragment (VRRP interface, router id, VIPs)."""
    untranslated: list[Untranslated] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    """fwmark virtual servers, translated but without the ``group:`` selectors they need."""

    def document(self) -> dict[str, Any]:
        return {"services": self.services}

    def node_fragment(self) -> dict[str, Any]:
        out = dict(self.node)
        if self.notify:
            out["notify"] = dict(self.notify)
        return out


# ---- virtual_server / real_server -------------------------------------------------------------


def _int(ctx: Ctx, s: Stmt, lo: int, hi: int) -> int | None:
    if len(s.args) != 1 or not s.args[0].isdigit() or not lo <= int(s.args[0]) <= hi:
        ctx.skip(s, f"needs one integer in {lo}..{hi}")
        return None
    return int(s.args[0])


def _vs_defaults(ctx: Ctx, s: Stmt, defaults: dict[str, Any]) -> bool:
    """Checker defaults given on the virtual or real server (keepalived inherits them)."""
    key = {**checks.INHERITED, "virtualhost": "host"}.get(s.key)
    if key is None:
        return False
    if key == "host":
        if len(s.args) == 1:
            defaults["host"] = s.args[0]
        else:
            ctx.skip(s, "needs one host name")
        return True
    value = _int(ctx, s, 1, 86400)
    if value is not None:
        defaults[key] = value
    return True


def _addr_problem(addr: str, port: str = "0") -> str | None:
    """Why an address and port cannot be a service's or dest's (None: they can)."""
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return f"not an IP address: {addr} (names are not resolved)"
    if not port.isdigit() or int(port) > 65535:
        return f"not a port: {port}"
    return None


def _real_server(ctx: Ctx, s: Stmt, svc: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    where = ctx.path
    if len(s.args) not in (1, 2):
        ctx.skip(s, "needs IP [PORT]")
        return
    if (why := _addr_problem(*s.args)) is not None:
        ctx.skip(s, why)
        return
    dest: dict[str, Any] = {"address": s.args[0]}
    if len(s.args) == 2:
        dest["port"] = int(s.args[1])  # _addr_problem checked it
    own = dict(defaults)
    on_failure = "remove"
    inhibit: Stmt | None = None
    checker: Stmt | None = None
    for c in s.block or ():
        if c.key == "weight":
            dest["weight"] = _int(ctx, c, 0, MAX_WEIGHT)
        elif c.key in ("uthreshold", "lthreshold"):
            value = _int(ctx, c, 0, MAX_THRESHOLD)
            if value is not None:
                dest[f"{c.key[0]}_threshold"] = value
        elif c.key == "inhibit_on_failure":
            on_failure, inhibit = "quiesce", c
        elif c.key in ("lvs_method", "lb_kind") and len(c.args) == 1 and c.args[0] in LB_KINDS:
            dest["forward"] = LB_KINDS[c.args[0]]
        elif c.key in ("notify_up", "notify_down"):
            ctx.skip(c, f"per-real-server hooks cannot be expressed; the node's notify.dest_"
                     f"{c.key[7:]} runs for every dest (the dest in its environment)")
        elif c.key in checks.CHECKERS:
            if checker is None:
                checker = c
            else:
                ctx.skip(c, f"a second checker on one real server (the first, {checker.key} at line "
                         f"{checker.line}, is kept)")
        elif not _vs_defaults(ctx, c, own):
            ctx.skip(c, "no equivalent")
    dest = {k: v for k, v in dest.items() if v is not None}
    if checker is not None:
        health = checks.translate(ctx, checker, own)
        if health is not None:
            health["on_failure"] = on_failure
            dest["healthcheck"] = health
    elif inhibit is not None:
        ctx.skip(inhibit, "no checker on this real server, so nothing to act on")
    svc["dests"].append(dest)
    ctx.path = where


def _service_option(ctx: Ctx, c: Stmt, svc: dict[str, Any], defaults: dict[str, Any]) -> None:
    arg = c.args[0] if len(c.args) == 1 else None
    if c.key in ("lb_algo", "lvs_sched") and arg in registry.NAMES:
        svc["scheduler"] = arg
    elif c.key in ("lb_kind", "lvs_method") and arg in LB_KINDS:
        svc["forward"] = LB_KINDS[arg]
    elif c.key == "protocol" and arg in ("TCP", "UDP"):
        svc["protocol"] = arg.lower()
    elif c.key == "persistence_timeout":
        timeout = _int(ctx, c, 1, MAX_SECONDS)
        if timeout is not None:
            svc.setdefault("persistence", {})["timeout"] = timeout
    elif c.key == "persistence_granularity" and arg is not None:
        svc.setdefault("persistence", {})["netmask"] = arg
    elif c.key in SCHED_FLAGS:
        svc.setdefault("scheduler_options", {})[SCHED_FLAGS[c.key]] = True
    elif c.key in ("ops", "one_packet_scheduling") and not c.args:
        svc["ops"] = True
    elif c.key == "sorry_server" and len(c.args) == 2:
        svc["sorry_server"] = f"{c.args[0]}:{c.args[1]}"
    elif c.key in ("sorry_server_lvs_method", "sorry_server_lb_kind") and arg in LB_KINDS:
        svc["sorry_forwarding"] = LB_KINDS[arg]
    elif c.key == "inhibit_on_failure":
        defaults["inhibit_on_failure"] = True
    elif not _vs_defaults(ctx, c, defaults):
        known = c.key in ("lb_algo", "lvs_sched", "lb_kind", "lvs_method", "protocol")
        ctx.skip(c, f"value not supported: {' '.join(c.args)}" if known else "no equivalent")


def _service_body(ctx: Ctx, s: Stmt, svc: dict[str, Any], label: str) -> None:
    """The options and real servers of one virtual_server block, into `svc`."""
    defaults: dict[str, Any] = {}
    body = s.block or ()
    for c in body:
        if c.key != "real_server":
            _service_option(ctx, c, svc, defaults)
    for c in body:
        if c.key == "real_server":
            ctx.path = f"{label} > real_server {' '.join(c.args)}"
            rs_defaults = {k: v for k, v in defaults.items() if k != "inhibit_on_failure"}
            _real_server(ctx, _with_inhibit(c, defaults), svc, rs_defaults)


def _virtual_server(ctx: Ctx, s: Stmt, out: Imported) -> None:
    ctx.path = ""
    kind = s.args[0] if len(s.args) == 2 else ""
    if kind == "fwmark":
        _fwmark_server(ctx, s, out)
        return
    if kind == "group":
        _group_server(ctx, s, out)
        return
    if len(s.args) != 2:
        ctx.skip(s, "needs IP PORT, fwmark MARK or group NAME")
        return
    vip, port = s.args
    if (why := _addr_problem(vip, port)) is not None:
        ctx.skip(s, why)
        return
    label = ctx.path = f"virtual_server {vip} {port}"
    svc: dict[str, Any] = {"name": "", "protocol": "tcp", "vip": vip, "port": int(port), "dests": []}
    _service_body(ctx, s, svc, label)
    svc["name"] = default_name(svc["protocol"], vip, int(port))
    out.services.append(svc)


def _fwmark_server(ctx: Ctx, s: Stmt, out: Imported) -> None:
    """A fwmark virtual server: translated, but its selectors (the iptables rules) are not in the file."""
    mark = s.args[1]
    if not mark.isdigit() or not 0 < int(mark) < 2**32:
        ctx.skip(s, f"not a firewall mark: {mark}")
        return
    label = ctx.path = f"virtual_server fwmark {mark}"
    svc: dict[str, Any] = {"name": f"fwm-{mark}", "fwmark": int(mark), "group": [], "dests": []}
    _service_body(ctx, s, svc, label)
    protocol = svc.pop("protocol", None)
    ctx.path = ""
    ctx.skip(s, "the packets it takes are chosen by iptables rules that set the mark, not in keepalived."
             "conf: its translation is printed commented out; add its group: selectors"
             + (f" ({protocol} ones)" if protocol else "") + " (docs/CONFIG.md, Service groups)")
    out.pending.append(svc)


def _group_members(ctx: Ctx, name: str) -> list[tuple[str, int]]:
    """(vip, port) of each usable entry of virtual_server_group `name` (IP PORT, or IP-LAST PORT)."""
    members: list[tuple[str, int]] = []
    for e in ctx.groups[name].block or ():
        if e.key == "fwmark" or len(e.args) != 1:
            ctx.path = f"virtual_server_group {name}"
            ctx.skip(e, "a fwmark in a group is not supported" if e.key == "fwmark" else "needs IP PORT")
            continue
        first, dash, last = e.key.partition("-")
        if (why := _addr_problem(first, e.args[0])) is not None or (dash and not last.isdigit()):
            ctx.path = f"virtual_server_group {name}"
            ctx.skip(e, why or f"not an address range: {e.key}")
            continue
        if dash and ":" in first:
            ctx.path = f"virtual_server_group {name}"
            ctx.skip(e, f"IPv6 address ranges are not supported (list the addresses): {e.key}")
            continue
        base = ipaddress.ip_address(first)
        count = int(last) - int(first.rsplit(".", 1)[1]) + 1 if dash else 1
        members.extend((str(base + i), int(e.args[0])) for i in range(max(count, 0)))
    return members


def _group_server(ctx: Ctx, s: Stmt, out: Imported) -> None:
    """`virtual_server group NAME`: keepalived makes one IPVS service per group entry, all alike."""
    name = s.args[1]
    if name not in ctx.groups:
        ctx.skip(s, f"no virtual_server_group {name}")
        return
    members = _group_members(ctx, name)
    label = ctx.path = f"virtual_server group {name}"
    template: dict[str, Any] = {"name": "", "protocol": "tcp", "vip": "", "port": 0, "dests": []}
    _service_body(ctx, s, template, label)
    for vip, port in members:
        svc = copy.deepcopy(template)
        svc.update(name=default_name(template["protocol"], vip, port), vip=vip, port=port)
        out.services.append(svc)


def _with_inhibit(rs: Stmt, defaults: Mapping[str, Any]) -> Stmt:
    """A virtual server's inhibit_on_failure applies to each of its real servers."""
    if not defaults.get("inhibit_on_failure") or rs.block is None:
        return rs
    return Stmt(rs.key, rs.args, rs.line, (*rs.block, Stmt("inhibit_on_failure", (), rs.line)))


# ---- vrrp_instance and the rest ---------------------------------------------------------------

_NOTIFY = {"notify_master": "master", "notify_backup": "backup", "notify_fault": "fault"}


def _argv(ctx: Ctx, s: Stmt) -> list[str] | None:
    try:
        argv = [w for a in s.args for w in shlex.split(a)]
    except ValueError as exc:
        ctx.skip(s, f"cannot split the command: {exc}")
        return None
    if not argv:
        ctx.skip(s, "needs a command")
        return None
    return argv


def _vrrp_instance(ctx: Ctx, s: Stmt, out: Imported) -> None:
    ctx.path = f"vrrp_instance {' '.join(s.args)}"
    stop: Stmt | None = None
    for c in s.block or ():
        if c.key == "notify_stop":
            stop = c
            continue
        if c.key in _NOTIFY:
            argv = _argv(ctx, c)
            if argv is None:
                continue
            role = _NOTIFY[c.key]
            if out.notify.get(role) not in (None, argv):
                ctx.skip(c, f"another vrrp_instance already set notify.{role} (one node, one hook per role)")
            else:
                out.notify[role] = argv
        elif c.key == "priority":
            value = _int(ctx, c, 0, 255)
            if value is not None:
                out.node["priority"] = value
        elif c.key == "nopreempt":
            out.node["preempt"] = False
        elif c.key in ("interface", "virtual_router_id", "state", "virtual_ipaddress", "advert_int"):
            out.notes.append(f"line {c.line}: {ctx.path}: {c.key} {' '.join(c.args)}".rstrip()
                             + " (directors elect their master through etcd; VIPs come from the services)")
            ctx.skip(c, "VRRP is replaced by the etcd election: see the notes in the node fragment")
        else:
            ctx.skip(c, "no equivalent")
    if stop is not None:
        _notify_stop(ctx, stop, out)


def _notify_stop(ctx: Ctx, stop: Stmt, out: Imported) -> None:
    """notify.fault also runs at shutdown (role stopped): it takes notify_stop when no notify_fault."""
    argv = _argv(ctx, stop)
    if argv is None:
        return
    if out.notify.get("fault") not in (None, argv):
        ctx.skip(stop, "notify.fault (notify_fault) also runs at shutdown; one command per hook")
    else:
        out.notify["fault"] = argv
        out.notes.append(f"line {stop.line}: notify_stop became notify.fault (it also runs at shutdown)")


def _global_defs(ctx: Ctx, s: Stmt, out: Imported) -> None:
    ctx.path = "global_defs"
    for c in s.block or ():
        if c.key == "router_id":
            out.notes.append(f"line {c.line}: router_id {' '.join(c.args)} (the node YAML's node_id)")
        ctx.skip(c, "no equivalent" if c.key != "router_id" else "set node_id in each node's YAML")


_TOP: dict[str, Callable[[Ctx, Stmt, Imported], None]] = {
    "virtual_server": _virtual_server, "vrrp_instance": _vrrp_instance, "global_defs": _global_defs,
    "virtual_server_group": lambda ctx, s, out: None,  # read where a virtual_server uses it
}
_TOP_WHY = {
    "include": "not followed: import the included files too",
    "vrrp_sync_group": "VRRP is replaced by the etcd election",
    "vrrp_script": "no tracked scripts: a node that cannot serve stops (or fails its health)",
    "SSL": "client certificates are not supported; a CA goes in each https check's ca_file",
}


def translate(text: str) -> Imported:
    """Everything of a keepalived.conf the service YAML and the node's notify hooks can say."""
    out = Imported()
    tree = parse(text, out.untranslated)
    ctx = Ctx(out.untranslated, groups={s.args[0]: s for s in tree
                                        if s.key == "virtual_server_group" and len(s.args) == 1})
    for s in tree:
        ctx.path = ""
        handler = _TOP.get(s.key)
        if handler is not None:
            handler(ctx, s, out)
        else:
            ctx.skip(s, _TOP_WHY.get(s.key, "unknown keyword"))
    out.untranslated.sort(key=lambda u: u.line)
    return out


def summary(items: Sequence[Untranslated]) -> list[dict[str, Any]]:
    """The `--report` JSON: one object per untranslated statement."""
    return [{"line": u.line, "where": u.where, "why": u.why} for u in items]
