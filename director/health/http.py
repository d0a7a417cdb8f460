"""HTTP GET check: a request over a fresh TCP connection; healthy if the status is expected and,
when set, the body matches the regular expression `expect_body` and its MD5 equals `digest`.

Hand-written HTTP/1.1 client (one request, `Connection: close`), so no extra dependency: read the
status line, the headers, then the body (Content-Length, chunked, or up to EOF; at most `MAX_BODY`
bytes, `MAX_DIGEST_BODY` when a digest is asked for), all under one deadline. `https.py` runs the
same exchange over TLS (`get` takes the SSL context and the server name).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from collections.abc import Coroutine
from typing import Any

from director.health.spec import CheckResult

MAX_BODY = 65536
MAX_DIGEST_BODY = 1 << 20


async def check_http(host: str, port: int, timeout: float, *, path: str = "/", vhost: str | None = None,
                     expect_status: tuple[int, ...] = (200,), expect_body: str | None = None,
                     digest: str | None = None, source: str | None = None) -> CheckResult:
    """GET http://host:port/path; never raises."""
    return await guarded(get(host, port, path, vhost or host, expect_status, expect_body, digest, source),
                         timeout, "http")


async def guarded(exchange: Coroutine[Any, Any, CheckResult], timeout: float, what: str) -> CheckResult:
    """Run one exchange coroutine under `timeout`, turning every network failure into a down result."""
    try:
        return await asyncio.wait_for(exchange, timeout)
    except TimeoutError:
        return CheckResult(False, f"no complete answer within {timeout:g}s")
    except ssl.SSLError as exc:
        return CheckResult(False, f"tls error: {exc.reason or exc}")
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        return CheckResult(False, f"{what} error: {exc or type(exc).__name__}")


async def get(host: str, port: int, path: str, vhost: str, expect_status: tuple[int, ...],
              expect_body: str | None, digest: str | None, source: str | None, *,
              tls: ssl.SSLContext | None = None, server_name: str | None = None) -> CheckResult:
    reader, writer = await asyncio.open_connection(
        host, port, local_addr=(source, 0) if source else None, ssl=tls,
        server_hostname=(server_name or "") if tls is not None else None)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: lbd-health/1\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = _status(await reader.readline())
        length, chunked = await _headers(reader)
        if status not in expect_status:
            return CheckResult(False, f"status {status}, want {'/'.join(map(str, expect_status))}")
        if expect_body is None and digest is None:
            return CheckResult(True, f"status {status}")
        limit = MAX_BODY if digest is None else MAX_DIGEST_BODY
        body = await (_chunked(reader, limit) if chunked else _body(reader, length, limit))
        return _match_body(status, body, expect_body, digest)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _match_body(status: int, body: bytes, expect_body: str | None, digest: str | None) -> CheckResult:
    if expect_body is not None and re.search(expect_body, body[:MAX_BODY].decode("utf-8", "replace")) is None:
        return CheckResult(False, f"status {status}, body does not match {expect_body!r}")
    if digest is not None:
        got = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if got != digest:
            return CheckResult(False, f"status {status}, body digest {got}, want {digest}")
        return CheckResult(True, f"status {status}, digest matches")
    return CheckResult(True, f"status {status}, body matches")


def _status(line: bytes) -> int:
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP status line: {line[:60]!r}")
    return int(parts[1])


async def _headers(reader: asyncio.StreamReader) -> tuple[int | None, bool]:
    """(Content-Length or None, chunked?)"""
    length: int | None = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return length, chunked
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "content-length" and value.isdigit():
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True


async def _chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    body = b""
    while len(body) < limit:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        body += await reader.readexactly(min(size, limit - len(body) + 1))
        if len(body) > limit:
            break
        await reader.readline()  # the CRLF after each chunk
    return body[:limit + 1]


async def _body(reader: asyncio.StreamReader, length: int | None, limit: int) -> bytes:
    if length is not None:
        return await reader.readexactly(min(length, limit + 1))
    body = b""
    while len(body) <= limit and (chunk := await reader.read(65536)):
        body += chunk
    return body
