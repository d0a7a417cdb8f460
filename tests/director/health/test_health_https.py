"""HTTPS (SSL_GET) checks against a real loopback TLS server with a self-signed certificate made by
the test: SNI, verification on and off, status, body regex and MD5 digest."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from director.health.https import check_https
from director.health.manager import Probe, run_probe
from director.health.spec import HealthSpec
from tests.director.health.servers import HttpServer, HttpsServer, free_port, self_signed

BODY = b"status: ok\n"
ROUTES: dict[str, tuple[int, bytes] | str] = {"/healthz": (200, BODY), "/error": (503, b"no"),
                                              "/hang": "hang"}


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def check(cert: tuple[Path, Path], path: str = "/healthz", **kw: object) -> tuple[bool, str, HttpsServer]:
    async def main() -> tuple[bool, str, HttpsServer]:
        srv = await HttpsServer(ROUTES, *cert).start()
        try:
            res = await check_https("127.0.0.1", srv.port, 2.0, path=path, **kw)  # type: ignore[arg-type]
        finally:
            await srv.stop()
        return res.ok, res.detail, srv
    return asyncio.run(main())


def test_status_body_and_digest(cert: tuple[Path, Path]) -> None:
    ok, detail, srv = check(cert, expect_body="status: ok")
    assert ok and "body matches" in detail and srv.requests == ["/healthz"]
    ok, detail, _ = check(cert, digest=hashlib.md5(BODY).hexdigest())
    assert ok and "digest matches" in detail
    ok, detail, _ = check(cert, digest="0" * 32)
    assert not ok and f"body digest {hashlib.md5(BODY).hexdigest()}, want {'0' * 32}" in detail
    ok, detail, _ = check(cert, "/error")
    assert not ok and "status 503" in detail


def test_sni_is_sent_as_configured(cert: tuple[Path, Path]) -> None:
    _, _, srv = check(cert, server_name="www.lbd.test")
    assert srv.sni == ["www.lbd.test"]
    _, _, srv = check(cert)  # no name, not verifying: no SNI at all
    assert srv.sni == [None]


def test_verification_against_the_ca(cert: tuple[Path, Path]) -> None:
    ca = str(cert[0])
    ok, detail, _ = check(cert, verify=True, ca_file=ca, server_name="www.lbd.test")
    assert ok, detail
    ok, detail, _ = check(cert, verify=True, ca_file=ca)  # the address is in the certificate too
    assert ok, detail
    ok, detail, _ = check(cert, verify=True, ca_file=ca, server_name="other.lbd.test")
    assert not ok and "tls error" in detail
    ok, detail, _ = check(cert, verify=True, server_name="www.lbd.test")  # not signed by a system CA
    assert not ok and "CERTIFICATE_VERIFY_FAILED" in detail
    ok, _, _ = check(cert, verify=False, server_name="other.lbd.test")  # SSL_GET's default: any cert
    assert ok


def test_missing_ca_file_plain_http_hang_and_closed_port(cert: tuple[Path, Path], tmp_path: Path) -> None:
    ok, detail, _ = check(cert, verify=True, ca_file=str(tmp_path / "nope.pem"))
    assert not ok and "tls setup failed" in detail
    ok, detail, _ = check(cert, "/hang")
    assert not ok and "within 2s" in detail

    async def plain() -> tuple[bool, str]:
        srv = await HttpServer(ROUTES).start()
        try:
            res = await check_https("127.0.0.1", srv.port, 2.0)
        finally:
            await srv.stop()
        return res.ok, res.detail
    ok, detail = asyncio.run(plain())
    assert not ok and "tls error" in detail
    res = asyncio.run(check_https("127.0.0.1", free_port(), 1.0))
    assert not res.ok and "https error" in res.detail


def test_dispatch_from_a_spec_uses_host_as_sni(cert: tuple[Path, Path]) -> None:
    spec = HealthSpec.from_dict({"type": "https", "host": "www.lbd.test:8443", "path": "/healthz",
                                 "verify": True, "ca_file": str(cert[0]), "expect_body": "ok"})

    async def main() -> tuple[bool, HttpsServer]:
        srv = await HttpsServer(ROUTES, *cert).start()
        try:
            res = await run_probe(Probe((6, 1, 443, 0, 0x7F000001, srv.port), "127.0.0.1", srv.port, spec))
        finally:
            await srv.stop()
        return res.ok, srv
    ok, srv = asyncio.run(main())
    assert ok and srv.sni == ["www.lbd.test"] and srv.hosts == ["www.lbd.test:8443"]
