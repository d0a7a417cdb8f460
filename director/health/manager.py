"""The health-check state machine (pure: clock in, transitions out) and its asyncio runner.

Theory of operation
-------------------
`HealthManager` keeps one `DestHealth` per checked dest, keyed by `DestKey`. `configure(targets,
now)` installs the set of dests to check (keeping the state of those whose spec did not change).
`due(now)` returns the probes whose time has come and schedules each one's next probe `interval`
seconds after this one started (a probe in flight is never started twice). `report(key, ok, now)`
folds a result into the rise/fall counters and returns a `Transition` exactly when the verdict
flips: up -> down after `fall` consecutive failures, down -> up after `rise` consecutive
successes. A dest with no verdict yet (not seeded) is treated as up but also announces its first
verdict: `rise` successes give an "up" Transition, `fall` failures a "down" one.
`next_deadline()` says when `due` next has work. Nothing here reads a clock or does I/O.

`HealthRunner` drives a manager on asyncio: it sleeps until the next deadline (or a `wake()`),
runs due probes concurrently through a checker coroutine, reports results and awaits
`on_transition` for each flip (the master writes the verdict to etcd there).

`apply_verdict` is what every node does with a verdict (see the package docstring): quiesce or
remove the dest in the `ServiceTable`, and pass its templates through `ConnTable.check_template`.
`verdict_key` / `encode_verdict` / `decode_verdict` are the etcd layout of a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from director.health.dns import check_dns
from director.health.grpc_check import check_grpc
from director.health.http import check_http
from director.health.https import check_https
from director.health.misc import check_misc
from director.health.ping import check_ping
from director.health.spec import CheckResult, HealthSpec
from director.health.tcp import check_tcp
from director.health.udp import check_udp
from director.services.service import Dest, DestKey, ServiceTable, VirtualService
from director.types import Clock, ConnFlags, DestFlags, Proto

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """One check to run now: dest key, target address text and port, the spec."""

    key: DestKey
    host: str
    port: int
    spec: HealthSpec


@dataclass(frozen=True)
class Transition:
    key: DestKey
    up: bool
    at: float
    detail: str
    weight: int | None = None
    """misc `dynamic`: the weight the check asked for (None: the configured one)."""


@dataclass
class HealthStats:
    """Totals over the node's life (kept across masterships): probes run, failed, killed at timeout."""

    probes: int = 0
    failures: int = 0
    killed: int = 0


class DestHealth:
    __slots__ = ("key", "host", "port", "spec", "up", "known", "ok_streak", "fail_streak", "next_due",
                 "in_flight", "last_detail", "checks", "failures", "weight")

    def __init__(self, key: DestKey, host: str, port: int, spec: HealthSpec, now: float, up: bool,
                 known: bool = False) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.spec = spec
        self.up = up
        self.known = known  # a verdict exists (seeded or announced); until then `up` is the default
        self.ok_streak = 0
        self.fail_streak = 0
        self.next_due = now
        self.in_flight = False
        self.last_detail = ""
        self.checks = 0
        self.failures = 0
        self.weight: int | None = None


class HealthManager:
    def __init__(self, stats: HealthStats | None = None) -> None:
        self._dests: dict[DestKey, DestHealth] = {}
        self._seeds: dict[DestKey, bool] = {}
        self._weights: dict[DestKey, int | None] = {}
        self.stats = stats if stats is not None else HealthStats()

    def __len__(self) -> int:
        return len(self._dests)

    def get(self, key: DestKey) -> DestHealth | None:
        return self._dests.get(key)

    def seed(self, verdicts: Mapping[DestKey, bool],
             weights: Mapping[DestKey, int | None] | None = None) -> None:
        """Start from published verdicts (a new master takes over the old master's view)."""
        self._seeds.update(verdicts)
        self._weights.update(weights or {})
        for key, up in verdicts.items():
            h = self._dests.get(key)
            if h is not None:
                h.up, h.known, h.ok_streak, h.fail_streak = up, True, 0, 0
                h.weight = self._weights.get(key)

    def configure(self, targets: Mapping[DestKey, tuple[str, int, HealthSpec]], now: float) -> None:
        """Check exactly these dests: key -> (host, port, spec). Unchanged ones keep their state.

        The first probes of the dests added together are spread over their interval (the i-th of n
        at now + interval * i / n), so a new config or a new master does not fire every probe in
        the same loop turn; a single new dest is probed at once."""
        for key in [k for k in self._dests if k not in targets]:
            del self._dests[key]
        fresh = []
        for key, (host, port, spec) in targets.items():
            old = self._dests.get(key)
            if old is not None and (old.host, old.port, old.spec) == (host, port, spec):
                continue
            if old is not None:
                up, known = old.up, old.known
            else:
                up, known = self._seeds.get(key, True), key in self._seeds
            self._dests[key] = DestHealth(key, host, port, spec, now, up, known)
            self._dests[key].weight = old.weight if old is not None else self._weights.get(key)
            fresh.append(key)
        for i, key in enumerate(sorted(fresh)):
            h = self._dests[key]
            h.next_due = now + h.spec.interval * i / len(fresh)

    def due(self, now: float) -> list[Probe]:
        out = []
        for h in self._dests.values():
            if h.in_flight or h.next_due > now:
                continue
            h.in_flight = True
            h.next_due = now + h.spec.interval
            out.append(Probe(h.key, h.host, h.port, h.spec))
        return out

    def report(self, key: DestKey, result: CheckResult, now: float) -> Transition | None:
        h = self._dests.get(key)
        if h is None:  # unconfigured while the probe ran
            return None
        h.in_flight = False
        h.checks += 1
        h.last_detail = result.detail
        self.stats.probes += 1
        self.stats.killed += result.killed
        if result.ok:
            h.ok_streak, h.fail_streak = h.ok_streak + 1, 0
            if (not h.up or not h.known) and h.ok_streak >= h.spec.rise:
                h.up = h.known = True
                h.weight = result.weight
                return Transition(key, True, now, result.detail, result.weight)
            if h.up and h.known and result.weight != h.weight:  # misc dynamic: a new weight, at once
                h.weight = result.weight
                return Transition(key, True, now, result.detail, result.weight)
        else:
            h.failures += 1
            self.stats.failures += 1
            h.ok_streak, h.fail_streak = 0, h.fail_streak + 1
            if (h.up or not h.known) and h.fail_streak >= h.spec.fall:
                h.up, h.known = False, True
                return Transition(key, False, now, result.detail)
        return None

    def next_deadline(self) -> float | None:
        times = [h.next_due for h in self._dests.values() if not h.in_flight]
        return min(times) if times else None

    def verdicts(self) -> dict[DestKey, bool]:
        return {k: h.up for k, h in self._dests.items()}


Checker = Callable[[Probe], Awaitable[CheckResult]]


async def run_probe(probe: Probe) -> CheckResult:
    """The default checker: dispatch on the spec's kind."""
    spec, host, port, timeout = probe.spec, probe.host, probe.port, probe.spec.timeout
    if spec.kind == "http":
        return await check_http(host, port, timeout, path=spec.path, vhost=spec.host,
                                expect_status=spec.expect_status, expect_body=spec.expect_body,
                                digest=spec.digest)
    if spec.kind == "https":
        return await check_https(host, port, timeout, path=spec.path, vhost=spec.host,
                                 expect_status=spec.expect_status, expect_body=spec.expect_body,
                                 digest=spec.digest, server_name=spec.server_name, verify=spec.verify,
                                 ca_file=spec.ca_file)
    if spec.kind == "dns":
        return await check_dns(host, port, timeout, query=spec.query, qtype=spec.qtype,
                               expect_rcode=spec.expect_rcode, expect_answer=spec.expect_answer)
    if spec.kind == "udp":
        return await check_udp(host, port, timeout, payload=spec.payload, expect=spec.expect,
                               require_reply=spec.require_reply)
    if spec.kind == "grpc":
        return await check_grpc(host, port, timeout, service=spec.grpc_service)
    if spec.kind == "misc":
        return await check_misc(spec.command, timeout, env=probe_env(probe), dynamic=spec.dynamic)
    if spec.kind == "ping":
        return await check_ping(host, timeout)
    return await check_tcp(host, port, timeout)


def probe_env(probe: Probe) -> dict[str, str]:
    """The environment a misc command sees: which dest it checks."""
    proto, vaddr, vport, fwmark, _daddr, dport = probe.key
    name = Proto(proto).name.lower() if proto in Proto._value2member_map_ else str(proto)
    service = f"fwm/{fwmark}" if fwmark else f"{name}/{_hostport(ipaddress.ip_address(vaddr), vport)}"
    return {"LBD_DEST": _hostport(ipaddress.ip_address(probe.host), dport), "LBD_DEST_ADDR": probe.host,
            "LBD_DEST_PORT": str(dport), "LBD_CHECK_PORT": str(probe.port), "LBD_SERVICE": service,
            "LBD_TIMEOUT": f"{probe.spec.timeout:g}"}


def _hostport(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


class HealthRunner:
    """Runs a HealthManager's probes on the event loop; `on_transition` is awaited for each flip."""

    def __init__(self, manager: HealthManager, clock: Clock,
                 on_transition: Callable[[Transition], Awaitable[None]],
                 checker: Checker = run_probe) -> None:
        self.manager = manager
        self.clock = clock
        self.on_transition = on_transition
        self.checker = checker
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._loop(), name="health-runner")

    def wake(self) -> None:
        """Re-read deadlines now (after configure or seed)."""
        self._wake.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _loop(self) -> None:
        while True:
            now = self.clock()
            for probe in self.manager.due(now):
                task = asyncio.get_running_loop().create_task(self._one(probe))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            deadline = self.manager.next_deadline()
            delay = 3600.0 if deadline is None else max(0.0, deadline - self.clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _one(self, probe: Probe) -> None:
        try:
            result = await self.checker(probe)
        except Exception as exc:  # a checker bug must not stop health checking
            log.exception("health probe %s failed", probe)
            result = CheckResult(False, f"checker error: {exc}")
        transition = self.manager.report(probe.key, result, self.clock())
        self._wake.set()  # the probe's next deadline is live again
        if transition is not None:
            log.info("dest %s:%s is %s (%s)", probe.host, probe.port,
                     "up" if transition.up else "down", transition.detail)
        h = self.manager.get(probe.key)
        if result.killed and h is not None and h.fail_streak == 1:  # once per run of failures
            log.warning("health check of %s:%s killed at its timeout: %s", probe.host, probe.port,
                        " ".join(probe.spec.command)[:200])
        if transition is not None:
            try:
                await self.on_transition(transition)
            except Exception:
                log.exception("publishing health transition %s failed", transition)


# ---- verdicts: what every node does, and how they are stored ---------------------------------


class TemplateTable(Protocol):
    """The part of director.table.conn.ConnTable that verdict application uses."""

    def __iter__(self) -> Any: ...

    def check_template(self, ct: Any, expire_quiescent_template: bool) -> bool: ...


def apply_verdict(services: ServiceTable, table: TemplateTable | None, key: DestKey, up: bool, *,
                  on_failure: str, configured: Dest | None = None,
                  expire_quiescent_template: bool = False) -> Dest | None:
    """Make the live tables match a verdict. Returns the dest acted on (None if unknown).

    quiesce: down -> weight 0; up -> the configured weight back (`configured` carries it).
    remove:  down -> unlink the dest; up -> link `configured` back in.
    Down verdicts then run the dest's templates through `check_template`.
    """
    dest = services.find_dest(key)
    svc = _service_of(services, key)
    if svc is None:
        return None
    if on_failure == "remove":
        if not up and dest is not None:
            svc.remove_dest(dest)
        elif up and dest is None and configured is not None:
            configured.flags |= DestFlags.AVAILABLE
            svc.add_dest(configured)
            dest = configured
    elif dest is not None:
        weight = 0 if not up else (configured.weight if configured is not None else max(dest.weight, 1))
        svc.edit_dest(dest, weight=weight)
    target = dest if dest is not None else configured
    if not up and table is not None and target is not None:
        invalidate_templates(table, target, expire_quiescent_template)
    return target


def _service_of(services: ServiceTable, key: DestKey) -> VirtualService | None:
    proto, vaddr, vport, fwmark = key[:4]
    if fwmark:
        return services.get_fwmark(fwmark)
    return next((s for s in services if s.key == (proto, vaddr, vport, 0)), None)


def invalidate_templates(table: TemplateTable, dest: Dest, expire_quiescent_template: bool) -> int:
    """Run check_template on every template bound to `dest`; returns how many it invalidated."""
    templates = [c for c in table if c.flags & ConnFlags.TEMPLATE and c.dest is dest]
    return sum(1 for ct in templates if not table.check_template(ct, expire_quiescent_template))


def dest_id(key: DestKey) -> str:
    proto, vaddr, vport, fwmark, daddr, dport = key
    return f"{proto}-{vaddr}-{vport}-{fwmark}-{daddr}-{dport}"


def parse_dest_id(text: str) -> DestKey:
    parts = [int(x) for x in text.split("-")]
    if len(parts) != 6:
        raise ValueError(f"bad dest id {text!r}")
    return (parts[0], parts[1], parts[2], parts[3], parts[4], parts[5])


def verdict_key(prefix: str, cluster: str, key: DestKey) -> str:
    return f"{prefix.rstrip('/')}/{cluster}/health/{dest_id(key)}"


def encode_verdict(up: bool, *, since: float, node: str, epoch: int, detail: str = "",
                   weight: int | None = None) -> str:
    d: dict[str, Any] = {"up": up, "since": since, "node": node, "epoch": epoch, "detail": detail}
    if weight is not None:
        d["weight"] = weight
    return json.dumps(d, sort_keys=True)


def decode_verdict(text: str | bytes) -> dict[str, Any]:
    """Parse a verdict value; ValueError if it is not one."""
    d = json.loads(text)
    if not isinstance(d, dict) or not isinstance(d.get("up"), bool) or not isinstance(d.get("epoch"), int):
        raise ValueError(f"not a health verdict: {text!r}")
    w = d.get("weight")
    if w is not None and (not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 65535):
        raise ValueError(f"bad weight in health verdict: {text!r}")
    return d


def targets_from(services: Iterable[VirtualService], specs: Mapping[DestKey, HealthSpec],
                 fmt: Callable[[int], str]) -> dict[DestKey, tuple[str, int, HealthSpec]]:
    """Build `configure` targets for the dests that have a spec (port defaults to the dest's).

    Pass the *configured* services (from the config, not the live table): a dest removed by a down
    verdict must still be probed, or it could never come back.
    """
    out: dict[DestKey, tuple[str, int, HealthSpec]] = {}
    for svc in services:
        for d in svc.dests:
            spec = specs.get(d.key)
            if spec is not None:
                out[d.key] = (fmt(d.addr), spec.port or d.port, spec)
    return out


__all__ = [
    "CheckResult", "DestHealth", "HealthManager", "HealthRunner", "HealthSpec", "HealthStats", "Probe",
    "Transition", "apply_verdict", "decode_verdict", "dest_id", "encode_verdict", "invalidate_templates",
    "parse_dest_id", "run_probe", "targets_from", "verdict_key",
]
