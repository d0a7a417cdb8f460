"""UDP check (keepalived's UDP_CHECK): send one datagram, then judge by what comes back.

UDP has no handshake, so "up" is a judgement call; the spec chooses:

* `require_reply: false` (default) and no `expect`: the dest is up unless the port is refused. The
  socket is connected, so an ICMP port unreachable from the real server surfaces as
  ``ConnectionRefusedError`` (``error_received``) within the timeout; silence means up.
* `require_reply: true`, or an `expect` regex: a reply must arrive within the timeout (and match
  `expect`, searched in the reply decoded as UTF-8 with replacement characters).

The payload is `payload` (UTF-8) or `payload_hex`; an empty datagram by default.
"""

from __future__ import annotations

import asyncio
import re

from director.health.spec import CheckResult


async def check_udp(host: str, port: int, timeout: float, *, payload: bytes = b"", expect: str | None = None,
                    require_reply: bool = False) -> CheckResult:
    """Send `payload` to host:port and wait for a reply or a refusal; never raises."""
    loop = asyncio.get_running_loop()
    need_reply = require_reply or expect is not None
    transport: asyncio.DatagramTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_datagram_endpoint(_Exchange, remote_addr=(host, port))
            transport.sendto(payload)
            reply = await proto.reply
    except TimeoutError:
        if need_reply:
            return CheckResult(False, f"no reply within {timeout:g}s")
        return CheckResult(True, f"not refused within {timeout:g}s")
    except ConnectionRefusedError:
        return CheckResult(False, "port unreachable (refused)")
    except OSError as exc:
        return CheckResult(False, f"udp error: {exc.strerror or exc}")
    finally:
        if transport is not None:
            transport.close()
    if expect is not None and re.search(expect, reply.decode("utf-8", "replace")) is None:
        return CheckResult(False, f"reply does not match {expect!r}: {reply[:60]!r}")
    return CheckResult(True, f"reply of {len(reply)} bytes")


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)
