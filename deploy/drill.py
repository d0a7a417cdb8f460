"""The failover drill (`make demo`, `directorctl drill`): kill -9 the master, then switch back.

Theory of operation
-------------------
1. Build a lab (client, two directors, three real servers, etcd in the control namespace), write
   three services into etcd — ``stream`` (TCP echo, Maglev hashing, NAT), ``probe`` (UDP echo,
   Maglev, NAT: a 200/s datagram probe shows the raw outage) and ``web`` (HTTP, wlc, persistent 300 s,
   NAT) — and start `directord` on both directors. Wait until one is master
   and the other's table is in sync.
2. Start the traffic tool (deploy.traffic) in the client namespace: N long-lived echo connections
   checked byte for byte, and a steady stream of new HTTP connections from ten client addresses
   whose real server is remembered (persistence).
3. Phase ``kill``: kill -9 the master. The backup's election wins once the lease expires; it answers
   ARP, sends gratuitous ARPs and forwards from its synced table. ``takeover_ms`` runs from the kill
   to the first packet the new master forwarded (its own event log, same wall clock).
4. The old master restarts, resyncs (a snapshot from the new master), and only then is eligible.
5. Phase ``switchback``: ``directorctl failover`` against the current master's admin socket — a
   graceful resign (flush sync to every backup, stop forwarding, revoke the lease); the old master
   takes over again.
Each phase ends once every client address has made two new connections after the takeover and no
connection is stalled. Split brain is checked from both nodes' forwarding intervals.
The report goes to stdout (human) and to ``--report`` (JSON, one entry per phase).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from deploy.cluster import ClusterError, LabCluster, NodeProc, node_log_tail, split_brain, wait_for
from deploy.lab import PYTHON, VIP_NAT, Lab, real_addr

SERVICES = """\
timeouts: {{tcp: 900, tcpfin: 120, udp: 300}}
services:
  - name: stream
    protocol: tcp
    vip: {vip}
    port: 7
    scheduler: mh
    forward: nat
    dests:
{stream_dests}
  - name: probe
    protocol: udp
    vip: {vip}
    port: 7
    scheduler: mh
    forward: nat
    dests:
{stream_dests}
  - name: web
    protocol: tcp
    vip: {vip}
    port: 80
    scheduler: wlc
    persistence: {{timeout: 300}}
    forward: nat
    dests:
{web_dests}
"""


def services_yaml(n_reals: int) -> str:
    def dests(port: int) -> str:
        return "\n".join(f"      - {{address: {real_addr(i)}, port: {port}, weight: 1}}"
                         for i in range(1, n_reals + 1))
    return SERVICES.format(vip=VIP_NAT, stream_dests=dests(7), web_dests=dests(80))


class TrafficProc:
    """The traffic tool in the client namespace, driven over its stdin/stdout."""

    def __init__(self, lab: Lab, conns: int, new_rate: float, interval: float,
                 udp_rate: float = 200.0) -> None:
        sources = lab.client_sources()
        self.n_sources = len(sources)
        argv = [PYTHON, "-m", "deploy.traffic", "--echo-vip", VIP_NAT, "--http-vip", VIP_NAT,
                "--conns", str(conns), "--interval", str(interval), "--new-rate", str(new_rate),
                "--sources", ",".join(sources), "--udp-rate", str(udp_rate)]
        self.proc = lab.popen(lab.client.ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, out: IO[bytes] | None) -> None:
        assert out is not None
        for line in out:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()

    def report(self, timeout: float = 30.0) -> dict[str, Any]:
        self.send("report")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError("traffic tool did not report")
            msg = self.lines.get(timeout=left)
            if "alive" in msg:
                return msg

    def phase(self, name: str) -> None:
        self.send(f"phase {name}")

    def stop(self) -> dict[str, Any] | None:
        try:
            self.send("stop")
            msg = self.lines.get(timeout=20)
        except (OSError, queue.Empty):
            msg = None
        Lab.stop(self.proc, signal.SIGTERM)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return msg


class Drill:
    def __init__(self, *, conns: int = 200, new_rate: float = 25.0, interval: float = 0.05,
                 n_reals: int = 3, tuned_etcd: bool = True, lab_name: str | None = None,
                 out: IO[str] = sys.stdout) -> None:
        self.conns = conns
        self.new_rate = new_rate
        self.interval = interval
        self.out = out
        self.lab = Lab(lab_name, n_directors=2, n_reals=n_reals)
        self.n_reals = n_reals
        self.cluster = LabCluster(self.lab, n_nodes=2, tuned_etcd=tuned_etcd)
        self.traffic: TrafficProc | None = None
        self.kills: dict[str, list[float]] = {}

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.out, flush=True)

    # -- setup --------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.say(f"lab {self.lab.name}: building namespaces (client, 2 directors, "
                 f"{self.n_reals} real servers)")
        self.cluster.bring_up(services_yaml(self.n_reals))
        self.say("etcd up, 3 services in etcd, d1 is master, d2 follows d1 and is in sync")
        self.traffic = TrafficProc(self.lab, self.conns, self.new_rate, self.interval)
        n_src = self.traffic.n_sources
        self.say(f"client: opening {self.conns} long-lived connections, new sticky connections from "
                 f"{n_src} addresses")
        wait_for("all connections open and every client address bound", lambda: self._ready(n_src), 90, 0.5)
        self.say("traffic flowing")

    def _ready(self, n_src: int) -> bool:
        assert self.traffic is not None
        r = self.traffic.report()
        return bool(r["alive"] >= self.conns and r["sticky_sources"] >= n_src)

    # -- phases -------------------------------------------------------------------------------------
    def _settle(self, since_ok: int) -> dict[str, Any]:
        """Wait until every client address made two new conns after the takeover and nothing stalls."""
        assert self.traffic is not None
        need = since_ok + 2 * self.traffic.n_sources
        stall_ok = max(1000.0, self.interval * 1000 * 10)

        def settled() -> dict[str, Any] | None:
            assert self.traffic is not None
            r = self.traffic.report()
            done = r["new_ok"] >= need and r["current_stall_ms"] < stall_ok
            return r if done else None

        got: dict[str, Any] = wait_for("traffic to settle after the takeover", settled, 120, 0.5)
        return got

    def _takeover(self, new: NodeProc, since: float, timeout: float = 60.0) -> float:
        c = self.cluster
        ev = wait_for(f"{new.node_id} to forward its first packet",
                      lambda: c.last_event(new, "first_forward", since), timeout)
        return (float(ev["t"]) - since) * 1000.0

    def _phase_result(self, start: dict[str, Any], end: dict[str, Any], takeover_ms: float) -> dict[str, Any]:
        total = int(start["alive"])
        return {
            "connections_total": total,
            "connections_survived": min(total, int(end["alive"])),
            "resets_seen": int(end["resets"]) + int(end["mismatches"]),
            "bytes_verified": int(end["bytes_verified"]),
            "max_gap_ms": float(end["max_gap_ms"]),
            "takeover_ms": round(takeover_ms, 1),
            "templates_total": int(start["sticky_sources"]),
            "templates_kept": int(start["sticky_sources"]) - len(end["sources_moved"]),
            "new_connections_ok": int(end["new_ok"]),
            "new_connections_failed": int(end["new_failed"]),
            "udp_max_gap_ms": float(end["udp_max_gap_ms"]),
            "udp_lost": int(end["udp_sent"]) - int(end["udp_received"]),
        }

    def phase_kill(self) -> dict[str, Any]:
        assert self.traffic is not None
        c = self.cluster
        old = c.wait_master()
        new = next(n for n in c.nodes if n is not old)
        self.traffic.phase("kill")
        start = self.traffic.report()
        self.say(f"phase kill: kill -9 {old.node_id} (master) with {start['alive']} connections open")
        t_kill = c.kill_node(old)
        self.kills.setdefault(old.node_id, []).append(t_kill)
        takeover = self._takeover(new, t_kill)
        self.say(f"{new.node_id} took over: first packet forwarded {takeover:.0f} ms after the kill")
        ok_at = self.traffic.report()["new_ok"]
        end = self._settle(ok_at)
        return self._phase_result(start, end, takeover)

    def rejoin(self, node: NodeProc) -> None:
        self.say(f"{node.node_id}: restarting as a backup")
        self.cluster.start_node(node)
        self.cluster.wait_in_sync(node, 90)
        self.say(f"{node.node_id} resynced (snapshot applied, following live)")

    def phase_switchback(self, to: NodeProc) -> dict[str, Any]:
        assert self.traffic is not None
        c = self.cluster
        cur = c.wait_master()
        self.traffic.phase("switchback")
        start = self.traffic.report()
        self.say(f"phase switchback: `directorctl failover` on {cur.node_id} (graceful resign)")
        t0 = time.time()
        ctl = subprocess.run([PYTHON, "-m", "director.admin.cli", "--addr", f"unix:{c.admin_socket(cur)}",
                              "failover"], capture_output=True, text=True, timeout=60)
        for line in ctl.stdout.splitlines():
            self.say(f"  directorctl: {line}")
        if ctl.returncode != 0:
            raise ClusterError(f"directorctl failover failed ({ctl.returncode}): {ctl.stderr.strip()}")
        # the outage starts when the old master stops forwarding (after the CLI started and sync flushed)
        stop = wait_for(f"{cur.node_id} to stop forwarding",
                        lambda: c.last_event(cur, "stopped_forwarding", t0), 60)
        takeover = self._takeover(to, float(stop["t"]))
        self.say(f"{to.node_id} is master again: first packet forwarded {takeover:.0f} ms after "
                 f"{cur.node_id} stopped forwarding")
        ok_at = self.traffic.report()["new_ok"]
        end = self._settle(ok_at)
        return self._phase_result(start, end, takeover)

    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        try:
            self.setup()
            d1, _d2 = self.cluster.nodes
            report["kill"] = self.phase_kill()
            self.rejoin(d1)
            report["switchback"] = self.phase_switchback(d1)
            intervals = {n.node_id: self.cluster.active_intervals(n, self.kills) for n in self.cluster.nodes}
            overlaps = split_brain(intervals)
            for phase in report.values():
                phase["split_brain_seen"] = bool(overlaps)
            report["lab"] = self.lab.name
        except Exception:
            for n in self.cluster.nodes:
                print(f"--- {n.node_id} log tail ---\n{node_log_tail(n)}", file=self.out)
            raise
        finally:
            self.teardown()
        return report

    def teardown(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        self.cluster.close()
        self.lab.down()


def summary(report: dict[str, Any]) -> str:
    lines = []
    for name in ("kill", "switchback"):
        p = report.get(name)
        if not p:
            continue
        lines.append(
            f"{name:>10}: {p['connections_survived']}/{p['connections_total']} connections survived, "
            f"{p['resets_seen']} resets, {p['bytes_verified']:,} bytes verified, worst stall "
            f"{p['max_gap_ms']:.0f} ms (UDP {p['udp_max_gap_ms']:.0f} ms), "
            f"takeover {p['takeover_ms']:.0f} ms, "
            f"templates kept "
            f"{p['templates_kept']}/{p['templates_total']}, split brain: "
            f"{'YES' if p['split_brain_seen'] else 'no'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="drill", description="run the failover drill in a fresh lab")
    p.add_argument("--conns", type=int, default=200, help="long-lived verified TCP connections (200)")
    p.add_argument("--new-rate", type=float, default=25.0, help="new sticky HTTP connections per second")
    p.add_argument("--etcd-defaults", action="store_true", help="etcd default heartbeat/election settings")
    p.add_argument("--report", default="demo-report.json", help="where to write the JSON report")
    args = p.parse_args(argv)
    drill = Drill(conns=args.conns, new_rate=args.new_rate, tuned_etcd=not args.etcd_defaults)
    report = drill.run()
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"report written to {args.report}")
    ok = all(report[k]["connections_survived"] == report[k]["connections_total"]
             and not report[k]["split_brain_seen"] for k in ("kill", "switchback"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
