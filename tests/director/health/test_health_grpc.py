"""gRPC health-protocol checks against a real grpc.aio server with the standard health servicer."""

from __future__ import annotations

import asyncio

from director.health.grpc_check import check_grpc
from director.health.manager import Probe, run_probe
from director.health.spec import HealthSpec
from tests.director.health.servers import free_port, grpc_health_server

STATUSES = {"": "SERVING", "lbd.Db": "NOT_SERVING"}


def ask(service: str) -> tuple[bool, str]:
    async def main() -> tuple[bool, str]:
        server, port = await grpc_health_server(STATUSES)
        try:
            res = await check_grpc("127.0.0.1", port, 2.0, service=service)
        finally:
            await server.stop(None)
        return res.ok, res.detail
    return asyncio.run(main())


def test_serving_not_serving_and_unknown() -> None:
    assert ask("") == (True, "grpc SERVING")
    assert ask("lbd.Db") == (False, "grpc NOT_SERVING")
    ok, detail = ask("lbd.Nothing")
    assert not ok and detail.startswith("grpc NOT_FOUND")


def test_nothing_listening_is_down() -> None:
    res = asyncio.run(check_grpc("127.0.0.1", free_port(), 1.0))
    assert not res.ok and res.detail.startswith(("grpc UNAVAILABLE", "no answer within"))


def test_spec_dispatch() -> None:
    spec = HealthSpec.from_dict({"type": "grpc", "grpc_service": "lbd.Db", "timeout": 2})

    async def main() -> tuple[bool, str]:
        server, port = await grpc_health_server({"lbd.Db": "SERVING"})
        try:
            res = await run_probe(Probe((6, 1, 50051, 0, 0x7F000001, port), "127.0.0.1", port, spec))
        finally:
            await server.stop(None)
        return res.ok, res.detail
    assert asyncio.run(main()) == (True, "grpc SERVING")
