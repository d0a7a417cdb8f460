"""The fabric observer: who forwarded for the VIPs, and when, seen from the lab's bridges.

Theory of operation
-------------------
The directors' own reports cannot judge split brain: a frozen node does not know it forwarded after
it resumed. The observer looks at the fabric instead. In the lab's switch namespace it runs one
``tcpdump`` per director port on both bridges (``d<N>e`` on br-ext, ``d<N>i`` on br-int), capturing
only frames coming *from* the director (``-Q in`` on the bridge side of the veth) with the virtual
MAC as source and an IPv4 payload, or IPv6's virtual MAC and an IPv6 payload other than neighbour
discovery (ARP is not IP either): exactly the frames a forwarding director emits. Kernel timestamps
in the pcap files are the evidence.

`forwarding_intervals` turns each director's frame times into intervals (frames closer than `gap`
belong to one interval), `overlaps` reports every pair of directors whose intervals intersect (two
forwarders at once), and `longest_silence` the longest silence of the whole fabric inside a window
(the outage a takeover costs while traffic flows).

The pcap reader is a dozen lines of ``struct`` (classic pcap, either byte order, micro- or
nanosecond timestamps); no scapy needed.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploy.lab import Lab

_PCAP_FORMATS = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
                 b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}


class PcapTail:
    """The record timestamps of a classic pcap file that is still being written, read incrementally.

    Each `times()` call parses only the bytes appended since the last one (a truncated last record is
    left for the next call), so polling a capture that grows for minutes stays cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.out: list[float] = []
        self.off = 0
        self.rec: struct.Struct | None = None
        self.unit = 1e-6

    def times(self) -> list[float]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return self.out
        pos = 0
        if self.rec is None:
            if len(data) < 24:
                return self.out
            if data[:4] not in _PCAP_FORMATS:
                raise ValueError(f"{self.path}: not a pcap file")
            order, self.unit = _PCAP_FORMATS[data[:4]]
            self.rec, pos = struct.Struct(order + "IIII"), 24
        while pos + 16 <= len(data):
            sec, frac, incl, _orig = self.rec.unpack_from(data, pos)
            if pos + 16 + incl > len(data):
                break
            self.out.append(sec + frac * self.unit)
            pos += 16 + incl
        self.off += pos
        return self.out


def read_pcap_times(path: Path) -> list[float]:
    """Timestamps of every record of a classic pcap file (a truncated last record is ignored)."""
    return list(PcapTail(path).times())


def forwarding_intervals(times: Iterable[float], gap: float = 0.05) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for t in sorted(times):
        if out and t - out[-1][1] <= gap:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def overlaps(frames: dict[str, list[float]], gap: float = 0.05) -> list[tuple[str, str, float, float]]:
    """(a, b, start, seconds) for every intersection of two directors' forwarding intervals.

    A lone frame of one director inside another's interval counts too (an interval of length 0 that
    intersects), so even one forwarded frame from a deposed master is reported."""
    ivs = {name: forwarding_intervals(ts, gap) for name, ts in frames.items()}
    names = sorted(ivs)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for s1, e1 in ivs[a]:
                for s2, e2 in ivs[b]:
                    lo, hi = max(s1, s2), min(e1, e2)
                    if lo <= hi:
                        out.append((a, b, lo, hi - lo))
    return out


def longest_silence(frames: dict[str, list[float]], start: float, end: float) -> tuple[float, float]:
    """(seconds, start time) of the longest gap between consecutive frames within [start, end]."""
    ts = sorted(t for times in frames.values() for t in times if start <= t <= end)
    points = [start, *ts, end]
    gaps = [(b - a, a) for a, b in zip(points, points[1:], strict=False)]
    return max(gaps) if gaps else (0.0, start)


NOT_ND = "not (ip6[6] == 58 and ip6[40] >= 133 and ip6[40] <= 137)"
"""IPv6 but neighbour discovery (router and neighbour solicitations and advertisements, redirects:
ICMPv6 types 133-137, never behind an extension header), which a takeover announces without
forwarding anything."""


def forwarded(vmac: str, vmac6: str) -> str:
    """The frames a forwarding director emits: IPv4 from the virtual MAC, IPv6 (not ND) from IPv6's."""
    return f"(ether src {vmac} and ip) or (ether src {vmac6} and ip6 and {NOT_ND})"


class FabricObserver:
    """Captures every director port of a lab's bridges; see the module docstring."""

    def __init__(self, lab: Lab, directors: Sequence[int], vmac: str = "00:00:5e:00:01:01",
                 vmac6: str = "00:00:5e:00:02:01") -> None:
        self.lab = lab
        self.vmac = vmac
        self.vmac6 = vmac6
        self.ports = {f"d{n}": (f"d{n}e", f"d{n}i") for n in directors}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: dict[str, list[Path]] = {}
        self.tails: dict[Path, PcapTail] = {}

    def start(self, timeout: float = 20.0) -> None:
        for name, ports in self.ports.items():
            for port in ports:
                path = self.lab.workdir / f"fabric-{port}.pcap"
                path.unlink(missing_ok=True)
                self.tails.pop(path, None)
                self.files.setdefault(name, []).append(path)
                argv = ["tcpdump", "-i", port, "-Q", "in", "-U", "-s", "64", "-n", "-w", str(path),
                        forwarded(self.vmac, self.vmac6)]
                self.procs.append(self.lab.popen(self.lab.switch, argv, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout  # tcpdump writes the pcap header once it listens
        while not all(p.exists() and p.stat().st_size >= 24 for ps in self.files.values() for p in ps):
            if time.monotonic() > deadline:
                raise RuntimeError("fabric observer: tcpdump did not start")
            time.sleep(0.05)

    def frames(self) -> dict[str, list[float]]:
        """Frame times per director so far (tcpdump -U flushes every packet)."""
        return {name: sorted(t for p in paths for t in self._tail(p).times())
                for name, paths in self.files.items()}

    def _tail(self, path: Path) -> PcapTail:
        if path not in self.tails:
            self.tails[path] = PcapTail(path)
        return self.tails[path]

    def stop(self) -> dict[str, list[float]]:
        for p in self.procs:
            Lab.stop(p, signal.SIGINT, timeout=5.0)
        self.procs = []
        return self.frames()
