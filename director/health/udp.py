"""UDP check (keepalived's UDP_CHECK): send one datagram, then judge by what comes back.

UDP has no handshake, so "up" is a judgement call; the spec chooses:

* `require_reply: false` (default) and no `expect`: the dest is up unless the port is refused. The
  socket is connected, so an ICMP port unreachable from the real server surfaces as
  ``ConnectionRefusedError`` on the receive within the timeout; silence means up.
* `require_reply: true`, or an `expect` regex: a reply must arrive within the timeout (and match
  `expect`, searched in the reply decoded as UTF-8 with replacement characters).

The payload is `payload` (UTF-8) or `payload_hex`; an empty datagram by default.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

from director.health.spec import CheckResult


async def check_udp(host: str, port: int, timeout: float, *, payload: bytes = b"", expect: str | None = None,
                    require_reply: bool = False) -> CheckResult:
    """Send `payload` to host:port and wait for a reply or a refusal; never raises."""
    loop = asyncio.get_running_loop()
    need_reply = require_reply or expect is not None
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except (ValueError, OSError) as exc:
        return CheckResult(False, f"udp error: {exc}")
    try:
        sock.setblocking(False)
        sock.connect((host, port))  # connected: ICMP errors from that peer reach this socket
        async with asyncio.timeout(timeout):
            await loop.sock_sendall(sock, payload)  # (a datagram transport would drop an empty one)
            reply = await loop.sock_recv(sock, 65535)
    except TimeoutError:
        if need_reply:
            return CheckResult(False, f"no reply within {timeout:g}s")
        return CheckResult(True, f"not refused within {timeout:g}s")
    except ConnectionRefusedError:
        return CheckResult(False, "port unreachable (refused)")
    except OSError as exc:
        return CheckResult(False, f"udp error: {exc.strerror or exc}")
    finally:
        sock.close()
    if expect is not None and re.search(expect, reply.decode("utf-8", "replace")) is None:
        return CheckResult(False, f"reply does not match {expect!r}: {reply[:60]!r}")
    return CheckResult(True, f"reply of {len(reply)} bytes")
