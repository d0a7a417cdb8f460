"""Client-side operations the lab tests run inside the client namespace; JSON on stdout.

``python -m tests.lab.clientops http VIP PORT N [--sources A,B] [--repeat K]``
    N sequential HTTP GETs (each source K times); prints ``[[source, server], ...]``.
``python -m tests.lab.clientops echo VIP PORT CONNS BYTES``
    CONNS concurrent TCP connections each sending BYTES of its own pattern and reading the echo
    back; prints ``{"ok": n, "failed": [...]}`` (a connection is ok only if every byte matches).
``python -m tests.lab.clientops udp VIP PORT N [--cport P]``
    N request/response datagrams; prints ``[[sent, reply], ...]`` (reply null if none came).
``python -m tests.lab.clientops garbage VIP DMAC COUNT [--until-eof]``
    COUNT malformed frames built with scapy, sent from eth0 (with ``--until-eof``: at least COUNT,
    and on until stdin is closed); prints the count per kind.
``python -m tests.lab.clientops arp ADDR``
    One ARP request for ADDR; prints the MAC that answered within 1 s, or null.
``python -m tests.lab.clientops ping ADDR N``
    N ICMP / ICMPv6 echo requests (raw socket, 1 s apart at most); prints the sequence numbers
    answered by an echo reply from ADDR carrying our identifier and data.
``python -m tests.lab.clientops refused VIP PORT TRIES``
    A connected UDP socket sends to VIP:PORT until a receive fails with ECONNREFUSED (the kernel
    accepted a port unreachable quoting exactly this socket's datagram); prints true, or false after
    TRIES sends.
``python -m tests.lab.clientops hold VIP PORT``
    Opens one TCP connection and then obeys stdin lines: ``get`` sends an HTTP request on it and
    prints the answer (or ``null`` after 3 s); ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from typing import Any


def http_get(vip: str, port: int, source: str | None, timeout: float = 10.0) -> str:
    src = (source, 0) if source else None
    with socket.create_connection((vip, port), timeout=timeout, source_address=src) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode().strip()


def pattern(conn_id: int, size: int) -> bytes:
    seed = bytes((conn_id * 7 + i) % 251 for i in range(251))
    return (seed * (size // 251 + 1))[:size]


async def echo_one(vip: str, port: int, conn_id: int, size: int) -> str | None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(vip, port), 20)
        data = pattern(conn_id, size)
        writer.write(data)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(size), 60)
        writer.close()
        return None if got == data else f"conn {conn_id}: bytes differ"
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return f"conn {conn_id}: {type(exc).__name__} {exc}"


async def echo_many(vip: str, port: int, conns: int, size: int) -> dict[str, Any]:
    results = await asyncio.gather(*(echo_one(vip, port, i, size) for i in range(conns)))
    failed = [r for r in results if r is not None]
    return {"ok": conns - len(failed), "failed": failed}


def udp(vip: str, port: int, n: int, cport: int) -> list[list[str | None]]:
    out: list[list[str | None]] = []
    for i in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.bind(("0.0.0.0", cport))
            msg = f"ping-{i}"
            reply: str | None = None
            for _ in range(5):  # UDP may lose the first datagram while the director resolves a MAC
                s.sendto(msg.encode(), (vip, port))
                try:
                    reply = s.recv(2048).decode()
                    break
                except TimeoutError:
                    continue
            out.append([msg, reply])
    return out


def garbage(vip: str, dmac: str, count: int, until_eof: bool = False) -> dict[str, int]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    eth = Ether(dst=dmac, src="02:1b:01:00:00:01")
    bad_version = bytearray(bytes(eth / IP(dst=vip) / UDP(dport=7)))
    bad_version[14] = 0x65  # version 6, IHL 5 behind an IPv4 ethertype
    kinds: dict[str, bytes] = {
        "truncated": bytes(eth / IP(dst=vip))[:14 + 12],
        "bad_ihl": bytes(eth / IP(dst=vip, ihl=3) / UDP(dport=7)),
        "bad_totlen": bytes(eth / IP(dst=vip, len=1400) / UDP(dport=7)),
        "fragment": bytes(eth / IP(dst=vip, flags="MF") / UDP(dport=7) / (b"y" * 16)),
        "bad_ip_csum": bytes(eth / IP(dst=vip, chksum=0x1234) / UDP(dport=7)),
        "unknown_proto": bytes(eth / IP(dst=vip, proto=47) / (b"z" * 20)),
        "bad_version": bytes(bad_version),
        "bad_l4": bytes(eth / IP(dst=vip) / TCP(dport=7, dataofs=15)),
    }
    sent = {k: 0 for k in kinds}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    stdin_open = until_eof
    if until_eof:  # keep sending (paced) until the test closes our stdin: overlap with good traffic
        os.set_blocking(sys.stdin.fileno(), False)
        print(json.dumps("sending"), flush=True)
    n = 0
    while n < count or stdin_open:
        for k, frame in kinds.items():
            s.send(frame)
            sent[k] += 1
        n += len(kinds)
        if until_eof and n % 64 == 0:
            time.sleep(0.002)
            with contextlib.suppress(BlockingIOError):
                stdin_open = os.read(sys.stdin.fileno(), 1) != b""
    s.close()
    return sent


def arp(addr: str, timeout: float = 1.0) -> str | None:
    """Ask who has ``addr`` (one ARP request from eth0); the MAC that answered, or None."""
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp1

    req = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=addr)
    ans = srp1(req, iface="eth0", timeout=timeout, verbose=False)
    return None if ans is None else str(ans[ARP].hwsrc)


def hold(vip: str, port: int) -> None:
    s = socket.create_connection((vip, port), timeout=10)
    print(json.dumps("connected"), flush=True)
    for line in sys.stdin:
        if line.strip() == "get":
            s.settimeout(3.0)
            try:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = s.recv(65536)
                print(json.dumps(data.decode(errors="replace")), flush=True)
            except OSError:
                print(json.dumps(None), flush=True)
        elif line.strip() == "quit":
            break
    s.close()


def _inet_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(addr: str, n: int) -> list[int]:
    v6 = ":" in addr
    family, proto, req, rep = ((socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129) if v6
                               else (socket.AF_INET, socket.IPPROTO_ICMP, 8, 0))
    ident, data = os.getpid() & 0xFFFF, b"lab-ping-payload"
    answered: list[int] = []
    with socket.socket(family, socket.SOCK_RAW, proto) as s:
        for seq in range(n):
            msg = bytearray(bytes((req, 0, 0, 0)) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + data)
            if not v6:  # the kernel fills in an ICMPv6 checksum (RFC 3542), not an ICMP one
                msg[2:4] = _inet_sum(bytes(msg)).to_bytes(2, "big")
            s.sendto(bytes(msg), (addr, 0))
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    pkt, src = s.recvfrom(4096)
                except TimeoutError:
                    break
                icmp = pkt if v6 else pkt[(pkt[0] & 0x0F) * 4:]
                if (src[0] == addr and icmp[0] == rep and icmp[4:6] == ident.to_bytes(2, "big")
                        and icmp[6:8] == seq.to_bytes(2, "big") and icmp[8:] == data):
                    answered.append(seq)
                    break
    return answered


def refused(vip: str, port: int, tries: int) -> bool:
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((vip, port))
        s.settimeout(1.0)
        for _ in range(tries):
            try:
                s.send(b"anyone?")
                s.recv(100)
            except ConnectionRefusedError:
                return True
            except TimeoutError:
                continue
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("http")
    p.add_argument("vip")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("--sources", default="")
    p.add_argument("--repeat", type=int, default=1)
    p = sub.add_parser("echo")
    p.add_argument("vip")
    p.add_argument("port", type=int)
    p.add_argument("conns", type=int)
    p.add_argument("bytes", type=int)
    p = sub.add_parser("udp")
    p.add_argument("vip")
    p.add_argument("port", type=int)
    p.add_argument("n", type=int)
    p.add_argument("--cport", type=int, default=0)
    p = sub.add_parser("garbage")
    p.add_argument("vip")
    p.add_argument("dmac")
    p.add_argument("count", type=int)
    p.add_argument("--until-eof", action="store_true")
    p = sub.add_parser("arp")
    p.add_argument("addr")
    p = sub.add_parser("ping")
    p.add_argument("addr")
    p.add_argument("n", type=int)
    p = sub.add_parser("refused")
    p.add_argument("vip")
    p.add_argument("port", type=int)
    p.add_argument("tries", type=int)
    p = sub.add_parser("hold")
    p.add_argument("vip")
    p.add_argument("port", type=int)
    a = ap.parse_args()
    result: Any
    if a.cmd == "http":
        sources = [s for s in a.sources.split(",") if s] or [None]
        result = [[src, http_get(a.vip, a.port, src)] for _ in range(a.n) for src in sources
                  for _ in range(a.repeat)]
    elif a.cmd == "echo":
        result = asyncio.run(echo_many(a.vip, a.port, a.conns, a.bytes))
    elif a.cmd == "udp":
        result = udp(a.vip, a.port, a.n, a.cport)
    elif a.cmd == "arp":
        result = arp(a.addr)
    elif a.cmd == "ping":
        result = ping(a.addr, a.n)
    elif a.cmd == "refused":
        result = refused(a.vip, a.port, a.tries)
    elif a.cmd == "garbage":
        result = garbage(a.vip, a.dmac, a.count, a.until_eof)
    else:
        hold(a.vip, a.port)
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
