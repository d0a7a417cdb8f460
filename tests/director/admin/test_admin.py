"""The admin gRPC API end to end: every RPC over real sockets (unix + TCP, TLS, mTLS) against a node
built on the real ServiceTable / ConnTable (etcd and election faked in memory)."""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from director.admin.server import AdminAuth, AdminServerConfig, TlsConfig, start_server
from director.cluster.store import EtcdError
from director.table.tcp import TcpState
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.director.admin.admin_fake import WEB_YAML, FakeNode, LoopThread, ip

TOKENS = {"tok-admin": "admin", "tok-ro": "reader"}
WEB = pb.ServiceRef(protocol="tcp", vip="198.18.0.10", port=80)
MAIL_YAML = "  - {name: mail, protocol: tcp, vip: 198.18.0.11, port: 25}\n"


class Node:
    def __init__(self, lt: LoopThread, node: FakeNode, server: Any, unix: str) -> None:
        self.lt, self.node, self.server, self.unix = lt, node, server, unix
        self.channel = grpc.insecure_channel(f"unix:{unix}")
        self.stub = pb_grpc.AdminStub(self.channel)

    def tcp_stub(self, token: str | None) -> Any:
        ch = grpc.insecure_channel(f"127.0.0.1:{self.server.port}")
        md = (("authorization", f"Bearer {token}"),) if token else ()
        return _MdStub(pb_grpc.AdminStub(ch), md), ch

    def web(self) -> Any:
        return self.lt.call(lambda: self.node.svc(80))


class _MdStub:
    def __init__(self, stub: Any, md: tuple[tuple[str, str], ...]) -> None:
        self._stub, self._md = stub, md

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._stub, name)
        return lambda req, **kw: fn(req, metadata=self._md, timeout=10, **kw)


def start(lt: LoopThread, node: FakeNode, cfg: AdminServerConfig) -> Any:
    return lt.run(start_server(node, cfg))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Node]:
    lt = LoopThread()
    node = FakeNode()
    lt.run(node.apply_config(WEB_YAML, dry_run=False, prune=False))
    unix = str(tmp_path / f"admin-{uuid.uuid4().hex[:8]}.sock")
    cfg = AdminServerConfig(listen="127.0.0.1:0", unix_path=unix, auth=AdminAuth(tokens=TOKENS),
                            insecure_tcp=True)
    server = start(lt, node, cfg)
    n = Node(lt, node, server, unix)
    try:
        yield n
    finally:
        n.channel.close()
        lt.run(server.stop(0))
        lt.close()


def code_of(fn: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as ei:
        r = fn(*args)
        if hasattr(r, "__iter__") and not hasattr(r, "ListFields"):
            list(r)
    return ei.value.code(), ei.value.details()


# ---- reads ------------------------------------------------------------------------------------


def test_status_reports_node_view(env: Node) -> None:
    web = env.web()
    env.lt.call(lambda: env.node.add_conn(web, "198.18.2.1", 4000, web.dests[0]))
    st = env.stub.Status(pb.StatusRequest())
    assert (st.node_id, st.role, st.master_id, st.epoch) == ("n1", "master", "n1", env.node.epoch)
    assert st.conns == 1 and st.services == 2 and st.dests == 3
    assert st.config_revision == env.node.revision
    assert [(f.node_id, f.state, f.lag_events) for f in st.backups] == [("n2", "streaming", 4)]


def test_list_services_with_dests_and_filter(env: Node) -> None:
    resp = env.stub.ListServices(pb.ListServicesRequest())
    by_port = {s.ref.port: s for s in resp.services}
    assert set(by_port) == {80, 53}
    web = by_port[80]
    assert (web.name, web.scheduler, web.persistent, web.persistence_timeout) == ("web", "wlc", True, 300)
    assert [(d.address, d.port, d.weight, d.fwd) for d in web.dests] == [
        ("198.18.1.2", 8080, 2, "nat"), ("198.18.1.3", 8080, 1, "nat")]
    one = env.stub.ListServices(pb.ListServicesRequest(service=WEB))
    assert [s.ref.port for s in one.services] == [80]
    code, msg = code_of(env.stub.ListServices, pb.ListServicesRequest(
        service=pb.ServiceRef(protocol="tcp", vip="198.18.0.99", port=80)))
    assert code == grpc.StatusCode.NOT_FOUND and "198.18.0.99" in msg


def _fill_conns(env: Node, n: int) -> list[tuple[str, int]]:
    web = env.web()
    clients = [(f"198.18.2.{i + 1}", 5000 + i) for i in range(n)]

    def fill() -> None:
        for i, (caddr, cport) in enumerate(clients):
            state = TcpState.ESTABLISHED if i % 2 == 0 else TcpState.SYN_RECV
            env.node.add_conn(web, caddr, cport, web.dests[i % 2], state=int(state))
        env.node.add_conn(web, clients[0][0], 0, web.dests[0], state=0, template=True)
    env.lt.call(fill)
    return clients


def test_list_conns_filters(env: Node) -> None:
    clients = _fill_conns(env, 6)
    every = [c for chunk in env.stub.ListConns(pb.ListConnsRequest()) for c in chunk.conns]
    assert len(every) == 7
    assert {(c.caddr, c.cport) for c in every if not c.template} == set(clients)
    est = [c for ch in env.stub.ListConns(pb.ListConnsRequest(state="ESTABLISHED")) for c in ch.conns]
    assert {c.cport for c in est} == {p for i, (_, p) in enumerate(clients) if i % 2 == 0}
    tpl = [c for ch in env.stub.ListConns(pb.ListConnsRequest(templates_only=True)) for c in ch.conns]
    assert [(t.template, t.caddr, t.state) for t in tpl] == [(True, clients[0][0], "NONE")]
    one = [c for ch in env.stub.ListConns(pb.ListConnsRequest(caddr=clients[3][0])) for c in ch.conns]
    assert [(c.caddr, c.cport) for c in one] == [clients[3]]
    by_dest = pb.ListConnsRequest(daddr="198.18.1.3", dport=8080)
    d2 = [c for ch in env.stub.ListConns(by_dest) for c in ch.conns]
    assert {c.cport for c in d2} == {p for i, (_, p) in enumerate(clients) if i % 2 == 1}
    other = [c for ch in env.stub.ListConns(pb.ListConnsRequest(service=pb.ServiceRef(
        protocol="udp", vip="198.18.0.10", port=53))) for c in ch.conns]
    assert other == []


def test_list_conns_pages_cover_everything_once(env: Node) -> None:
    _fill_conns(env, 9)
    seen: list[tuple[str, int, bool]] = []
    token, pages = "", 0
    while True:
        chunks = list(env.stub.ListConns(pb.ListConnsRequest(page_size=4, page_token=token)))
        seen += [(c.caddr, c.cport, c.template) for ch in chunks for c in ch.conns]
        pages += 1
        token = chunks[-1].next_page_token
        if not token:
            break
    assert pages == 3 and len(seen) == 10 and len(set(seen)) == 10
    code, msg = code_of(env.stub.ListConns, pb.ListConnsRequest(page_token="garbage"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in msg


def test_get_stats_counters_rates_drops(env: Node) -> None:
    def traffic() -> None:
        web = env.node.svc(80)
        for _ in range(3):
            env.node.traffic(web, web.dests[0], 100, 150_000, 2.0)
    env.lt.call(traffic)
    st = env.stub.GetStats(pb.GetStatsRequest())
    web = next(s for s in st.services if s.ref.port == 80)
    assert (web.counters.inpkts, web.counters.inbytes, web.counters.conns) == (300, 450_000, 3)
    assert web.dests[0].counters.inpkts == 300 and web.dests[1].counters.inpkts == 0
    assert web.rates.inpps > 0 and web.dests[0].rates.inbps > 0 and web.dests[1].rates.inpps == 0
    assert st.totals.inpkts == 300
    assert dict(st.drops) == env.node.drops


def test_get_config(env: Node) -> None:
    resp = env.stub.GetConfig(pb.GetConfigRequest())
    assert resp.revision == env.node.revision
    assert "198.18.1.3" in resp.yaml and "web" in resp.yaml


# ---- config writes ----------------------------------------------------------------------------


def test_apply_dry_run_then_write(env: Node) -> None:
    text = WEB_YAML.replace("weight: 1}", "weight: 5}") + MAIL_YAML
    rev0 = env.node.revision
    plan = env.stub.ApplyConfig(pb.ApplyConfigRequest(yaml=text, dry_run=True))
    assert plan.revision == 0 and env.node.revision == rev0
    assert sorted((c.op, c.key) for c in plan.changes) == [("add", "mail"), ("change", "web")]
    change = next(c for c in plan.changes if c.key == "web")
    assert "weight: 1" in change.before and "weight: 5" in change.after
    done = env.stub.ApplyConfig(pb.ApplyConfigRequest(yaml=text))
    assert done.revision == rev0 + 1 == env.node.revision
    assert env.web().find_dest(ip("198.18.1.3"), 8080).weight == 5
    only_web = text.split("  - name: dns")[0]
    pruned = env.stub.ApplyConfig(pb.ApplyConfigRequest(yaml=only_web, prune=True, dry_run=True))
    assert sorted((c.op, c.key) for c in pruned.changes) == [("delete", "dns"), ("delete", "mail")]


def test_apply_invalid_names_the_field(env: Node) -> None:
    bad = WEB_YAML.replace("weight: 2", "weight: -1")
    code, msg = code_of(env.stub.ApplyConfig, pb.ApplyConfigRequest(yaml=bad))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "services[0].dests[0].weight" in msg
    code, msg = code_of(env.stub.ApplyConfig, pb.ApplyConfigRequest(yaml=""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("yaml")


def test_put_and_delete_service_and_dest(env: Node) -> None:
    spec = struct_pb2.Struct()
    spec.update({"name": "mail", "protocol": "tcp", "vip": "198.18.0.11", "port": 25,
                 "dests": [{"address": "198.18.1.9", "port": 25, "weight": 3}]})
    rev = env.stub.PutService(pb.PutServiceRequest(service=spec)).revision
    assert rev == env.node.revision
    mail_ref = pb.ServiceRef(protocol="tcp", vip="198.18.0.11", port=25)
    mail = env.stub.ListServices(pb.ListServicesRequest(service=mail_ref)).services[0]
    assert [(d.address, d.weight) for d in mail.dests] == [("198.18.1.9", 3)]
    code, _ = code_of(env.stub.PutService, pb.PutServiceRequest(service=spec, create_only=True))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    dest = struct_pb2.Struct()
    dest.update({"address": "198.18.1.10", "port": 25, "weight": 1})
    env.stub.PutDest(pb.PutDestRequest(service=mail_ref, dest=dest))
    mail = env.stub.ListServices(pb.ListServicesRequest(service=mail_ref)).services[0]
    assert {d.address for d in mail.dests} == {"198.18.1.9", "198.18.1.10"}
    env.stub.DeleteDest(pb.DeleteDestRequest(service=mail_ref, address="198.18.1.9", port=25))
    mail = env.stub.ListServices(pb.ListServicesRequest(service=mail_ref)).services[0]
    assert [d.address for d in mail.dests] == ["198.18.1.10"]
    env.stub.DeleteService(pb.DeleteServiceRequest(service=mail_ref))
    gone = grpc.StatusCode.NOT_FOUND
    assert code_of(env.stub.ListServices, pb.ListServicesRequest(service=mail_ref))[0] == gone
    assert code_of(env.stub.DeleteService, pb.DeleteServiceRequest(service=mail_ref))[0] == gone


def test_edit_and_drain_dest(env: Node) -> None:
    rev = env.stub.EditDest(pb.EditDestRequest(service=WEB, address="198.18.1.2", port=8080, weight=7,
                                               u_threshold=100)).revision
    d = env.web().find_dest(ip("198.18.1.2"), 8080)
    assert (d.weight, d.u_threshold, rev) == (7, 100, env.node.revision)
    env.stub.DrainDest(pb.DrainDestRequest(service=WEB, address="198.18.1.2", port=8080))
    assert d.weight == 0 and d.u_threshold == 100
    code, msg = code_of(env.stub.EditDest, pb.EditDestRequest(service=WEB, address="198.18.1.2", port=8080,
                                                              weight=-2))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("weight")
    missing = pb.DrainDestRequest(service=WEB, address="198.18.1.99", port=8080)
    code, msg = code_of(env.stub.DrainDest, missing)
    assert code == grpc.StatusCode.NOT_FOUND and "198.18.1.99" in msg
    code, msg = code_of(env.stub.DrainDest, pb.DrainDestRequest(service=WEB, address="nope", port=8080))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("address")
    code, msg = code_of(env.stub.DrainDest, pb.DrainDestRequest(
        service=pb.ServiceRef(protocol="sctp", vip="198.18.0.10", port=80), address="198.18.1.2", port=8080))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and msg.startswith("service.protocol")


def test_set_timeouts(env: Node) -> None:
    rev = env.stub.SetTimeouts(pb.SetTimeoutsRequest(timeouts={"tcp": 60, "udp": 5})).revision
    assert rev == env.node.revision and env.node.timeouts["tcp"] == 60 and env.node.timeouts["udp"] == 5
    code, msg = code_of(env.stub.SetTimeouts, pb.SetTimeoutsRequest(timeouts={"bogus": 1}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "timeouts.bogus" in msg
    code, msg = code_of(env.stub.SetTimeouts, pb.SetTimeoutsRequest(timeouts={"tcp": -1}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "timeouts.tcp" in msg


# ---- node-local -------------------------------------------------------------------------------


def test_flush_and_zero(env: Node) -> None:
    clients = _fill_conns(env, 4)
    env.lt.call(lambda: env.node.traffic(env.node.svc(80), env.node.svc(80).dests[0], 10, 1000, 2.0))
    assert env.stub.Flush(pb.FlushRequest()).removed == len(clients) + 1
    assert env.lt.call(lambda: env.node.table.count) == 0
    env.stub.ZeroCounters(pb.ZeroCountersRequest(service=WEB))
    assert env.web().counters.inpkts == 0 and env.web().dests[0].counters.inpkts == 0


def test_failover_master_then_backup_refuses(env: Node) -> None:
    resp = env.stub.Failover(pb.FailoverRequest())
    assert resp.new_master_id == "n2" and resp.epoch == env.node.epoch
    code, msg = code_of(env.stub.Failover, pb.FailoverRequest())
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "n2" in msg


def test_watch_events_streams_conn_config_role(env: Node) -> None:
    stream = env.stub.WatchEvents(pb.WatchEventsRequest())
    # the subscription exists once the server has the call; wait for it
    deadline_ok = _poll(lambda: env.lt.call(lambda: env.node.hub.watchers) == 1)
    assert deadline_ok
    web = env.web()
    env.lt.call(lambda: env.node.add_conn(web, "198.18.2.7", 4444, web.dests[1]))
    env.stub.EditDest(pb.EditDestRequest(service=WEB, address="198.18.1.2", port=8080, weight=3))
    env.stub.Failover(pb.FailoverRequest())
    got = []
    for ev in stream:
        got.append(ev)
        if ev.kind == "role":
            break
    stream.cancel()
    kinds = [e.kind for e in got]
    assert kinds.index("conn") < kinds.index("config") < kinds.index("role")
    new = next(e for e in got if e.kind == "conn")
    assert (new.conn_event, new.conn.caddr, new.conn.cport, new.conn.daddr) == ("new", "198.18.2.7", 4444,
                                                                               "198.18.1.3")
    assert next(e for e in got if e.kind == "config").revision == env.node.revision
    assert _poll(lambda: env.lt.call(lambda: env.node.hub.watchers) == 0)


def test_watch_events_kind_filter_and_bad_kind(env: Node) -> None:
    stream = env.stub.WatchEvents(pb.WatchEventsRequest(kinds=["config"]))
    assert _poll(lambda: env.lt.call(lambda: env.node.hub.watchers) == 1)
    web = env.web()
    env.lt.call(lambda: env.node.add_conn(web, "198.18.2.8", 4445, web.dests[0]))
    env.stub.DrainDest(pb.DrainDestRequest(service=WEB, address="198.18.1.3", port=8080))
    first = next(iter(stream))
    stream.cancel()
    assert first.kind == "config"
    code, msg = code_of(env.stub.WatchEvents, pb.WatchEventsRequest(kinds=["bogus"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "bogus" in msg


def _poll(cond: Any, timeout: float = 10.0) -> bool:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


# ---- auth, health, reflection -----------------------------------------------------------------


def test_tcp_needs_a_credential_and_a_write_role(env: Node) -> None:
    anon, ch1 = env.tcp_stub(None)
    ro, ch2 = env.tcp_stub("tok-ro")
    rw, ch3 = env.tcp_stub("tok-admin")
    bad, ch4 = env.tcp_stub("tok-wrong")
    try:
        assert code_of(anon.Status, pb.StatusRequest())[0] == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(bad.Status, pb.StatusRequest())[0] == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(anon.ListConns, pb.ListConnsRequest())[0] == grpc.StatusCode.UNAUTHENTICATED
        assert ro.Status(pb.StatusRequest()).node_id == "n1"
        code, msg = code_of(ro.DrainDest, pb.DrainDestRequest(service=WEB, address="198.18.1.2", port=8080))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "reader" in msg
        assert env.web().find_dest(ip("198.18.1.2"), 8080).weight == 2
        rw.DrainDest(pb.DrainDestRequest(service=WEB, address="198.18.1.2", port=8080))
        assert env.web().find_dest(ip("198.18.1.2"), 8080).weight == 0
    finally:
        for ch in (ch1, ch2, ch3, ch4):
            ch.close()


def test_health_and_reflection_without_credentials(env: Node) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{env.server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "lbd.admin.v1.Admin"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = list(refl.ServerReflectionInfo(iter([ask]), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"lbd.admin.v1.Admin", "grpc.health.v1.Health"} <= names


def test_server_refuses_plain_tcp_without_tls() -> None:
    with pytest.raises(ValueError, match="TLS"):
        LoopThreadRun(AdminServerConfig(listen="127.0.0.1:0"))


def LoopThreadRun(cfg: AdminServerConfig) -> None:
    lt = LoopThread()
    try:
        lt.run(start_server(FakeNode(), cfg))
    finally:
        lt.close()


# ---- TLS / mTLS -------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lbd-test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    ext = d / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, subj in (("server", "/CN=localhost"), ("op", "/CN=alice/OU=operator"),
                       ("ro", "/CN=bob/OU=reader")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
                 str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(d / f"{name}.pem"),
                 "-extfile", str(ext))
    return d


def _tls_channel(port: int, pki: Path, client: str | None) -> Any:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{client}.key").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None)
    return grpc.secure_channel(f"localhost:{port}", creds)


def test_mutual_tls_roles_from_client_certificates(pki: Path) -> None:
    lt = LoopThread()
    node = FakeNode()
    lt.run(node.apply_config(WEB_YAML, dry_run=False, prune=False))
    tls = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), client_ca=str(pki / "ca.pem"))
    server = start(lt, node, AdminServerConfig(listen="127.0.0.1:0", tls=tls))
    try:
        with _tls_channel(server.port, pki, "op") as ch:
            stub = pb_grpc.AdminStub(ch)
            assert stub.Status(pb.StatusRequest(), timeout=10).node_id == "n1"
            stub.DrainDest(pb.DrainDestRequest(service=WEB, address="198.18.1.3", port=8080), timeout=10)
        with _tls_channel(server.port, pki, "ro") as ch:
            stub = pb_grpc.AdminStub(ch)
            assert stub.ListServices(pb.ListServicesRequest(), timeout=10).services
            code, _ = code_of(lambda r: stub.Flush(r, timeout=10), pb.FlushRequest())
            assert code == grpc.StatusCode.PERMISSION_DENIED
        with _tls_channel(server.port, pki, None) as ch:  # no client certificate: handshake refused
            code, _ = code_of(lambda r: pb_grpc.AdminStub(ch).Status(r, timeout=10), pb.StatusRequest())
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        lt.run(server.stop(0))
        lt.close()
    weights = {(str(ipaddress.ip_address(d.addr)), d.weight) for s in node.services_tab for d in s.dests}
    assert ("198.18.1.3", 0) in weights


def test_tls_with_token(pki: Path) -> None:
    lt = LoopThread()
    node = FakeNode()
    tls = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"))
    server = start(lt, node, AdminServerConfig(listen="127.0.0.1:0", tls=tls,
                                               auth=AdminAuth(tokens=TOKENS)))
    try:
        with _tls_channel(server.port, pki, None) as ch:
            stub = pb_grpc.AdminStub(ch)
            code, _ = code_of(lambda r: stub.Status(r, timeout=10), pb.StatusRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED
            st = stub.Status(pb.StatusRequest(), timeout=10, metadata=(("authorization", "Bearer tok-ro"),))
            assert st.node_id == "n1"
    finally:
        lt.run(server.stop(0))
        lt.close()


def test_list_conns_streams_big_tables_in_chunks(env: Node) -> None:
    web = env.web()

    def fill() -> None:
        for i in range(1300):
            env.node.table.new(6, ip("198.18.8.0") + i, 1024 + i, web.addr, 80, web.dests[0].addr, 8080, 0,
                               web.dests[0], timeout=60)
    env.lt.call(fill)
    chunks = list(env.stub.ListConns(pb.ListConnsRequest()))
    assert [len(c.conns) for c in chunks] == [512, 512, 276]
    assert len({(c.caddr, c.cport) for ch in chunks for c in ch.conns}) == 1300
    assert all(not ch.next_page_token for ch in chunks)


def test_event_hub_overflow_is_reported_not_blocking() -> None:
    import asyncio

    from director.admin.api import NodeEvent
    from director.admin.hub import EventHub

    async def drain(sub: Any) -> list[NodeEvent]:
        out = []
        while sub._q or sub._overflowed:
            out.append(await sub.get())
        return out

    async def main() -> None:
        hub = EventHub(capacity=4)
        with hub.subscribe() as slow, hub.subscribe() as fast:
            hub.publish(NodeEvent(kind="config", time=1.0, revision=1))
            assert (await fast.get()).revision == 1
            for rev in range(2, 12):  # 10 more: more than a queue holds; publish never blocks
                hub.publish(NodeEvent(kind="config", time=float(rev), revision=rev))
            for sub in (slow, fast):
                got = await drain(sub)
                # the consumer learns it lost events, then gets the newest ones, in order, none lost after
                assert got[0].kind == "overflow" and "dropped" in got[0].message
                revs = [e.revision for e in got[1:]]
                assert 0 < len(revs) <= 4 and revs == list(range(revs[0], 12))
            assert hub.watchers == 2
            hub.publish(NodeEvent(kind="role", time=20.0, role="backup"))
            assert (await slow.get()).role == "backup"
        assert hub.watchers == 0
    asyncio.run(main())


def test_unexpected_node_error_is_internal_not_a_crash(env: Node) -> None:
    def broken() -> Any:
        raise RuntimeError("boom")
    env.node.stats = broken  # type: ignore[method-assign]
    env.node.conns = lambda flt: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    code, msg = code_of(env.stub.GetStats, pb.GetStatsRequest())
    assert code == grpc.StatusCode.INTERNAL and "GetStats" in msg and "boom" not in msg
    code, msg = code_of(env.stub.ListConns, pb.ListConnsRequest())
    assert code == grpc.StatusCode.INTERNAL and "ListConns" in msg
    assert env.stub.Status(pb.StatusRequest()).node_id == "n1"  # the server lives on


def test_server_config_from_node_yaml(tmp_path: Path) -> None:
    from director.admin.server import server_config_from_node
    from director.config.node import parse_node_config

    base = ("node_id: d1\ninterfaces: {external: e0, internal: i0}\netcd: {endpoints: ['127.0.0.1:2379']}\n"
            "sync: {listen: '127.0.0.1:7100'}\n")
    tls = "tls: {ca: /p/ca.pem, cert: /p/c.pem, key: /p/k}"
    cfg = server_config_from_node(parse_node_config(
        base + f"admin: {{listen: '127.0.0.1:0', token: s3cret, {tls}}}\n"))
    assert cfg.tls == TlsConfig(cert="/p/c.pem", key="/p/k", client_ca="/p/ca.pem") and not cfg.insecure_tcp
    assert dict(cfg.auth.tokens) == {"s3cret": "admin"}
    lab = server_config_from_node(parse_node_config(
        base + f"admin: {{listen: '127.0.0.1:0', token: t, unix: {tmp_path}/a.sock}}\n"))
    assert lab.insecure_tcp and lab.unix_path == f"{tmp_path}/a.sock"
    bare = server_config_from_node(parse_node_config(base + "admin: {listen: '127.0.0.1:0'}\n"))
    with pytest.raises(ValueError, match="TLS"):
        LoopThreadRun(bare)
    local = server_config_from_node(parse_node_config(
        base + f"admin: {{listen: '127.0.0.1:0', unix: {tmp_path}/b.sock}}\n"))
    assert local.listen is None and local.unix_path == f"{tmp_path}/b.sock"  # TCP without credentials: off


def test_a_write_while_etcd_is_unreachable_is_unavailable_not_internal(env: Node) -> None:
    """etcd down or without quorum: the client is told so (retryable), the node logs no traceback."""
    async def etcd_down(document: str, *, dry_run: bool, prune: bool) -> Any:
        raise EtcdError("UNAVAILABLE: etcdserver: no leader")
    env.node.apply_config = etcd_down  # type: ignore[method-assign]
    code, msg = code_of(env.stub.ApplyConfig, pb.ApplyConfigRequest(yaml=WEB_YAML))
    assert code == grpc.StatusCode.UNAVAILABLE and "etcd unavailable" in msg and "no leader" in msg
