"""The failover drill (`make demo`, `directorctl drill`): crash, switch back, freeze, etcd outage, partition.

Theory of operation
-------------------
1. Build a lab (client, two directors, three real servers, etcd in the control namespace), write
   five services into etcd — ``stream`` (TCP echo, Maglev hashing, NAT), ``probe`` (UDP echo,
   Maglev, NAT: a 200/s datagram probe shows the raw outage), ``web`` (HTTP, wlc, persistent 300 s,
   NAT), and their IPv6 twins ``stream6`` and ``web6`` on the IPv6 NAT VIP (fd00:18::10, dests the
   real servers' fd00:19:: addresses) — and start `directord` on both directors. Wait until one is
   master and the other's table is in sync.
2. Start the traffic tool (deploy.traffic) in the client namespace: N long-lived echo connections
   checked byte for byte (a quarter of them over IPv6, ``conns6``), and a steady stream of new HTTP
   connections from ten IPv4 and ten IPv6 client addresses whose real server is remembered
   (persistence). Every phase reports the IPv6 part on its own (``connections_total_v6``,
   ``templates_kept_v6``, ...); before a takeover the drill also reads the taking-over backup's table
   (``ListConns``: ``backup_v6_conns``, ``backup_v6_templates``), the synced IPv6 entries it forwards
   from.
3. Phase ``kill``: kill -9 the master. The backup's election wins once the lease expires; it answers
   ARP, sends gratuitous ARPs and forwards from its synced table. ``takeover_ms`` runs from the kill
   to the first packet the new master forwarded (its own event log, same wall clock).
4. The old master restarts, resyncs (a snapshot from the new master), and only then is eligible.
5. Phase ``switchback``: ``directorctl failover`` against the current master's admin socket — a
   graceful resign (flush sync to every backup, stop forwarding, revoke the lease); the old master
   takes over again.
6. Phase ``freeze``: SIGSTOP the master for 5 s (a VM freeze, a stopped container), then SIGCONT.
   The backup takes over once the lease is gone; the resumed node must forward nothing (its packet
   path checks the mastership deadline before every batch) and rejoins as a backup.
7. Phase ``etcd-outage``: every etcd member down for 60 s (``--outage``) under traffic. The master
   forwards on its backups' promises (static stability, docs/HA.md): same master throughout, no gap.
8. Phase ``partition``: the master is cut from etcd only (nftables in its namespace) for 20 s: no
   failover at all, no gap; it wins the key back when the cut heals.
Each phase ends once every client address has made two new connections after the fault and no
connection is stalled. The **fabric observer** (deploy.observer: captures on every director port of
both bridges) judges each phase: ``overlap_ms`` (two directors forwarding at once: must be 0) and
``nobody_forwarding_ms`` (the longest silence of the fabric during the phase). Split brain is also
checked from the nodes' own forwarding intervals.
The report goes to stdout (human), to ``--report`` (JSON, one entry per phase; ``timeline`` holds what
the pictures need: per node the fabric's frame rate, events, fault markers, every connection's worst
stall) and to ``--html`` (deploy.report: self-contained HTML, plots as inline SVG).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from deploy.cluster import ClusterError, LabCluster, NodeProc, node_log_tail, split_brain, wait_for
from deploy.lab import CTL_ADDR, PYTHON, VIP6_NAT, VIP_NAT, Lab, real_addr, real_addr6
from deploy.observer import FabricObserver, longest_silence, overlaps
from deploy.trafficproc import TrafficProc

PHASES = ("kill", "switchback", "freeze", "etcd-outage", "partition")
TIMELINE_BEFORE_S = 2.0
"""The report's timelines start this long before a phase's fault."""

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
SERVICES6 = """\
  - name: stream6
    protocol: tcp
    vip: "{vip6}"
    port: 7
    scheduler: mh
    forward: nat
    dests:
{stream_dests}
  - name: web6
    protocol: tcp
    vip: "{vip6}"
    port: 80
    scheduler: wlc
    persistence: {{timeout: 300}}
    forward: nat
    dests:
{web_dests}
"""


def services_yaml(n_reals: int, v6: bool = False) -> str:
    """The drill's services; ``v6``: with the IPv6 twins of ``stream`` and ``web`` (the drill's own lab;
    the other users of this document, cluster tests and benchmarks, keep the IPv4 three)."""
    def dests(port: int, addr: Callable[[int], str] = real_addr) -> str:
        quote = '"' if addr is real_addr6 else ""  # YAML: an IPv6 address is quoted
        return "\n".join(f"      - {{address: {quote}{addr(i)}{quote}, port: {port}, weight: 1}}"
                         for i in range(1, n_reals + 1))
    text = SERVICES.format(vip=VIP_NAT, stream_dests=dests(7), web_dests=dests(80))
    if v6:
        text += SERVICES6.format(vip6=VIP6_NAT, stream_dests=dests(7, real_addr6),
                                 web_dests=dests(80, real_addr6))
    return text


class Drill:
    def __init__(self, *, conns: int = 200, new_rate: float = 25.0, interval: float = 0.05,
                 n_reals: int = 3, tuned_etcd: bool = True, lab_name: str | None = None,
                 out: IO[str] = sys.stdout, phases: tuple[str, ...] = PHASES, freeze_s: float = 5.0,
                 outage_s: float = 60.0, partition_s: float = 20.0, workers: int = 1,
                 conns6: int | None = None) -> None:
        self.conns = conns
        self.conns6 = conns // 4 if conns6 is None else conns6
        """How many of the streams go over IPv6 (0: an IPv4-only drill)."""
        self.new_rate = new_rate
        self.interval = interval
        self.out = out
        self.lab = Lab(lab_name, n_directors=2, n_reals=n_reals)
        self.n_reals = n_reals
        self.cluster = LabCluster(self.lab, n_nodes=2, tuned_etcd=tuned_etcd,
                                  node_extra=f"workers: {workers}" if workers > 1 else "")
        self.traffic: TrafficProc | None = None
        self.kills: dict[str, list[float]] = {}
        self.phases = phases
        self.freeze_s, self.outage_s, self.partition_s = freeze_s, outage_s, partition_s
        self.observer = FabricObserver(self.lab, [n.n for n in self.cluster.nodes])

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=self.out, flush=True)

    # -- setup --------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.say(f"lab {self.lab.name}: building namespaces (client, 2 directors, "
                 f"{self.n_reals} real servers)")
        v6 = self.conns6 > 0
        self.cluster.bring_up(services_yaml(self.n_reals, v6))
        self.say(f"etcd up, {5 if v6 else 3} services in etcd, d1 is master, d2 follows d1 and is in sync")
        self.observer.start()
        self.say("fabric observer: capturing every director port on both bridges")
        self.traffic = TrafficProc(self.lab, self.conns, self.new_rate, self.interval, conns6=self.conns6)
        n_src = self.traffic.n_sources
        self.say(f"client: opening {self.conns} long-lived connections ({self.conns6} over IPv6), new sticky "
                 f"connections from {n_src} addresses")
        self.traffic.wait_flowing(self.conns, 90, "all connections open and every client address bound")
        self.say("traffic flowing")

    # -- phases -------------------------------------------------------------------------------------
    def _settle(self, since_ok: int) -> dict[str, Any]:
        """Wait until every client address made two new conns after the takeover and nothing stalls."""
        assert self.traffic is not None
        return self.traffic.wait_settled(since_ok, 120, max(1000.0, self.interval * 1000 * 10),
                                         "traffic to settle after the takeover")

    def _takeover(self, new: NodeProc, since: float, timeout: float = 60.0) -> float:
        c = self.cluster
        ev = wait_for(f"{new.node_id} to forward its first packet",
                      lambda: c.last_event(new, "first_forward", since), timeout)
        return (float(ev["t"]) - since) * 1000.0

    def _phase_result(self, start: dict[str, Any], end: dict[str, Any], takeover_ms: float,
                      t_start: float | None = None,
                      markers: list[tuple[float, str]] | None = None) -> dict[str, Any]:
        total = int(start["alive"])
        frames = self.observer.frames()
        # captures reach their files a little late: end the window at the newest frame written
        newest = max((ts[-1] for ts in frames.values() if ts), default=time.time())
        t0, t1 = (t_start if t_start is not None else newest - 1.0), min(time.time(), newest)
        window = {k: [t for t in v if t0 <= t <= t1] for k, v in frames.items()}
        both = overlaps(window)
        silence, silence_at = longest_silence(frames, t0, t1)
        return {
            "overlap_ms": round(sum(o[3] for o in both) * 1000.0, 1),
            "overlaps": len(both),
            "nobody_forwarding_ms": round(silence * 1000.0, 1),
            "nobody_forwarding_at_s": round(silence_at - t0, 3),
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
            **self._v6_result(start, end),
            "timeline": self._timeline(frames, t0, t1, markers or [], end),
        }

    @staticmethod
    def _v6_result(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
        """The IPv6 part of a phase's figures (the traffic tool's ``*_v6`` counters)."""
        total = int(start.get("alive_v6", 0))
        return {
            "connections_total_v6": total,
            "connections_survived_v6": min(total, int(end.get("alive_v6", 0))),
            "resets_seen_v6": int(end.get("resets_v6", 0)) + int(end.get("mismatches_v6", 0)),
            "bytes_verified_v6": int(end.get("bytes_verified_v6", 0)),
            "templates_total_v6": int(start.get("sticky_sources_v6", 0)),
            "templates_kept_v6": int(start.get("sticky_sources_v6", 0)) - int(end.get("sources_moved_v6", 0)),
            "new_connections_ok_v6": int(end.get("new_ok_v6", 0)),
        }

    def held_v6(self, node: NodeProc, start: dict[str, Any], timeout: float = 20.0) -> dict[str, int]:
        """`node`'s IPv6 entries before a fault, once it holds a template per sticky IPv6 client of
        the traffic report `start` (sync is asynchronous: a template made a moment before the fault
        may not be there yet); after `timeout` the last reading as it is. Empty without IPv6."""
        if not self.conns6:
            return {}
        want = int(start.get("sticky_sources_v6", 0))
        deadline = time.monotonic() + timeout
        while True:
            held = self.backup_entries_v6(node)
            if held["backup_v6_templates"] >= want or time.monotonic() > deadline:
                return held
            time.sleep(0.2)

    def backup_entries_v6(self, node: NodeProc) -> dict[str, int]:
        """IPv6 conns and templates in `node`'s table (``directorctl list -c --json`` on its admin socket):
        on a backup, what sync gave it to forward from after a takeover."""
        ctl = subprocess.run([PYTHON, "-m", "director.admin.cli", "--addr",
                              f"unix:{self.cluster.admin_socket(node)}", "list", "-c", "--json"],
                             capture_output=True, text=True, timeout=60)
        if ctl.returncode != 0:
            raise ClusterError(f"directorctl list -c on {node.node_id} failed: {ctl.stderr.strip()}")
        v6 = [c for c in json.loads(ctl.stdout)["conns"] if ":" in c["caddr"]]
        return {"backup_v6_conns": sum(1 for c in v6 if not c["template"]),
                "backup_v6_templates": sum(1 for c in v6 if c["template"])}

    def _timeline(self, frames: dict[str, list[float]], t_fault: float, t_end: float,
                  markers: list[tuple[float, str]], end: dict[str, Any]) -> dict[str, Any]:
        """What the HTML report plots for a phase (times in seconds relative to the fault): each node's
        forwarded-frame rate (the fabric observer's frames, binned), its events, the fault/takeover
        markers, and every connection's worst stall."""
        lo = t_fault - TIMELINE_BEFORE_S
        span = max(t_end - lo, 1.0)
        bin_s = max(0.05, round(span / 600, 2))
        n_bins = int(span / bin_s) + 1
        rates: dict[str, list[float]] = {}
        for name, ts in sorted(frames.items()):
            counts = [0] * n_bins
            for t in ts:
                if lo <= t <= t_end:
                    counts[min(int((t - lo) / bin_s), n_bins - 1)] += 1
            rates[name] = [round(c / bin_s, 1) for c in counts]
        keep = ("event", "role", "epoch", "in_sync")
        events: dict[str, list[dict[str, Any]]] = {}
        for n in self.cluster.nodes:
            # a kill -9 leaves no event in the node's log: the drill adds one ("killed")
            kills = [{"t": k, "event": "killed"} for k in self.kills.get(n.node_id, [])]
            evs = sorted((ev for ev in self.cluster.events(n) + kills if float(ev["t"]) <= t_end),
                         key=lambda ev: float(ev["t"]))
            inside = [ev for ev in evs if float(ev["t"]) >= lo]
            # the state each lane starts in: the last role and forwarding events before the window
            before = [ev for ev in evs if float(ev["t"]) < lo]
            prior = [next((ev for ev in reversed(before) if ev["event"] in kinds), None)
                     for kinds in (("role", "started", "killed"),
                                   ("forwarding", "stopped_forwarding", "started", "stopped", "killed"))]
            chosen = sorted((ev for ev in prior if ev is not None), key=lambda ev: float(ev["t"])) + inside
            events[n.node_id] = [{**{k: ev[k] for k in keep if k in ev},
                                  "t": round(float(ev["t"]) - t_fault, 4)} for ev in chosen]
        return {
            "t_fault": t_fault, "start_s": -TIMELINE_BEFORE_S, "end_s": round(t_end - t_fault, 3),
            "bin_s": bin_s, "frame_rate": rates, "events": events,
            "markers": [{"t": round(t - t_fault, 4), "label": label} for t, label in markers],
            "stalls_ms": list(end.get("stalls_ms", [])),
        }

    def phase_kill(self) -> dict[str, Any]:
        assert self.traffic is not None
        c = self.cluster
        old = c.wait_master()
        new = next(n for n in c.nodes if n is not old)
        self.traffic.phase("kill")
        start = self.traffic.report()
        held = self.held_v6(new, start)
        self.say(f"phase kill: kill -9 {old.node_id} (master) with {start['alive']} connections open"
                 + (f" ({start['alive_v6']} IPv6; {new.node_id} holds {held['backup_v6_conns']} IPv6 conns"
                    f" and {held['backup_v6_templates']} IPv6 templates)" if held else ""))
        t_kill = c.kill_node(old)  # the launcher runs the exit hook, as systemd's ExecStopPost would
        self.kills.setdefault(old.node_id, []).append(t_kill)
        takeover = self._takeover(new, t_kill)
        self.say(f"{new.node_id} took over: first packet forwarded {takeover:.0f} ms after the kill "
                 f"(exit hook released the lease {1000 * (old.released_at - t_kill):.0f} ms after it)")
        ok_at = self.traffic.report()["new_ok"]
        end = self._settle(ok_at)
        marks = [(t_kill, f"kill -9 {old.node_id}"), (t_kill + takeover / 1000, f"{new.node_id} forwards")]
        return {**self._phase_result(start, end, takeover, t_kill, marks), **held}

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
        held = self.held_v6(to, start)
        self.say(f"phase switchback: `directorctl failover` on {cur.node_id} (graceful resign)"
                 + (f"; {to.node_id} holds {held['backup_v6_conns']} IPv6 conns and "
                    f"{held['backup_v6_templates']} IPv6 templates" if held else ""))
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
        t_stop = float(stop["t"])
        marks = [(t0, "directorctl failover"), (t_stop, f"{cur.node_id} stops forwarding"),
                 (t_stop + takeover / 1000, f"{to.node_id} forwards")]
        return {**self._phase_result(start, end, takeover, t0, marks), **held}

    def phase_freeze(self) -> dict[str, Any]:
        assert self.traffic is not None
        c = self.cluster
        old = c.wait_master()
        new = next(n for n in c.nodes if n is not old)
        c.wait_in_sync(new, 90)
        self.traffic.phase("freeze")
        start = self.traffic.report()
        self.say(f"phase freeze: SIGSTOP {old.node_id} (master) for {self.freeze_s:.0f} s")
        t_stop = time.time()
        c.signal_node(old, signal.SIGSTOP)
        try:
            takeover = self._takeover(new, t_stop)
            self.say(f"{new.node_id} took over {takeover:.0f} ms after the freeze")
            wait_for("the freeze to last", lambda: time.time() - t_stop >= self.freeze_s,
                     self.freeze_s + 5, 0.1)
        finally:
            c.signal_node(old, signal.SIGCONT)
        t_cont = time.time()
        wait_for(f"{old.node_id} to notice it is a backup now",
                 lambda: c.last_event(old, "role", t_cont, role="BACKUP"), 60)
        resumed = sum(1 for t in self.observer.frames().get(old.node_id, []) if t > t_cont)
        self.say(f"{old.node_id} resumed: {resumed} frames forwarded after SIGCONT (must be 0); "
                 "it rejoins as a backup")
        end = self._settle(self.traffic.report()["new_ok"])
        marks = [(t_stop, f"SIGSTOP {old.node_id}"), (t_stop + takeover / 1000, f"{new.node_id} forwards"),
                 (t_cont, f"SIGCONT {old.node_id}")]
        out = self._phase_result(start, end, takeover, t_stop, marks)
        out["frames_after_resume"] = resumed
        c.wait_in_sync(old, 90)
        return out

    def _no_failover_phase(self, name: str, what: str, seconds: float, fault: Callable[[NodeProc], None],
                           heal: Callable[[NodeProc], None]) -> dict[str, Any]:
        """A fault the master must ride through without a failover (static stability): hold it for
        `seconds` under traffic, heal it, check that the same master forwarded throughout."""
        assert self.traffic is not None
        c = self.cluster
        master = c.wait_master()
        self.traffic.phase(name)
        start = self.traffic.report()
        self.say(f"phase {name}: {what} for {seconds:.0f} s under traffic")
        t0 = time.time()
        fault(master)
        try:
            wait_for(f"the {name} to last", lambda: time.time() - t0 >= seconds, seconds + 5, 0.2)
            same = c.master() is master
        finally:
            heal(master)
        t_heal = time.time()
        self.say(f"{name} healed; {'the same master forwarded throughout' if same else 'the master changed'}")
        end = self._settle(self.traffic.report()["new_ok"])
        marks = [(t0, f"{name} starts"), (t_heal, "healed")]
        out = self._phase_result(start, end, 0.0, t0, marks)
        out["same_master"] = same and c.wait_master() is master
        return out

    def phase_etcd_outage(self) -> dict[str, Any]:
        etcd = self.cluster.etcd
        return self._no_failover_phase("etcd-outage", "etcd down", self.outage_s,
                                       lambda _m: etcd.stop(), lambda _m: etcd.start())

    def phase_partition(self) -> dict[str, Any]:
        c = self.cluster
        return self._no_failover_phase("partition", "the master cut from etcd", self.partition_s,
                                       lambda m: c.cut(m, [CTL_ADDR], c.etcd.client_port), c.heal)

    def run(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        try:
            self.setup()
            d1, _d2 = self.cluster.nodes
            if "kill" in self.phases:
                report["kill"] = self.phase_kill()
                self.rejoin(d1)
            if "switchback" in self.phases and "kill" in self.phases:
                report["switchback"] = self.phase_switchback(d1)
            if "freeze" in self.phases:
                report["freeze"] = self.phase_freeze()
            if "etcd-outage" in self.phases:
                report["etcd-outage"] = self.phase_etcd_outage()
            if "partition" in self.phases:
                report["partition"] = self.phase_partition()
            intervals = {n.node_id: self.cluster.active_intervals(n, self.kills) for n in self.cluster.nodes}
            node_view = split_brain(intervals)
            for phase in report.values():
                # the fabric is the judge: a frozen node cannot report when it really stopped
                phase["split_brain_seen"] = phase["overlaps"] > 0
                phase["node_reported_overlap"] = bool(node_view)
            report["lab"] = self.lab.name
        except Exception:
            for n in self.cluster.nodes:
                print(f"--- {n.node_id} log tail ---\n{node_log_tail(n)}", file=self.out)
            raise
        finally:
            self.teardown()
        return report

    def teardown(self) -> None:
        self.observer.stop()
        if self.traffic is not None:
            self.traffic.stop()
        self.cluster.close()
        self.lab.down()


def summary(report: dict[str, Any]) -> str:
    lines = []
    for name in PHASES:
        p = report.get(name)
        if not p:
            continue
        lines.append(
            f"{name:>11}: {p['connections_survived']}/{p['connections_total']} connections survived, "
            f"{p['resets_seen']} resets, {p['bytes_verified']:,} bytes verified, worst stall "
            f"{p['max_gap_ms']:.0f} ms (UDP {p['udp_max_gap_ms']:.0f} ms), "
            + (f"takeover {p['takeover_ms']:.0f} ms, " if p["takeover_ms"] else "")
            + ("same master, " if p.get("same_master") else "")
            + f"nobody forwarding {p['nobody_forwarding_ms']:.0f} ms, overlap {p['overlap_ms']:.0f} ms, "
            f"templates kept {p['templates_kept']}/{p['templates_total']}, split brain: "
            f"{'YES' if p['split_brain_seen'] else 'no'}"
            + (f"; IPv6: {p['connections_survived_v6']}/{p['connections_total_v6']} connections, "
               f"{p['resets_seen_v6']} resets, templates kept "
               f"{p['templates_kept_v6']}/{p['templates_total_v6']}"
               if p.get("connections_total_v6") else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--chaos" in argv:  # `directorctl drill --chaos --seed S --minutes M`: the chaos run (docs/CHAOS.md)
        from deploy.chaos import main as chaos_main

        return chaos_main([a for a in argv if a != "--chaos"])
    p = argparse.ArgumentParser(prog="drill", description="run the failover drill in a fresh lab")
    p.add_argument("--chaos", action="store_true",
                   help="run the seeded chaos run instead (--seed S --minutes M; see docs/CHAOS.md)")
    p.add_argument("--conns", type=int, default=200, help="long-lived verified TCP connections (200)")
    p.add_argument("--new-rate", type=float, default=25.0, help="new sticky HTTP connections per second")
    p.add_argument("--etcd-defaults", action="store_true", help="etcd default heartbeat/election settings")
    p.add_argument("--report", default="demo-report.json", help="where to write the JSON report")
    p.add_argument("--html", default="demo-report.html",
                   help="where to write the HTML report (self-contained: plots inline); '' for none")
    p.add_argument("--phases", default=",".join(PHASES), help="comma list of phases (default: all)")
    p.add_argument("--workers", type=int, default=1, help="packet workers per directord (node `workers:`)")
    p.add_argument("--conns6", type=int, default=None,
                   help="how many of --conns go over IPv6 (default a quarter; 0: IPv4 only)")
    p.add_argument("--outage", type=float, default=60.0, help="etcd-outage phase length, seconds")
    p.add_argument("--partition", type=float, default=20.0, help="partition phase length, seconds")
    args = p.parse_args(argv)
    phases = tuple(x.strip() for x in args.phases.split(",") if x.strip())
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    drill = Drill(conns=args.conns, new_rate=args.new_rate, tuned_etcd=not args.etcd_defaults, phases=phases,
                  outage_s=args.outage, partition_s=args.partition, workers=args.workers, conns6=args.conns6)
    report = drill.run()
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"report written to {args.report}")
    if args.html:
        from deploy.report import render_html  # matplotlib: only needed here

        Path(args.html).write_text(render_html(report))
        print(f"HTML report written to {args.html}")
    ok = all(report[k]["connections_survived"] == report[k]["connections_total"]
             and report[k]["connections_survived_v6"] == report[k]["connections_total_v6"]
             and not report[k]["split_brain_seen"] and report[k].get("same_master", True)
             for k in PHASES if k in report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
