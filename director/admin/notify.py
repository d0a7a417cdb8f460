"""Notify hooks: operator commands run when this node's role changes or a dest's verdict flips.

Theory of operation
-------------------
keepalived users page, move routes or update DNS from ``notify_master`` / ``notify_backup`` /
``notify_fault`` and a real server's ``notify_up`` / ``notify_down``. The node YAML's ``notify:``
section (director.config.node.NotifyConfig) names the same five hooks as argv lists. The daemon
calls two methods, from any thread, that never block and never raise:

* `role(role, epoch=..., master=..., reason=...)` on every role change; the election's roles map to
  hooks: MASTER -> ``master``, BACKUP -> ``backup``, STEPPED_DOWN (lease uncertain, resigned) and
  STOPPED -> ``fault``; the daemon also reports ``fault`` for a lost link and for shutdown.
  CANDIDATE runs nothing. Only a change of hook runs a command (a new epoch under the same role
  does not), so a flapping election cannot queue the same page twice in a row.
* `dest(key, up, detail)` when a published verdict flips. Every node applies verdicts, but dest
  hooks run only while this node's last role hook was ``master``: the master's probes decide, so
  one command runs per flip in the cluster, not one per node.
* `stop(reason)` at shutdown: ``fault`` (role ``stopped``) with that reason, then waits for the
  queued commands (the daemon bounds the wait).

Each event is queued on a *lane*: role hooks share one, dest hooks another. A lane runs one command
at a time, in arrival order, so ``master`` can never overtake the ``fault`` before it, nor a dest's
``dest_up`` its earlier ``dest_down`` (stronger than ordering per hook). A lane holds at most
`MAX_PENDING` events; beyond that the oldest waiting one is dropped and counted. The command runs
without a shell in its own process group (director.health.misc.run_command, asyncio subprocess:
the loop never waits), with the event in environment variables (``LBD_EVENT`` the hook,
``LBD_ROLE``, ``LBD_NODE``, ``LBD_CLUSTER``, ``LBD_EPOCH``, ``LBD_MASTER``, ``LBD_REASON``, for dest
events ``LBD_SERVICE``, ``LBD_DEST``, ``LBD_DETAIL``; ``LBD_TIME`` wall clock, ``LBD_SEQ`` this node's
event number) and the same as one JSON object on stdin. At ``notify.timeout`` the group is killed.
Exit 0 is success; anything else (non-zero, killed, cannot start) is logged with the command's
first output line and counted in `stats` (per hook: runs, failed, killed, dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from director.admin.api import fmt_hostport, svc_label
from director.config.node import NOTIFY_HOOKS, NotifyConfig
from director.health.misc import run_command
from director.services.service import DestKey

log = logging.getLogger(__name__)

MAX_PENDING = 256
ROLE_HOOKS = {"master": "master", "backup": "backup", "stepped_down": "fault", "stopped": "fault",
              "fault": "fault"}
"""Role names (director.cluster.election.Role, lower case) -> hook; others (candidate) run nothing."""


@dataclass
class HookStats:
    runs: int = 0
    failed: int = 0
    killed: int = 0
    dropped: int = 0


class NotifyRunner:
    def __init__(self, cfg: NotifyConfig, node_id: str, cluster: str = "", *,
                 wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.cluster = cluster
        self.wall = wall
        self.stats = {h: HookStats() for h in NOTIFY_HOOKS}
        self.last_role_hook = ""
        self.role_name = "backup"
        self.seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # built on the loop: bound to it already
            self._loop = asyncio.get_running_loop()
        self._lanes: dict[str, deque[tuple[str, dict[str, Any]]]] = {"role": deque(), "dest": deque()}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.running = 0

    def start(self) -> None:
        """Bind to the running loop if not built on it (events may then come from any thread)."""
        self._loop = asyncio.get_running_loop()

    # ---- what the daemon calls (any thread; never blocks) ---------------------------------------

    def role(self, role: str, *, epoch: int = 0, master: str | None = None, reason: str = "") -> None:
        self._post(self._on_role, role.lower(), epoch, master, reason)

    def dest(self, key: DestKey, up: bool, detail: str = "") -> None:
        self._post(self._on_dest, key, up, detail)

    async def stop(self, reason: str = "") -> None:
        """Report ``fault`` (role stopped) for `reason` if given, let queued commands finish (each
        bounded by the timeout), then stop the lanes."""
        if reason:
            self._on_role("stopped", 0, None, reason)
        await asyncio.sleep(0)  # events posted just before (the shutdown's fault) get queued first
        while self._workers:
            lane, task = next(iter(self._workers.items()))
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._workers.pop(lane, None)

    def pending(self) -> int:
        """Events not finished: queued or with their command running."""
        return sum(len(q) for q in self._lanes.values()) + self.running

    # ---- on the loop -------------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the node is gone
            loop.call_soon_threadsafe(fn, *args)

    def _on_role(self, role: str, epoch: int, master: str | None, reason: str) -> None:
        self.role_name = role
        hook = ROLE_HOOKS.get(role)
        if hook is None or hook == self.last_role_hook:
            return
        self.last_role_hook = hook
        self._enqueue("role", hook, {"role": role, "epoch": epoch, "master": master or "", "reason": reason})

    def _on_dest(self, key: DestKey, up: bool, detail: str) -> None:
        if self.last_role_hook != "master":  # the master's probes decide: one command per flip
            return
        self._enqueue("dest", "dest_up" if up else "dest_down",
                      {"role": self.role_name, "service": svc_label(key[:4]),
                       "dest": fmt_hostport(key[4], key[5]), "up": up, "detail": detail})

    def _enqueue(self, lane: str, hook: str, fields: dict[str, Any]) -> None:
        if not getattr(self.cfg, hook):
            return
        self.seq += 1
        event = {"event": hook, "node": self.node_id, "cluster": self.cluster, "time": self.wall(),
                 "seq": self.seq, **fields}
        queue = self._lanes[lane]
        if len(queue) >= MAX_PENDING:
            old_hook, old = queue.popleft()
            self.stats[old_hook].dropped += 1
            log.warning("notify: %s backlog full, dropped %s event %d", lane, old_hook, old["seq"])
        queue.append((hook, event))
        if lane not in self._workers:
            self._workers[lane] = asyncio.get_running_loop().create_task(self._drain(lane),
                                                                         name=f"notify-{lane}")

    async def _drain(self, lane: str) -> None:
        queue = self._lanes[lane]
        try:
            while queue:
                hook, event = queue.popleft()
                self.running += 1
                try:
                    await self._run(hook, event)
                finally:
                    self.running -= 1
        finally:
            self._workers.pop(lane, None)

    async def _run(self, hook: str, event: dict[str, Any]) -> None:
        argv: tuple[str, ...] = getattr(self.cfg, hook)
        st = self.stats[hook]
        st.runs += 1
        try:
            code, said = await run_command(argv, self.cfg.timeout, env=environment(event),
                                           stdin=json.dumps(event, sort_keys=True).encode() + b"\n")
        except (OSError, ValueError) as exc:
            st.failed += 1
            log.warning("notify %s: cannot run %s: %s", hook, argv[0], exc)
            return
        if code is None:
            st.failed += 1
            st.killed += 1
            log.warning("notify %s: %s killed after %gs (event %d)", hook, argv[0], self.cfg.timeout,
                        event["seq"])
        elif code != 0:
            st.failed += 1
            log.warning("notify %s: %s exited %d (event %d)%s", hook, argv[0], code, event["seq"],
                        f": {said}" if said else "")
        else:
            log.info("notify %s: %s done (event %d)", hook, argv[0], event["seq"])


def environment(event: dict[str, Any]) -> dict[str, str]:
    """The event as LBD_* variables (booleans as 1/0)."""
    out = {}
    for k, val in event.items():
        text = ("1" if val else "0") if isinstance(val, bool) else str(val)
        out[f"LBD_{k.upper()}"] = text.replace("\0", "")  # (a probe's words could hold a NUL)
    return out


__all__ = ["MAX_PENDING", "ROLE_HOOKS", "HookStats", "NotifyRunner", "environment"]
