"""Forwarding through ``directord`` itself (etcd, election, sync, admin running): 1 and 2 workers.

Theory of operation
-------------------
One lab (3 directors, 1 real server), a real etcd in the control namespace, ``directord`` on d1 (the
master; d2 as its backup when a figure needs one) and the kernel's DNAT on d3 as the reference in the
same run. The traffic is ``bench.bench_fwd``'s: ``trafgen`` pinned to CPU 0 sends 60-byte UDP frames
(1024 flows, 10 client addresses) to the VIP's virtual MAC; a figure is what r1 receives per second.

* ``fwd_nat_pps_w1``: ``workers: 1``, the whole directord pinned to CPU 1 (the data plane on its
  loop, the election on its own thread), the kernel's receive work for its interfaces left where the
  frames were sent (RPS off: the generator's CPU), as ``bench_fwd``'s ``fwd_nat_pps_1core``;
  ``fwd_nat_pps_w1_rps``: the same with that softirq work steered to CPU 1 as well (the director's
  core pays for the kernel's receive and veth transmit too); ``fwd_nat_pps_w2``: ``workers: 2``
  (unpinned: two workers share both CPUs with the generator and the parent);
  ``fwd_directord_kernel_pps``: kernel DNAT on d3 (same run, its softirq on CPU 1).
* ``fwd_cpu_us_per_pkt_w1`` / ``_w2``: CPU time (user + system) of every directord process (parent
  and workers) during the window, divided by the packets r1 received.
* ``fwd_nat_pps_lossless_w1``: the highest offered rate (a ladder of paced trafgen rates) at which
  less than 0.1 % of what the client sent is lost.
* ``fwd_overload_role_changes`` (``workers: 2``) and ``..._w1``: role changes on d1 and d2 while
  the generator offers as much as it can (several times the node's capacity) for ``overload_s``
  seconds (60; 20 with ``--quick``).
* ``fwd_nat_sync_on_over_off_w1``: pps with the backup d2 following vs d2 stopped.

``cores`` is the CPU count of the machine the figures were taken on.
Cases are interleaved (w1, w2, kernel per round) and medians reported.
``python -m bench.bench_fwd_directord --w1-only [--rounds N]`` measures only ``fwd_nat_pps_w1`` beside the
kernel reference (interleaved, one directord start; ``fwd_nat_w1_over_kernel`` is then the median of the
per-round ratios): a few minutes, for work on the one-worker path.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.bench_fwd import GEN_CPU, UDP_PORT, VIP_KERNEL, VMAC, FwdBench, trafgen_config
from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.lab import VIP_NAT, Lab, new_name, real_addr

log = logging.getLogger(__name__)
DIRECTOR_CPU = 1
LOSS_MAX = 0.001


def services_yaml() -> str:
    r1 = real_addr(1)
    return (
        "services:\n"
        f"  - {{name: bench-udp, protocol: udp, vip: {VIP_NAT}, port: {UDP_PORT}, scheduler: rr,\n"
        f"     forward: nat, dests: [{{address: {r1}, port: {UDP_PORT}}}]}}\n"
    )


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DirectordBench:
    def __init__(self, lab: Lab, seconds: float) -> None:
        self.lab = lab
        self.fwd = FwdBench(lab, seconds)
        self.cluster = LabCluster(lab, n_nodes=2)
        self.seconds = seconds
        self.d1, self.d2 = self.cluster.nodes

    def setup(self) -> None:
        self.lab.up()
        self.fwd.prepare()
        self.cluster.start_etcd()
        self.cluster.apply_config(services_yaml())

    # -- nodes -----------------------------------------------------------------------------------------
    def start_master(self, workers: int, rps: bool = False) -> None:
        """d1 as master with ``workers``; ``rps`` steers d1's receive softirq work to DIRECTOR_CPU
        (else it runs where the frame was sent, the generator's CPU: bench_fwd's default too)."""
        c = self.cluster
        for node in (self.d2, self.d1):
            c.stop_node(node)
        for dev in ("ext", "int"):
            self.fwd._rps(self.lab.directors[0].ns, dev, (1 << DIRECTOR_CPU) if rps else 0)
        c.node_extra = f"workers: {workers}"
        c.node_prefix = ("taskset", "-c", str(DIRECTOR_CPU)) if workers == 1 else ()
        c.start_node(self.d1)
        wait_for("d1 forwarding", lambda: c.is_forwarding(self.d1), 60)
        if workers > 1:
            wait_for("d1's workers", lambda: len(self.worker_pids(self.d1)) == workers, 30)
        self._warm()

    def start_backup(self) -> None:
        self.cluster.start_node(self.d2)
        self.cluster.wait_in_sync(self.d2, 60)

    def stop_backup(self) -> None:
        self.cluster.stop_node(self.d2)

    def _warm(self, tries: int = 20) -> None:
        """Bursts until r1 receives: the dest's MAC resolved and the conns exist before measuring."""
        for _ in range(tries):
            if self.fwd.pps(VMAC, VIP_NAT) > 0:
                return
        raise RuntimeError("directord on d1 forwards nothing")

    def worker_pids(self, node: NodeProc) -> list[int]:
        try:
            rows = json.loads(Path(f"{node.events}.workers.json").read_text())["workers"]
        except (OSError, ValueError, KeyError):
            return []
        return [int(r["pid"]) for r in rows if r.get("pid")]

    def cpu(self, node: NodeProc) -> float:
        assert node.proc is not None
        return proc_cpu(node.proc.pid) + sum(proc_cpu(p) for p in self.worker_pids(node))

    def role_changes(self, since: float) -> int:
        return sum(1 for n in (self.d1, self.d2) for ev in self.cluster.events(n)
                   if ev["event"] == "role" and ev["t"] >= since)

    # -- measurements ---------------------------------------------------------------------------------
    def quiesce(self, timeout: float = 15.0, stable: int = 3) -> None:
        """Wait until r1 receives nothing more: the director's rings hold no backlog of the last run."""
        last, same, deadline = -1, 0, time.monotonic() + timeout
        while time.monotonic() < deadline and same < stable:
            now = self.fwd.rx_packets()
            same = same + 1 if now == last else 0
            last = now
            time.sleep(0.3)

    def pps_and_cpu(self) -> tuple[float, float]:
        """(pps r1 received, directord CPU microseconds per packet) over one window."""
        self.quiesce()
        c0 = self.cpu(self.d1)
        n0 = self.fwd.rx_packets()
        pps = self.fwd.pps(VMAC, VIP_NAT)
        n1 = self.fwd.rx_packets()
        c1 = self.cpu(self.d1)
        return pps, (c1 - c0) * 1e6 / max(1, n1 - n0)

    def tx_packets(self) -> int:
        out = self.lab.exec(self.lab.client.ns, "ip -s -j link show eth0").stdout
        return int(json.loads(out)[0]["stats64"]["tx"]["packets"])

    def loss_at(self, rate: int) -> float:
        self.quiesce()
        cfg = self.lab.write_file("trafgen-lossless.cfg", trafgen_config(VMAC, VIP_NAT))
        gen = self.lab.popen(self.lab.client.ns, ["taskset", "-c", str(GEN_CPU), "trafgen", "-o", "eth0",
                                                  "-i", str(cfg), "-P", "1", "--no-sock-mem", "-Q", "-C",
                                                  "-b", f"{rate}pps"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            t0, r0 = self.tx_packets(), self.fwd.rx_packets()
            time.sleep(self.seconds)
        finally:
            self.lab.stop(gen, signal.SIGINT)
        t1 = self.tx_packets()
        self.quiesce()  # what was sent in the window and is still queued counts as received, not lost
        r1 = self.fwd.rx_packets()
        sent = t1 - t0
        return 1.0 - (r1 - r0) / sent if sent else 1.0

    def lossless(self, start: int, step: int, top: int) -> float:
        """The highest rate of the ladder with < 0.1 % loss (two misses in a row end it)."""
        best, misses, rate = 0.0, 0, start
        while rate <= top and misses < 2:
            loss = self.loss_at(rate)
            log.info("offered %d pps: loss %.4f", rate, loss)
            if loss < LOSS_MAX:
                best, misses = float(rate), 0
            else:
                misses += 1
            rate += step
        return best

    def overload(self, seconds: float) -> int:
        """Role changes while the generator offers all it can for ``seconds``."""
        cfg = self.lab.write_file("trafgen-overload.cfg", trafgen_config(VMAC, VIP_NAT))
        t0 = time.time()
        gen = self.lab.popen(self.lab.client.ns, ["taskset", "-c", str(GEN_CPU), "trafgen", "-o", "eth0",
                                                  "-i", str(cfg), "-P", "1", "--no-sock-mem", "-Q", "-C",
                                                  "-b", "3000000pps"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(seconds)
        finally:
            self.lab.stop(gen, signal.SIGINT)
        return self.role_changes(t0)


def run(quick: bool = False, workers: int = 2) -> dict[str, float]:
    rounds, seconds = (1, 1.0) if quick else (3, 2.0)
    lab = Lab(new_name(), n_directors=3, n_reals=1)
    b = DirectordBench(lab, seconds)
    res: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        res.setdefault(name, []).append(value)

    try:
        b.setup()
        d3 = lab.directors[2]
        for _ in range(rounds):
            add("fwd_directord_kernel_pps", b.fwd.pps(d3.macs["ext"], VIP_KERNEL))
            for w in (1, workers):
                b.start_master(w)
                pps, cpu = b.pps_and_cpu()
                add(f"fwd_nat_pps_w{w}", pps)
                add(f"fwd_cpu_us_per_pkt_w{w}", cpu)
            b.start_master(1, rps=True)
            add("fwd_nat_pps_w1_rps", b.pps_and_cpu()[0])
        b.start_master(1)
        add("fwd_nat_pps_lossless_w1", b.lossless(10_000, 10_000 if quick else 5_000, 300_000))
        off = statistics.median([b.pps_and_cpu()[0] for _ in range(rounds)])
        b.start_backup()
        on = statistics.median([b.pps_and_cpu()[0] for _ in range(rounds)])
        add("fwd_nat_sync_on_over_off_w1", on / off)
        overload_s = 20.0 if quick else 60.0
        add("fwd_overload_role_changes_w1", b.overload(overload_s))
        b.start_master(workers)
        b.start_backup()
        add(f"fwd_overload_role_changes_w{workers}" if workers != 2 else "fwd_overload_role_changes",
            b.overload(overload_s))
    finally:
        b.cluster.close()
        lab.down()
    log.info("every round: %s", json.dumps(res))
    out = {k: statistics.median(v) for k, v in res.items()}
    out["fwd_directord_cores"] = float(os.cpu_count() or 0)
    kernel = out.get("fwd_directord_kernel_pps", 0.0)
    if kernel:
        out["fwd_nat_w1_over_kernel"] = out["fwd_nat_pps_w1"] / kernel
    return out


def run_w1(rounds: int = 5, seconds: float = 2.0) -> dict[str, float]:
    """Only ``fwd_nat_pps_w1`` (and its CPU per packet) beside the kernel reference, interleaved
    (kernel, w1, kernel, ...): the quick loop for work on the one-worker path (a few minutes)."""
    lab = Lab(new_name(), n_directors=3, n_reals=1)
    b = DirectordBench(lab, seconds)
    res: dict[str, list[float]] = {}
    try:
        b.setup()
        d3 = lab.directors[2]
        b.start_master(1)
        for _ in range(rounds):
            res.setdefault("fwd_directord_kernel_pps", []).append(b.fwd.pps(d3.macs["ext"], VIP_KERNEL))
            pps, cpu = b.pps_and_cpu()
            res.setdefault("fwd_nat_pps_w1", []).append(pps)
            res.setdefault("fwd_cpu_us_per_pkt_w1", []).append(cpu)
    finally:
        b.cluster.close()
        lab.down()
    log.info("every round: %s", json.dumps(res))
    out = {k: statistics.median(v) for k, v in res.items()}
    out["fwd_nat_w1_over_kernel"] = statistics.median(
        w / k for w, k in zip(res["fwd_nat_pps_w1"], res["fwd_directord_kernel_pps"], strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    """``[--quick] [--workers N]``: the module's figures; ``--w1-only [--rounds N]``: :func:`run_w1`."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO)
    if "--w1-only" in argv:
        rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 5
        print(json.dumps(run_w1(rounds), indent=1))
        return 0
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    print(json.dumps(run(quick="--quick" in argv, workers=workers), indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

