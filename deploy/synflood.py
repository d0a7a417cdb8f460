"""A spoofed SYN flood and long-lived TCP streams for the lab (the defense test and bench_defense).

Theory of operation
-------------------
``python -m deploy.synflood flood IFNAME SRC_MAC DST_MAC VIP PORT RATE SECONDS`` (in the client namespace)
sends TCP SYNs to VIP:PORT from random spoofed sources (198.19.0.0/16, random ports: every SYN is a new
flow, none repeats in practice) out of IFNAME at RATE frames a second for SECONDS, paced in 10 ms slices;
each frame is built with ``struct`` (IPv4 and TCP checksums included), a few microseconds each. It
prints ``{"sent": n, "seconds": s}``.

``python -m deploy.synflood streams VIP PORT CONNS SECONDS`` opens CONNS TCP connections to an echo
service, then exchanges a small message on each every 200 ms for SECONDS; it prints ``{"ok": n,
"failed": [...], "exchanges": m}``: a stream is ok only if every exchange came back intact in time.

``StatusSampler`` (used by the test and the benchmark, outside the lab) polls a node's admin ``Status``
over its unix socket in a thread: table size, RSS and the defense's view, with their peaks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SPOOF_NET = 0xC6130000  # 198.19.0.0/16: no lab host lives there


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frame(src_mac: bytes, dst_mac: bytes, saddr: int, daddr: int, sport: int, dport: int,
              seq: int) -> bytes:
    """Ethernet + IPv4 + TCP SYN (20-byte header), checksums filled in."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x02, 64240, 0, 0)
    pseudo = struct.pack("!IIBBH", saddr, daddr, 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), seq & 0xFFFF, 0x4000, 64, 6, 0, saddr, daddr)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def flood(ifname: str, src_mac: str, dst_mac: str, vip: str, port: int, rate: int,
          seconds: float) -> dict[str, Any]:
    rng = random.Random()
    smac, dmac = bytes.fromhex(src_mac.replace(":", "")), bytes.fromhex(dst_mac.replace(":", ""))
    daddr = struct.unpack("!I", socket.inet_aton(vip))[0]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    per_slice = max(1, rate // 100)
    sent = 0
    t0 = time.monotonic()
    nxt = t0
    while (now := time.monotonic()) - t0 < seconds:
        if now < nxt:
            time.sleep(nxt - now)
        for _ in range(per_slice):
            with contextlib.suppress(OSError):  # a full queue: the frame is lost, as on a wire
                s.send(syn_frame(smac, dmac, SPOOF_NET | rng.randrange(1, 0xFFFF), daddr,
                                 rng.randrange(1024, 65535), port, rng.getrandbits(32)))
            sent += 1
        nxt += 0.01
        if time.monotonic() - nxt > 0.5:  # fell far behind (a busy box): do not burst to catch up
            nxt = time.monotonic()
    return {"sent": sent, "seconds": time.monotonic() - t0}


async def _stream(vip: str, port: int, i: int, seconds: float) -> tuple[int, str | None]:
    n = 0
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, port), 20)
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            msg = f"stream {i} exchange {n}\n".encode()
            writer.write(msg)
            await writer.drain()
            got = await asyncio.wait_for(reader.readexactly(len(msg)), 15)
            if got != msg:
                return n, f"stream {i}: bytes differ at exchange {n}"
            n += 1
            await asyncio.sleep(0.2)
        writer.close()
        return n, None
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return n, f"stream {i} after {n} exchanges: {type(exc).__name__} {exc}"


async def streams(vip: str, port: int, conns: int, seconds: float) -> dict[str, Any]:
    results = await asyncio.gather(*(_stream(vip, port, i, seconds) for i in range(conns)))
    failed = [err for _n, err in results if err is not None]
    return {"ok": conns - len(failed), "failed": failed, "exchanges": sum(n for n, _ in results)}


@dataclass
class StatusSampler:
    """Polls ``Status`` of one node (admin unix socket) every ``every`` seconds in a thread."""

    socket_path: str
    every: float = 0.25
    samples: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> dict[str, Any]:
        import grpc

        from lbd_pb import admin_pb2 as pb
        from lbd_pb import admin_pb2_grpc as pb_grpc
        with grpc.insecure_channel(f"unix:{self.socket_path}") as ch:
            st = pb_grpc.AdminStub(ch).Status(pb.StatusRequest(), timeout=10)
        d = st.defense
        return {"t": time.time(), "entries": st.conns + st.templates, "conns": st.conns, "rss": d.rss,
                "pressure": d.pressure, "drop_entry": d.drop_entry, "drop_packet": d.drop_packet,
                "secure_tcp": d.secure_tcp, "entries_dropped": d.entries_dropped,
                "packets_dropped": d.packets_dropped, "table_full_drops": d.table_full_drops,
                "max_conns": d.max_conns, "role_changes": st.role_changes}

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append(self.sample())
            except Exception:  # a slow answer under load is a missed sample, not a failure
                self.errors += 1

    def start(self) -> StatusSampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="status-sampler")
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.samples

    def peak(self, key: str) -> float:
        return max((s[key] for s in self.samples), default=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deploy.synflood")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flood")
    for name in ("ifname", "src_mac", "dst_mac", "vip"):
        f.add_argument(name)
    f.add_argument("port", type=int)
    f.add_argument("rate", type=int)
    f.add_argument("seconds", type=float)
    s = sub.add_parser("streams")
    s.add_argument("vip")
    s.add_argument("port", type=int)
    s.add_argument("conns", type=int)
    s.add_argument("seconds", type=float)
    a = p.parse_args(argv)
    if a.cmd == "flood":
        out = flood(a.ifname, a.src_mac, a.dst_mac, a.vip, a.port, a.rate, a.seconds)
    else:
        out = asyncio.run(streams(a.vip, a.port, a.conns, a.seconds))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
