"""Real loopback servers for health-check tests: HTTP and HTTPS (a self-signed certificate made with
the openssl CLI), a UDP server, a tiny DNS responder, a gRPC server with the standard health servicer,
and a stuck listener."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class HttpServer:
    """HTTP/1.1 on 127.0.0.1:<free port>; `routes` maps a path to (status, body) or "hang"."""

    def __init__(self, routes: dict[str, tuple[int, bytes] | str]) -> None:
        self.routes = routes
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests: list[str] = []
        self.hosts: list[str] = []

    async def start(self) -> HttpServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                path = (await reader.readline()).decode().split()[1]
            except (ValueError, IndexError):  # not HTTP (a TLS hello, say): answer like a web server
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"host:"):
                    self.hosts.append(line.decode().split(":", 1)[1].strip())
            self.requests.append(path)
            route = self.routes.get(path, (404, b"not found"))
            if route == "hang":
                await asyncio.sleep(3600)
                return
            if route == "garbage":
                writer.write(b"SSH-2.0-OpenSSH\r\n")
            elif route == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"7\r\nstatus:\r\n4\r\n ok\n\r\n0\r\n\r\n")
            else:
                assert not isinstance(route, str)
                status, body = route
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def stuck_listener() -> tuple[socket.socket, list[socket.socket], int]:
    """A listener whose accept queue is full: new connects get no SYN-ACK (they time out)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s, [filler], port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



# ---- TLS ------------------------------------------------------------------------------------------

def self_signed(directory: Path, name: str = "www.lbd.test") -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for `name` and 127.0.0.1, made with the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class HttpsServer(HttpServer):
    """The HTTP server above behind TLS; `sni` records the server names clients sent (None: no SNI)."""

    def __init__(self, routes: dict[str, tuple[int, bytes] | str], cert: Path, key: Path) -> None:
        super().__init__(routes)
        self.sni: list[str | None] = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = self._on_sni

    def _on_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def start(self) -> HttpsServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self


# ---- UDP and DNS ----------------------------------------------------------------------------------

class UdpServer(asyncio.DatagramProtocol):
    """UDP on 127.0.0.1:<free port>: `answer(data)` returns the reply (None: stay silent)."""

    def __init__(self, answer: Callable[[bytes], bytes | list[bytes] | None]) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self) -> UdpServer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def stop(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        reply = self.answer(data)
        assert self.transport is not None
        for r in [reply] if isinstance(reply, bytes) else reply or []:
            self.transport.sendto(r, addr)


RR = tuple[str, int, bytes]  # (owner name, type, rdata)


class DnsZone:
    """A tiny authoritative responder's logic: records by (name, type); unknown names are NXDOMAIN.
    Answers point back to the question's name with a compression pointer (0xC00C) like real servers."""

    def __init__(self, records: dict[tuple[str, int], list[bytes]], *, wrong_id_first: bool = False,
                 rcode: int | None = None) -> None:
        self.records = records
        self.wrong_id_first = wrong_id_first
        self.rcode = rcode
        self.questions: list[tuple[str, int]] = []

    def __call__(self, query: bytes) -> list[bytes]:
        qid, _flags = struct.unpack_from("!HH", query)
        off, labels = 12, []
        while query[off]:
            labels.append(query[off + 1:off + 1 + query[off]].decode())
            off += 1 + query[off]
        qtype = struct.unpack_from("!H", query, off + 1)[0]
        question = query[12:off + 5]
        name = ".".join(labels).lower()
        self.questions.append((name, qtype))
        known = any(n == name for n, _ in self.records)
        rdatas = self.records.get((name, qtype), [])
        rcode = self.rcode if self.rcode is not None else (0 if known else 3)
        head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(rdatas), 0, 0)
        answers = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(r)) + r for r in rdatas)
        reply = head + question + answers
        if self.wrong_id_first:
            return [struct.pack("!H", qid ^ 0xFFFF) + reply[2:], reply]
        return [reply]


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


# ---- gRPC -----------------------------------------------------------------------------------------

async def grpc_health_server(statuses: dict[str, str]) -> tuple[Any, int]:
    """A grpc.aio server on 127.0.0.1 with the standard health servicer set to `statuses`."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    for name, status in statuses.items():
        await servicer.set(name, health_pb2.HealthCheckResponse.ServingStatus.Value(status))
    return server, port
