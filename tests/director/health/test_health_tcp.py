"""TCP connect checks against real loopback listeners."""

from __future__ import annotations

import asyncio

from director.health.tcp import check_tcp
from tests.director.health.servers import HttpServer, free_port, stuck_listener


def test_open_port_is_healthy_closed_port_is_not() -> None:
    async def main() -> None:
        srv = await HttpServer({}).start()
        up = await check_tcp("127.0.0.1", srv.port, 2.0)
        await srv.stop()
        down = await check_tcp("127.0.0.1", srv.port, 2.0)
        assert up.ok and up.detail == "connected"
        assert not down.ok and "connect failed" in down.detail
    asyncio.run(main())


def test_no_answer_times_out() -> None:
    sock, fillers, port = stuck_listener()
    try:
        res = asyncio.run(check_tcp("127.0.0.1", port, 0.3))
        assert not res.ok and "timeout" in res.detail
    finally:
        for s in (sock, *fillers):
            s.close()


def test_source_address_is_used() -> None:
    async def main() -> None:
        seen: list[str] = []

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            seen.append(w.get_extra_info("peername")[0])
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        res = await check_tcp("127.0.0.1", port, 2.0, source="127.0.0.9")
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        assert res.ok and seen == ["127.0.0.9"]
    asyncio.run(main())


def test_unreachable_port_never_raises() -> None:
    res = asyncio.run(check_tcp("127.0.0.1", free_port(), 1.0))
    assert not res.ok
