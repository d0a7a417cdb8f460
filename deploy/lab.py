"""The network-namespace lab: client, directors, real servers, two bridges, nothing on the host network.

Theory of operation
-------------------
Every object lives in a network namespace whose name starts with the lab name (``lb<4 hex>`` per run),
so a lab is found, and removed, by listing namespaces: ``down`` kills the processes inside them (they are
the lab's own: started by it or by its users through its helpers) and deletes the namespaces, which takes
the veths and bridges with them. That works after a crash too, because nothing is remembered outside
the namespace names. The host's own namespace is never touched: both bridges live in a switch namespace
``<name>-sw`` and each veth is created there with its peer moved straight into its host namespace, so
interface names inside a namespace are short and fixed (``ext``, ``int``, ``eth0``).

Topology (addresses from 198.18.0.0/15)::

    client c1 eth0 198.18.0.100 (+ aliases .101-.109)      VIPs 198.18.0.10 (NAT) .11 (DR) .12 (TUN)
        |                                                        owned by no kernel; ARP answered by
    [ br-ext 198.18.0.0/24 ]---ext d1 .1, d2 .2, d3 .3           the active director (virtual MAC)
        |                      router rt ext .254
    directors dN: ext 198.18.0.N  int 198.18.1.N  (ip_forward=0, netdev ingress drop for VIP traffic)
        |                      router rt int .253
    [ br-int 198.18.1.0/24, MTU 1600 ]--- ctl 198.18.1.250 (etcd etc.)
        |
    real servers rN eth0 198.18.1.(9+N), default via 198.18.1.254 (the NAT gateway the active director
    answers ARP for); DR VIP on lo with arp_ignore/arp_announce; TUN VIP on a tun device fed by a
    user-space IPIP decapsulator (this kernel has no CONFIG_NET_IPIP). Replies from the DR/TUN VIPs go
    to the router by a source policy rule, straight back to the client, not through a director.

IPv6 (ULA only, never a routed prefix): the client, the directors, the real servers and the router are
dual-stack on fd00:18::/64 outside (client fd00:18::64 (hex 100) with aliases ::65-::6d, director N
fd00:18::N, router ::fe, VIPs fd00:18::10 NAT .. ::12 TUN) and fd00:19::/64 inside (real server N
fd00:19::(9+N), director N fd00:19::N, router ::fd). A real server's default IPv6 route is the
directors' link-local address ``fe80::200:5eff:fe00:201`` (EUI-64 of IPv6's virtual MAC
00:00:5e:00:02:01, answered by the active director's neighbour discovery: its NAT gateway for IPv6).
The IPv6 DR VIP sits on the real servers' lo (the kernel answers NS only for addresses of the
interface asked: no arp_ignore needed), the
IPv6 TUN VIP on the tun device, fed with ip6ip6 by the same user-space decapsulator (no ``ip6_tunnel``
module here); replies from both go to the router by a source policy rule, as in IPv4. Every address is
``nodad`` and DAD, router solicitations and autoconfiguration are off, so nothing waits and the kernels
stay quiet; the switch and ctl keep IPv6 disabled.

The internal segment has MTU 1600 so a 1500-byte client packet still fits after IPIP encapsulation.
Client and real servers keep tx checksum offload on (their frames reach the directors CHECKSUM_PARTIAL,
which the I/O layer must handle) but have TSO/GSO off so no frame is larger than the MTU.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable

EXT_NET = "198.18.0.0/24"
INT_NET = "198.18.1.0/24"
VIP_NAT = "198.18.0.10"
VIP_DR = "198.18.0.11"
VIP_TUN = "198.18.0.12"
VIPS = (VIP_NAT, VIP_DR, VIP_TUN)
VIP_RANGE = "198.18.0.10-198.18.0.19"
"""Addresses the directors' kernels drop at netdev ingress (the user-space director owns them)."""
GATEWAY = "198.18.1.254"
ROUTER_EXT = "198.18.0.254"
ROUTER_INT = "198.18.1.253"
CTL_ADDR = "198.18.1.250"
INT_MTU = 1600
CLIENT_ALIASES = 9
REPLY_TABLE = 100
EXT6_NET = "fd00:18::/64"
INT6_NET = "fd00:19::/64"
VIP6_NAT = "fd00:18::10"
VIP6_DR = "fd00:18::11"
VIP6_TUN = "fd00:18::12"
VIP6_RANGE = "fd00:18::10-fd00:18::1f"
GATEWAY6 = "fe80::200:5eff:fe00:201"
"""The directors' IPv6 link-local address (EUI-64 of virtual MAC 1): the real servers' IPv6 default route."""
ROUTER6_EXT = "fd00:18::fe"
ROUTER6_INT = "fd00:19::fd"
"""The router's IPv6 addresses: DR/TUN replies from the IPv6 VIPs go back to the client through it."""
_V6_HOSTS = ("client", "director", "real", "router")


def director_ext6(n: int) -> str:
    return f"fd00:18::{n:x}"


def director_int6(n: int) -> str:
    return f"fd00:19::{n:x}"


def real_addr6(n: int) -> str:
    return f"fd00:19::{9 + n:x}"


def client_addr6(n: int) -> str:
    return f"fd00:18::{100 + 10 * (n - 1):x}"


def director_ext(n: int) -> str:
    return f"198.18.0.{n}"


def director_int(n: int) -> str:
    return f"198.18.1.{n}"


def real_addr(n: int) -> str:
    return f"198.18.1.{9 + n}"


def client_addr(n: int) -> str:
    return f"198.18.0.{100 + 10 * (n - 1)}"


def mac_for(kind: int, n: int, side: int = 0) -> str:
    """Deterministic locally administered MACs: 02:1b:<kind>:<side>:00:<n>."""
    return f"02:1b:{kind:02x}:{side:02x}:00:{n:02x}"


@dataclass(frozen=True)
class Host:
    """One namespace of the lab and its addresses."""

    ns: str
    role: str
    index: int
    addrs: dict[str, str] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)


def new_name() -> str:
    return f"lb{secrets.token_hex(2)}"


def _run(argv: Sequence[str], check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def list_namespaces() -> list[str]:
    out = _run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


class Lab:
    """Build, use and remove one lab. ``up()`` is idempotent; ``down()`` removes everything."""

    def __init__(self, name: str | None = None, *, n_clients: int = 1, n_directors: int = 3,
                 n_reals: int = 3, start_servers: bool = True) -> None:
        self.name = name or new_name()
        self.start_servers = start_servers
        self.workdir = Path("/tmp") / f"{self.name}.lab"
        self.switch = f"{self.name}-sw"
        self.clients = [self._client(i) for i in range(1, n_clients + 1)]
        self.directors = [self._director(i) for i in range(1, n_directors + 1)]
        self.reals = [self._real(i) for i in range(1, n_reals + 1)]
        self.router = Host(f"{self.name}-rt", "router", 1, {"ext": ROUTER_EXT, "int": ROUTER_INT},
                           {"ext": mac_for(4, 1, 0), "int": mac_for(4, 1, 1)})
        self.ctl = Host(f"{self.name}-ctl", "ctl", 1, {"eth0": CTL_ADDR}, {"eth0": mac_for(5, 1)})
        self._procs: list[subprocess.Popen[bytes]] = []
        self._detached: list[subprocess.Popen[bytes]] = []

    # -- topology description -------------------------------------------------------------------
    def _client(self, i: int) -> Host:
        return Host(f"{self.name}-c{i}", "client", i, {"eth0": client_addr(i)}, {"eth0": mac_for(1, i)})

    def _director(self, i: int) -> Host:
        return Host(f"{self.name}-d{i}", "director", i, {"ext": director_ext(i), "int": director_int(i)},
                    {"ext": mac_for(2, i, 0), "int": mac_for(2, i, 1)})

    def _real(self, i: int) -> Host:
        return Host(f"{self.name}-r{i}", "real", i, {"eth0": real_addr(i)}, {"eth0": mac_for(3, i)})

    @property
    def hosts(self) -> list[Host]:
        return [*self.clients, *self.directors, *self.reals, self.router, self.ctl]

    @property
    def client(self) -> Host:
        return self.clients[0]

    def client_sources(self, i: int = 1) -> list[str]:
        """The client's primary address and its aliases (distinct client addresses for tests)."""
        base = int(ipaddress.IPv4Address(client_addr(i)))
        return [str(ipaddress.IPv4Address(base + k)) for k in range(CLIENT_ALIASES + 1)]

    def client_sources6(self, i: int = 1) -> list[str]:
        """The client's primary IPv6 address and its aliases (as :meth:`client_sources`)."""
        base = int(ipaddress.IPv6Address(client_addr6(i)))
        return [str(ipaddress.IPv6Address(base + k)) for k in range(CLIENT_ALIASES + 1)]

    # -- lifecycle ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.switch in list_namespaces()

    def up(self) -> Lab:
        """Build the lab (or do nothing if it is already up) and start the real servers."""
        if not self.exists():
            self.down()  # leftovers of a crashed run with this name
            try:
                self._build()
            except BaseException:
                self.down()
                raise
        if self.start_servers:
            self.ensure_servers()
        return self

    def down(self) -> None:
        """Remove every namespace of this lab (and the processes in them), also after a crash."""
        prefix = f"{self.name}-"
        for p in self._procs:
            if p.poll() is None:
                self.stop(p, signal.SIGKILL)
        self._procs.clear()
        for ns in list_namespaces():
            if ns.startswith(prefix):
                self._kill_ns_pids(ns)
                _run(["ip", "netns", "del", ns], check=False)
        for p in self._detached:
            if p.poll() is None:
                self.stop(p, signal.SIGKILL)
        self._detached.clear()
        keep = os.environ.get("LBD_KEEP_LABS")
        if keep and self.workdir.exists():  # post-mortem of a failed lab run: its node logs and pcaps
            shutil.copytree(self.workdir, Path(keep) / self.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock"))
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_ns_pids(self, ns: str) -> None:
        out = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        pids = [int(p) for p in out if p.isdigit() and int(p) != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
            if pids:
                time.sleep(0.02)

    def _build(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for host in [Host(self.switch, "switch", 0), *self.hosts]:
            _run(["ip", "netns", "add", host.ns])
            self.exec(host.ns, "ip link set lo up")
            self._ipv6_sysctls(host)
        self._build_switch()
        for c in self.clients:
            self._build_client(c)
        for d in self.directors:
            self._build_director(d)
        for r in self.reals:
            self._build_real(r)
        self._build_router()
        self._link(self.ctl, "eth0", "brint", "ctl", mtu=INT_MTU)
        self.exec(self.ctl.ns, f"ip addr add {CTL_ADDR}/24 dev eth0")

    def _ipv6_sysctls(self, host: Host) -> None:
        """IPv6 on for client, directors and real servers (quiet: no DAD, RS, autoconf), off elsewhere."""
        on = host.role in _V6_HOSTS
        for scope in ("all", "default"):
            self.sysctl(host.ns, f"net.ipv6.conf.{scope}.disable_ipv6", "0" if on else "1")
            if on:
                for key, val in (("accept_dad", "0"), ("dad_transmits", "0"), ("accept_ra", "0"),
                                 ("autoconf", "0"), ("router_solicitations", "0")):
                    self.sysctl(host.ns, f"net.ipv6.conf.{scope}.{key}", val)

    def _build_switch(self) -> None:
        # A plain L2 switch: no br_netfilter (it would validate and drop malformed IPv4 in transit).
        for proto in ("arptables", "iptables", "ip6tables"):
            self.exec(self.switch, ["sysctl", "-qw", f"net.bridge.bridge-nf-call-{proto}=0"], check=False)
        for br in ("brext", "brint"):
            self.exec(self.switch, f"ip link add {br} type bridge forward_delay 0 stp_state 0")
            self.exec(self.switch, f"ip link set {br} up")
        self.exec(self.switch, f"ip link set brint mtu {INT_MTU}")

    def _link(self, host: Host, ifname: str, bridge: str, port: str, mtu: int = 1500) -> None:
        sw = self.switch
        self.exec(sw, f"ip link add {port} mtu {mtu} type veth peer name {ifname} netns {host.ns} mtu {mtu}")
        self.exec(sw, f"ip link set {port} master {bridge} up")
        self.exec(host.ns, f"ip link set {ifname} address {host.macs[ifname]} up")

    def _no_gso(self, ns: str, ifname: str) -> None:
        self.exec(ns, f"ethtool -K {ifname} tso off gso off", check=False)

    def _build_client(self, c: Host) -> None:
        self._link(c, "eth0", "brext", f"c{c.index}")
        self._no_gso(c.ns, "eth0")
        for k, addr in enumerate(self.client_sources(c.index)):
            self.exec(c.ns, f"ip addr add {addr}/{24 if k == 0 else 32} dev eth0")
        for vip in VIPS:
            self.exec(c.ns, f"ip route replace {vip}/32 dev eth0 src {c.addrs['eth0']}")
        for k, addr in enumerate(self.client_sources6(c.index)):  # aliases deprecated: never a default source
            extra = "" if k == 0 else " preferred_lft 0"
            self.exec(c.ns, f"ip -6 addr add {addr}/{64 if k == 0 else 128} dev eth0 nodad{extra}")

    def _build_director(self, d: Host) -> None:
        self._link(d, "ext", "brext", f"d{d.index}e")
        self._link(d, "int", "brint", f"d{d.index}i", mtu=INT_MTU)
        self.exec(d.ns, f"ip addr add {d.addrs['ext']}/24 dev ext")
        self.exec(d.ns, f"ip addr add {d.addrs['int']}/24 dev int")
        self.exec(d.ns, f"ip -6 addr add {director_ext6(d.index)}/64 dev ext nodad")
        self.exec(d.ns, f"ip -6 addr add {director_int6(d.index)}/64 dev int nodad")
        self.sysctl(d.ns, "net.ipv6.conf.all.forwarding", "0")
        self.sysctl(d.ns, "net.ipv4.ip_forward", "0")
        self.exec(d.ns, "nft add table netdev lbvip")
        self.exec(d.ns, ["nft", "add chain netdev lbvip ingress "
                                "{ type filter hook ingress device ext priority 0 ; }"])
        self.exec(d.ns, f"nft add rule netdev lbvip ingress ip daddr {VIP_RANGE} counter drop")
        self.exec(d.ns, f"nft add rule netdev lbvip ingress ip6 daddr {VIP6_RANGE} counter drop")

    def _build_real(self, r: Host) -> None:
        ns = r.ns
        self._link(r, "eth0", "brint", f"r{r.index}", mtu=INT_MTU)
        self._no_gso(ns, "eth0")
        self.exec(ns, f"ip addr add {r.addrs['eth0']}/24 dev eth0")
        self.exec(ns, f"ip route add default via {GATEWAY} dev eth0")
        self.exec(ns, f"ip -6 addr add {real_addr6(r.index)}/64 dev eth0 nodad")
        self.exec(ns, f"ip -6 route add default via {GATEWAY6} dev eth0")
        for key, val in (("arp_ignore", "1"), ("arp_announce", "2"), ("rp_filter", "0")):
            for scope in ("all", "default", "eth0", "lo"):
                self.sysctl(ns, f"net.ipv4.conf.{scope}.{key}", val)
        self.exec(ns, f"ip addr add {VIP_DR}/32 dev lo")
        self.exec(ns, "ip tuntap add dev tunl0 mode tun")
        self.sysctl(ns, "net.ipv4.conf.tunl0.rp_filter", "0")
        self.exec(ns, f"ip addr add {VIP_TUN}/32 dev tunl0")
        self.exec(ns, "ip link set tunl0 up")
        self.exec(ns, f"ip route add default via {ROUTER_INT} dev eth0 table {REPLY_TABLE}")
        for vip in (VIP_DR, VIP_TUN):
            self.exec(ns, f"ip rule add from {vip} lookup {REPLY_TABLE}")
        self._build_real6(ns)

    def _build_real6(self, ns: str) -> None:
        """IPv6 DR and TUN on a real server: the DR VIP on lo, the TUN VIP on the tun device, replies
        from either through the router (its inside address), straight back to the client."""
        self.exec(ns, f"ip -6 addr add {VIP6_DR}/128 dev lo nodad")
        self.exec(ns, f"ip -6 addr add {VIP6_TUN}/128 dev tunl0 nodad")
        self.exec(ns, f"ip -6 route add default via {ROUTER6_INT} dev eth0 table {REPLY_TABLE}")
        for vip in (VIP6_DR, VIP6_TUN):
            self.exec(ns, f"ip -6 rule add from {vip} lookup {REPLY_TABLE}")

    def _build_router(self) -> None:
        rt = self.router
        self._link(rt, "ext", "brext", "rte")
        self._link(rt, "int", "brint", "rti", mtu=INT_MTU)
        self.exec(rt.ns, f"ip addr add {ROUTER_EXT}/24 dev ext")
        self.exec(rt.ns, f"ip addr add {ROUTER_INT}/24 dev int")
        for scope in ("all", "default", "ext", "int"):
            self.sysctl(rt.ns, f"net.ipv4.conf.{scope}.rp_filter", "0")
        self.sysctl(rt.ns, "net.ipv4.ip_forward", "1")
        self.exec(rt.ns, f"ip -6 addr add {ROUTER6_EXT}/64 dev ext nodad")
        self.exec(rt.ns, f"ip -6 addr add {ROUTER6_INT}/64 dev int nodad")
        self.sysctl(rt.ns, "net.ipv6.conf.all.forwarding", "1")

    # -- real servers -----------------------------------------------------------------------------
    def ensure_servers(self, timeout: float = 20.0) -> None:
        """Start deploy.servers in every real-server namespace that has none running; wait until ready."""
        for r in self.reals:
            ready = self.workdir / f"{r.ns}.ready"
            if ready.exists() and self._ns_has_pids(r.ns):
                continue
            ready.unlink(missing_ok=True)
            logf = open(self.workdir / f"{r.ns}.servers.log", "ab")  # noqa: SIM115 - owned by the child
            argv = [PYTHON, "-m", "deploy.servers", "--name", f"r{r.index}", "--tun", "tunl0",
                    "--ready-file", str(ready)]
            self.popen(r.ns, argv, stdout=logf, stderr=subprocess.STDOUT, detach=True)
            logf.close()
        deadline = time.monotonic() + timeout
        for r in self.reals:
            ready = self.workdir / f"{r.ns}.ready"
            while not ready.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"servers in {r.ns} not ready; see {self.workdir}")
                time.sleep(0.05)

    def _ns_has_pids(self, ns: str) -> bool:
        return bool(_run(["ip", "netns", "pids", ns], check=False).stdout.split())

    # -- helpers ----------------------------------------------------------------------------------
    def exec(self, ns: str, cmd: str | Sequence[str], check: bool = True,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command in namespace ``ns`` and wait for it; a string is split like a shell would."""
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)

    def popen(self, ns: str, argv: Sequence[str], *, detach: bool = False,
              **kw: object) -> subprocess.Popen[bytes]:
        """Start a process in ``ns`` as the leader of a new process group (see :meth:`stop`); it is killed
        by ``down()`` (a ``detach``-ed one too, through its namespace)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        full = ["ip", "netns", "exec", ns, *argv]
        p: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            full, cwd=str(REPO), env=env, start_new_session=True, **kw)
        (self._detached if detach else self._procs).append(p)
        return p

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the process group of a process started by :meth:`popen`; kill it if it lingers."""
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                break
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        return proc.wait()

    def run_python(self, ns: str, code_or_module: str, *args: str, check: bool = True,
                   timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run Python code (``-c``) or a module (``-m``, a dotted name) in ``ns`` and wait for it."""
        is_module = all(part.isidentifier() for part in code_or_module.split("."))
        argv = [PYTHON, "-m" if is_module else "-c", code_or_module, *args]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                             timeout=timeout, cwd=str(REPO), env=env)
        if check and res.returncode != 0:
            raise RuntimeError(f"python in {ns} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return res

    def start_director(self, n: int, node_config: str | Path, *extra: str,
                       **kw: object) -> subprocess.Popen[bytes]:
        """Run ``directord`` (``python -m director.daemon -c NODE_CONFIG``) in director ``n``; for a
        single director without etcd the node config says ``cluster: none`` (:func:`static_node_config`)."""
        d = self.directors[n - 1]
        argv = [PYTHON, "-m", "director.daemon", "-c", str(node_config), *extra]
        return self.popen(d.ns, argv, **kw)  # type: ignore[arg-type]

    def sysctl(self, ns: str, key: str, value: str) -> None:
        self.exec(ns, ["sysctl", "-qw", f"{key}={value}"])

    def write_file(self, relname: str, text: str) -> Path:
        """Write a file into the lab's work dir (configs, logs); returns its path."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / relname
        path.write_text(text)
        return path

    def status(self) -> dict[str, object]:
        present = [ns for ns in list_namespaces() if ns.startswith(f"{self.name}-")]
        return {
            "name": self.name,
            "up": self.exists(),
            "namespaces": sorted(present),
            "hosts": {h.ns: {"role": h.role, "addrs": h.addrs, "macs": h.macs} for h in self.hosts},
            "vips": {"nat": VIP_NAT, "dr": VIP_DR, "tun": VIP_TUN},
            "vips6": {"nat": VIP6_NAT, "dr": VIP6_DR, "tun": VIP6_TUN},
            "gateway": GATEWAY,
            "workdir": str(self.workdir),
        }

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def static_node_config(n: int, services_file: str | Path, **keys: object) -> str:
    """A static director's node YAML (``cluster: none``) for director ``n`` of a lab: its interfaces,
    the lab's virtual MAC 1 and NAT gateway, ``workers: 1``, then ``keys`` (any node key) over that."""
    doc: dict[str, object] = {"node_id": f"d{n}", "cluster": "none",
                              "interfaces": {"external": "ext", "internal": "int"}, "vmac_id": 1,
                              "gateways": [GATEWAY], "workers": 1, "services_file": str(services_file)}
    doc.update(keys)
    return json.dumps(doc, indent=1) + "\n"  # JSON is YAML


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.lab", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--name", default="lbdemo", help="lab name (namespace prefix), default lbdemo")
    ap.add_argument("--directors", type=int, default=3)
    ap.add_argument("--reals", type=int, default=3)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--no-servers", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    lab = Lab(args.name, n_clients=args.clients, n_directors=args.directors, n_reals=args.reals,
              start_servers=not args.no_servers)
    if args.command == "up":
        lab.up()
        print(json.dumps(lab.status(), indent=2))
    elif args.command == "down":
        lab.down()
    else:
        print(json.dumps(lab.status(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
