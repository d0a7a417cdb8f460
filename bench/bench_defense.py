"""IPVS defense under a spoofed SYN flood: table size and RSS during and after, established-flow survival.

Theory of operation
-------------------
A lab with two `directord` nodes (master + backup, real etcd) and three real servers; 20 TCP echo
streams (one round trip every 200 ms each) run through the NAT VIP while the client floods it with
SYNs from random spoofed 198.19.0.0/16 sources at 6000/s for 60 s (15 s with ``--quick``;
``deploy.synflood``). The master's admin ``Status`` is sampled every 250 ms: table entries, RSS and
the defense's counters. After the flood the table is watched until it is back under half the defense
threshold (or 120 s). The same run with every strategy off and no ``max_conns`` is the reference.

Figures (prefix ``defense_`` with the strategies on, ``nodefense_`` without): peak table entries and
RSS during the flood, RSS growth over the idle node, entries and RSS once drained, how long the
drain took, the share of established streams that survived, the achieved flood rate, and what each
strategy did; ``defense_backup_diff`` is |backup - master| table entries once drained.

Then, on the defended cluster, an admin flood under the same traffic (streams + a 3000/s SYN flood) for
20 s (10 s quick): 24 threads calling ``Status``, 4 paging ``ListConns`` (1000 a page), 4 sending a
~1 MB ``ApplyConfig`` (dry run), all on the master's unix socket. Figures ``admin_*``: calls served and
refused (RESOURCE_EXHAUSTED) per kind, other errors, latency of the served ``Status`` calls (p50/p99),
role changes of both nodes (their events files) and the streams that survived.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from deploy.cluster import LabCluster, NodeProc, wait_for
from deploy.lab import PYTHON, VIP_NAT, Lab, new_name, real_addr
from deploy.synflood import StatusSampler
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.lab.labutil import big_document

VMAC = "00:00:5e:00:01:01"
RATE = 6000
STREAMS = 20
THRESHOLD, MAX_CONNS = 10_000, 30_000
DEFENSE_ON = (f"defense: {{drop_entry: auto, drop_packet: auto, secure_tcp: auto,"
              f" conn_threshold: {THRESHOLD}, max_conns: {MAX_CONNS}}}")
DEFENSE_OFF = "defense: {drop_entry: off, drop_packet: off, secure_tcp: off, max_conns: 0}"
MIB = 1 << 20


def _services() -> str:
    dests = ", ".join(f"{{address: {real_addr(i)}}}" for i in (1, 2, 3))
    return "".join(f"  - {{name: {n}, protocol: tcp, vip: {VIP_NAT}, port: {p}, scheduler: rr, forward: nat,"
                   f" dests: [{dests}]}}\n" for n, p in (("http", 80), ("echo", 7)))


def _status(cluster: LabCluster, node: NodeProc) -> Any:
    with grpc.insecure_channel(f"unix:{cluster.admin_socket(node)}") as ch:
        return pb_grpc.AdminStub(ch).Status(pb.StatusRequest(), timeout=30)


def _json(proc: subprocess.Popen[bytes], timeout: float) -> Any:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.decode().strip().splitlines()[-1])


def _one(label: str, defense: str, seconds: float) -> dict[str, float]:
    lab = Lab(new_name(), n_directors=2, n_reals=3)
    cluster = LabCluster(lab, n_nodes=2, node_extra=defense)
    try:
        cluster.bring_up("services:\n" + _services())
        master, backup = cluster.nodes
        wait_for("admin sockets", lambda: all(cluster.admin_socket(n).exists() for n in cluster.nodes), 30)
        st0 = _status(cluster, master)
        c = lab.client
        streams = lab.popen(c.ns, [PYTHON, "-m", "deploy.synflood", "streams", VIP_NAT, "7", str(STREAMS),
                                   str(seconds + 20)], stdout=subprocess.PIPE)
        wait_for("streams", lambda: _status(cluster, master).conns - st0.conns >= STREAMS, 60)
        sampler = StatusSampler(str(cluster.admin_socket(master))).start()
        flood = _json(lab.popen(c.ns, [PYTHON, "-m", "deploy.synflood", "flood", "eth0", c.macs["eth0"], VMAC,
                                       VIP_NAT, "80", str(RATE), str(seconds)], stdout=subprocess.PIPE),
                      seconds + 120)
        t_end = time.monotonic()
        during = sampler.stop()
        survived = _json(streams, 180)
        drained = threshold = THRESHOLD // 2
        try:
            wait_for("drain", lambda: _status(cluster, master).conns < threshold, 120)
        except Exception:  # not drained within the deadline: report what is left
            drained = 0
        t_drain = time.monotonic() - t_end
        after = _status(cluster, master)
        b = _status(cluster, backup)
        d = after.defense
        out = {
            "table_peak": max((s["entries"] for s in during), default=0),
            "rss_peak_mib": max((s["rss"] for s in during), default=0) / MIB,
            "rss_idle_mib": st0.defense.rss / MIB,
            "rss_growth_mib": (max((s["rss"] for s in during), default=0) - st0.defense.rss) / MIB,
            "table_after": after.conns + after.templates,
            "rss_after_mib": d.rss / MIB,
            "drain_s": t_drain if drained else float("nan"),
            "streams_survived": survived["ok"] / STREAMS,
            "flood_pps": flood["sent"] / flood["seconds"],
            "entries_dropped": d.entries_dropped,
            "packets_dropped": d.packets_dropped,
            "table_full_drops": d.table_full_drops,
            "backup_diff": abs((b.conns + b.templates) - (after.conns + after.templates)),
            "role_changes": after.role_changes - st0.role_changes,
        }
        admin = _admin_flood(lab, cluster, 10.0 if seconds < 60 else 20.0) if label == "defense" else {}
        print(f"    {label}: table {[s['entries'] for s in during][::8]}")
        print(f"    {label}: rss MiB {[round(s['rss'] / MIB) for s in during][::8]}; streams {survived}")
        return {**{f"{label}_{k}": float(v) for k, v in out.items()}, **admin}
    finally:
        cluster.close()
        lab.down()


def _admin_flood(lab: Lab, cluster: LabCluster, seconds: float) -> dict[str, float]:
    master = cluster.nodes[0]
    doc = big_document()
    c = lab.client
    since = time.time()
    streams = lab.popen(c.ns, [PYTHON, "-m", "deploy.synflood", "streams", VIP_NAT, "7", str(STREAMS),
                               str(seconds + 15)], stdout=subprocess.PIPE)
    flood = lab.popen(c.ns, [PYTHON, "-m", "deploy.synflood", "flood", "eth0", c.macs["eth0"], VMAC, VIP_NAT,
                             "80", "3000", str(seconds)], stdout=subprocess.PIPE)
    ch = grpc.insecure_channel(f"unix:{cluster.admin_socket(master)}",
                               options=[("grpc.max_send_message_length", 4 << 20)])
    stub = pb_grpc.AdminStub(ch)
    codes: dict[str, Counter[str]] = {k: Counter() for k in ("status", "listconns", "apply")}
    lat: list[float] = []

    def status() -> None:
        t = time.monotonic()
        stub.Status(pb.StatusRequest(), timeout=30)
        lat.append(time.monotonic() - t)

    def pages() -> None:
        token = ""
        for _ in range(5):
            chunks = list(stub.ListConns(pb.ListConnsRequest(page_size=1000, page_token=token), timeout=30))
            if not (token := chunks[-1].next_page_token):
                break

    def apply() -> None:
        stub.ApplyConfig(pb.ApplyConfigRequest(yaml=doc, dry_run=True), timeout=60)

    deadline = time.monotonic() + seconds

    def loop(fn: Callable[[], None], got: Counter[str]) -> None:
        while time.monotonic() < deadline:
            try:
                fn()
                got["OK"] += 1
            except grpc.RpcError as err:
                got[err.code().name] += 1

    threads = [threading.Thread(target=loop, args=(fn, codes[k]), daemon=True)
               for k, fn, n in (("status", status, 24), ("listconns", pages, 4), ("apply", apply, 4))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    ch.close()
    _json(flood, 120)
    survived = _json(streams, 120)
    roles = [ev for n in cluster.nodes for ev in cluster.events(n)
             if ev["event"] == "role" and ev["t"] >= since]
    out = {"admin_role_changes": float(len(roles)), "admin_streams_survived": survived["ok"] / STREAMS}
    for k, got in codes.items():
        out[f"admin_{k}_ok"] = float(got["OK"])
        out[f"admin_{k}_refused"] = float(got["RESOURCE_EXHAUSTED"])
        out[f"admin_{k}_other_errors"] = float(sum(v for e, v in got.items()
                                                   if e not in ("OK", "RESOURCE_EXHAUSTED")))
    if lat:
        lat.sort()
        out["admin_status_p50_ms"] = statistics.median(lat) * 1000.0
        out["admin_status_p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000.0
    print(f"    admin flood: {({k: dict(v) for k, v in codes.items()})}; streams {survived}")
    return out


def run(quick: bool = False) -> dict[str, float]:
    seconds = 15.0 if quick else 60.0
    out = _one("defense", DEFENSE_ON, seconds)
    out.update(_one("nodefense", DEFENSE_OFF, seconds))
    out["defense_max_conns"] = float(MAX_CONNS)
    out["defense_conn_threshold"] = float(THRESHOLD)
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
