"""`TrafficProc`: the client traffic tool (``deploy.traffic``, or a subclass's `MODULE`) run in the
lab's client namespace and driven over its stdin/stdout (``report``, ``phase NAME``, ``stop``); the
drill, the chaos run, the benchmarks and the lab tests read its JSON reports."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from typing import IO, Any

from deploy.cluster import ClusterError, wait_for
from deploy.lab import PYTHON, VIP6_NAT, VIP_NAT, Lab


class TrafficProc:
    """The traffic tool in the client namespace, driven over its stdin/stdout."""

    MODULE = "deploy.traffic"

    def __init__(self, lab: Lab, conns: int, new_rate: float, interval: float,
                 udp_rate: float = 200.0, conns6: int = 0) -> None:
        """``conns6`` > 0: that many of the ``conns`` streams, and sticky clients from the client's
        IPv6 addresses, go to the IPv6 NAT VIP (``deploy.lab.VIP6_NAT``: same ports as the IPv4 one)."""
        sources = lab.client_sources()
        sources6 = lab.client_sources6() if conns6 > 0 else []
        self.n_sources = len(sources) + len(sources6)
        argv = [PYTHON, "-m", self.MODULE, "--echo-vip", VIP_NAT, "--http-vip", VIP_NAT,
                "--conns", str(conns), "--interval", str(interval), "--new-rate", str(new_rate),
                "--sources", ",".join(sources), "--udp-rate", str(udp_rate)]
        if sources6:
            argv += ["--echo-vip6", VIP6_NAT, "--http-vip6", VIP6_NAT, "--sources6", ",".join(sources6),
                     "--conns6", str(conns6)]
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
        try:
            return self.report_line(timeout)
        except queue.Empty:
            raise ClusterError("traffic tool did not report") from None

    def report_line(self, timeout: float) -> dict[str, Any]:
        """The next report the client printed (raises queue.Empty after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if "alive" in msg:
                return msg

    def wait_flowing(self, conns: int, timeout: float, what: str = "traffic flowing") -> None:
        """Until `conns` streams are open and every client address has its sticky server."""

        def ready() -> bool:
            r = self.report()
            return bool(r["alive"] >= conns and r["sticky_sources"] >= self.n_sources)

        wait_for(what, ready, timeout, 0.5)

    def wait_settled(self, since_ok: int, timeout: float, stall_ok: float = 1500.0,
                     what: str = "traffic to settle") -> dict[str, Any]:
        """Until every client address made two new connections after `since_ok` (a report's
        ``new_ok``) and no stream is stalled longer than `stall_ok` ms; returns that report."""
        need = since_ok + 2 * self.n_sources

        def settled() -> dict[str, Any] | None:
            r = self.report()
            return r if r["new_ok"] >= need and r["current_stall_ms"] < stall_ok else None

        got: dict[str, Any] = wait_for(what, settled, timeout, 0.5)
        return got

    def phase(self, name: str) -> None:
        self.send(f"phase {name}")

    def stop(self) -> dict[str, Any] | None:
        try:
            self.send("stop")
            msg: dict[str, Any] | None = self.report_line(20)  # the final report, not a phase line
        except (OSError, queue.Empty):
            msg = None
        Lab.stop(self.proc, signal.SIGTERM)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        return msg
