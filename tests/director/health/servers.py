"""Real loopback servers for health-check tests: a tiny asyncio HTTP server and a stuck listener."""

from __future__ import annotations

import asyncio
import socket


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
            path = (await reader.readline()).decode().split()[1]
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

