"""Forwarding benchmarks: our director vs the kernel (ip_forward + nftables DNAT) vs a scapy forwarder.

Theory of operation
-------------------
One lab, three forwarders side by side, each on its own director namespace and its own VIP:

* d1: our director, ``directord`` in static mode (``cluster: none``, services from a file), VIP
  198.18.0.10, NAT to r1: one process pinned to CPU 1 (``workers: 1``, ``fwd_nat_pps_1core``; its
  receive softirq runs where the frame was sent, CPU 0; ``..._1core_rps`` steers that to CPU 1 too, so
  the generator's overload lands on the forwarder's core), or two packet workers on both CPUs
  (``workers: 2``, ``all_cores``, sharing them with the generator); ``..._no_tx_ring`` /
  ``..._no_rings`` are the same process with one send() per frame / without rings at all (node keys
  ``tx_ring: false`` / ``rx_ring: false``: the I/O choices measured);
* d2: a naive scapy forwarder (``sniff`` + ``sendp`` per packet), VIP 198.18.0.21, pinned to CPU 1;
* d3: the kernel: ``ip_forward=1`` + nftables DNAT 198.18.0.20 -> r1, RPS steering its receive work
  to CPU 1.

``trafgen`` (pinned to CPU 0) sends 60-byte UDP frames (1024 flows: 10 client addresses x ports)
straight to a forwarder's MAC for a fixed window; the figure is what r1 *receives* per second (its
eth0 rx counter), which drops them at netdev ingress so no replies or ICMP errors load the box.
trafgen in sendto() mode offers 190k-340k pps from one core here (depending on what else runs), so
a figure near the offered rate is generator-limited: a lower bound of the forwarder's capacity. TCP throughput
is ``iperf3`` from the client through the VIP (our NAT) or through d3 (kernel DNAT; the replies find
d3 by a source-port policy rule on r1). Cases are interleaved (A B A B ...) and the medians are
reported; ratios within one run are what to compare.

IPv6 (issue 13): ``fwd_nat6_pps_1core`` is the one-core case with 80-byte IPv6 UDP frames (same UDP
payload, 40-byte header; 10 client addresses of the client's IPv6 aliases x ports) to the IPv6 NAT VIP
fd00:18::10 -> r1's fd00:19::a (the director's services file then also holds that IPv6 service; it
resolves r1 by neighbour discovery during the warm-up), beside ``fwd_kernel6_pps``: d3's kernel with
IPv6 forwarding and an nftables ``ip6`` DNAT fd00:18::20 -> r1, the same frames, in the same rounds.

``python -m bench.bench_fwd`` prints the figures; ``python -m bench.bench_fwd scapy-fwd ...`` is the
scapy forwarder process itself.
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

from deploy.lab import (
    PYTHON,
    VIP6_NAT,
    VIP_NAT,
    Lab,
    client_addr,
    client_addr6,
    mac_for,
    new_name,
    real_addr,
    real_addr6,
    static_node_config,
)

log = logging.getLogger(__name__)

VIP_KERNEL = "198.18.0.20"
VIP6_KERNEL = "fd00:18::20"
VIP_SCAPY = "198.18.0.21"
UDP_PORT = 9
IPERF_NAT_PORT = 5300
"""One-off iperf3 servers for the NAT runs listen on 5301, 5302, ..."""
IPERF_KERNEL_PORT = 5202
KERNEL_REPLY_TABLE = 101
VMAC = "00:00:5e:00:01:01"
DIRECTOR_CPU = 1
GEN_CPU = 0
GEN_RATE = "3000000pps"
"""Above any rate reached: a rate makes trafgen use sendto() instead of its TX_RING, which dies with
EAGAIN as soon as the forwarder's backlog fills (PACKET-IO-NOTES.md, pitfall 9)."""


def services_yaml(v6: bool = False) -> str:
    """The director's services file for the benchmark: UDP port 9 and every TCP port on VIP_NAT -> r1
    (NAT). The any-port TCP service (iperf3) is persistent, as director.config.services requires.
    ``v6``: also UDP port 9 on VIP6_NAT -> r1's IPv6 address (the IPv6 runs only)."""
    r1 = real_addr(1)
    text = (
        "services:\n"
        f"  - {{name: bench-udp, protocol: udp, vip: {VIP_NAT}, port: {UDP_PORT}, scheduler: rr,\n"
        f"     forward: nat, dests: [{{address: {r1}, port: {UDP_PORT}}}]}}\n"
        f"  - {{name: bench-tcp-any, protocol: tcp, vip: {VIP_NAT}, port: 0, scheduler: rr, forward: nat,\n"
        f"     persistence: {{timeout: 60}}, dests: [{{address: {r1}, port: 0}}]}}\n"
    )
    if v6:
        r6 = real_addr6(1)
        text += (f'  - {{name: bench-udp6, protocol: udp, vip: "{VIP6_NAT}", port: {UDP_PORT},\n'
                 f'     scheduler: rr, forward: nat, dests: [{{address: "{r6}", port: {UDP_PORT}}}]}}\n')
    return text


def trafgen_config(dst_mac: str, vip: str, flows: int = 1024) -> str:
    """1024 distinct 60-byte UDP frames (10 client addresses x ports), as raw trafgen packets."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    base = client_addr(1).rsplit(".", 1)[0]
    first = int(client_addr(1).rsplit(".", 1)[1])
    packets = []
    for i in range(flows):
        src = f"{base}.{first + i % 10}"
        pkt = (Ether(dst=dst_mac, src=mac_for(1, 1)) / IP(src=src, dst=vip, ttl=64)
               / UDP(sport=1024 + i, dport=UDP_PORT) / (b"\0" * 18))
        packets.append("{ " + ", ".join(f"0x{b:02x}" for b in bytes(pkt)) + " }")
    return "\n".join(packets) + "\n"


def trafgen_config6(dst_mac: str, vip6: str, flows: int = 1024) -> str:
    """:func:`trafgen_config` over IPv6: 1024 distinct 80-byte UDP frames (the client's 10 IPv6
    addresses x ports), the same 18-byte payload."""
    import ipaddress

    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    first = int(ipaddress.IPv6Address(client_addr6(1)))
    packets = []
    for i in range(flows):
        src = str(ipaddress.IPv6Address(first + i % 10))
        pkt = (Ether(dst=dst_mac, src=mac_for(1, 1)) / IPv6(src=src, dst=vip6, hlim=64)
               / UDP(sport=1024 + i, dport=UDP_PORT) / (b"\0" * 18))
        packets.append("{ " + ", ".join(f"0x{b:02x}" for b in bytes(pkt)) + " }")
    return "\n".join(packets) + "\n"


class FwdBench:
    def __init__(self, lab: Lab, seconds: float) -> None:
        self.lab = lab
        self.seconds = seconds
        self.r1 = lab.reals[0]
        self.c1 = lab.client
        self._director: subprocess.Popen[bytes] | None = None
        self._scapy: subprocess.Popen[bytes] | None = None
        self._iperf_port = IPERF_NAT_PORT

    # -- setup --------------------------------------------------------------------------------------
    def prepare(self) -> None:
        lab, r1 = self.lab, self.r1
        lab.exec(r1.ns, "nft add table netdev sink")
        lab.exec(r1.ns, ["nft", "add chain netdev sink in "
                                "{ type filter hook ingress device eth0 priority 0 ; }"])
        lab.exec(r1.ns, f"nft add rule netdev sink in udp dport {UDP_PORT} drop")
        lab.popen(r1.ns, ["iperf3", "-s", "-p", str(IPERF_KERNEL_PORT)], stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
        d3 = lab.directors[2]
        lab.exec(r1.ns, f"ip route add default via {d3.addrs['int']} dev eth0 table {KERNEL_REPLY_TABLE}")
        lab.exec(r1.ns, f"ip rule add ipproto tcp sport {IPERF_KERNEL_PORT} lookup {KERNEL_REPLY_TABLE}")
        self._prepare_kernel()
        for d in lab.directors:
            for dev in ("ext", "int"):
                self._rps(d.ns, dev, 1 << DIRECTOR_CPU)
        self._wait_port(IPERF_KERNEL_PORT)

    def _rps(self, ns: str, dev: str, mask: int) -> None:
        self.lab.exec(ns, ["sh", "-c", f"echo {mask:x} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"])

    def _prepare_kernel(self) -> None:
        lab = self.lab
        d3 = lab.directors[2]
        lab.exec(d3.ns, "nft delete table netdev lbvip")
        lab.sysctl(d3.ns, "net.ipv4.ip_forward", "1")
        r1 = real_addr(1)
        rules = (
            "table ip knat {\n chain pre {\n  type nat hook prerouting priority -100\n"
            f"  ip daddr {VIP_KERNEL} udp dport {UDP_PORT} dnat to {r1}\n"
            f"  ip daddr {VIP_KERNEL} tcp dport {IPERF_KERNEL_PORT} dnat to {r1}\n }}\n}}\n"
        )
        lab.exec(d3.ns, ["nft", "-f", str(lab.write_file("knat.nft", rules))])
        lab.exec(self.c1.ns, f"ip neigh replace {VIP_KERNEL} lladdr {d3.macs['ext']} dev eth0")

    def prepare_kernel6(self) -> None:
        """d3's kernel as the IPv6 reference: IPv6 forwarding and an ``ip6`` DNAT VIP6_KERNEL -> r1."""
        lab = self.lab
        d3 = lab.directors[2]
        lab.sysctl(d3.ns, "net.ipv6.conf.all.forwarding", "1")
        rules = ("table ip6 knat6 {\n chain pre {\n  type nat hook prerouting priority -100\n"
                 f"  ip6 daddr {VIP6_KERNEL} udp dport {UDP_PORT} dnat to {real_addr6(1)}\n }}\n}}\n")
        lab.exec(d3.ns, ["nft", "-f", str(lab.write_file("knat6.nft", rules))])

    def _wait_port(self, port: int, timeout: float = 20.0) -> None:
        """Wait until r1 listens on ``port`` (without connecting: one-off servers take one client)."""
        deadline = time.monotonic() + timeout
        while f":{port} " not in self.lab.exec(self.r1.ns, f"ss -Hltn sport = :{port}").stdout + " ":
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on r1:{port}")
            time.sleep(0.05)

    def start_director(self, workers: int, rps: bool = False, v6: bool = False, **node: object) -> None:
        """Our director in d1: one worker pinned to DIRECTOR_CPU, or ``workers`` packet workers on all
        CPUs; ``node`` adds node keys (``tx_ring=False``, ...). ``rps`` steers d1's receive softirq work
        to DIRECTOR_CPU too (else it runs where the frame was sent: the generator's CPU). ``v6``: the
        services file has the IPv6 UDP service too."""
        self.stop_director()
        lab = self.lab
        stats = lab.workdir / "d1.stats.json"
        stats.unlink(missing_ok=True)
        svc = lab.write_file("bench-services.yaml", services_yaml(v6))
        cfg = lab.write_file("bench-d1.yaml", static_node_config(1, svc, int_mtu=1600, workers=workers,
                                                                  stats_file=str(stats), **node))
        argv = [PYTHON, "-m", "director.daemon", "-c", str(cfg), "--log-level", "warning"]
        if workers == 1:
            argv = ["taskset", "-c", str(DIRECTOR_CPU), *argv]
        d1 = lab.directors[0]
        self._rps(d1.ns, "ext", (1 << DIRECTOR_CPU) if rps else 0)
        self._rps(d1.ns, "int", (1 << DIRECTOR_CPU) if rps else 0)
        self._director = lab.popen(d1.ns, argv)
        deadline = time.monotonic() + 20
        while not (stats.exists() and json.loads(stats.read_text())["ready"]):  # forwarding, workers up
            if self._director.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("director did not start")
            time.sleep(0.05)

    def stop_director(self) -> None:
        if self._director is not None:
            self.lab.stop(self._director)
            self._director = None

    def start_scapy(self) -> None:
        d2 = self.lab.directors[1]
        self.lab.exec(d2.ns, "nft delete table netdev lbvip", check=False)
        argv = ["taskset", "-c", str(DIRECTOR_CPU), PYTHON, "-m", "bench.bench_fwd", "scapy-fwd",
                VIP_SCAPY, real_addr(1), mac_for(3, 1), d2.macs["int"]]
        self._scapy = self.lab.popen(d2.ns, argv, stderr=subprocess.DEVNULL)

    # -- measurements ---------------------------------------------------------------------------------
    def rx_packets(self) -> int:
        out = self.lab.exec(self.r1.ns, "ip -s -j link show eth0").stdout
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def pps(self, dst_mac: str, vip: str, v6: bool = False) -> float:
        """What r1 receives per second while trafgen sends UDP to ``vip`` at ``dst_mac`` (``v6``: the
        IPv6 frames of :func:`trafgen_config6`)."""
        text = trafgen_config6(dst_mac, vip) if v6 else trafgen_config(dst_mac, vip)
        cfg = self.lab.write_file(f"trafgen-{vip.replace(':', '_')}.cfg", text)
        gen = self.lab.popen(self.c1.ns, ["taskset", "-c", str(GEN_CPU), "trafgen", "-o", "eth0", "-i",
                                          str(cfg), "-P", "1", "--no-sock-mem", "-Q", "-C",
                                          "-b", GEN_RATE],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)  # warm-up: rings, neighbour entries, conn creation
            n0, t0 = self.rx_packets(), time.monotonic()
            time.sleep(self.seconds)
            n1, t1 = self.rx_packets(), time.monotonic()
        finally:
            self.lab.stop(gen, signal.SIGINT)
        return (n1 - n0) / (t1 - t0)

    def nat_tcp_mbit(self) -> float:
        """iperf3 through our director, against a one-off server on a fresh port: a server whose
        previous control connection lost its conn entry (director restarted) would stay busy."""
        self._iperf_port += 1
        self.lab.popen(self.r1.ns, ["iperf3", "-s", "-1", "-p", str(self._iperf_port)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_port(self._iperf_port)
        return self.tcp_mbit(VIP_NAT, self._iperf_port)

    def tcp_mbit(self, vip: str, port: int, attempts: int = 3) -> float:
        """iperf3 through ``vip``; retried when iperf3 reports an error (server still busy, ...)."""
        err = ""
        for _ in range(attempts):
            res = self.lab.exec(self.c1.ns, ["iperf3", "-c", vip, "-p", str(port), "-t", str(self.seconds),
                                             "-J"], timeout=self.seconds + 30, check=False)
            out = json.loads(res.stdout or "{}")
            if "sum_received" in out.get("end", {}):
                return float(out["end"]["sum_received"]["bits_per_second"]) / 1e6
            err = out.get("error", res.stderr)
            log.warning("iperf3 to %s:%d failed: %s", vip, port, err)
        raise RuntimeError(f"iperf3 to {vip}:{port} failed: {err}")


def run(quick: bool = False) -> dict[str, float]:
    rounds, seconds = (1, 1.0) if quick else (3, 2.0)
    with Lab(new_name(), n_directors=3, n_reals=1) as lab:
        b = FwdBench(lab, seconds)
        b.prepare()
        b.prepare_kernel6()
        d3 = lab.directors[2]
        res: dict[str, list[float]] = {k: [] for k in (
            "fwd_nat_pps_1core", "fwd_nat_pps_all_cores", "fwd_kernel_pps", "fwd_scapy_pps",
            "fwd_tcp_mbit_s", "fwd_kernel_tcp_mbit_s", "fwd_nat_pps_1core_rps",
            "fwd_nat_pps_1core_no_tx_ring", "fwd_nat_pps_1core_no_rings", "fwd_kernel6_pps",
            "fwd_nat6_pps_1core")}
        for _ in range(rounds):
            res["fwd_kernel_pps"].append(b.pps(d3.macs["ext"], VIP_KERNEL))
            res["fwd_kernel6_pps"].append(b.pps(d3.macs["ext"], VIP6_KERNEL, v6=True))
            b.start_director(1, rps=True)
            res["fwd_nat_pps_1core_rps"].append(b.pps(VMAC, VIP_NAT))
            b.start_director(1)
            res["fwd_nat_pps_1core"].append(b.pps(VMAC, VIP_NAT))
            b.start_director(1, v6=True)
            res["fwd_nat6_pps_1core"].append(b.pps(VMAC, VIP6_NAT, v6=True))
            if not quick:
                b.start_director(1, False, tx_ring=False)
                res["fwd_nat_pps_1core_no_tx_ring"].append(b.pps(VMAC, VIP_NAT))
                b.start_director(1, False, tx_ring=False, rx_ring=False)
                res["fwd_nat_pps_1core_no_rings"].append(b.pps(VMAC, VIP_NAT))
                b.start_director(1)
            res["fwd_kernel_tcp_mbit_s"].append(b.tcp_mbit(VIP_KERNEL, IPERF_KERNEL_PORT))
            res["fwd_tcp_mbit_s"].append(b.nat_tcp_mbit())
            b.start_director(2)
            res["fwd_nat_pps_all_cores"].append(b.pps(VMAC, VIP_NAT))
            b.stop_director()
        b.start_scapy()
        time.sleep(1.0)  # scapy's sniff start-up
        res["fwd_scapy_pps"].append(b.pps(lab.directors[1].macs["ext"], VIP_SCAPY))
        return {k: statistics.median(v) for k, v in res.items() if v}


def scapy_forwarder(vip: str, daddr: str, dmac: str, own_mac: str) -> None:
    """The naive reference: sniff on ext, rewrite dst IP/MAC, ``sendp`` each packet on int."""
    from scapy.all import sendp, sniff
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    def fwd(pkt: Ether) -> None:
        pkt[Ether].dst, pkt[Ether].src = dmac, own_mac
        pkt[IP].dst = daddr
        del pkt[IP].chksum
        del pkt[UDP].chksum
        sendp(pkt, iface="int", verbose=False)

    sniff(iface="ext", filter=f"udp and dst host {vip}", prn=fwd, store=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) > 1 and sys.argv[1] == "scapy-fwd":
        scapy_forwarder(*sys.argv[2:6])
        return
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

