"""UDP checks against a real loopback UDP server: echo, regex on the reply, silence with and without
`require_reply`, and a refused port (ICMP port unreachable)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from director.health.manager import Probe, run_probe
from director.health.spec import HealthSpec
from director.health.udp import check_udp
from tests.director.health.servers import UdpServer, free_port


def probe(answer: Callable[[bytes], bytes | None], **kw: object) -> tuple[bool, str, list[bytes]]:
    async def main() -> tuple[bool, str, list[bytes]]:
        srv = await UdpServer(answer).start()
        try:
            res = await check_udp("127.0.0.1", srv.port, 0.5, **kw)  # type: ignore[arg-type]
        finally:
            srv.stop()
        return res.ok, res.detail, srv.received
    return asyncio.run(main())


def echo(data: bytes) -> bytes:
    return b"pong " + data


def silent(_data: bytes) -> None:
    return None


def test_reply_and_regex() -> None:
    ok, detail, got = probe(echo, payload=b"ping\n", expect=r"^pong ping")
    assert ok and detail == "reply of 10 bytes" and got == [b"ping\n"]
    ok, detail, _ = probe(echo, payload=b"ping\n", expect=r"^PONG")
    assert not ok and "does not match" in detail
    ok, _, got = probe(echo, payload=bytes.fromhex("00ff"), require_reply=True)
    assert ok and got == [b"\x00\xff"]


def test_silence_is_up_unless_a_reply_is_required() -> None:
    ok, detail, got = probe(silent)
    assert ok and detail == "not refused within 0.5s" and got == [b""]
    ok, detail, _ = probe(silent, require_reply=True)
    assert not ok and detail == "no reply within 0.5s"
    ok, _, _ = probe(silent, expect="x")  # a regex needs a reply to match
    assert not ok


def test_refused_port_is_down() -> None:
    res = asyncio.run(check_udp("127.0.0.1", free_port(), 1.0))
    assert not res.ok and res.detail == "port unreachable (refused)"


def test_spec_dispatch_with_payload_hex() -> None:
    spec = HealthSpec.from_dict({"type": "udp", "payload_hex": "0a0B", "expect": "pong", "timeout": 0.5})
    assert spec.payload == b"\n\x0b"

    async def main() -> tuple[bool, list[bytes]]:
        srv = await UdpServer(echo).start()
        try:
            res = await run_probe(Probe((17, 1, 53, 0, 0x7F000001, 53), "127.0.0.1", srv.port, spec))
        finally:
            srv.stop()
        return res.ok, srv.received
    assert asyncio.run(main()) == (True, [b"\n\x0b"])
