"""A director cluster inside a lab: etcd in the control namespace, `directord` in each director.

Theory of operation
-------------------
`LabCluster` builds on `deploy.lab.Lab`. It starts a real etcd (tuned for a 1 s lease by default)
in the lab's control namespace (198.18.1.250, on the internal segment, so directors reach it and
sync over the same segment), writes the virtual-service config into etcd exactly as
``directorctl apply`` would, and runs one ``directord`` process per director namespace with a node
YAML written into the lab's work dir. Each node appends its role changes to an events file
(JSON lines, wall clock); the cluster reads those files to wait for conditions ("d2 is master",
"d1 is in sync") with generous deadlines, never fixed sleeps. Everything it starts is killed by PID
(process group) and the lab namespaces are removed on `close()`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.etcd import EtcdCluster, EtcdServer, MemberNet
from deploy.lab import CTL_ADDR, GATEWAY, PYTHON, Lab, director_int

log = logging.getLogger(__name__)

SYNC_PORT = 7100
ADMIN_PORT = 7200
METRICS_PORT = 9712


class ClusterError(RuntimeError):
    pass


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.02) -> Any:
    """Poll `cond` until it returns something truthy; raise ClusterError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class NodeProc:
    n: int
    node_id: str
    config: Path
    events: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    """Wall-clock time of the last start: events before it belong to an earlier life."""
    released_at: float = 0.0
    """Wall-clock time the exit hook finished releasing the dead node's lease (0: not run)."""

    @property
    def lease_file(self) -> Path:
        return self.config.with_name(f"{self.node_id}.lease")


class LabCluster:
    def __init__(self, lab: Lab, *, n_nodes: int = 2, tuned_etcd: bool = True, lease_ttl: int = 1,
                 sloppy_grace: float = 30.0, node_extra: str = "", node_prefix: Sequence[str] = (),
                 etcd_members: int = 1) -> None:
        if n_nodes > len(lab.directors):
            raise ValueError(f"lab has {len(lab.directors)} directors, {n_nodes} nodes asked")
        self.lab = lab
        self.etcd: EtcdServer | EtcdCluster = EtcdServer(
            host=CTL_ADDR, client_port=2379, peer_port=2380, tuned=tuned_etcd, netns=lab.ctl.ns,
            name=f"{lab.name}-etcd")
        if etcd_members > 1:  # one member per namespace on the internal segment (deploy.etcd.MemberNet)
            self.etcd = EtcdCluster(MemberNet(lab.name, etcd_members, switch=lab.switch),
                                    name=f"{lab.name}-etcd", tuned=tuned_etcd)
        self.lease_ttl = lease_ttl
        self.sloppy_grace = sloppy_grace
        self.node_extra = node_extra
        """More node YAML lines for every node (e.g. a ``defense:`` section)."""
        self.node_prefix = tuple(node_prefix)
        """Command run before directord's, e.g. ``setpriv`` to a non-root user with two capabilities
        (the workdir is then opened to it: the node writes its events, lease file and admin socket there)."""
        self.nodes = [self._node(i) for i in range(1, n_nodes + 1)]

    # -- setup --------------------------------------------------------------------------------------
    def _node(self, n: int) -> NodeProc:
        wd = self.lab.workdir
        return NodeProc(n, f"d{n}", wd / f"d{n}.node.yaml", wd / f"d{n}.events.jsonl", wd / f"d{n}.log")

    @property
    def endpoint(self) -> str:
        return f"{CTL_ADDR}:{self.etcd.client_port}"

    @property
    def endpoints(self) -> list[str]:
        """Every etcd member's client address (what the node configs list)."""
        return self.etcd.endpoints if isinstance(self.etcd, EtcdCluster) else [self.endpoint]

    def node_yaml(self, node: NodeProc) -> str:
        addr = director_int(node.n)
        return "\n".join([
            f"node_id: {node.node_id}",
            f"cluster: {self.lab.name}",
            f"etcd: {{endpoints: {self.endpoints!r}, prefix: /lbd}}",
            "interfaces: {external: ext, internal: int}",
            "vmac_id: 1",
            f"gateways: ['{GATEWAY}']",
            f"sync: {{listen: '{addr}:{SYNC_PORT}'}}",
            f"admin: {{listen: '{addr}:{ADMIN_PORT}', unix: '{self.admin_socket(node)}'}}",
            f"metrics: {{listen: '{addr}:{METRICS_PORT}'}}",
            f"lease_ttl: {self.lease_ttl}",
            f"sloppy_grace: {self.sloppy_grace}",
            f"events_file: {node.events}",
            "int_mtu: 1600",
            "" if "workers:" in self.node_extra else f"workers: {self.workers_of(node)}",
            self.node_extra,
            "",
        ])

    def workers_of(self, node: NodeProc) -> int:
        """The node's `workers:` (1 here, so the suite's timing does not depend on the machine's cores;
        the product's default is `auto`); `node_extra` or a subclass may say otherwise."""
        return 1

    def admin_socket(self, node: NodeProc) -> Path:
        return self.lab.workdir / f"{node.node_id}.admin.sock"

    def start_etcd(self) -> None:
        self.lab.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd.start()

    def apply_config(self, services_yaml: str) -> int:
        """Write a services document into etcd (validated first), as `directorctl apply` does."""
        path = self.lab.write_file("services.yaml", services_yaml)
        code = (
            "import asyncio, sys\n"
            "from director.config.services import parse_config, dump_service, dump_timeouts\n"
            "from director.cluster.store import EtcdStore, apply\n"
            f"cfg = parse_config(open({str(path)!r}).read())\n"
            "async def main():\n"
            f"    async with EtcdStore({self.endpoints!r}, prefix='/lbd',\n"
            f"                         cluster={self.lab.name!r}) as st:\n"
            "        t = dump_timeouts(cfg.timeouts) if cfg.timeouts else None\n"
            "        rev = await apply(st, {s.name: dump_service(s) for s in cfg.services}, t, prune=True)\n"
            "        print(rev)\n"
            "asyncio.run(main())\n"
        )
        res = self.lab.run_python(self.lab.ctl.ns, code, timeout=60)
        return int(res.stdout.strip().splitlines()[-1])

    def put_raw(self, relkey: str, text: str | None) -> None:
        """Write (None: delete) one raw key under the cluster's prefix, bypassing all validation."""
        code = (
            "import asyncio, sys\n"
            "from director.cluster.store import EtcdStore\n"
            "async def main():\n"
            f"    async with EtcdStore({self.endpoints!r}, prefix='/lbd',\n"
            f"                         cluster={self.lab.name!r}) as st:\n"
            f"        key = st.root + '/' + {relkey!r}\n"
            f"        text = {text!r}\n"
            "        await (st.delete(key) if text is None else st.put(key, text))\n"
            "asyncio.run(main())\n"
        )
        self.lab.run_python(self.lab.ctl.ns, code, timeout=60)

    def bring_up(self, services_yaml: str, timeout: float = 60.0) -> NodeProc:
        """Lab, etcd, config; the first node becomes master, then the others start and sync.

        Returns the master. Every step waits on a condition (never a fixed sleep)."""
        self.lab.up()
        self.start_etcd()
        self.apply_config(services_yaml)
        first, *rest = self.nodes
        self.start_node(first)
        try:
            wait_for(f"{first.node_id} to become master", lambda: self.is_forwarding(first), timeout)
        except ClusterError as err:  # say why: the node's own words
            raise ClusterError(f"{err}\n--- {first.node_id} log tail ---\n{node_log_tail(first)}") from None
        for node in rest:
            self.start_node(node)
        for node in rest:
            self.wait_in_sync(node, timeout)
        return first

    # -- nodes ----------------------------------------------------------------------------------------
    def start_node(self, node: NodeProc) -> None:
        node.config.write_text(self.node_yaml(node))
        node.started_at = time.time()
        logf = open(node.log, "ab")  # noqa: SIM115 - handed to the child
        ns = self.node_ns(node)
        if self.node_prefix:
            self.lab.workdir.chmod(0o1777)
        argv = [PYTHON, "-m", "director.daemon", "-c", str(node.config), "--lease-file", str(node.lease_file)]
        node.proc = self.lab.popen(ns, [*self.node_prefix, *argv], stdout=logf, stderr=subprocess.STDOUT)
        logf.close()

    def kill_node(self, node: NodeProc, *, exit_hook: bool = True) -> float:
        """kill -9 the node's process group; returns the wall-clock time of the kill.

        With `exit_hook` the launcher then does what systemd's ``ExecStopPost=`` does on a real host:
        once the process group is reaped, release the dead node's etcd lease
        (``python -m director.cluster.release``). Without it, the node is lost the way a host is: its
        lease runs out in etcd."""
        if node.proc is None:
            raise ClusterError(f"{node.node_id} is not running")
        t = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait()  # blocking waitpid: SIGKILL cannot be ignored, and no polling delay
        node.proc = None
        if exit_hook:
            self.run_exit_hook(node)
        return t

    def run_exit_hook(self, node: NodeProc) -> str:
        """The process-exit hook (stands in for ``ExecStopPost=``); returns what it printed."""
        ns = self.node_ns(node)
        # nsenter joins the node's network namespace only (no sysfs remount like `ip netns exec`);
        # the hook needs nothing outside the standard library, so python starts without site (-S)
        res = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", PYTHON, "-S", "-m",
                              "director.cluster.release", str(node.lease_file)],
                             capture_output=True, text=True, timeout=30,
                             cwd=str(Path(__file__).resolve().parent.parent))
        node.released_at = time.time()
        if res.returncode != 0:
            log.warning("exit hook of %s failed: %s", node.node_id, res.stderr.strip())
        return res.stdout.strip() or res.stderr.strip()

    def stop_node(self, node: NodeProc, timeout: float = 20.0) -> int:
        if node.proc is None:
            return 0
        rc = Lab.stop(node.proc, signal.SIGTERM, timeout=timeout)
        node.proc = None
        return rc

    def signal_node(self, node: NodeProc, sig: int) -> None:
        if node.proc is None:
            raise ClusterError(f"{node.node_id} is not running")
        # the process group leader is `ip netns exec`, which execs python: same PID
        node.proc.send_signal(sig)

    def node_ns(self, node: NodeProc) -> str:
        return self.lab.directors[node.n - 1].ns

    def cut(self, node: NodeProc, peers: Sequence[str], port: int | None = None) -> None:
        """Drop the node's kernel traffic to and from `peers` (TCP `port` only, if given): nftables in
        its namespace; cuts add up until `heal`."""
        addrs = "{ " + ", ".join(peers) + " }"
        out = f"ip daddr {addrs}" + (f" tcp dport {port}" if port else "")
        inp = f"ip saddr {addrs}" + (f" tcp sport {port}" if port else "")
        self.lab.exec(self.node_ns(node), ["nft", "add table inet lbdcut ; "
                      "add chain inet lbdcut out { type filter hook output priority 0 ; } ; "
                      "add chain inet lbdcut in { type filter hook input priority 0 ; } ; "
                      f"add rule inet lbdcut out {out} drop ; add rule inet lbdcut in {inp} drop"])

    def heal(self, node: NodeProc, check: bool = True) -> None:
        """Remove every `cut` of the node."""
        self.lab.exec(self.node_ns(node), ["nft", "delete table inet lbdcut"], check=check)

    # -- observation ------------------------------------------------------------------------------------
    def events(self, node: NodeProc) -> list[dict[str, Any]]:
        try:
            text = node.events.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                continue
        return out

    def last_event(self, node: NodeProc, kind: str, since: float = 0.0,
                   **match: Any) -> dict[str, Any] | None:
        for ev in reversed(self.events(node)):
            if ev["t"] < since:
                return None
            if ev["event"] == kind and all(ev.get(k) == v for k, v in match.items()):
                return dict(ev)
        return None

    def current_events(self, node: NodeProc) -> list[dict[str, Any]]:
        """Events of the node's current life (since its last start)."""
        return [ev for ev in self.events(node) if ev["t"] >= node.started_at]

    def is_forwarding(self, node: NodeProc) -> bool:
        for ev in reversed(self.current_events(node)):
            if ev["event"] in ("forwarding", "stopped_forwarding", "started", "stopped"):
                return bool(ev["event"] == "forwarding")
        return False

    def master(self) -> NodeProc | None:
        live = [n for n in self.nodes if n.proc is not None and self.is_forwarding(n)]
        return live[0] if len(live) == 1 else None

    def wait_master(self, timeout: float = 30.0) -> NodeProc:
        got: NodeProc = wait_for("a single master", self.master, timeout)
        return got

    def in_sync(self, node: NodeProc) -> bool:
        for ev in reversed(self.current_events(node)):
            if ev["event"] == "sync_state":
                return bool(ev.get("in_sync"))
            if ev["event"] == "started":
                return False
        return False

    def wait_in_sync(self, node: NodeProc, timeout: float = 60.0) -> None:
        wait_for(f"{node.node_id} in sync with the master", lambda: self.in_sync(node), timeout)

    def active_intervals(self, node: NodeProc,
                         killed_at: dict[str, list[float]]) -> list[tuple[float, float]]:
        """Wall-clock intervals during which `node` forwarded (from its events; a kill ends one)."""
        out: list[tuple[float, float]] = []
        start: float | None = None
        kills = sorted(killed_at.get(node.node_id, []))
        for ev in self.events(node):
            if ev["event"] == "forwarding" and start is None:
                start = ev["t"]
            elif ev["event"] in ("stopped_forwarding", "stopped", "started") and start is not None:
                end = ev["t"]
                if ev["event"] == "started":  # restarted after a kill: the interval ended at the kill
                    end = next((k for k in kills if k >= start), ev["t"])
                out.append((start, end))
                start = None
        if start is not None:
            end = next((k for k in kills if k >= start), time.time()) if node.proc is None else time.time()
            out.append((start, end))
        return out

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                try:
                    self.stop_node(node, timeout=10)
                except Exception:  # teardown goes on whatever a node does
                    log.exception("stopping %s", node.node_id)
        self.etcd.close()


def split_brain(intervals: dict[str, list[tuple[float, float]]]) -> list[tuple[str, str, float]]:
    """Pairs of nodes whose forwarding intervals overlap, with the overlap in seconds."""
    names = sorted(intervals)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for s1, e1 in intervals[a]:
                for s2, e2 in intervals[b]:
                    overlap = min(e1, e2) - max(s1, s2)
                    if overlap > 0:
                        out.append((a, b, overlap))
    return out


def node_log_tail(node: NodeProc, n: int = 30) -> str:
    try:
        return "\n".join(node.log.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""
