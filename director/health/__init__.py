"""Real-server health checks (keepalived's set), with interval, timeout, rise and fall.

Theory of operation
-------------------
* **Checkers**, one file each, are coroutines `check_*(target, ...) -> CheckResult` that do one
  probe under a deadline on the event loop and never raise: `tcp.py` (connect), `http.py` (GET:
  status, body regex, MD5 digest), `https.py` (the same over TLS: SNI, optional verification,
  keepalived's SSL_GET), `dns.py` (a query over UDP: rcode, expected answers), `udp.py` (a datagram:
  refused or not, or a reply matching a regex), `grpc_check.py` (grpc.health.v1 Check), `misc.py`
  (an operator's command: exit 0 up, 1 down, keepalived's misc_dynamic weights; killed with its
  process group at the timeout, `CheckResult.killed`), `ping.py` (ICMP echo: unprivileged datagram
  socket, else raw). `manager.run_probe` dispatches on the spec's `type`.
* **`manager.HealthManager`** is the pure part: it holds one `DestHealth` per checked dest, says
  which probes are due at a given time (`due(now)`), and folds results into verdicts with
  keepalived's rise/fall rule (`report(key, ok, now) -> Transition | None`): an up dest goes down
  after `fall` consecutive failures; a down dest comes back after `rise` consecutive successes.
  A dest without a known verdict starts up (keepalived's default, no "alpha" mode), so adding a
  dest never black-holes traffic while its first checks run; its first verdict (after `rise`
  good or `fall` bad probes) is announced like a flip, so every checked dest gets a published one.
  A misc `dynamic` weight change of an up dest is announced at once (`Transition.weight`); the
  manager counts probes, failures and kills in `HealthStats`.
  `HealthRunner` drives it on asyncio.
* **`service.HealthService`** is the node component the daemon wires: `reconfigure(cfg)`,
  `set_master(bool)`, `down_keys()` (for `config.apply_to_services(..., down=...)`), then
  `apply_weights(services)` (misc dynamic weights), `run(store)` (follows the published verdicts in
  etcd) and `invalidate_down(table, keys)`.
* **Effect of a verdict** (`manager.apply_verdict`): `on_failure: quiesce` (default, like
  keepalived's `inhibit_on_failure`) sets the dest's weight to 0, so no new connection goes to it
  while existing ones live on; `on_failure: remove` unlinks it (existing conns then follow
  `expire_nodest_conn`). Either way its persistence templates are passed through the conn table's
  `check_template` (so they stop matching when the dest is removed, or quiesced with
  `expire_quiescent_template` on). Recovery restores the configured weight (or re-adds the dest).

How nodes agree on a dest's health
----------------------------------
Only the **master** runs checks. When a verdict changes it writes it to etcd under
``/<prefix>/<cluster>/health/<dest id>`` (`verdict_key`, value `encode_verdict`: up, since, node,
epoch, detail, and weight for a misc dynamic check) in the same etcd as the config. **Every node**,
master included, applies verdicts from its config watch, never from its own probes, so all nodes
forward with the same dest set, and a backup that takes over starts from exactly the view the old
master published (a dest cannot be up on one node and down on another after a failover). The new
master seeds its `HealthManager` from those verdicts (`seed`) and re-checks everything from there:
a dest that recovered during the hand-over comes back after `rise` good probes, one that died goes
down after `fall` bad ones. Verdict keys of dests no longer in the config are deleted by the
master. A verdict written with an older epoch than the current leader's is ignored (a deposed
master's late write cannot win).
Backups therefore never probe real servers: no duplicated check load, and no disagreement caused
by a backup's different network path.
"""

from director.health.manager import (
    CheckResult,
    DestHealth,
    HealthManager,
    HealthRunner,
    HealthSpec,
    HealthStats,
    Probe,
    Transition,
    apply_verdict,
    decode_verdict,
    encode_verdict,
    verdict_key,
)
from director.health.service import HealthService

__all__ = [
    "CheckResult", "DestHealth", "HealthManager", "HealthRunner", "HealthService", "HealthSpec",
    "HealthStats", "Probe", "Transition",
    "apply_verdict", "decode_verdict", "encode_verdict", "verdict_key",
]
