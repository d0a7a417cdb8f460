"""HTTP GET check: a request over a fresh TCP connection; healthy if the status is expected and,
when `expect_body` is set, the body matches the regular expression.

Hand-written HTTP/1.1 client (one request, `Connection: close`), so no extra dependency: read the
status line, the headers, then the body (Content-Length, chunked, or up to EOF; at most `MAX_BODY`
bytes), all under one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from director.health.spec import CheckResult

MAX_BODY = 65536


async def check_http(host: str, port: int, timeout: float, *, path: str = "/", vhost: str | None = None,
                     expect_status: tuple[int, ...] = (200,), expect_body: str | None = None,
                     source: str | None = None) -> CheckResult:
    """GET http://host:port/path; never raises."""
    try:
        return await asyncio.wait_for(
            _get(host, port, path, vhost or host, expect_status, expect_body, source), timeout)
    except TimeoutError:
        return CheckResult(False, f"no complete answer within {timeout:g}s")
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        return CheckResult(False, f"http error: {exc}")


async def _get(host: str, port: int, path: str, vhost: str, expect_status: tuple[int, ...],
               expect_body: str | None, source: str | None) -> CheckResult:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: lbd-health/1\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = _status(await reader.readline())
        length, chunked = await _headers(reader)
        if status not in expect_status:
            return CheckResult(False, f"status {status}, want {'/'.join(map(str, expect_status))}")
        if expect_body is None:
            return CheckResult(True, f"status {status}")
        body = await (_chunked(reader) if chunked else _body(reader, length))
        if re.search(expect_body, body.decode("utf-8", "replace")) is None:
            return CheckResult(False, f"status {status}, body does not match {expect_body!r}")
        return CheckResult(True, f"status {status}, body matches")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


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


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while len(body) < MAX_BODY:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        body += await reader.readexactly(size)
        await reader.readline()  # the CRLF after each chunk
    return body[:MAX_BODY]


async def _body(reader: asyncio.StreamReader, length: int | None) -> bytes:
    if length is not None:
        return await reader.readexactly(min(length, MAX_BODY))
    return await reader.read(MAX_BODY)
