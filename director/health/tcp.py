"""TCP connect check: the dest is healthy if a TCP handshake completes within the timeout."""

from __future__ import annotations

import asyncio
import contextlib

from director.health.spec import CheckResult


async def check_tcp(host: str, port: int, timeout: float, *, source: str | None = None) -> CheckResult:
    """Connect to host:port (optionally from `source`), then close. Never raises."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source, 0) if source else None), timeout)
    except TimeoutError:
        return CheckResult(False, f"connect timeout after {timeout:g}s")
    except OSError as exc:
        return CheckResult(False, f"connect failed: {exc.strerror or exc}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return CheckResult(True, "connected")
