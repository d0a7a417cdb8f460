"""Run a real single-member etcd 3.4 server for tests, the demo and the lab.

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
from collections.abc import Sequence
from types import TracebackType

log = logging.getLogger(__name__)

TUNED_HEARTBEAT_MS = 100
TUNED_ELECTION_MS = 600
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
    ) -> None:
        self.host = host
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
        self.run_dir = tempfile.mkdtemp(prefix="lbd-etcd-")
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
            f"--initial-cluster={self.name}={self.peer_url}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={os.path.basename(self.run_dir)}",
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
        if self.netns:
            return self._probe_in_netns(timeout)
        return probe_health(self.client_url, timeout)

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

    def _probe_in_netns(self, timeout: float) -> bool:
        code = (
            "import sys,urllib.request,json;"
            f"r=urllib.request.urlopen('{self.client_url}/health',timeout={timeout});"
            "sys.exit(0 if json.loads(r.read()).get('health')=='true' else 1)"
        )
        argv = ["ip", "netns", "exec", str(self.netns), sys.executable, "-c", code]
        try:
            res = subprocess.run(argv, capture_output=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0


def probe_health(client_url: str, timeout: float = 1.0) -> bool:
    """GET ``<client_url>/health`` and check ``{"health": "true"}``."""
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False
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
