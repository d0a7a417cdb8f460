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
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from director.health.http import check_http
from director.health.spec import CheckResult, HealthSpec
from director.health.tcp import check_tcp
from director.services.service import Dest, DestKey, ServiceTable, VirtualService
from director.types import Clock, ConnFlags, DestFlags

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


class DestHealth:
    __slots__ = ("key", "host", "port", "spec", "up", "known", "ok_streak", "fail_streak", "next_due",
                 "in_flight", "last_detail", "checks", "failures")

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


class HealthManager:
    def __init__(self) -> None:
        self._dests: dict[DestKey, DestHealth] = {}
        self._seeds: dict[DestKey, bool] = {}

    def __len__(self) -> int:
        return len(self._dests)

    def get(self, key: DestKey) -> DestHealth | None:
        return self._dests.get(key)

    def seed(self, verdicts: Mapping[DestKey, bool]) -> None:
        """Start from published verdicts (a new master takes over the old master's view)."""
        self._seeds.update(verdicts)
        for key, up in verdicts.items():
            h = self._dests.get(key)
            if h is not None:
                h.up, h.known, h.ok_streak, h.fail_streak = up, True, 0, 0

    def configure(self, targets: Mapping[DestKey, tuple[str, int, HealthSpec]], now: float) -> None:
        """Check exactly these dests: key -> (host, port, spec). Unchanged ones keep their state."""
        for key in [k for k in self._dests if k not in targets]:
            del self._dests[key]
        for key, (host, port, spec) in targets.items():
            old = self._dests.get(key)
            if old is not None and (old.host, old.port, old.spec) == (host, port, spec):
                continue
            if old is not None:
                up, known = old.up, old.known
            else:
                up, known = self._seeds.get(key, True), key in self._seeds
            self._dests[key] = DestHealth(key, host, port, spec, now, up, known)

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
        if result.ok:
            h.ok_streak, h.fail_streak = h.ok_streak + 1, 0
            if (not h.up or not h.known) and h.ok_streak >= h.spec.rise:
                h.up = h.known = True
                return Transition(key, True, now, result.detail)
        else:
            h.failures += 1
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
    spec = probe.spec
    if spec.kind == "http":
        return await check_http(probe.host, probe.port, spec.timeout, path=spec.path, vhost=spec.host,
                                expect_status=spec.expect_status, expect_body=spec.expect_body)
    return await check_tcp(probe.host, probe.port, spec.timeout)


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


def encode_verdict(up: bool, *, since: float, node: str, epoch: int, detail: str = "") -> str:
    return json.dumps({"up": up, "since": since, "node": node, "epoch": epoch, "detail": detail},
                      sort_keys=True)


def decode_verdict(text: str | bytes) -> dict[str, Any]:
    """Parse a verdict value; ValueError if it is not one."""
    d = json.loads(text)
    if not isinstance(d, dict) or not isinstance(d.get("up"), bool) or not isinstance(d.get("epoch"), int):
        raise ValueError(f"not a health verdict: {text!r}")
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
    "CheckResult", "DestHealth", "HealthManager", "HealthRunner", "HealthSpec", "Probe", "Transition",
    "apply_verdict", "decode_verdict", "dest_id", "encode_verdict", "invalidate_templates",
    "parse_dest_id", "run_probe", "targets_from", "verdict_key",
]
