"""Run real etcd 3.4 for tests, the demo and the lab: one member, or a cluster of N.

Theory of operation
-------------------
`EtcdServer` owns exactly one `etcd` child process.  Each instance makes its own run
directory (``tempfile.mkdtemp``) holding the data dir and the server log, so parallel or
crashed runs never share state.  Ports are picked free on the chosen host (bind to port 0,
close, hand the number to etcd) unless given; they are kept across `restart()` so clients
reconnect to the same address and the data survives (same data dir).

By default the server is *tuned* (``--heartbeat-interval=100 --election-timeout=600``):
etcd's minimum lease TTL is ``ceil(1.5 * election-timeout)`` rounded up to whole seconds,
so the tuned server grants a 1 s lease while the stock settings (100/1000) round it up to
2 s.  ``tuned=False`` runs etcd with its defaults.

`start()` blocks until ``/health`` answers ``{"health":"true"}``.  `stop()` signals only
the PID this object started (SIGTERM, then SIGKILL after a grace period).  `pause()` /
`resume()` send SIGSTOP / SIGCONT (an "unreachable but connected" etcd).  With ``netns``
the command is prefixed with ``ip netns exec <ns>`` (which execs, so the PID is etcd's),
and the health probe runs inside the namespace too.

Cluster mode: `EtcdCluster` runs N `EtcdServer` members (``initial_cluster`` names them all), each
in its own network namespace made by `MemberNet` (``<prefix>-e<i>``, 198.18.1.241.., a veth on a
bridge: the lab's internal segment, or a bridge of its own), so the peers' raft traffic crosses a
real bridge. `leader()` asks every member's ``/v3/maintenance/status`` (JSON gateway) which member
leads; the faults are the members' own `kill` (SIGKILL), `stop` (SIGTERM), `pause`/`resume`
(SIGSTOP/SIGCONT), and `start_member` (same ports and data dir: it rejoins with its data).

``python -m deploy.etcd [--host H] [--port P] [--defaults] [--netns NS]`` runs one in
the foreground for a lab or a demo: it prints the endpoint, then stops on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

TUNED_HEARTBEAT_MS = 100
TUNED_ELECTION_MS = 600
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
"""Where run directories go: tmpfs when available (see `EtcdServer`)."""
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000


class EtcdServerError(RuntimeError):
    """etcd failed to start, or became unhealthy."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (bind to port 0 and close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def min_lease_ttl(heartbeat_ms: int, election_ms: int) -> int:
    """The smallest lease TTL (s) etcd 3.4 grants: ceil(1.5 election ticks * heartbeat)."""
    ticks = election_ms // heartbeat_ms
    min_ms = (3 * ticks) // 2 * heartbeat_ms
    return max(1, -(-min_ms // 1000))


class EtcdServer:
    """One etcd process; context manager (start on enter, stop and clean up on exit)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        client_port: int = 0,
        peer_port: int = 0,
        tuned: bool = True,
        heartbeat_ms: int | None = None,
        election_ms: int | None = None,
        netns: str | None = None,
        name: str = "lbd-etcd",
        etcd_bin: str = "etcd",
        extra_args: Sequence[str] = (),
        keep_dir: bool = False,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
    ) -> None:
        self.host = host
        self.initial_cluster = initial_cluster
        """``name=peer-url,...`` of every member (cluster mode); None: a single-member cluster."""
        self.cluster_token = cluster_token
        self.netns = netns
        self.name = name
        self.etcd_bin = etcd_bin
        self.extra_args = list(extra_args)
        self.keep_dir = keep_dir
        self.heartbeat_ms = heartbeat_ms or (TUNED_HEARTBEAT_MS if tuned else DEFAULT_HEARTBEAT_MS)
        self.election_ms = election_ms or (TUNED_ELECTION_MS if tuned else DEFAULT_ELECTION_MS)
        self._want_client_port = client_port
        self._want_peer_port = peer_port
        self.client_port = client_port
        self.peer_port = peer_port
        # on tmpfs when there is one: the lab's etcd should not stall on a busy disk's fsync (a
        # production etcd runs on its own disk); its data still lives exactly as long as the run.
        # Named here, made when etcd is spawned: a server built and never started leaves nothing.
        self.run_dir = os.path.join(SCRATCH or tempfile.gettempdir(), f"lbd-etcd-{uuid.uuid4().hex[:12]}")
        self.data_dir = os.path.join(self.run_dir, "data")
        self.log_path = os.path.join(self.run_dir, "etcd.log")
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses -------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL (what `EtcdStore` takes)."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def min_lease_ttl(self) -> int:
        return min_lease_ttl(self.heartbeat_ms, self.election_ms)

    def argv(self) -> list[str]:
        """The full command line, including the ``ip netns exec`` prefix if any."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + [
            self.etcd_bin,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster or f'{self.name}={self.peer_url}'}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.cluster_token or os.path.basename(self.run_dir)}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
            *self.extra_args,
        ]

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        """Spawn etcd and wait until it reports healthy."""
        if self._proc is not None and self._proc.poll() is None:
            raise EtcdServerError("etcd already running")
        for attempt in range(5):
            self._pick_ports(fresh=attempt > 0)
            self._spawn()
            if self._wait_healthy(timeout):
                log.info("etcd pid %s healthy at %s", self.pid, self.client_url)
                return
            exited = self._proc is not None and self._proc.poll() is not None
            self._reap(signal.SIGKILL)
            ports_fixed = self._want_client_port and self._want_peer_port
            if not exited or ports_fixed or not self._port_clash():
                break
            log.warning("etcd port clash, retrying with new ports")
        raise EtcdServerError(f"etcd did not become healthy; log tail:\n{self.log_tail()}")

    def spawn(self) -> None:
        """Start etcd without waiting for health (a cluster member is healthy only with a quorum)."""
        if self._proc is not None and self._proc.poll() is None:
            raise EtcdServerError("etcd already running")
        self._pick_ports(fresh=False)
        self._spawn()

    def wait_healthy(self, timeout: float = 20.0) -> None:
        if not self._wait_healthy(timeout):
            raise EtcdServerError(f"etcd {self.name} did not become healthy; log tail:\n{self.log_tail()}")

    def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The member's ``Maintenance.Status`` (JSON gateway): ``member_id``, ``leader`` (ids as ints),
        ``raft_term``; None if it does not answer."""
        body = self._http("/v3/maintenance/status", "{}", timeout)
        if not isinstance(body, dict) or "header" not in body:
            return None
        hdr = body["header"]
        return {"member_id": int(hdr.get("member_id", 0)), "leader": int(body.get("leader", 0)),
                "raft_term": int(body.get("raftTerm", hdr.get("raft_term", 0)))}

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM our etcd (SIGKILL after `grace` seconds); the data dir is kept."""
        self._reap(signal.SIGTERM, grace)

    def kill(self) -> None:
        """SIGKILL our etcd at once (a crash); the data dir is kept."""
        self._reap(signal.SIGKILL)

    def restart(self, timeout: float = 20.0) -> None:
        """Stop and start on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop and remove the run directory (unless keep_dir)."""
        with contextlib.suppress(ProcessLookupError):
            self._signal(signal.SIGCONT)
        self.stop()
        if not self.keep_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def healthy(self, timeout: float = 1.0) -> bool:
        """True if ``/health`` says so (probed inside the namespace when there is one)."""
        body = self._http("/health", None, timeout)
        return isinstance(body, dict) and body.get("health") == "true"

    def _http(self, path: str, data: str | None, timeout: float) -> Any:
        """GET (or POST `data`) ``client_url + path`` and decode the JSON answer; None on any failure.
        Inside the namespace when there is one (a short python child: the namespace is not ours)."""
        url = self.client_url + path
        if not self.netns:
            return http_json(url, data, timeout)
        code = ("import sys,urllib.request;"
                f"d={data!r};r=urllib.request.urlopen({url!r},d.encode() if d else None,timeout={timeout});"
                "sys.stdout.write(r.read().decode())")
        argv = ["ip", "netns", "exec", str(self.netns), sys.executable, "-S", "-c", code]
        try:
            res = subprocess.run(argv, capture_output=True, timeout=timeout + 5, text=True)
            return json.loads(res.stdout) if res.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------
    def _pick_ports(self, fresh: bool) -> None:
        if not self._want_client_port and (fresh or not self.client_port):
            self.client_port = self._free_port()
        if not self._want_peer_port and (fresh or not self.peer_port):
            self.peer_port = self._free_port()
            while self.peer_port == self.client_port:
                self.peer_port = self._free_port()

    def _free_port(self) -> int:
        if self.netns:
            return _free_port_in_netns(self.netns, self.host)
        return free_port(self.host)

    def _spawn(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True
            )

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if self.healthy(timeout=0.5):
                return True
            time.sleep(0.05)
        return False

    def _port_clash(self) -> bool:
        return "address already in use" in self.log_tail(50)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.kill(self._proc.pid, sig)

    def _reap(self, sig: signal.Signals, grace: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, sig)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("etcd pid %s ignored %s, killing", proc.pid, sig.name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None


def http_json(url: str, data: str | None = None, timeout: float = 1.0) -> Any:
    """GET (POST when `data`) `url`, decode its JSON answer; None on any failure."""
    try:
        with urllib.request.urlopen(url, data.encode() if data else None, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


def probe_health(client_url: str, timeout: float = 1.0) -> bool:
    """GET ``<client_url>/health`` and check ``{"health": "true"}``."""
    body = http_json(f"{client_url}/health", None, timeout)
    return isinstance(body, dict) and body.get("health") == "true"


def _free_port_in_netns(netns: str, host: str) -> int:
    code = (
        "import socket;s=socket.socket();"
        f"s.bind(({host!r},0));print(s.getsockname()[1])"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code],
        capture_output=True, check=True, text=True, timeout=10,
    )
    return int(out.stdout.strip())


# ---------------------------------------------------------------------------- cluster mode
MEMBER_BASE = 241
"""Members' addresses on the internal segment: 198.18.1.241, .242, ... (client: .240)."""


class MemberNet:
    """One network namespace per member (``<prefix>-e<i>``), each on a bridge by a veth.

    In a lab the bridge is the lab's internal segment (``switch``/``bridge`` given): the directors
    reach every member there, and `Lab.down` removes the namespaces with the lab's. Stand-alone
    (``switch=None``) it makes its own switch namespace, bridge and a client namespace ``<prefix>-ec``
    (198.18.1.240) to talk to the members from."""

    def __init__(self, prefix: str, n: int, switch: str | None = None, bridge: str = "brint",
                 net: str = "198.18.1", mtu: int = 1600) -> None:
        self.prefix, self.n, self.net, self.mtu = prefix, n, net, mtu
        self.own = switch is None
        self.switch = switch or f"{prefix}-esw"
        self.bridge = bridge if switch else "br0"
        self.client_ns = f"{prefix}-ec"

    def ns(self, i: int) -> str:
        return f"{self.prefix}-e{i}"

    def addr(self, i: int) -> str:
        return f"{self.net}.{MEMBER_BASE - 1 + i}"

    def up(self) -> None:
        have = set(_netns_list())
        if self.own and self.switch not in have:
            _sh(["ip", "netns", "add", self.switch])
            _sh(["ip", "netns", "exec", self.switch, "ip", "link", "add", self.bridge, "type", "bridge"])
            _sh(["ip", "netns", "exec", self.switch, "ip", "link", "set", self.bridge, "up"])
        hosts = [(self.ns(i), f"e{i}", self.addr(i)) for i in range(1, self.n + 1)]
        if self.own:
            hosts.append((self.client_ns, "ec", f"{self.net}.{MEMBER_BASE - 1}"))
        for ns, port, addr in hosts:
            if ns in have:
                continue
            sw = ["ip", "netns", "exec", self.switch]
            _sh(["ip", "netns", "add", ns])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            _sh([*sw, "ip", "link", "add", port, "mtu", str(self.mtu), "type", "veth", "peer", "name", "eth0",
                 "netns", ns, "mtu", str(self.mtu)])
            _sh([*sw, "ip", "link", "set", port, "master", self.bridge, "up"])
            _sh(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
            _sh(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def down(self) -> None:
        for ns in _netns_list():
            mine = ns.startswith(f"{self.prefix}-e") and (self.own or ns[len(self.prefix) + 2:].isdigit())
            if mine:
                subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


class EtcdCluster:
    """A real N-member etcd cluster, one member per namespace, peers talking over the bridge.

    Same lifecycle verbs as `EtcdServer` for the whole cluster (`start`, `stop`, `close`); a member
    (an `EtcdServer`) is hurt with its own `kill`, `stop`, `pause`/`resume`, and brought back with
    `start_member` (same ports, same data dir: it rejoins with its data). `leader()` asks the
    members' status endpoints which member leads; `wait_leader` polls until one does."""

    def __init__(self, net: MemberNet, *, name: str = "lbd-etcd", client_port: int = 2379,
                 peer_port: int = 2380, tuned: bool = True) -> None:
        self.net = net
        self.client_port = client_port
        urls = ",".join(f"{name}-{i}=http://{net.addr(i)}:{peer_port}" for i in range(1, net.n + 1))
        self.members = [
            EtcdServer(host=net.addr(i), client_port=client_port, peer_port=peer_port, tuned=tuned,
                       netns=net.ns(i), name=f"{name}-{i}", initial_cluster=urls, cluster_token=name)
            for i in range(1, net.n + 1)]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 30.0) -> None:
        """Wire the namespaces (once), spawn every stopped member, wait until all are healthy."""
        self.net.up()
        for m in self.members:
            if not m.running():
                m.spawn()
        for m in self.members:
            m.wait_healthy(timeout)

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def close(self) -> None:
        for m in self.members:
            m.close()
        if self.net.own:
            self.net.down()

    # -- member faults (the others are the member's own: kill, stop, pause, resume) ----------------------
    def start_member(self, m: EtcdServer, wait: bool = True, timeout: float = 30.0) -> None:
        """Restart a stopped member on its ports with its data dir; `wait`: until it is healthy
        (only possible when a quorum is running)."""
        m.spawn()
        if wait:
            m.wait_healthy(timeout)

    # -- who leads ----------------------------------------------------------------------------------
    def statuses(self) -> dict[str, dict[str, Any]]:
        out = {}
        for m in self.members:
            st = m.status() if m.running() else None
            if st is not None:
                out[m.name] = st
        return out

    def leader(self) -> EtcdServer | None:
        """The member that leads, as the answering members see it (None: no leader)."""
        sts = self.statuses()
        by_id = {st["member_id"]: name for name, st in sts.items()}
        votes = [st["leader"] for st in sts.values() if st["leader"]]
        if not votes:
            return None
        lead = max(set(votes), key=votes.count)
        name = by_id.get(lead)
        return next((m for m in self.members if m.name == name), None)

    def followers(self) -> list[EtcdServer]:
        lead = self.leader()
        return [m for m in self.members if m is not lead and m.running()]

    def wait_leader(self, timeout: float = 30.0, not_: EtcdServer | None = None) -> EtcdServer:
        deadline = time.monotonic() + timeout
        while True:
            lead = self.leader()
            if lead is not None and lead is not not_ and lead.healthy():
                return lead
            if time.monotonic() > deadline:
                raise EtcdServerError("no etcd leader elected")
            time.sleep(0.1)

    def quorum(self) -> bool:
        """True when some running member reports healthy (it has a leader)."""
        return any(m.healthy() for m in self.members if m.running() and m.status() is not None)


def _netns_list() -> list[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout.strip()
    return [e["name"] for e in json.loads(out)] if out else []


def _sh(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise EtcdServerError(f"{' '.join(argv)}: {res.stderr.strip()}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.etcd", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="client port (0: a free one)")
    ap.add_argument("--peer-port", type=int, default=0)
    ap.add_argument("--defaults", action="store_true", help="etcd's stock heartbeat/election timing")
    ap.add_argument("--netns", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = EtcdServer(host=args.host, client_port=args.port, peer_port=args.peer_port,
                        tuned=not args.defaults, netns=args.netns)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    try:
        print(server.endpoint, flush=True)
        while not stop and server.running():
            time.sleep(0.2)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
