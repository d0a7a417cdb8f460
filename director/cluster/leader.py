"""The election's vocabulary (roles, actions, parameters) and the leader key's value (`LeaderRecord`).

`ElectionMachine` (director.cluster.election) speaks these types; they live here so that module
stays the state machine alone.

The master writes its record when it wins (``create`` with its lease) and rewrites it every
``touch_window / 3`` while it is master (a *touch*, see director.cluster.election): each touch moves
the key's mod revision, which every backup watches. A record that declares a ``touch_window`` is a
promise by its writer: "I forward only while my last acknowledged touch was sent less than
``touch_window`` seconds ago". Records without it (older masters) are treated as never touched:
backups then wait for the key to disappear with its lease, as before.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

log = logging.getLogger(__name__)

class Role(IntEnum):
    BACKUP = 0
    CANDIDATE = 1
    MASTER = 2
    STEPPED_DOWN = 3
    STOPPED = 4


class Why(Enum):
    """Why the machine is in STEPPED_DOWN."""

    NONE = "none"
    UNCERTAIN = "uncertain"  # could not renew in time; the lease may still be alive
    RESIGNED = "resigned"


class Act(Enum):
    GRANT_LEASE = "grant_lease"  # -> lease_granted / lease_failed
    CAMPAIGN = "campaign"  # txn create-if-absent -> txn_won / txn_lost / txn_failed
    RENEW = "renew"  # keepalive -> renew_ok / renew_failed
    VERIFY = "verify"  # read the leader key -> leader_observed / verify_failed
    REVOKE = "revoke"  # best effort, no answer expected
    START_FORWARDING = "start_forwarding"
    STOP_FORWARDING = "stop_forwarding"
    REQUEST_HANDOVER = "request_handover"  # preemption: ask the master to hand over to us
    TOUCH = "touch"  # master: rewrite our leader key -> touch_ok / touch_failed / touch_lost
    DELETE_STALE = "delete_stale"  # backup: txn "delete the leader key if still at revision" -> stale_done


@dataclass(frozen=True)
class Action:
    act: Act
    lease_id: int = 0
    epoch: int = 0
    timeout: float = 0.0
    revision: int = 0  # DELETE_STALE: the leader key's mod revision it was seen at


@dataclass(frozen=True)
class ElectionParams:
    ttl: float = 1.0  # requested; the granted TTL (lease_granted) is what counts
    margin: float = 0.2  # step down this long before the lease could expire
    retry: float = 0.1  # delay before retrying a failed renew / campaign / grant
    resign_holdoff: float = 2.0  # after resign: no campaign until a new master or this passes
    priority: int = 0
    preempt: bool = False
    node_id: str = ""  # only used to recognise our own handover requests
    touch: float = 0.6  # touch window as a fraction of the granted TTL (0: never touch); a touch is a
    # raft write (fsync), so etcd's disk must keep up: docs/HA.md
    stale_margin: float = 0.1  # backup: wait this much past a record's touch window (clock rates)


@dataclass
class LeaseState:
    lease_id: int = 0
    ttl: float = 0.0
    sent_at: float = 0.0  # send time of the grant request
    last_ok_sent: float = 0.0  # send time of the last successful keepalive (or the grant)
    step_down_at: float = 0.0
    next_renew_at: float = 0.0
    touch_ok_sent: float = 0.0  # send time of the last acknowledged touch (or the grant)
    next_touch_at: float = 0.0


MIN_TOUCH_WINDOW = 0.05
MAX_TOUCH_WINDOW = 600.0


@dataclass(frozen=True)
class LeaderRecord:
    """The value of the leader key.  `epoch` is the key's create revision, `lease` its lease,
    `revision` its mod revision (moves with every touch; not part of equality, so a touch is not a
    change of master), `touch_window` the writer's touch promise in seconds (0: none declared)."""

    node_id: str
    sync_addr: str = ""
    admin_addr: str = ""
    epoch: int = 0
    lease: int = 0
    priority: int = 0
    touch_window: float = 0.0
    revision: int = field(default=0, compare=False)

    def to_json(self) -> str:
        obj: dict[str, Any] = {"node_id": self.node_id, "sync_addr": self.sync_addr,
                               "admin_addr": self.admin_addr, "epoch": self.epoch,
                               "priority": self.priority}
        if self.touch_window:
            obj["touch_window"] = round(self.touch_window, 3)
        return json.dumps(obj, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str, *, epoch: int, lease: int, revision: int = 0) -> LeaderRecord:
        """Parse a leader value; epoch, lease and revision come from the key's metadata."""
        try:
            obj: Any = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            log.warning("leader key holds non-JSON value %r", raw[:80])
            return cls(node_id="?", epoch=epoch, lease=lease, revision=revision)
        return cls(node_id=str(obj.get("node_id", "?")), sync_addr=str(obj.get("sync_addr", "")),
                   admin_addr=str(obj.get("admin_addr", "")), epoch=epoch, lease=lease,
                   priority=_int(obj.get("priority")), touch_window=_window(obj.get("touch_window")),
                   revision=revision)


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _window(v: Any) -> float:
    """A declared touch window, clamped to sane bounds (longer only makes backups wait longer);
    anything that is not a finite positive number means "none declared"."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        return 0.0
    return min(max(float(v), MIN_TOUCH_WINDOW), MAX_TOUCH_WINDOW)
