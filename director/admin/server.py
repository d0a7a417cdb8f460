"""The admin gRPC server (lbd.admin.v1.Admin): a thin edge over `NodeApi`.

Theory of operation
-------------------
`start_server(api, AdminServerConfig(...))` builds one grpc.aio server with three services: the
Admin servicer below, gRPC health checking (grpc.health.v1) and server reflection (so grpcurl works
without .proto files). It listens on a local unix socket (mode 0600, no credential needed: the file
system guards it) and/or a TCP address with TLS or mutual TLS.

Every Admin method runs inside `_guard`: it authorizes the call (`AdminAuth.role`), converts the
request into plain values, calls one `NodeApi` method and converts the answer into protobuf. Typed
errors from the node map to status codes (`STATUS_OF`); an etcd that cannot be reached (or has no
quorum) is UNAVAILABLE; anything else is logged and becomes INTERNAL. The node never sees protobuf.

Every call is first rate-limited per peer (director.admin.limits: RESOURCE_EXHAUSTED); error messages
are bounded. ListConns pages follow a cursor over the table's stable order (views.table_conns).

Auth: on TCP every call needs a credential, either a bearer token (`authorization: Bearer <tok>`
metadata) mapped to a role, or a TLS client certificate whose role is the subject's OU or is looked
up by CN in `cert_roles`. Roles `admin`/`operator` may write; `reader`/`viewer` may only read.
Health and reflection need no credential.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import itertools
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from director.admin.api import (
    AdminError,
    ApplyResult,
    Conflict,
    ConnFilter,
    ConnView,
    CounterValues,
    DestView,
    InvalidArgument,
    NodeApi,
    NodeEvent,
    NodeStatus,
    NotFound,
    NotMaster,
    PermissionDenied,
    RateLimited,
    RateValues,
    ServiceView,
    StatsView,
    SvcRef,
    Unauthenticated,
)
from director.admin.convert import apply_pb, conn_pb, event_pb, service_pb, stats_pb, status_pb
from director.admin.limits import AdminLimits, bounded
from director.admin.views import parse_addr, parse_proto
from director.cluster.store import EtcdConflict, EtcdError
from director.config.validate import ConfigError
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Admin"].full_name
WRITE_ROLES = frozenset({"admin", "operator"})
READ_ROLES = WRITE_ROLES | {"reader", "viewer"}
CONN_CHUNK = 512
COLLECT_SLICE = 4096
MAX_PAGE = 100_000
MAX_TOKEN = 256

STATUS_OF: dict[type[AdminError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    NotMaster: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(exc: AdminError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.UNKNOWN



# ---- auth -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminAuth:
    """Credentials accepted on TCP listeners. tokens: token -> role; cert_roles: client cert CN -> role."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    cert_roles: Mapping[str, str] = field(default_factory=dict)

    def role(self, context: Any) -> str:
        """The caller's role, or raise Unauthenticated."""
        if str(context.peer()).startswith("unix:"):
            return "admin"
        token = _bearer(context.invocation_metadata() or ())
        if token is not None:
            for known, role in self.tokens.items():
                if hmac.compare_digest(known.encode(), token.encode()):
                    return role
            raise Unauthenticated("the token is not valid: check --token / $DIRECTORCTL_TOKEN")
        cert_role = self._cert_role(context.auth_context() or {})
        if cert_role is not None:
            return cert_role
        raise Unauthenticated("a credential is required on TCP: pass --token, a client certificate "
                              "(--cert/--key), or use the local unix socket")

    def _cert_role(self, auth: Mapping[str, list[bytes]]) -> str | None:
        cns = [v.decode() for v in auth.get("x509_common_name", [])]
        if not cns:
            return None
        for cn in cns:
            if cn in self.cert_roles:
                return self.cert_roles[cn]
        for subject in auth.get("x509_subject", []):
            m = re.search(r"(?:^|,)\s*OU=([^,]+)", subject.decode())
            if m:
                return m.group(1).strip()
        raise PermissionDenied(f"client certificate CN={cns[0]} has no role (OU or cert_roles)")


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            return text.removeprefix("Bearer ").removeprefix("bearer ").strip()
    return None


# ---- request parsing --------------------------------------------------------------------------


def svc_ref(m: pb.ServiceRef, field_name: str = "service") -> SvcRef:
    if m.fwmark:
        return SvcRef(0, 0, 0, m.fwmark)
    if not m.vip:
        raise InvalidArgument(f"{field_name}.vip", "required (or set fwmark)")
    return SvcRef(parse_proto(m.protocol or "tcp", f"{field_name}.protocol"),
                  parse_addr(m.vip, f"{field_name}.vip"), m.port)


def conn_filter(req: pb.ListConnsRequest) -> ConnFilter:
    has_svc = req.HasField("service") and (req.service.vip or req.service.fwmark)
    return ConnFilter(
        service=svc_ref(req.service) if has_svc else None,
        caddr=parse_addr(req.caddr, "caddr") if req.caddr else None,
        daddr=parse_addr(req.daddr, "daddr") if req.daddr else None,
        dport=req.dport or None, state=req.state or None, templates_only=req.templates_only)


def page_token(text: str) -> tuple[int, ...] | None:
    """The cursor (bucket, *sort key) of the last entry of the previous page."""
    if not text:
        return None
    try:
        if len(text) > MAX_TOKEN:
            raise ValueError
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        raise InvalidArgument("page_token", "malformed; pass next_page_token unchanged") from None


def plain(value: Any) -> Any:
    """Struct JSON -> plain values, with integral floats as ints (Struct only has doubles)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def struct_dict(m: Any, field_name: str) -> dict[str, Any]:
    d = plain(json_format.MessageToDict(m))
    if not d:
        raise InvalidArgument(field_name, "required")
    assert isinstance(d, dict)
    return d


# ---- the servicer -----------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _guard(*, write: bool) -> Callable[[F], F]:
    """Authorize, then map AdminError to its status code (unary methods)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(self: AdminServicer, request: Any, context: Any) -> Any:
            try:
                self.limits.check(str(context.peer()), fn.__name__, write)
                self.authorize(context, write=write)
                return await fn(self, request, context)
            except AdminError as exc:
                await context.abort(status_code(exc), bounded(str(exc)))
            except ConfigError as exc:  # bounded by construction (director.config.validate)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bounded(str(exc)))
            except EtcdConflict as exc:  # the write lost every compare-and-swap retry
                await context.abort(grpc.StatusCode.ABORTED, f"concurrent config writes: {exc}; try again")
            except EtcdError as exc:  # etcd unreachable or without quorum
                log.warning("admin %s: etcd unavailable: %s", fn.__name__, bounded(str(exc)))
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd unavailable ({bounded(str(exc))}): "
                                    "the write was not confirmed; retry when etcd is back")
            except Exception:
                log.exception("admin %s failed", fn.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__} failed; see directord's log")
        return wrapper  # type: ignore[return-value]
    return deco


def _guard_stream(fn: F) -> F:
    @functools.wraps(fn)
    async def wrapper(self: AdminServicer, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            self.limits.check(str(context.peer()), fn.__name__, False)
            self.authorize(context, write=False)
            async for item in fn(self, request, context):
                yield item
        except AdminError as exc:
            await context.abort(status_code(exc), bounded(str(exc)))
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception:
            log.exception("admin %s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__} failed; see directord's log")
    return wrapper  # type: ignore[return-value]


class AdminServicer(pb_grpc.AdminServicer):
    def __init__(self, api: NodeApi, auth: AdminAuth, limits: AdminLimits | None = None) -> None:
        self.api = api
        self.auth = auth
        self.limits = limits if limits is not None else AdminLimits(rate=0.0)

    def authorize(self, context: Any, *, write: bool) -> None:
        role = self.auth.role(context)
        if role not in READ_ROLES:
            raise PermissionDenied(f"role {role!r} is not known (reader, operator, admin)")
        if write and role not in WRITE_ROLES:
            raise PermissionDenied(f"role {role!r} may only read; writes need operator or admin")

    @_guard(write=False)
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        return status_pb(self.api.status())

    @_guard(write=False)
    async def ListServices(self, request: pb.ListServicesRequest, context: Any) -> pb.ListServicesResponse:
        views = self.api.services()
        if request.HasField("service") and (request.service.vip or request.service.fwmark):
            ref = svc_ref(request.service)
            views = [v for v in views if ref.matches(v.ref.key)]
            if not views:
                raise NotFound(f"no service {ref}")
        return pb.ListServicesResponse(services=[service_pb(v) for v in views])

    @_guard_stream
    async def ListConns(self, request: pb.ListConnsRequest, context: Any
                        ) -> AsyncIterator[pb.ListConnsResponse]:
        flt = conn_filter(request)
        after = page_token(request.page_token)
        views = iter(self.api.conns(flt, after))
        if not request.page_size:
            # everything (past the cursor), in paging order: slice by slice, the loop runs between slices
            sent = False
            while chunk := list(itertools.islice(views, CONN_CHUNK)):
                sent = True
                yield pb.ListConnsResponse(conns=[conn_pb(c) for c in chunk])
                await asyncio.sleep(0)
            if not sent:
                yield pb.ListConnsResponse()
            return
        size = min(request.page_size, MAX_PAGE)
        items: list[ConnView] = []  # one more than the page: is there a next one?
        while len(items) <= size and (chunk := list(itertools.islice(views, min(COLLECT_SLICE,
                                                                                size + 1 - len(items))))):
            items += chunk
            await asyncio.sleep(0)  # let the packet path run while a big table is read
        last = items[size - 1].cursor if len(items) > size else None
        out = chunks(items[:size], CONN_CHUNK) or [[]]
        for i, part in enumerate(out):
            token = ".".join(map(str, last)) if last is not None and i == len(out) - 1 else ""
            yield pb.ListConnsResponse(conns=[conn_pb(c) for c in part], next_page_token=token)

    @_guard(write=False)
    async def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.GetStatsResponse:
        return stats_pb(self.api.stats())

    @_guard(write=False)
    async def GetConfig(self, request: pb.GetConfigRequest, context: Any) -> pb.GetConfigResponse:
        text, rev = self.api.config_yaml()
        return pb.GetConfigResponse(yaml=text, revision=rev)

    @_guard(write=True)
    async def ApplyConfig(self, request: pb.ApplyConfigRequest, context: Any) -> pb.ApplyConfigResponse:
        if not request.yaml.strip():
            raise InvalidArgument("yaml", "empty document")
        with self.limits.heavy("ApplyConfig"):
            result = await self.api.apply_config(request.yaml, dry_run=request.dry_run, prune=request.prune)
            return await asyncio.to_thread(apply_pb, result)  # a YAML dump per change: off the loop

    @_guard(write=True)
    async def PutService(self, request: pb.PutServiceRequest, context: Any) -> pb.WriteResponse:
        spec = struct_dict(request.service, "service")
        return pb.WriteResponse(revision=await self.api.put_service(spec, create_only=request.create_only))

    @_guard(write=True)
    async def DeleteService(self, request: pb.DeleteServiceRequest, context: Any) -> pb.WriteResponse:
        return pb.WriteResponse(revision=await self.api.delete_service(svc_ref(request.service)))

    @_guard(write=True)
    async def EditService(self, request: pb.EditServiceRequest, context: Any) -> pb.WriteResponse:
        fields = struct_dict(request.set, "set")
        return pb.WriteResponse(revision=await self.api.edit_service(svc_ref(request.service), fields))

    @_guard(write=True)
    async def PutDest(self, request: pb.PutDestRequest, context: Any) -> pb.WriteResponse:
        ref = svc_ref(request.service)
        spec = struct_dict(request.dest, "dest")
        return pb.WriteResponse(revision=await self.api.put_dest(ref, spec, create_only=request.create_only))

    @_guard(write=True)
    async def DeleteDest(self, request: pb.DeleteDestRequest, context: Any) -> pb.WriteResponse:
        ref, daddr, dport = _dest_args(request)
        return pb.WriteResponse(revision=await self.api.delete_dest(ref, daddr, dport))

    @_guard(write=True)
    async def EditDest(self, request: pb.EditDestRequest, context: Any) -> pb.WriteResponse:
        ref, daddr, dport = _dest_args(request)
        weight = request.weight if request.HasField("weight") else None
        if weight is not None and weight < 0:
            raise InvalidArgument("weight", f"must be >= 0, got {weight}")
        rev = await self.api.edit_dest(
            ref, daddr, dport, weight=weight,
            u_threshold=request.u_threshold if request.HasField("u_threshold") else None,
            l_threshold=request.l_threshold if request.HasField("l_threshold") else None,
            fields=plain(json_format.MessageToDict(request.set)) if request.HasField("set") else None)
        return pb.WriteResponse(revision=rev)

    @_guard(write=True)
    async def DrainDest(self, request: pb.DrainDestRequest, context: Any) -> pb.WriteResponse:
        ref, daddr, dport = _dest_args(request)
        return pb.WriteResponse(revision=await self.api.drain_dest(ref, daddr, dport))

    @_guard(write=True)
    async def SetTimeouts(self, request: pb.SetTimeoutsRequest, context: Any) -> pb.WriteResponse:
        if not request.timeouts:
            raise InvalidArgument("timeouts", "give at least one, e.g. tcp=900")
        for name, value in request.timeouts.items():
            if value < 0:
                raise InvalidArgument(f"timeouts.{name}", f"must be >= 0, got {value}")
        return pb.WriteResponse(revision=await self.api.set_timeouts(dict(request.timeouts)))

    @_guard(write=True)
    async def Flush(self, request: pb.FlushRequest, context: Any) -> pb.FlushResponse:
        return pb.FlushResponse(removed=self.api.flush())

    @_guard(write=True)
    async def ZeroCounters(self, request: pb.ZeroCountersRequest, context: Any) -> pb.ZeroCountersResponse:
        has_svc = request.HasField("service") and (request.service.vip or request.service.fwmark)
        self.api.zero_counters(svc_ref(request.service) if has_svc else None)
        return pb.ZeroCountersResponse()

    @_guard(write=True)
    async def Failover(self, request: pb.FailoverRequest, context: Any) -> pb.FailoverResponse:
        new_master, epoch = await self.api.resign()
        return pb.FailoverResponse(new_master_id=new_master, epoch=epoch)

    @_guard_stream
    async def WatchEvents(self, request: pb.WatchEventsRequest, context: Any) -> AsyncIterator[pb.Event]:
        kinds = set(request.kinds)
        unknown = kinds - {"conn", "role", "config", "health"}
        if unknown:
            raise InvalidArgument("kinds", f"unknown {sorted(unknown)}; use conn, role, config, health")
        with self.api.subscribe() as sub:
            while True:
                ev = await sub.get()
                if not kinds or ev.kind in kinds or ev.kind == "overflow":
                    yield event_pb(ev)


def chunks(items: list[ConnView], size: int) -> list[list[ConnView]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _dest_args(request: Any) -> tuple[SvcRef, int, int]:
    if not request.address:
        raise InvalidArgument("address", "required (the dest's IP)")
    if not 0 < request.port < 65536 and not request.service.fwmark:
        raise InvalidArgument("port", f"must be 1..65535, got {request.port}")
    return svc_ref(request.service), parse_addr(request.address, "address"), request.port


# ---- the server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsConfig:
    cert: str  # PEM file paths
    key: str
    client_ca: str | None = None  # set = mutual TLS (client certificates required)


@dataclass(frozen=True)
class AdminServerConfig:
    listen: str | None = None     # "host:port" (port 0 = pick); needs tls unless insecure_tcp
    unix_path: str | None = None  # local socket; no credential needed
    tls: TlsConfig | None = None
    auth: AdminAuth = AdminAuth()
    insecure_tcp: bool = False    # plain TCP (labs only; still needs a token)
    limits: AdminLimits = dataclasses.field(default_factory=AdminLimits)  # per peer, heavy calls


@dataclass
class AdminServer:
    server: Any  # grpc.aio.Server
    port: int    # bound TCP port (0 if none)
    unix_path: str | None
    health: Any  # grpc_health aio HealthServicer

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


def server_config_from_node(node: Any) -> AdminServerConfig:
    """AdminServerConfig from a director.config.node.NodeConfig (admin_listen/unix/token/tls).

    `admin.tls` {ca, cert, key}: TLS, with client certificates signed by `ca` accepted (mutual
    TLS; role from the cert's OU). `admin.token`: a bearer token with the admin role. Plain TCP
    is allowed only with a token and no TLS (labs); a TCP listen with neither is dropped (with a
    warning) when a unix socket is configured, else start_server refuses it.
    """
    files = node.admin_tls
    tls = TlsConfig(cert=files.cert, key=files.key, client_ca=files.ca) if files is not None else None
    tokens = {node.admin_token: "admin"} if node.admin_token else {}
    listen = node.admin_listen
    if listen and tls is None and not tokens and node.admin_unix:
        log.warning("admin.listen %s ignored: TCP needs admin.tls or admin.token; serving only %s",
                    listen, node.admin_unix)
        listen = None
    return AdminServerConfig(
        listen=listen, unix_path=node.admin_unix, tls=tls, auth=AdminAuth(tokens=tokens),
        insecure_tcp=tls is None and bool(tokens))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def server_credentials(tls: TlsConfig) -> Any:
    ca = _read(tls.client_ca) if tls.client_ca else None
    return grpc.ssl_server_credentials([(_read(tls.key), _read(tls.cert))], root_certificates=ca,
                                       require_client_auth=ca is not None)


async def start_server(api: NodeApi, cfg: AdminServerConfig) -> AdminServer:
    """Build, bind and start the admin server. Raises ValueError on an unusable config."""
    if cfg.listen is None and cfg.unix_path is None:
        raise ValueError("admin: set listen and/or unix_path")
    if cfg.listen is not None and cfg.tls is None and not cfg.insecure_tcp:
        raise ValueError("admin.listen: TCP needs TLS (tls.cert/tls.key); or use the unix socket")
    server = grpc.aio.server()
    pb_grpc.add_AdminServicer_to_server(AdminServicer(api, cfg.auth, cfg.limits), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    port = 0
    if cfg.listen is not None:
        port = (server.add_secure_port(cfg.listen, server_credentials(cfg.tls)) if cfg.tls
                else server.add_insecure_port(cfg.listen))
        if not port:
            raise ValueError(f"admin.listen: cannot bind {cfg.listen}")
    if cfg.unix_path is not None:
        _bind_unix(server, cfg.unix_path)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info("admin API on %s%s", cfg.listen or "", f" unix:{cfg.unix_path}" if cfg.unix_path else "")
    return AdminServer(server, port, cfg.unix_path, health)


def _bind_unix(server: Any, path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)  # a stale socket from a crashed run
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    server.add_insecure_port(f"unix:{path}")
    os.chmod(path, 0o600)


__all__ = [
    # the server
    "AdminAuth", "AdminServer", "AdminServerConfig", "AdminServicer", "STATUS_OF", "TlsConfig",
    "server_config_from_node", "start_server", "status_code",
    # re-exported from director.admin.api: the facade the daemon implements and its types
    "AdminError", "ApplyResult", "Conflict", "ConnFilter", "ConnView", "CounterValues", "DestView",
    "InvalidArgument", "NodeApi", "NodeEvent", "NodeStatus", "NotFound", "NotMaster", "PermissionDenied",
    "RateLimited", "RateValues", "ServiceView", "StatsView", "SvcRef", "Unauthenticated",
]
