"""HTTPS GET check (keepalived's SSL_GET): the HTTP check of `http.py` over TLS.

TLS settings come from the spec: `sni` is the server name sent in the handshake (default: the
`host` header's name, none when that is an address or unset); `verify: false` (the default, like
SSL_GET) accepts any certificate, so a self-signed real server is checked for what it serves, not
for its PKI; `verify: true` checks the chain against `ca_file` (or the system's CAs) and the name
(the SNI, else the dest address against the certificate's IP addresses). Status, body regex and
body MD5 (`digest`) are matched as for HTTP.

SSL contexts are built once per (verify, ca_file, file mtime) in a worker thread (loading a CA
bundle reads files), so the event loop never blocks on the file system; a changed CA file is
picked up at the next probe.
"""

from __future__ import annotations

import asyncio
import os
import ssl

from director.health.http import get, guarded
from director.health.spec import CheckResult

_contexts: dict[tuple[bool, str | None, int], ssl.SSLContext] = {}


async def check_https(host: str, port: int, timeout: float, *, path: str = "/", vhost: str | None = None,
                      expect_status: tuple[int, ...] = (200,), expect_body: str | None = None,
                      digest: str | None = None, server_name: str | None = None, verify: bool = False,
                      ca_file: str | None = None, source: str | None = None) -> CheckResult:
    """GET https://host:port/path; never raises."""
    try:
        tls = await asyncio.wait_for(context(verify, ca_file), timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        return CheckResult(False, f"tls setup failed: {exc}")
    name = server_name or (host if verify else None)
    return await guarded(get(host, port, path, vhost or host, expect_status, expect_body, digest, source,
                             tls=tls, server_name=name), timeout, "https")


async def context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The client context for these settings (cached; built off the loop)."""
    mtime = (await asyncio.to_thread(os.stat, ca_file)).st_mtime_ns if ca_file else 0
    key = (verify, ca_file, mtime)
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = await asyncio.to_thread(_build, verify, ca_file)
        if len(_contexts) > 64:
            _contexts.clear()
        _contexts[key] = ctx
    return ctx


def _build(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context(cafile=ca_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
