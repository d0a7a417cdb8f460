"""PING check: one ICMP echo request from the node; healthy if the matching reply comes back in time.

Sockets, and why two kinds
--------------------------
Linux offers an unprivileged ICMP *datagram* socket (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``,
ICMPv6 likewise) to processes whose group is inside ``net.ipv4.ping_group_range`` (that sysctl is
per network namespace and also governs ICMPv6). On it the kernel owns the echo identifier (the
socket's "port"), fills the checksum and delivers only the replies to this socket's own requests,
without the IP header. This is the first choice: no privilege, no filtering of other traffic.

When the range excludes us (``socket()`` fails with EACCES; many distributions ship "1 0"), the check
falls back to a *raw* ICMP socket, which needs CAP_NET_RAW (directord runs as root or with that
capability for its packet sockets anyway). A raw socket sees every ICMP packet the host receives, so
replies are matched on type (echo reply), identifier (random per probe), sequence and source
address; the IPv4 header is skipped by its IHL. If neither socket can be opened the probe fails
with the reason (the dest then goes down after `fall` probes: a misconfigured node is visible).

Everything is non-blocking on the event loop (``sock_sendto`` / ``sock_recvfrom``), under one
deadline. The payload carries a random token, so a stale reply to an earlier probe cannot count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct

from director.health.spec import CheckResult

_ECHO = struct.Struct("!BBHHH")
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}


async def check_ping(host: str, timeout: float) -> CheckResult:
    """Echo request to `host` (an address); never raises."""
    try:
        family = ipaddress.ip_address(host).version
        sock, kind = open_socket(family)
    except (ValueError, OSError) as exc:
        return CheckResult(False, f"cannot ping {host}: {exc}")
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(sock, kind, family, host)
    except TimeoutError:
        return CheckResult(False, f"no echo reply within {timeout:g}s ({kind} icmp socket)")
    except OSError as exc:
        return CheckResult(False, f"ping error: {exc.strerror or exc}")
    finally:
        sock.close()


def open_socket(family: int) -> tuple[socket.socket, str]:
    """A non-blocking ICMP socket: ("dgram") unprivileged if allowed, else ("raw")."""
    af, proto = (socket.AF_INET, socket.IPPROTO_ICMP) if family == 4 else (socket.AF_INET6,
                                                                            socket.IPPROTO_ICMPV6)
    try:
        sock, kind = socket.socket(af, socket.SOCK_DGRAM, proto), "dgram"
    except PermissionError:
        sock, kind = socket.socket(af, socket.SOCK_RAW, proto), "raw"
    sock.setblocking(False)
    return sock, kind


async def _exchange(sock: socket.socket, kind: str, family: int, host: str) -> CheckResult:
    loop = asyncio.get_running_loop()
    ident, seq, token = int.from_bytes(os.urandom(2)), int.from_bytes(os.urandom(2)), os.urandom(16)
    await loop.sock_sendto(sock, echo_request(family, ident, seq, token), (host, 0))
    want = ipaddress.ip_address(host)
    while True:
        data, addr = await loop.sock_recvfrom(sock, 65535)
        if ipaddress.ip_address(addr[0].split("%")[0]) != want:
            continue
        if kind == "raw" and family == 4:
            data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets hand over the IP header too
        if _is_reply(data, family, None if kind == "dgram" else ident, seq, token):
            return CheckResult(True, f"echo reply ({kind} icmp socket)")


def echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request; the checksum is filled for IPv4 (the kernel does it for ICMPv6 and for
    datagram sockets, which also replace the identifier)."""
    head = _ECHO.pack(ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == 6:
        return head + payload
    return _ECHO.pack(ECHO_REQUEST[family], 0, checksum(head + payload), ident, seq) + payload


def _is_reply(data: bytes, family: int, ident: int | None, seq: int, token: bytes) -> bool:
    if len(data) < _ECHO.size + len(token):
        return False
    rtype, _code, _sum, rid, rseq = _ECHO.unpack_from(data)
    return (rtype == ECHO_REPLY[family] and rseq == seq and (ident is None or rid == ident)
            and data[_ECHO.size:_ECHO.size + len(token)] == token)


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)
