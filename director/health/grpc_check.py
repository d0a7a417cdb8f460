"""gRPC check: the standard health protocol, ``grpc.health.v1.Health/Check``.

One unary call on a fresh plaintext channel (grpc.aio, so on the event loop) with the probe's
timeout as its deadline; healthy if the status is SERVING for `grpc_service` ("" asks for the
server as a whole). NOT_SERVING, SERVICE_UNKNOWN, an RPC error (UNIMPLEMENTED: no health service,
NOT_FOUND: unknown service name, UNAVAILABLE: nothing listening) or the deadline is a failed probe.
The messages come from ``grpcio-health-checking`` (a dependency already: the admin API serves the
same protocol).
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from director.health.spec import CheckResult


async def check_grpc(host: str, port: int, timeout: float, *, service: str = "") -> CheckResult:
    """Health/Check on host:port for `service`; never raises."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = grpc.aio.insecure_channel(target, options=[("grpc.enable_retries", 0)])
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await asyncio.wait_for(
            stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout), timeout)
    except TimeoutError:
        return CheckResult(False, f"no answer within {timeout:g}s")
    except grpc.aio.AioRpcError as exc:
        return CheckResult(False, f"grpc {exc.code().name}: {(exc.details() or '')[:120]}")
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return CheckResult(reply.status == health_pb2.HealthCheckResponse.SERVING, f"grpc {status}")
