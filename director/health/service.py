"""`HealthService`: a node's health-check component (master probes, every node applies verdicts).

Theory of operation
-------------------
The daemon owns one `HealthService` and calls three things on it:

* `reconfigure(cfg)` after each applied config: the dests with a `healthcheck` become the probe
  targets (configured dests, so a dest removed by a down verdict is still probed);
* `set_master(True/False)` on role changes: only the master runs the `HealthRunner`. On
  becoming master it seeds the manager from the published verdicts and re-checks from there;
* `down_keys()` when applying config: the dests the *published* verdicts hold down (what
  `director.config.services.apply_to_services(..., down=...)` takes); then `apply_weights(services)`
  gives the dests of misc `dynamic` checks the weight their published verdict carries.

`stats` (`HealthStats`: probes, failures, commands killed at their timeout) survives masterships.

`run(store)` is a task every node runs: it reads ``<root>/health/`` and then watches it (resuming
from the last revision + 1 after errors, re-reading after compaction). Each change updates the
published view and calls `on_change(newly_down, newly_up)`; the daemon re-applies its config with
the new down set and runs the conn table's `check_template` on templates of newly-down dests
(`invalidate_down`). A master's own transitions are written to etcd (`<root>/health/<dest id>`,
`encode_verdict`) and reach every node, itself included, through that watch, so all nodes apply
the same verdicts at the same revision. A watched write whose epoch is older than the current
master's is ignored (a deposed master's late write cannot win). Verdicts of dests no longer in
the config are deleted by the master.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from director.health.manager import (
    HealthManager,
    HealthRunner,
    HealthStats,
    TemplateTable,
    Transition,
    decode_verdict,
    dest_id,
    encode_verdict,
    parse_dest_id,
)
from director.health.spec import HealthSpec
from director.services.service import DestKey, ServiceTable, set_dest_weights
from director.types import Clock, ConnFlags

log = logging.getLogger(__name__)

RETRY_MIN, RETRY_MAX = 0.2, 2.0


class VerdictStore(Protocol):
    """The part of director.cluster.store.EtcdStore used here."""

    root: str

    async def get_prefix(self, prefix: str, timeout: float | None = None) -> tuple[list[Any], int]: ...

    def watch(self, key: str, *, prefix: bool = False, start_revision: int = 0) -> AsyncIterator[Any]: ...

    async def put(self, key: str, value: bytes | str, lease: int = 0,
                  timeout: float | None = None) -> int: ...

    async def delete(self, key: str, timeout: float | None = None) -> int: ...


class ConfigLike(Protocol):
    """director.config.services.Config (services with dests with `healthcheck`)."""

    @property
    def services(self) -> Iterable[Any]: ...


class HealthService:
    def __init__(self, node_id: str, clock: Clock = time.monotonic, *,
                 epoch: Callable[[], int] = lambda: 0,
                 on_change: Callable[[frozenset[DestKey], frozenset[DestKey]], None] | None = None,
                 wall: Clock = time.time) -> None:
        self.node_id = node_id
        self.clock = clock
        self.wall = wall
        self.epoch = epoch
        self.on_change = on_change
        self.stats = HealthStats()
        """Probes run, failed and killed at their timeout on this node (while master), for metrics."""
        self.manager = HealthManager(self.stats)
        self.verdicts: dict[DestKey, dict[str, Any]] = {}  # published view: key -> decoded verdict
        self.specs: dict[DestKey, HealthSpec] = {}
        self.expire_quiescent: dict[DestKey, bool] = {}
        self.store: VerdictStore | None = None
        self.runner: HealthRunner | None = None
        self.master = False
        self._targets: dict[DestKey, tuple[str, int, HealthSpec]] = {}

    # ---- what the daemon calls ---------------------------------------------------------------

    def down_keys(self) -> frozenset[DestKey]:
        return frozenset(k for k, v in self.verdicts.items() if not v["up"] and k in self.specs)

    def weights(self) -> dict[DestKey, int]:
        """Weights set by misc `dynamic` checks (published, up dests only)."""
        return {k: v["weight"] for k, v in self.verdicts.items()
                if v["up"] and v.get("weight") is not None and k in self.specs}

    def apply_weights(self, services: ServiceTable) -> int:
        """After the config is applied: give dynamically weighted dests their checked weight."""
        return set_dest_weights(services, self.weights())

    def health_view(self) -> dict[DestKey, str]:
        """For admin views: "up" / "down" per checked dest, "unknown" before its first verdict."""
        out: dict[DestKey, str] = {}
        for key in self.specs:
            v = self.verdicts.get(key)
            out[key] = "unknown" if v is None else ("up" if v["up"] else "down")
        return out

    def reconfigure(self, cfg: ConfigLike) -> None:
        targets: dict[DestKey, tuple[str, int, HealthSpec]] = {}
        eqt: dict[DestKey, bool] = {}
        for sc in cfg.services:
            for dc in sc.dests:
                hc = dc.healthcheck
                if hc is None:
                    continue
                key: DestKey = (int(sc.proto), sc.vaddr, sc.port, sc.fwmark, dc.daddr, dc.port)
                targets[key] = (dc.address, hc.port_for(dc.port), hc)
                eqt[key] = bool(sc.expire_quiescent_template)
        self._targets = targets
        self.specs = {k: t[2] for k, t in targets.items()}
        self.expire_quiescent = eqt
        self.manager.configure(targets, self.clock())
        if self.runner is not None:
            self.runner.wake()
        if self.master and self.store is not None:
            stale = [k for k in self.verdicts if k not in targets]
            if stale:
                asyncio.get_running_loop().create_task(self._delete(stale))

    def set_master(self, master: bool) -> None:
        if master == self.master:
            return
        self.master = master
        if master:
            self.manager = HealthManager(self.stats)
            self.manager.seed({k: bool(v["up"]) for k, v in self.verdicts.items()},
                              {k: v.get("weight") for k, v in self.verdicts.items()})
            self.manager.configure(self._targets, self.clock())
            self.runner = HealthRunner(self.manager, self.clock, self._publish)
            self.runner.start()
            log.info("health: master: probing %d dests", len(self._targets))
        elif self.runner is not None:
            runner, self.runner = self.runner, None
            asyncio.get_running_loop().create_task(runner.stop())
            log.info("health: no longer master: probes stopped")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        self.master = False

    def invalidate_down(self, table: TemplateTable, keys: Iterable[DestKey]) -> int:
        """check_template on the templates bound to these dests (after a down verdict is applied)."""
        keys = set(keys)
        hits = [c for c in table
                if c.flags & ConnFlags.TEMPLATE and c.dest is not None and c.dest.key in keys]
        return sum(1 for ct in hits
                   if not table.check_template(ct, self.expire_quiescent.get(ct.dest.key, False)))

    # ---- the published view (every node) -----------------------------------------------------

    def prefix(self, store: VerdictStore) -> str:
        return f"{store.root}/health/"

    async def run(self, store: VerdictStore) -> None:
        """Follow <root>/health/ forever (read, then watch; resume after errors)."""
        self.store = store
        prefix = self.prefix(store)
        delay = RETRY_MIN
        revision = None
        while True:
            try:
                if revision is None:
                    kvs, revision = await store.get_prefix(prefix)
                    self._replace({kv.key[len(prefix):]: kv.value for kv in kvs})
                async for batch in store.watch(prefix, prefix=True, start_revision=revision + 1):
                    delay = RETRY_MIN
                    for ev in batch.events:
                        revision = max(revision, ev.kv.mod_revision)
                        put = ev.kind.name == "PUT"
                        self.apply_event(ev.kv.key[len(prefix):], ev.kv.value if put else None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd errors, compaction: re-read on compaction
                if type(exc).__name__ == "EtcdCompacted":
                    revision = None
                log.info("health watch interrupted (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _replace(self, values: Mapping[str, bytes]) -> None:
        fresh: dict[DestKey, dict[str, Any]] = {}
        for name, raw in values.items():
            parsed = _parse(name, raw)
            if parsed is not None:
                fresh[parsed[0]] = parsed[1]
        self._swap(fresh)

    def apply_event(self, name: str, raw: bytes | None) -> None:
        """One watched change: a PUT (raw) or a DELETE (None) of <root>/health/<name>."""
        fresh = dict(self.verdicts)
        if raw is None:
            with contextlib.suppress(ValueError):
                fresh.pop(parse_dest_id(name), None)
        else:
            parsed = _parse(name, raw)
            if parsed is None:
                return
            key, verdict = parsed
            if verdict["epoch"] < self.epoch():
                log.warning("health: ignoring verdict for %s from %s at old epoch %d (now %d)", name,
                            verdict.get("node"), verdict["epoch"], self.epoch())
                return
            fresh[key] = verdict
        self._swap(fresh)

    def _swap(self, fresh: dict[DestKey, dict[str, Any]]) -> None:
        before, weights = self.down_keys(), self.weights()
        self.verdicts = fresh
        after = self.down_keys()
        if (before != after or weights != self.weights()) and self.on_change is not None:
            self.on_change(after - before, before - after)

    # ---- master side -------------------------------------------------------------------------

    async def _publish(self, t: Transition) -> None:
        store = self.store
        value = encode_verdict(t.up, since=self.wall(), node=self.node_id, epoch=self.epoch(),
                               detail=t.detail, weight=t.weight)
        if store is None:  # no etcd (single node): apply the verdict directly
            self.apply_event(dest_id(t.key), value.encode())
            return
        delay = RETRY_MIN
        while self.master:
            try:
                await store.put(self.prefix(store) + dest_id(t.key), value)
                return
            except Exception as exc:
                log.warning("health: publishing %s failed (%s); retrying in %.1fs", _label(t.key), exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    async def _delete(self, keys: Iterable[DestKey]) -> None:
        store = self.store
        assert store is not None
        for key in keys:
            with contextlib.suppress(Exception):
                await store.delete(self.prefix(store) + dest_id(key))


def _parse(name: str, raw: bytes) -> tuple[DestKey, dict[str, Any]] | None:
    try:
        return parse_dest_id(name), decode_verdict(raw)
    except ValueError as exc:
        log.warning("health: ignoring bad verdict %s: %s", name, exc)
        return None


def _label(key: DestKey) -> str:
    return f"{ipaddress.ip_address(key[4])}:{key[5]}"


__all__ = ["HealthService", "VerdictStore"]
