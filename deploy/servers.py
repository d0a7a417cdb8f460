"""Tiny real servers for the lab: HTTP that names the server, TCP echo, UDP echo, IPIP decapsulation.

Theory of operation
-------------------
One asyncio process per real-server namespace (``python -m deploy.servers --name r1``) listens on the
wildcard address, so it answers for its own address (NAT) and for the VIPs it holds locally (DR: on
``lo``; TUN: on a tun device). Every answer identifies the server:

* HTTP (port 80): ``GET /`` returns ``<name>\\n`` with header ``X-Server: <name>``; ``GET /bytes/N``
  returns N bytes of a fixed pattern. One request per connection.
* TCP echo (port 7): returns every byte it reads until EOF (byte-for-byte checks).
* UDP echo (port 7): replies ``<name>|`` followed by the datagram.

Each service listens on IPv4 (``0.0.0.0``) and, where the namespace has IPv6, on ``::`` as well (a
separate IPv6-only socket), so the same servers answer the lab's IPv6 services.

``--tun DEV`` runs the TUN-mode receiver: a raw IPPROTO_IPIP socket takes the encapsulated packets
addressed to this server, strips the outer IPv4 header and writes the inner packet into the tun device
``DEV`` (which carries the TUN VIP), where the kernel receives it as if it had decapsulated it itself.
IPv6-in-IPv6 (next header 41, the director's IPv6 TUN) is taken the same way by a raw AF_INET6 socket,
which already hands over the packet without its outer header (this kernel has no ``ip6_tunnel``
either); the tun device carries the IPv6 TUN VIP too.
When everything listens, the process creates ``--ready-file``.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import cast

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
_PATTERN = bytes(range(256)) * 64
_KEEP: list[socket.socket] = []


def payload(n: int) -> bytes:
    """The bytes ``GET /bytes/N`` returns: 0, 1, ... 255 repeated."""
    reps, rest = divmod(n, len(_PATTERN))
    return _PATTERN * reps + _PATTERN[:rest]


class Servers:
    def __init__(self, name: str, http_port: int = 80, echo_port: int = 7, udp_port: int = 7) -> None:
        self.name = name
        self.http_port = http_port
        self.echo_port = echo_port
        self.udp_port = udp_port

    async def http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            path = parts[1].decode() if len(parts) > 1 else "/"
            if path.startswith("/bytes/") and path[7:].isdigit():
                body = payload(int(path[7:]))
            else:
                body = f"{self.name}\n".encode()
            hdr = (f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\nX-Server: {self.name}\r\n"
                   "Connection: close\r\n\r\n").encode()
            writer.write(hdr + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def run(self, tun: str | None, ready_file: str | None) -> None:
        loop = asyncio.get_running_loop()
        http = await asyncio.start_server(self.http, "0.0.0.0", self.http_port, backlog=1024)
        echo = await asyncio.start_server(self.echo, "0.0.0.0", self.echo_port, backlog=1024)
        await loop.create_datagram_endpoint(lambda: UdpEcho(self.name), local_addr=("0.0.0.0", self.udp_port))
        servers6 = await self.listen6(loop)
        if tun:
            start_ipip_decap(loop, tun)
        if ready_file:
            Path(ready_file).write_text(f"{os.getpid()}\n")
        log.info("%s serving http:%d echo:%d udp:%d", self.name, self.http_port, self.echo_port,
                 self.udp_port)
        async with http, echo:
            try:
                await asyncio.Event().wait()
            finally:
                for srv in servers6:
                    srv.close()

    async def listen6(self, loop: asyncio.AbstractEventLoop) -> list[asyncio.Server]:
        """The same services on ``::`` (asyncio's TCP servers are IPv6-only; the UDP socket is made so
        by hand); nothing when the namespace has no IPv6."""
        if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
            return []
        try:
            servers = [await asyncio.start_server(self.http, "::", self.http_port, backlog=1024),
                       await asyncio.start_server(self.echo, "::", self.echo_port, backlog=1024)]
            udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            udp.bind(("::", self.udp_port))
        except OSError as exc:
            log.warning("no IPv6 listeners: %s", exc)
            return []
        await loop.create_datagram_endpoint(lambda: UdpEcho(self.name), sock=udp)
        return servers


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.prefix = f"{name}|".encode()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.prefix + data, addr)


def open_tun(dev: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def start_ipip_decap(loop: asyncio.AbstractEventLoop, dev: str) -> None:
    """Feed IPIP packets for this host into the tun device ``dev`` without their outer header (the
    raw socket returns the outer IPv4 header too), and IPv6-in-IPv6 ones (``start_ip6ip6_decap``)."""
    tun_fd = open_tun(dev)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    _pump(loop, raw, tun_fd, lambda pkt: pkt[(pkt[0] & 0x0F) * 4:])
    start_ip6ip6_decap(loop, tun_fd)


def start_ip6ip6_decap(loop: asyncio.AbstractEventLoop, tun_fd: int) -> None:
    """Feed IPv6-in-IPv6 packets for this host into the tun device: a raw AF_INET6 socket returns the
    payload after the outer header, i.e. the inner IPv6 packet (nothing when IPv6 is off here)."""
    try:
        raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_IPV6)
    except OSError as exc:
        log.info("no ip6ip6 receiver: %s", exc)
        return
    _pump(loop, raw, tun_fd, lambda pkt: pkt if pkt[0] >> 4 == 6 else b"")


def _pump(loop: asyncio.AbstractEventLoop, raw: socket.socket, tun_fd: int,
          inner: Callable[[bytes], bytes]) -> None:
    """Write ``inner(packet)`` of every packet of at least 40 bytes ``raw`` receives to ``tun_fd``
    (an empty result is skipped)."""
    raw.setblocking(False)

    def on_readable() -> None:
        while True:
            try:
                pkt = raw.recv(65535)
            except BlockingIOError:
                return
            if len(pkt) < 40 or not (payload := inner(pkt)):
                continue
            try:
                os.write(tun_fd, payload)
            except OSError as exc:
                log.debug("tun write: %s", exc)

    loop.add_reader(raw.fileno(), on_readable)
    _KEEP.append(raw)  # the socket must outlive the caller


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m deploy.servers")
    ap.add_argument("--name", required=True)
    ap.add_argument("--http-port", type=int, default=80)
    ap.add_argument("--echo-port", type=int, default=7)
    ap.add_argument("--udp-port", type=int, default=7)
    ap.add_argument("--tun", default=None, help="tun device to feed decapsulated IPIP packets into")
    ap.add_argument("--ready-file", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    srv = Servers(args.name, args.http_port, args.echo_port, args.udp_port)
    asyncio.run(srv.run(args.tun, args.ready_file))


if __name__ == "__main__":
    main()
