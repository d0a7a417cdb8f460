"""ipvsadm rules (`ipvsadm -S -n` / `ipvsadm -R`) to and from the service config.

Theory of operation
-------------------
``format_rules(cfg)`` writes a config the way ``ipvsadm -S -n`` writes the kernel's table: one
``-A`` line per service (``-t|-u VIP:PORT`` or ``-f MARK``, ``-s SCHED [-b FLAGS] [-p TIMEOUT [-M
NETMASK]] [-o]``), then one ``-a`` line per dest (``-r ADDR:PORT -g|-i|-m -w WEIGHT``, plus ``-x/-y``
thresholds when set, which ``ipvsadm -R`` accepts), and a leading ``--set TCP TCPFIN UDP`` when the
config carries timeouts. What the rules cannot say (health checks, ``expire_*``, a sorry server, a
group's selectors: on an IPVS box the iptables rules that set the mark) is listed in ``dropped``.

``parse_rules(text, running)`` reads such rules back, e.g. from an existing IPVS box, by replaying
the commands in order (``-A -E -D -C -a -e -d --set``) over plain service documents (the ``apply -f``
schema): it does no I/O and never raises on bad input. IPv6 is ipvsadm's: ``[ADDR]:PORT``, ``-M``
a prefix length, ``-6`` accepted (needed there for fwmark services only). Every line it cannot
translate (hostnames instead of numbers, ``--pe``, unknown options, a dest of an unknown service, a fwmark
service whose selectors the running config does not know) becomes a problem ``line N: ...``;
nothing is dropped silently. Defaults are ipvsadm's: scheduler wlc, persistence 300 s, forwarding
``-g`` (direct routing), weight 1, the dest port the service's (0 for a fwmark service). With
``running`` (the running config's service documents by key), a service the rules add keeps its
running name (so a restore updates it in place), a fwmark service its ``group``, and what ipvsadm
cannot say (``expire_*`` flags, each dest's health check); a new one is named ``tcp-198.18.0.10-80``.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from director.config.dump import service_dict
from director.config.model import MAX_THRESHOLD, MAX_WEIGHT, Config, ServiceConfig, default_name

FWD_FLAG = {"dr": "-g", "tun": "-i", "nat": "-m"}
_FLAG_FWD = {"-g": "dr", "--gatewaying": "dr", "-i": "tun", "--ipip": "tun", "-m": "nat",
             "--masquerading": "nat"}
_COMMANDS = {"-A": "add-service", "--add-service": "add-service", "-E": "edit-service",
             "--edit-service": "edit-service", "-D": "delete-service", "--delete-service": "delete-service",
             "-C": "clear", "--clear": "clear", "-a": "add-server", "--add-server": "add-server",
             "-e": "edit-server", "--edit-server": "edit-server", "-d": "delete-server",
             "--delete-server": "delete-server", "--set": "set"}
_WITH_VALUE = {"-t": "tcp", "--tcp-service": "tcp", "-u": "udp", "--udp-service": "udp",
               "-f": "fwmark", "--fwmark-service": "fwmark", "--sctp-service": "sctp",
               "-s": "scheduler", "--scheduler": "scheduler", "-M": "netmask", "--netmask": "netmask",
               "-r": "real", "--real-server": "real", "-R": "real", "-w": "weight", "--weight": "weight",
               "-x": "u_threshold", "--u-threshold": "u_threshold", "-y": "l_threshold",
               "--l-threshold": "l_threshold", "-b": "flags", "--sched-flags": "flags", "--pe": "pe",
               "--tun-type": "tun_type", "--tun-port": "tun_type", "--tun-nocsum": "tun_type"}
_V6_FLAGS = ("-6", "--ipv6")
"""ipvsadm's IPv6 flag: needed there for fwmark services only (an address says its family)."""
_OPS = ("-o", "--ops", "ops")
"""One-packet scheduling; old ipvsadm -S wrote a bare ``ops``."""
_KEPT = ("expire_nodest_conn", "expire_quiescent_template")
DEFAULT_PERSISTENCE = 300
DEFAULT_SCHEDULER = "wlc"

SvcKey = tuple[str, str, int]
"""(protocol, vip, port) as written in the rules."""


@dataclass
class Rules:
    """What ``parse_rules`` recovered: a config document and the lines it could not translate."""

    services: dict[SvcKey, dict[str, Any]] = field(default_factory=dict)
    timeouts: dict[str, int] | None = None
    clear: bool = False
    """A ``-C`` line: the rules replace the whole table (restore prunes)."""
    problems: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """The ``apply -f`` document (plain data) of the services and timeouts."""
        doc: dict[str, Any] = {}
        if self.timeouts is not None:
            doc["timeouts"] = dict(self.timeouts)
        doc["services"] = [_common_forward(svc) for svc in self.services.values()]
        return doc


def _common_forward(svc: Mapping[str, Any]) -> dict[str, Any]:
    """The service with its dests' most common forwarding method as its default (ipvsadm sets it
    per dest), and only the other dests naming theirs."""
    fwds = [d.get("forward", "dr") for d in svc["dests"]]
    common = max(sorted(set(fwds)), key=fwds.count) if fwds else "dr"
    dests = [{k: v for k, v in d.items() if k != "forward" or v != common} for d in svc["dests"]]
    return {**svc, "forward": common, "dests": dests}


# ---- config -> rules --------------------------------------------------------------------------


def _hp(addr: str, port: int) -> str:
    """ipvsadm's ADDR:PORT, an IPv6 address in brackets."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _svc_arg(svc: ServiceConfig) -> str:
    if svc.fwmark:
        return f"-f {svc.fwmark}" + (" -6" if svc.family == 6 else "")
    return f"{'-t' if svc.protocol == 'tcp' else '-u'} {_hp(svc.vip, svc.port)}"


def _key(svc: ServiceConfig) -> SvcKey:
    return ("fwm", "", svc.fwmark) if svc.fwmark else (svc.protocol, svc.vip, svc.port)


def _sched_flags(svc: ServiceConfig) -> str:
    opts = svc.sched_opts
    flags = [f"{svc.scheduler}-{name}" for name in ("fallback", "port") if opts.get(name)]
    return f" -b {','.join(flags)}" if flags else ""


def service_rule(svc: ServiceConfig) -> str:
    line = f"-A {_svc_arg(svc)} -s {svc.scheduler}{_sched_flags(svc)}"
    if svc.persistence is not None:
        line += f" -p {svc.persistence.timeout}"
        if ":" in svc.persistence.netmask:  # IPv6: ipvsadm writes a prefix length
            plen = bin(int(ipaddress.IPv6Address(svc.persistence.netmask))).count("1")
            line += f" -M {plen}" if plen != 128 else ""
        elif svc.persistence.netmask != "255.255.255.255":
            line += f" -M {svc.persistence.netmask}"
    if svc.ops:
        line += " -o"
    return line


def dest_rules(svc: ServiceConfig) -> Iterator[str]:
    for d in svc.dests:
        fwd = FWD_FLAG[d.forward or svc.forward]
        line = f"-a {_svc_arg(svc)} -r {_hp(d.address, d.port)} {fwd} -w {d.weight}"
        if d.u_threshold or d.l_threshold:
            line += f" -x {d.u_threshold} -y {d.l_threshold}"
        yield line


def dropped_fields(svc: ServiceConfig) -> Iterator[str]:
    """What of `svc` ipvsadm rules cannot carry."""
    opts = {k: v for k, v in svc.scheduler_options if k not in ("fallback", "port")}
    if opts:
        yield f"service {svc.name}: scheduler_options {opts}"
    for name in ("expire_nodest_conn", "expire_quiescent_template"):
        if getattr(svc, name):
            yield f"service {svc.name}: {name}"
    if svc.fwmark:
        yield (f"service {svc.name}: the group selectors of fwmark {svc.fwmark} (on an IPVS box, the "
               "iptables rules that set the mark)")
    if svc.sorry is not None:
        yield f"service {svc.name}: sorry_server {svc.sorry.ident}"
    for d in svc.dests:
        if d.healthcheck is not None:
            yield f"service {svc.name}: the health check of dest {d.ident}"


def running_documents(cfg: Config) -> dict[SvcKey, dict[str, Any]]:
    """The ``running`` argument of ``parse_rules`` from a config."""
    return {_key(s): service_dict(s) for s in cfg.services}


def format_rules(cfg: Config) -> tuple[str, list[str]]:
    """(``ipvsadm -S -n``-style rules, what they leave out)."""
    lines: list[str] = []
    if cfg.timeouts is not None:
        t = cfg.timeouts
        lines.append(f"--set {t.tcp} {t.tcpfin} {t.udp}")
    dropped: list[str] = []
    for svc in cfg.services:
        lines.append(service_rule(svc))
        lines.extend(dest_rules(svc))
        dropped.extend(dropped_fields(svc))
    return "".join(line + "\n" for line in lines), dropped


# ---- rules -> config --------------------------------------------------------------------------


class RuleError(Exception):
    """One line that cannot be translated (the message says why)."""


@dataclass
class _Line:
    command: str = ""
    values: dict[str, str] = field(default_factory=dict)
    persistent: str | None = None
    fwd: str | None = None
    ops: bool = False
    v6: bool = False
    args: list[str] = field(default_factory=list)


def _hostport(text: str, what: str) -> tuple[str, int | None]:
    """``A.B.C.D[:PORT]``, ``[IPV6][:PORT]`` (ipvsadm's IPv6 form) or a bare IPv6 address."""
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        sep, port = rest[:1], rest[1:]
        if not close or rest[:1] not in ("", ":"):
            raise RuleError(f"{what} {text!r}: write [IPV6]:PORT (ipvsadm -S -n)")
    elif text.count(":") > 1:
        host, sep, port = text, "", ""
    else:
        host, sep, port = text.partition(":")
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv6Address(host) if ":" in host else ipaddress.IPv4Address(host))
    except ValueError:
        raise RuleError(f"{what} {text!r}: write numeric addresses and ports (ipvsadm -S -n)") from None
    if not sep:
        return str(addr), None
    if not port.isdigit() or int(port) > 65535:
        raise RuleError(f"{what} {text!r}: the port must be a number 0..65535 (ipvsadm -S -n)")
    return str(addr), int(port)


def _tokens(words: list[str]) -> _Line:
    line = _Line()
    i = 0
    while i < len(words):
        word, _, inline = words[i].partition("=") if words[i].startswith("--") else (words[i], "", "")
        i += 1
        if word in _COMMANDS:
            if line.command:
                raise RuleError(f"two commands on one line ({line.command} and {word})")
            line.command = _COMMANDS[word]
            if line.command == "set":
                line.args, i = words[i:i + 3], i + 3
        elif word in ("-p", "--persistent"):
            nxt = inline or (words[i] if i < len(words) and words[i].isdigit() else "")
            i += 1 if nxt and not inline else 0
            line.persistent = nxt or str(DEFAULT_PERSISTENCE)
        elif word in _FLAG_FWD:
            line.fwd = _FLAG_FWD[word]
        elif word in _OPS:
            line.ops = True
        elif word in _V6_FLAGS:
            line.v6 = True
        elif word in _WITH_VALUE:
            if not inline and i >= len(words):
                raise RuleError(f"{word} needs a value")
            value = inline or words[i]
            i += 0 if inline else 1
            line.values[_WITH_VALUE[word]] = value
        elif word in ("-n", "--numeric"):
            continue
        else:
            raise RuleError(f"unknown option {word!r}")
    if not line.command:
        raise RuleError("no command (-A -E -D -C -a -e -d --set)")
    return line


def _service_key(line: _Line) -> SvcKey:
    if "sctp" in line.values:
        raise RuleError("sctp services are not supported")
    if "fwmark" in line.values:
        mark = line.values["fwmark"]
        if not mark.isdigit() or not 0 < int(mark) < 2**32:
            raise RuleError(f"-f needs a firewall mark 1..4294967295, got {mark!r}")
        return "fwm", "", int(mark)
    proto = next((p for p in ("tcp", "udp") if p in line.values), None)
    if proto is None:
        raise RuleError("no service: give -t VIP:PORT, -u VIP:PORT or -f MARK")
    vip, port = _hostport(line.values[proto], "service")
    if line.v6 and ":" not in vip:
        raise RuleError(f"-6 with the IPv4 service {vip}")
    return proto, vip, port if port is not None else 0


def _label(key: SvcKey) -> str:
    return f"fwm/{key[2]}" if key[0] == "fwm" else f"{key[0]}/{key[1]}:{key[2]}"


def _int(line: _Line, key: str, lo: int, hi: int) -> int | None:
    raw = line.values.get(key)
    if raw is None:
        return None
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise RuleError(f"{key} must be an integer in {lo}..{hi}, got {raw!r}")
    return int(raw)


def _service_fields(line: _Line, doc: dict[str, Any]) -> None:
    if "scheduler" in line.values:
        doc["scheduler"] = line.values["scheduler"]
    if "flags" in line.values:
        opts = {}
        for flag in line.values["flags"].split(","):
            _, _, name = flag.partition("-")
            if name not in ("fallback", "port"):
                raise RuleError(f"scheduler flag {flag!r} not supported (sh-/mh-fallback, sh-/mh-port)")
            opts[name] = True
        doc["scheduler_options"] = opts
    for key in ("pe", "tun_type"):
        if key in line.values:
            raise RuleError(f"--{key.replace('_', '-')} not supported")
    if line.ops:
        doc["ops"] = True
    if line.persistent is not None:
        if not line.persistent.isdigit() or int(line.persistent) < 1:
            raise RuleError(f"-p must be a number of seconds, got {line.persistent!r}")
        doc["persistence"] = {"timeout": int(line.persistent)}
        if "netmask" in line.values:
            doc["persistence"]["netmask"] = line.values["netmask"]
    elif "netmask" in line.values:
        raise RuleError("-M (netmask) only goes with -p (persistence)")


def _dest_fields(line: _Line) -> dict[str, Any]:
    dest: dict[str, Any] = {}
    if line.fwd is not None:
        dest["forward"] = line.fwd
    for key, hi in (("weight", MAX_WEIGHT), ("u_threshold", MAX_THRESHOLD), ("l_threshold", MAX_THRESHOLD)):
        value = _int(line, key, 0, hi)
        if value is not None:
            dest[key] = value
    return dest


class _Replay:
    def __init__(self, running: Mapping[SvcKey, Mapping[str, Any]]) -> None:
        self.rules = Rules()
        self.running = running

    def run(self, line: _Line) -> None:
        if line.command == "clear":
            self.rules.services.clear()
            self.rules.clear = True
        elif line.command == "set":
            self.set_timeouts(line.args)
        elif line.command.endswith("-service"):
            self.service(line, _service_key(line))
        else:
            self.server(line, _service_key(line))

    def set_timeouts(self, args: list[str]) -> None:
        if len(args) != 3 or not all(a.isdigit() for a in args):
            raise RuleError("--set takes three numbers: tcp tcpfin udp (0 keeps the current value)")
        given = {k: int(a) for k, a in zip(("tcp", "tcpfin", "udp"), args, strict=True) if int(a)}
        self.rules.timeouts = {**(self.rules.timeouts or {}), **given}

    def service(self, line: _Line, key: SvcKey) -> None:
        svcs = self.rules.services
        if line.command == "delete-service":
            if svcs.pop(key, None) is None:
                raise RuleError(f"no service {_label(key)} to delete")
            return
        if line.command == "add-service":
            if key in svcs:
                raise RuleError(f"service {_label(key)} added twice")
            doc = self.new_service(key)
        elif key not in svcs:
            raise RuleError(f"no service {_label(key)} to edit (add it with -A first)")
        else:
            doc = dict(svcs[key])
        _service_fields(line, doc)  # raises before anything is changed
        svcs[key] = doc

    def new_service(self, key: SvcKey) -> dict[str, Any]:
        """A service the rules add: the running one's name and what rules cannot say are kept."""
        old = self.running.get(key, {})
        if key[0] == "fwm":
            if "group" not in old:
                raise RuleError(f"fwmark {key[2]}: its selectors (on an IPVS box, the iptables rules that "
                                "set the mark) are not in the rules: add the service with its group: "
                                "(docs/CONFIG.md, Service groups), then restore again")
            where: dict[str, Any] = {"fwmark": key[2], "group": old["group"]}
        else:
            where = {"protocol": key[0], "vip": key[1], "port": key[2]}
        name = old.get("name") or default_name(*key, fwmark=key[2] if key[0] == "fwm" else 0)
        return {"name": name, **where, "scheduler": DEFAULT_SCHEDULER, "dests": [],
                **{k: old[k] for k in _KEPT if k in old}}

    def kept_check(self, key: SvcKey, addr: str, port: int) -> dict[str, Any]:
        for d in self.running.get(key, {}).get("dests") or []:
            if (d.get("address"), d.get("port")) == (addr, port) and d.get("healthcheck") is not None:
                return {"healthcheck": d["healthcheck"]}
        return {}

    def server(self, line: _Line, key: SvcKey) -> None:
        doc = self.rules.services.get(key)
        if doc is None:
            raise RuleError(f"no service {_label(key)} (add it with -A first)")
        if "real" not in line.values:
            raise RuleError("no real server: give -r ADDR[:PORT]")
        addr, dport = _hostport(line.values["real"], "real server")
        port = dport if dport is not None else (0 if key[0] == "fwm" else key[2])
        dests: list[dict[str, Any]] = doc["dests"]
        i = next((i for i, d in enumerate(dests) if (d["address"], d["port"]) == (addr, port)), None)
        if line.command == "delete-server":
            if i is None:
                raise RuleError(f"no real server {addr}:{port} to delete")
            del dests[i]
        elif line.command == "add-server":
            if i is not None:
                raise RuleError(f"real server {addr}:{port} added twice")
            dests.append({"address": addr, "port": port, "forward": "dr", **self.kept_check(key, addr, port),
                          **_dest_fields(line)})
        elif i is None:
            raise RuleError(f"no real server {addr}:{port} to edit (add it with -a first)")
        else:
            dests[i].update(_dest_fields(line))


def parse_rules(text: str, running: Mapping[SvcKey, Mapping[str, Any]] | None = None) -> Rules:
    """Replay ``ipvsadm -S -n`` rules (or any ``ipvsadm -R`` input) into service documents."""
    replay = _Replay(running or {})
    for n, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            replay.rules.problems.append(f"line {n}: {exc}")
            continue
        if words and words[0].rsplit("/", 1)[-1] == "ipvsadm":
            words = words[1:]
        if not words:
            continue
        try:
            replay.run(_tokens(words))
        except RuleError as exc:
            replay.rules.problems.append(f"line {n}: {exc}: {raw.strip()[:120]}")
    return replay.rules
