"""`make bench`: run every benchmark module, write bench/results.json and BENCHMARKS.md.

Each module in MODULES exposes ``run(quick: bool = False) -> dict[str, float]`` and measures its own
references in the same run (plain dict, kernel forwarding, scapy, etcd floor...), reporting medians of
several runs. This file only collects the figures and renders them beside their references as ratios.
A module that fails is reported as failed (with its error) and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["bench.bench_conn", "bench.bench_core", "bench.bench_sync", "bench.bench_conntrackd",
           "bench.bench_election", "bench.bench_fwd", "bench.bench_fwd_directord", "bench.bench_failover",
           "bench.bench_defense", "bench.bench_health", "bench.bench_sorry_ops"]

# figure -> (reference figure, what the reference is, target as text); EXTRA_REFERENCES adds rows
EXTRA_REFERENCES: list[tuple[str, str, str, str]] = [
    ("fwd_nat_pps_1core", "fwd_scapy_pps", "naive scapy forwarder (sniff + sendp)", ">= 100x"),
    ("sync_updates_per_s", "ref_conntrackd_entries_per_s", "conntrackd FTFW between 2 namespaces",
     ">= 1.2x"),
    ("sync_lag_p50_ms_1k", "ref_conntrackd_lag_ms", "conntrackd single-entry lag", "<= 2x"),
]
REFERENCES: dict[str, tuple[str, str, str]] = {
    "conn_creates_per_s": ("ref_conn_creates_per_s", "plain dict insert", ">= 300k/s"),
    "conn_in_lookups_per_s": ("ref_conn_in_lookups_per_s", "plain dict get", ">= 2M/s"),
    "conn_out_lookups_per_s": ("ref_conn_out_lookups_per_s", "plain dict get", ">= 2M/s"),
    "conn_refreshes_per_s": ("ref_conn_refreshes_per_s", "plain dict store", ""),
    "conn_expiries_per_s": ("ref_conn_expiries_per_s", "plain dict delete", ""),
    "conn_bytes_per_conn_1m": ("ref_conn_bytes_per_conn_1m", "plain dict of tuples", "<= 300 B"),
    "conn_creates_nogc_per_s": ("ref_conn_creates_per_s", "plain dict insert", ""),
    "conn_creates_events_per_s": ("conn_creates_per_s", "creates with the event feed off", ""),
    "core_nat_in_frames_per_s": ("ref_scapy_nat_frames_per_s", "scapy parse+rewrite+rebuild", ">= 100k"),
    "core_nat_out_frames_per_s": ("ref_scapy_nat_frames_per_s", "scapy parse+rewrite+rebuild", ""),
    "core_udp_in_frames_per_s": ("ref_scapy_nat_frames_per_s", "scapy parse+rewrite+rebuild", ""),
    "core_new_conns_per_s": ("ref_scapy_nat_frames_per_s", "scapy parse+rewrite+rebuild", ""),
    "fwd_nat_pps_1core_rps": ("fwd_nat_pps_1core", "softirq on another core", ""),
    "fwd_nat_pps_1core_no_tx_ring": ("fwd_nat_pps_1core", "RX+TX rings (default)", ""),
    "fwd_nat_pps_1core_no_rings": ("fwd_nat_pps_1core", "RX+TX rings (default)", ""),
    "sync_updates_per_s": ("ref_sync_wire_roundtrip_per_s", "protobuf encode+decode only", ">= 50k/s"),
    "fwd_sync_on_frames_per_s": ("fwd_sync_off_frames_per_s", "same path, sync off", ">= 0.85x"),
    "sync_snapshot_1m_s": ("sync_snapshot_100k_s", "100k-entry snapshot", "<= 20 s"),
    "sync_lag_p99_ms_50k": ("sync_lag_p99_ms_10k", "p99 at 10k/s", ""),
    "fwd_nat_pps_1core": ("fwd_kernel_pps", "kernel forwarding + nftables DNAT", ">= 0.25x, >= 100k"),
    "fwd_nat_pps_all_cores": ("fwd_nat_pps_1core", "our director on one core", "> 1x"),
    "fwd_nat_pps_w1": ("fwd_directord_kernel_pps", "kernel forwarding + DNAT, same run", ">= 0.55x"),
    "fwd_nat_pps_w2": ("fwd_nat_pps_w1", "directord, 1 worker", "> 1x"),
    "fwd_nat_pps_w1_rps": ("fwd_nat_pps_w1", "w1 with its softirq left on the generator's core", ""),
    "fwd_cpu_us_per_pkt_w2": ("fwd_cpu_us_per_pkt_w1", "directord, 1 worker", "<= 1.1x"),
    "fwd_tcp_mbit_s": ("fwd_kernel_tcp_mbit_s", "kernel forwarding + DNAT", ""),
    "sync_lag_p99_ms_10k": ("sync_lag_p50_ms_10k", "p50 at the same rate", "<= 50 ms"),
    "election_takeover_tuned_s": ("election_takeover_default_s", "etcd default settings", "<= 1.2 s"),
    "health_loop_stall_max_ms": ("ref_idle_loop_stall_max_ms", "same ticker, idle loop", ""),
    "health_https_probes_per_s": ("ref_health_tcp_probes_per_s", "TCP connect check", ""),
    "defense_table_peak": ("nodefense_table_peak", "same flood, defense off", "<= defense_max_conns"),
    "defense_rss_growth_mib": ("nodefense_rss_growth_mib", "same flood, defense off", "bounded"),
    "defense_streams_survived": ("nodefense_streams_survived", "same flood, defense off", "1.0"),
    "failover_takeover_crash_ms": ("failover_takeover_crash_untuned_host_ms",
                                   "same cluster, host RCU not expedited", "<= 100 ms"),
    "failover_takeover_crash_untuned_host_ms": ("failover_takeover_hostloss_ms",
                                                "same cluster, no exit hook", ""),
    "failover_takeover_hostloss_p95_s": ("failover_takeover_default_s",
                                         "host loss with etcd defaults (median)", "<= 1.2 s"),
    "ops_datagram_in_frames_per_s": ("udp_new_conn_per_datagram_frames_per_s",
                                     "a new conn (entry + event) per datagram", ">= 1x"),
    "ops_reply_no_entry_frames_per_s": ("udp_established_reply_frames_per_s",
                                        "an established flow's reply (entry lookup)", ""),
    "failover_takeover_default_s": ("failover_takeover_hostloss_s", "same drill, tuned etcd", "<= 2.5 s"),
    "conn_bytes_per_conn_1m_v6": ("conn_bytes_per_conn_1m", "IPv4 conns, same run", "<= 350 B"),
    "conn_creates_per_s_v6": ("conn_creates_per_s", "IPv4, same run", ""),
    "conn_in_lookups_per_s_v6": ("conn_in_lookups_per_s", "IPv4, same run", ""),
    "conn_out_lookups_per_s_v6": ("conn_out_lookups_per_s", "IPv4, same run", ""),
    "core_nat6_in_frames_per_s": ("core_nat_in_frames_per_s", "IPv4 frames, same run", ""),
    "core_nat6_out_frames_per_s": ("core_nat_out_frames_per_s", "IPv4 frames, same run", ""),
    "fwd_nat6_pps_1core": ("fwd_kernel6_pps", "kernel IPv6 forwarding + nftables DNAT", ">= 0.25x"),
    "fwd_kernel6_pps": ("fwd_kernel_pps", "kernel IPv4 forwarding + DNAT", ""),
}


def run_all(quick: bool, only: list[str] | None) -> tuple[dict[str, float], dict[str, str]]:
    figures: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in MODULES:
        if only and not any(o in name for o in only):
            continue
        t0 = time.monotonic()
        print(f"==> {name} ...", flush=True)
        try:
            mod = importlib.import_module(name)
            got = mod.run(quick=quick)
        except Exception as exc:  # a failed benchmark is reported, the others still run
            traceback.print_exc()
            failures[name] = f"{type(exc).__name__}: {exc}"
            continue
        figures.update({k: float(v) for k, v in got.items()})
        print(f"    {len(got)} figures in {time.monotonic() - t0:.0f} s", flush=True)
    return figures, failures


def fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def render(figures: dict[str, float], failures: dict[str, str], quick: bool) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    lines = [
        "# Benchmarks", "",
        f"Generated by `make bench` (bench/run.py) at commit `{rev or '?'}` on {platform.node()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{' (quick mode)' if quick else ''}.",
        "Every figure is a median of several runs; each reference was measured in the same run on the",
        "same machine (2 noisy cores), so compare ratios, not absolute numbers across runs.", "",
        "| figure | value | reference | reference value | ratio | target |",
        "|---|---:|---|---:|---:|---|",
    ]
    rows = [(name, *REFERENCES.get(name, ("", "", ""))) for name in sorted(figures)
            if not name.startswith("ref_")]
    rows += [r for r in EXTRA_REFERENCES if r[0] in figures and r[1]]
    for name, ref, what, target in sorted(rows):
        v = figures[name]
        rv = figures.get(ref)
        ratio = f"{v / rv:.2f}x" if rv else ""
        rvs = fmt(rv) if rv is not None else ""
        lines.append(f"| `{name}` | {fmt(v)} | {what} | {rvs} | {ratio} | {target} |")
    if failures:
        lines += ["", "## Failed benchmark modules", ""]
        lines += [f"- `{k}`: {v}" for k, v in failures.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run the benchmarks and write BENCHMARKS.md")
    p.add_argument("--quick", action="store_true", help="fewer, shorter runs (smoke test)")
    p.add_argument("--only", nargs="*", help="substrings of module names to run")
    args = p.parse_args(argv)
    figures, failures = run_all(args.quick, args.only)
    out = ROOT / "bench" / "results.json"
    if args.only and out.exists():  # a partial run updates the figures it measured
        old = json.loads(out.read_text())
        old.update(figures)
        figures = old
    out.write_text(json.dumps(dict(sorted(figures.items())), indent=1) + "\n")
    (ROOT / "BENCHMARKS.md").write_text(render(figures, failures, args.quick))
    print(f"wrote {out} and BENCHMARKS.md ({len(figures)} figures, {len(failures)} failed modules)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
