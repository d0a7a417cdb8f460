"""The chaos run (`make chaos`, `directorctl drill --chaos`): seeded random faults under load, judged
from outside.

Theory of operation
-------------------
1. Build the chaos lab (deploy.chaos_lab: three directors, a three-member etcd with one member per
   namespace, four real servers, services ``stream``/``probe``/``web``), start the fabric observer
   (captures on every director port), the client (deploy.chaos_traffic: verified echo streams, new
   sticky HTTP connections from ten addresses, UDP datagrams with sequence numbers), the two config
   writers and the resource sampler.
2. Draw the schedule from the seed (deploy.chaos_schedule) and run it fault after fault: each starts at
   its planned time (or when the previous one recovered, if later), is held, healed, and then the run
   waits for *recovery*: every etcd member healthy, every node running, one master, every backup in
   sync, and the traffic settled (every client address made new connections, no stream stalled). The
   client's counters are per fault (``phase``), so every lost connection belongs to one fault.
3. At the end: the writers stop, the run waits (bounded) for every node's config to hold the
   acknowledged writes and every backup's table to equal the master's, reads both through the admin
   API, stops the load and hands everything to the judge (deploy.chaos_judge).
4. Output: ``chaos-report.json`` (seed, schedule, ``violations``, per-fault figures, writes, resources),
   a human summary on stdout, exit code 1 on any violation. ``make chaos SEED=s MINUTES=m`` replays a
   run exactly: the schedule is a function of the seed; what the system does under it is the test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from deploy.chaos_judge import FaultObs, Move, Observations, expected_config, judge
from deploy.chaos_lab import FLAP_SERVER, ChaosLab, Sampler, Writers
from deploy.chaos_schedule import KINDS, Fault, describe, make_schedule
from deploy.chaos_traffic import TrafficDriver
from deploy.cluster import ClusterError, NodeProc, node_log_tail, wait_for
from deploy.etcd import EtcdServer
from deploy.observer import FabricObserver

SETTLE_TIMEOUT_S = 120.0
CONVERGE_TIMEOUT_S = 60.0


class ChaosRun:
    def __init__(self, seed: int, minutes: float, *, conns: int = 40, new_rate: float = 10.0,
                 interval: float = 0.1, udp_rate: float = 50.0, out: IO[str] = sys.stdout,
                 lab_name: str | None = None, kinds: dict[str, float] | None = None,
                 logs_dir: Path | None = None) -> None:
        self.logs_dir = logs_dir
        self.seed, self.minutes, self.out = seed, minutes, out
        self.conns, self.new_rate, self.interval, self.udp_rate = conns, new_rate, interval, udp_rate
        self.kinds = kinds
        self.schedule = make_schedule(seed, minutes, kinds)
        self.chaos = ChaosLab(lab_name)
        self.observer = FabricObserver(self.chaos.lab, [1, 2, 3])
        self.writers = Writers(self.chaos, seed)
        self.sampler = Sampler(self.chaos)
        self.traffic: TrafficDriver | None = None
        self.faults: list[FaultObs] = []
        self.notes: list[str] = []

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.out, flush=True)

    # -- setup ------------------------------------------------------------------------------------------
    def setup(self) -> None:
        lab = self.chaos.lab
        self.say(f"lab {lab.name}: 3 directors, 3 etcd members (one namespace each), "
                 f"{FLAP_SERVER} real servers")
        self.chaos.bring_up()
        self.observer.start()
        traffic = TrafficDriver(lab, self.conns, self.new_rate, self.interval, self.udp_rate)
        self.traffic = traffic
        traffic.wait_flowing(self.conns, 120)
        self.writers.start()
        self.sampler.start()
        self.say(f"load: {self.conns} verified streams, {self.new_rate:g} new sticky conns/s from "
                 f"{traffic.n_sources} addresses, {self.udp_rate:g} UDP datagrams/s; 2 config writers")

    # -- the schedule --------------------------------------------------------------------------------------
    def run_schedule(self) -> None:
        t_start = time.time()
        end = t_start + self.minutes * 60.0
        for f in self.schedule:
            wait_s = t_start + f.at_s - time.time()
            if wait_s > 0:
                time.sleep(wait_s)
            if time.time() + f.hold_s > end:
                break
            obs = self.do_fault(f)
            self.faults.append(obs)
            if not obs.settled:
                self.notes.append(f"stopped after fault {f.index}: the cluster did not recover")
                break
            time.sleep(f.gap_s)

    def do_fault(self, f: Fault) -> FaultObs:
        assert self.traffic is not None
        self.traffic.phase(f"f{f.index}")
        t0 = time.time()
        target = self.actions()[f.kind](f)
        t_heal = time.time()
        settled = self.recover()
        rep = self.traffic.report()
        obs = FaultObs(f.index, f.kind, target, t0, t_heal, time.time(),
                       lost=int(rep["resets"]) + int(rep["mismatches"]), settled=settled,
                       udp_sent=int(rep["udp_sent"]), udp_received=int(rep["udp_received"]),
                       max_gap_ms=float(rep["max_gap_ms"]), new_failed=int(rep["new_failed"]))
        self.say(f"fault {f.index:3d} {f.kind:<27} {target:<10} healed +{t_heal - t0:5.1f}s, recovered "
                 f"+{obs.t_end - t0:5.1f}s, lost {obs.lost}, worst stall {obs.max_gap_ms:.0f} ms")
        return obs

    def actions(self) -> dict[str, Callable[[Fault], str]]:
        return {
            "kill-master": lambda f: self._kill(self._master(), f),
            "kill-backup": lambda f: self._kill(self._backup(f), f),
            "freeze-master": lambda f: self._freeze(self._master(), f),
            "freeze-backup": lambda f: self._freeze(self._backup(f), f),
            "cut-master-etcd": lambda f: self._cut(self._master(), f, self.chaos.cut_etcd),
            "cut-backup-etcd": lambda f: self._cut(self._backup(f), f, self.chaos.cut_etcd),
            "cut-master-backups": lambda f: self._cut(self._master(), f, self.chaos.cut_backups),
            "restart-backup": self._restart_backup,
            "etcd-kill-leader": lambda f: self._etcd_kill(self.chaos.etcd.wait_leader(), f),
            "etcd-kill-follower": lambda f: self._etcd_kill(self._follower(f), f),
            "etcd-quorum-loss": lambda f: self._quorum_loss(f, None),
            "etcd-pause": self._etcd_pause,
            "dest-flap": self._dest_flap,
            "timeouts": self._timeouts,
            "master-dies-in-quorum-loss": lambda f: self._quorum_loss(f, self._master()),
        }

    def _master(self) -> NodeProc:
        return self.chaos.cluster.wait_master(60)

    def _backup(self, f: Fault) -> NodeProc:
        backups = self.chaos.backups(self._master())
        return backups[f.pick % len(backups)]

    def _follower(self, f: Fault) -> EtcdServer:
        etcd = self.chaos.etcd
        etcd.wait_leader()
        followers = etcd.followers()
        return followers[f.pick % len(followers)]

    def _kill(self, node: NodeProc, f: Fault) -> str:
        self.chaos.kill(node)
        time.sleep(f.hold_s)
        self.chaos.cluster.start_node(node)
        return node.node_id

    def _freeze(self, node: NodeProc, f: Fault) -> str:
        self.chaos.freeze(node, True)
        try:
            time.sleep(f.hold_s)
        finally:
            self.chaos.freeze(node, False)
        return node.node_id

    def _cut(self, node: NodeProc, f: Fault, cut: Callable[[NodeProc], None]) -> str:
        cut(node)
        try:
            time.sleep(f.hold_s)
        finally:
            self.chaos.heal(node)
        return node.node_id

    def _restart_backup(self, f: Fault) -> str:
        node = self._backup(f)
        self.chaos.cluster.stop_node(node)
        self.chaos.cluster.start_node(node)
        return node.node_id

    def _etcd_kill(self, member: EtcdServer, f: Fault) -> str:
        member.kill()
        time.sleep(f.hold_s)
        self.chaos.etcd.start_member(member, wait=False)
        return "e" + member.name.rsplit("-", 1)[-1]

    def _etcd_pause(self, f: Fault) -> str:
        etcd = self.chaos.etcd
        member = etcd.wait_leader() if f.params.get("leader") else self._follower(f)
        member.pause()
        try:
            time.sleep(f.hold_s)
        finally:
            member.resume()
        return "e" + member.name.rsplit("-", 1)[-1]

    def _quorum_loss(self, f: Fault, kill: NodeProc | None) -> str:
        etcd = self.chaos.etcd
        keep = etcd.members[f.pick % len(etcd.members)]
        stopped = [m for m in etcd.members if m is not keep]
        for m in stopped:
            m.stop()
        if kill is not None:
            self.chaos.kill(kill)
        time.sleep(f.hold_s)
        for m in stopped:
            etcd.start_member(m, wait=False)
        if kill is not None:
            self.chaos.cluster.start_node(kill)
        return kill.node_id if kill is not None else "etcd"

    def _dest_flap(self, f: Fault) -> str:
        self.chaos.stop_server(FLAP_SERVER)
        time.sleep(f.hold_s)
        self.chaos.start_server(FLAP_SERVER)
        return f"r{FLAP_SERVER}"

    def _timeouts(self, f: Fault) -> str:
        writes: list[Any] = []
        via = self.chaos.set_timeouts(dict(f.params), writes)
        with self.writers.lock:
            self.writers.writes.extend(writes)
        return via

    # -- recovery --------------------------------------------------------------------------------------
    def recover(self) -> bool:
        """Everything back and the traffic settled; False if that did not happen in time."""
        assert self.traffic is not None
        c, etcd = self.chaos.cluster, self.chaos.etcd
        traffic = self.traffic
        try:
            for m in etcd.members:
                if not m.running():
                    etcd.start_member(m, wait=False)
            for m in etcd.members:
                m.wait_healthy(60)
            for n in c.nodes:
                if n.proc is None:
                    c.start_node(n)
            master = c.wait_master(90)
            for n in c.nodes:
                if n is not master:
                    c.wait_in_sync(n, 120)
            traffic.wait_settled(int(traffic.report()["new_ok"]), SETTLE_TIMEOUT_S)
        except (ClusterError, RuntimeError) as err:
            self.say(f"did not recover: {err}")
            return False
        return True

    # -- the end ----------------------------------------------------------------------------------------
    def final_state(self) -> tuple[dict[str, dict[str, str]], dict[str, frozenset[str]], str]:
        """Each node's running config and table of streams, once they converged (or the wait ended)."""
        c = self.chaos.cluster
        master = c.master()
        expected = expected_config(self.writers.writes)

        def configs() -> dict[str, dict[str, str]]:
            return {n.node_id: self.chaos.running_config(n) for n in c.nodes if n.proc is not None}

        def tables() -> dict[str, frozenset[str]]:
            return {n.node_id: self.chaos.stream_table(n) for n in c.nodes if n.proc is not None}

        def agree(got: dict[str, dict[str, str]]) -> bool:
            return all(cfg.get(k) in ok for cfg in got.values() for k, ok in expected.items())
        with_timeout(lambda: agree(configs()), CONVERGE_TIMEOUT_S)
        if master is not None:
            with_timeout(lambda: len(set(tables().values())) == 1, CONVERGE_TIMEOUT_S)
        return configs(), tables(), master.node_id if master is not None else ""

    def run(self) -> dict[str, Any]:
        t_begin = time.time()
        try:
            self.setup()
            self.say(f"seed {self.seed}: {len(self.schedule)} faults planned in {self.minutes:g} min")
            self.run_schedule()
            self.writers.stop()
            self.recover()
            configs, tables, master = self.final_state()
        except Exception:
            for n in self.chaos.cluster.nodes:
                print(f"--- {n.node_id} log tail ---\n{node_log_tail(n)}", file=self.out)
            raise
        finally:
            self.writers.stop()
            self.sampler.stop()
            final = self.traffic.stop() if self.traffic is not None else None
            frames = self.observer.stop()
            lab_name = self.chaos.lab.name
            self.keep_logs()
            self.chaos.close()
        moves = [Move(float(m[0]), str(m[1]), str(m[2]), str(m[3]), int(m[4]), m[5], m[6])
                 for m in (final or {}).get("moves", [])]
        obs = Observations(frames=frames, faults=self.faults, moves=moves, server_down=self.chaos.server_down,
                           writes=list(self.writers.writes), configs=configs, tables=tables, master=master,
                           samples=list(self.sampler.samples))
        violations, figures = judge(obs)
        return self.report(obs, violations, figures, final or {}, lab_name, time.time() - t_begin)

    def keep_logs(self) -> None:
        """Copy every node's log and events and every etcd member's log out of the lab (which goes)."""
        if self.logs_dir is None:
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        sources = [(p, p.name) for n in self.chaos.cluster.nodes for p in (n.log, n.events)]
        sources += [(Path(m.log_path), f"{m.name}.log") for m in self.chaos.etcd.members]
        for src, name in sources:
            with contextlib.suppress(OSError):
                shutil.copyfile(src, self.logs_dir / name)

    def report(self, obs: Observations, violations: list[dict[str, Any]], figures: list[dict[str, Any]],
               final: dict[str, Any], lab_name: str, duration: float) -> dict[str, Any]:
        t0 = self.faults[0].t0 if self.faults else 0.0
        for fig in figures:
            fig["at_s"] = round(fig.pop("t") - t0, 1)
        resources: dict[str, Any] = {}
        for s in obs.samples:
            r = resources.setdefault(s.node, {"first": None, "last": None, "max_rss_kb": 0, "max_fds": 0})
            r["first"] = r["first"] or {"rss_kb": s.rss_kb, "fds": s.fds, "conns": s.conns}
            r["last"] = {"pid": s.pid, "rss_kb": s.rss_kb, "fds": s.fds, "conns": s.conns}
            r["max_rss_kb"], r["max_fds"] = max(r["max_rss_kb"], s.rss_kb), max(r["max_fds"], s.fds)
        return {
            "seed": self.seed, "minutes": self.minutes, "lab": lab_name, "duration_s": round(duration, 1),
            "replay": f"make chaos SEED={self.seed} MINUTES={self.minutes:g}"
                      + (f" KINDS={','.join(sorted(self.kinds))}" if self.kinds else ""),
            "schedule": [f.as_dict() for f in self.schedule],
            "faults_run": len(self.faults), "violations": violations, "faults": figures, "notes": self.notes,
            "writes": {"acknowledged": sum(1 for w in obs.writes if w.revision),
                       "unknown_outcome": sum(1 for w in obs.writes if not w.revision),
                       "errors": dict(self.writers.errors),
                       "error_samples": dict(self.writers.error_details)},
            "traffic": {k: v for k, v in final.items() if k not in ("moves", "stalls_ms", "servers")},
            "sticky_servers": final.get("servers", {}),
            "sticky_moves": len(obs.moves), "resources": resources,
            "final": {"master": obs.master, "table_sizes": {k: len(v) for k, v in obs.tables.items()}},
        }


def with_timeout(cond: Callable[[], bool], timeout: float) -> bool:
    """Poll `cond` until true or `timeout`; the judge decides what a false end means."""
    try:
        wait_for("convergence", cond, timeout, 0.5)
    except ClusterError:
        return False
    return True


def summary(report: dict[str, Any]) -> str:
    lines = [f"chaos run, seed {report['seed']}, {report['faults_run']} faults in "
             f"{report['duration_s'] / 60:.1f} min (replay: {report['replay']})",
             "  #   at s  fault                       target     nobody-fwd ms  overlap ms  lost  moves"
             "  new-failed"]
    for f in report["faults"]:
        lines.append(f"{f['index']:3d} {f['at_s']:6.1f}  {f['kind']:<27} {f['target']:<10} "
                     f"{f['nobody_forwarding_ms']:13.0f} {f['overlap_ms']:11.1f} {f['lost_connections']:5d}"
                     f"{'*' if f['documented_loss'] and f['lost_connections'] else ' '} {f['moves']:5d}"
                     f" {f['new_failed']:11d}")
    w = report["writes"]
    lines.append(f"writes: {w['acknowledged']} acknowledged, {w['unknown_outcome']} of unknown outcome; "
                 f"final master {report['final']['master'] or 'none'}, "
                 f"tables {report['final']['table_sizes']}")
    lines.append(f"sticky client addresses per server at the end: {report['sticky_servers']}; "
                 f"{report['sticky_moves']} moves")
    for node, r in sorted(report["resources"].items()):
        lines.append(f"{node}: RSS {r['first']['rss_kb'] // 1024} -> {r['last']['rss_kb'] // 1024} MiB, "
                     f"fds {r['first']['fds']} -> {r['last']['fds']}, table {r['first']['conns']} -> "
                     f"{r['last']['conns']}")
    lines.extend(f"note: {n}" for n in report["notes"])
    vs = report["violations"]
    lines.append(f"{len(vs)} violation(s)" + (":" if vs else ""))
    lines.extend(f"  [{v['rule']}] {v['what']}" for v in vs)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="chaos", description="seeded random faults under load, judged outside")
    p.add_argument("--seed", type=int, default=None, help="schedule seed (default: from the clock, printed)")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--report", default="chaos-report.json")
    p.add_argument("--conns", type=int, default=40, help="long-lived verified TCP streams")
    p.add_argument("--plan", action="store_true", help="print the schedule and exit")
    p.add_argument("--logs", default=None,
                   help="copy the nodes' and etcd's logs here (default: <report>-logs; '' for none)")
    p.add_argument("--kinds", default="", help="comma list: draw only these fault kinds (default: all)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    kinds = {k: KINDS[k] for k in args.kinds.split(",") if k} or None
    if args.kinds and set(args.kinds.split(",")) - set(KINDS):
        p.error(f"unknown kinds; choose from {', '.join(sorted(KINDS))}")
    if args.plan:
        print(describe(make_schedule(seed, args.minutes, kinds)))
        return 0
    report_path = Path(args.report)
    logs = Path(args.logs) if args.logs is not None else report_path.with_name(report_path.stem + "-logs")
    run = ChaosRun(seed, args.minutes, conns=args.conns, kinds=kinds,
                   logs_dir=None if args.logs == "" else logs)
    report = run.run()
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"report written to {args.report}")
    return 1 if report["violations"] or report["notes"] else 0


if __name__ == "__main__":
    sys.exit(main())
