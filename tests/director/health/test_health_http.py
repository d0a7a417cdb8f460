"""HTTP GET checks (status, body match, timeout, garbage) against a real loopback HTTP server."""

from __future__ import annotations

import asyncio

from director.health.http import check_http
from tests.director.health.servers import HttpServer, free_port

ROUTES: dict[str, tuple[int, bytes] | str] = {
    "/healthz": (200, b"status: ok\n"),
    "/degraded": (200, b"status: degraded\n"),
    "/error": (503, b"overloaded"),
    "/nocontent": (204, b""),
    "/hang": "hang",
    "/garbage": "garbage",
    "/chunked": "chunked",
}


def check(path: str, **kw: object) -> tuple[bool, str, HttpServer]:
    async def main() -> tuple[bool, str, HttpServer]:
        srv = await HttpServer(ROUTES).start()
        try:
            res = await check_http("127.0.0.1", srv.port, 0.5, path=path, **kw)  # type: ignore[arg-type]
        finally:
            await srv.stop()
        return res.ok, res.detail, srv
    return asyncio.run(main())


def test_status_and_body_match() -> None:
    ok, detail, srv = check("/healthz", expect_body=r"status: ok")
    assert ok and "body matches" in detail and srv.requests == ["/healthz"]
    ok, detail, _ = check("/degraded", expect_body=r"status: ok")
    assert not ok and "does not match" in detail
    ok, _, _ = check("/degraded")  # no body check: status alone decides
    assert ok


def test_unexpected_status() -> None:
    ok, detail, _ = check("/error")
    assert not ok and "status 503" in detail
    ok, _, _ = check("/nocontent")
    assert not ok
    ok, _, _ = check("/nocontent", expect_status=(200, 204))
    assert ok
    ok, detail, _ = check("/missing")
    assert not ok and "404" in detail


def test_host_header() -> None:
    _, _, srv = check("/healthz", vhost="www.example.test")
    assert srv.hosts == ["www.example.test"]
    _, _, srv = check("/healthz")
    assert srv.hosts == ["127.0.0.1"]


def test_hang_times_out_and_garbage_fails() -> None:
    ok, detail, _ = check("/hang")
    assert not ok and "within 0.5s" in detail
    ok, detail, _ = check("/garbage")
    assert not ok and "not an HTTP status line" in detail


def test_closed_port() -> None:
    res = asyncio.run(check_http("127.0.0.1", free_port(), 1.0))
    assert not res.ok and "http error" in res.detail


def test_chunked_body_is_decoded_before_matching() -> None:
    ok, detail, _ = check("/chunked", expect_body=r"^status: ok$")
    assert ok, detail
    ok, _, _ = check("/chunked", expect_body=r"^status: bad")
    assert not ok
