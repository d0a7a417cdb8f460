"""The chaos run's lab: 3 directors, a 3-member etcd, 4 real servers, and the hands that hurt them.

Theory of operation
-------------------
`ChaosLab` builds a `deploy.cluster.LabCluster` with three nodes and a three-member etcd cluster
(`deploy.etcd.EtcdCluster`, one namespace per member) and writes three services: ``stream`` (TCP
echo, Maglev, r1-r3), ``probe`` (UDP echo, Maglev, r1-r3) and ``web`` (HTTP, wlc, persistent, r1-r4,
HTTP health checks, ``expire_quiescent_template``: the sticky clients of a failed dest move). r4
serves only ``web``: it is the server that flaps (its processes are stopped and started), so a flap
costs no echo stream and moves only the sticky clients of r4.

It also runs what goes on *beside* the schedule:

* `Writers`: two threads, each through another node's admin API (unix socket), edit the weights of
  the same six dests as fast as their answers come back (a pause of 0.3 s between writes). Each
  acknowledged write is recorded with the revision etcd gave it; a failed call that was not an explicit
  refusal is recorded as a write of unknown outcome. A writer whose node is down moves to the next.
* `Sampler`: every 5 s, each node process's RSS and fd count (``/proc``) and its table size (Status).

The fault verbs (`kill`, `freeze`, `cut_etcd`, ...) act on nodes and members given by the runner.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml

from deploy.chaos_judge import Sample, Write
from deploy.cluster import SYNC_PORT, LabCluster, NodeProc, wait_for
from deploy.etcd import EtcdCluster
from deploy.lab import VIP_NAT, Lab, director_int, real_addr
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc

HC = "{type: http, path: /, interval: 0.2, timeout: 0.5, rise: 2, fall: 2}"
FLAP_SERVER = 4
STREAM = pb.ServiceRef(protocol="tcp", vip=VIP_NAT, port=7)
WEB = pb.ServiceRef(protocol="tcp", vip=VIP_NAT, port=80)
WRITE_TARGETS = [("stream", STREAM, real_addr(i), 7) for i in (1, 2, 3)] + \
                [("web", WEB, real_addr(i), 80) for i in (1, 2, 3)]
REFUSALS = (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED)
"""Answers that say the write was not made (anything else failing may or may not have committed)."""


def _service(name: str, proto: str, port: int, sched: str, servers: Sequence[int], more: str = "",
             hc: bool = False) -> str:
    extra = f", healthcheck: {HC}" if hc else ""
    dests = "".join(f"      - {{address: {real_addr(i)}, port: {port}, weight: 1{extra}}}\n" for i in servers)
    return (f"  - name: {name}\n    protocol: {proto}\n    vip: {VIP_NAT}\n    port: {port}\n"
            f"    scheduler: {sched}\n    forward: nat\n{more}    dests:\n{dests}")


def services_yaml() -> str:
    return "timeouts: {tcp: 900, tcpfin: 120, udp: 300}\nservices:\n" + "".join([
        _service("stream", "tcp", 7, "mh", (1, 2, 3)), _service("probe", "udp", 7, "mh", (1, 2, 3)),
        _service("web", "tcp", 80, "wlc", (1, 2, 3, 4),
                 "    persistence: {timeout: 300}\n    expire_quiescent_template: true\n", hc=True)])


def weight_key(svc: str, addr: str, port: int) -> str:
    return f"{svc}/{addr}:{port}/weight"


def config_view(text: str) -> dict[str, str]:
    """A node's running config (GetConfig YAML) as the judge's key -> value map."""
    doc = yaml.safe_load(text) or {}
    out = {}
    for svc in doc.get("services") or []:
        for d in svc.get("dests") or []:
            out[weight_key(svc["name"], str(d["address"]), int(d["port"]))] = str(d.get("weight", 1))
    for k, v in (doc.get("timeouts") or {}).items():
        out[f"timeouts/{k}"] = f"{float(v):g}"
    return out


class ChaosLab:
    def __init__(self, lab_name: str | None = None) -> None:
        self.lab = Lab(lab_name, n_directors=3, n_reals=FLAP_SERVER)
        self.cluster = LabCluster(self.lab, n_nodes=3, etcd_members=3)
        self.kills: dict[str, list[float]] = {}
        self.server_down: dict[str, list[tuple[float, float]]] = {}
        self._channels: dict[str, grpc.Channel] = {}

    @property
    def etcd(self) -> EtcdCluster:
        assert isinstance(self.cluster.etcd, EtcdCluster)
        return self.cluster.etcd

    def bring_up(self) -> None:
        self.cluster.bring_up(services_yaml(), timeout=120)
        nodes = self.cluster.nodes
        wait_for("admin sockets", lambda: all(self.cluster.admin_socket(n).exists() for n in nodes), 60)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self.cluster.close()
        self.lab.down()

    # -- admin API ----------------------------------------------------------------------------------
    def stub(self, node: NodeProc) -> Any:
        if node.node_id not in self._channels:
            self._channels[node.node_id] = grpc.insecure_channel(f"unix:{self.cluster.admin_socket(node)}")
        return pb_grpc.AdminStub(self._channels[node.node_id])

    def running_config(self, node: NodeProc) -> dict[str, str]:
        return config_view(self.stub(node).GetConfig(pb.GetConfigRequest(), timeout=10).yaml)

    def stream_table(self, node: NodeProc) -> frozenset[str]:
        req = pb.ListConnsRequest(service=STREAM, state="ESTABLISHED")
        return frozenset(f"{c.caddr}:{c.cport}>{c.daddr}:{c.dport}"
                         for resp in self.stub(node).ListConns(req, timeout=20) for c in resp.conns)

    def set_timeouts(self, values: dict[str, float], writes: list[Write]) -> str:
        for node in self.live_nodes():
            try:
                rev = self.stub(node).SetTimeouts(pb.SetTimeoutsRequest(timeouts=values), timeout=10).revision
            except grpc.RpcError as exc:
                if exc.code() not in REFUSALS:
                    writes.extend(Write(f"timeouts/{k}", f"{v:g}", 0) for k, v in values.items())
                continue
            writes.extend(Write(f"timeouts/{k}", f"{v:g}", int(rev)) for k, v in values.items())
            return node.node_id
        return "nobody"

    # -- nodes ----------------------------------------------------------------------------------------
    def live_nodes(self) -> list[NodeProc]:
        return [n for n in self.cluster.nodes if n.proc is not None]

    def backups(self, master: NodeProc) -> list[NodeProc]:
        return [n for n in self.live_nodes() if n is not master]

    def kill(self, node: NodeProc) -> None:
        self.kills.setdefault(node.node_id, []).append(self.cluster.kill_node(node))

    def freeze(self, node: NodeProc, on: bool) -> None:
        self.cluster.signal_node(node, signal.SIGSTOP if on else signal.SIGCONT)

    def cut_etcd(self, node: NodeProc) -> None:
        self.cluster.cut(node, [m.host for m in self.etcd.members], self.etcd.client_port)

    def cut_backups(self, master: NodeProc) -> None:
        self.cluster.cut(master, [director_int(b.n) for b in self.backups(master)])

    def heal(self, node: NodeProc) -> None:
        self.cluster.heal(node, check=False)

    # -- real servers -----------------------------------------------------------------------------------
    def stop_server(self, n: int) -> None:
        """Stop real server `n`'s processes (the lab started them; they are found by its namespace)."""
        ns = self.lab.reals[n - 1].ns
        self.server_down.setdefault(f"r{n}", []).append((time.time(), float("inf")))
        self.lab._kill_ns_pids(ns)
        (self.lab.workdir / f"{ns}.ready").unlink(missing_ok=True)

    def start_server(self, n: int) -> None:
        ns = self.lab.reals[n - 1].ns
        wait_for(f"r{n} processes gone", lambda: not subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split(), 20)
        self.lab.ensure_servers()
        down = self.server_down[f"r{n}"]
        down[-1] = (down[-1][0], time.time())


class Writers:
    """Two concurrent config writers through different nodes' admin APIs (see the module docstring)."""

    def __init__(self, chaos: ChaosLab, seed: int, n: int = 2, pause: float = 0.3) -> None:
        self.chaos, self.seed, self.n, self.pause = chaos, seed, n, pause
        self.writes: list[Write] = []
        self.errors: dict[str, int] = {}
        self.error_details: dict[str, list[str]] = {}
        """The first few answers of each failing kind, with their time (for the report)."""
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(n)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(60)

    def _run(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        nodes = self.chaos.cluster.nodes
        at = k % len(nodes)
        while not self.stopping.is_set():
            node = nodes[at]
            svc, ref, addr, port = rng.choice(WRITE_TARGETS)
            weight = rng.randint(1, 5)
            if node.proc is None:
                at = (at + 1) % len(nodes)
                self.stopping.wait(0.2)
                continue
            req = pb.EditDestRequest(service=ref, address=addr, port=port, weight=weight)
            key = weight_key(svc, addr, port)
            try:
                rev = self.chaos.stub(node).EditDest(req, timeout=5).revision
                self._record(Write(key, str(weight), int(rev)), None)
            except grpc.RpcError as exc:
                code = exc.code()
                detail = f"{time.strftime('%H:%M:%S')} via {node.node_id}: {exc.details()}"
                self._record(None if code in REFUSALS else Write(key, str(weight), 0), code.name, detail)
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    at = (at + 1) % len(nodes)
            self.stopping.wait(self.pause)

    def _record(self, w: Write | None, err: str | None, detail: str = "") -> None:
        with self.lock:
            if w is not None:
                self.writes.append(w)
            if err is not None:
                self.errors[err] = self.errors.get(err, 0) + 1
                seen = self.error_details.setdefault(err, [])
                if len(seen) < 5:
                    seen.append(detail)

    @property
    def acknowledged(self) -> int:
        return sum(1 for w in self.writes if w.revision)


class Sampler:
    """RSS, fds and table size of every node process, every `every` seconds, on a thread."""

    def __init__(self, chaos: ChaosLab, every: float = 5.0) -> None:
        self.chaos, self.every = chaos, every
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    def _run(self) -> None:
        while not self.stopping.wait(self.every):
            for node in self.chaos.live_nodes():
                s = self.sample(node)
                if s is not None:
                    self.samples.append(s)

    def sample(self, node: NodeProc) -> Sample | None:
        proc = node.proc
        if proc is None:
            return None
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            if "\nState:\tT" in status:  # frozen: its table answer would time out
                return None
            rss = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
            fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
            conns = int(self.chaos.stub(node).Status(pb.StatusRequest(), timeout=2).conns)
        except (OSError, StopIteration, grpc.RpcError):
            return None
        return Sample(node.node_id, proc.pid, time.time(), rss, fds, conns)


__all__ = ["SYNC_PORT", "ChaosLab", "Sampler", "Writers", "config_view", "services_yaml"]
