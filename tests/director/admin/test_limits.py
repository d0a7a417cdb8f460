"""Admin limits (director.admin.limits), the ListConns cursor (views.table_conns) and RESOURCE_EXHAUSTED
over the real gRPC server."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import grpc
import pytest

from director.admin.api import ConnFilter, RateLimited
from director.admin.limits import AdminLimits, PeerLimiter, bounded, peer_key
from director.admin.server import AdminAuth, AdminServerConfig, start_server
from director.admin.views import table_conns
from director.table.conn import ConnTable
from lbd_pb import admin_pb2 as pb
from lbd_pb import admin_pb2_grpc as pb_grpc
from tests.director.admin.admin_fake import WEB_YAML, FakeNode, LoopThread
from tests.director.table.conn_helpers import FakeClock, make_dest, new_conn


def test_token_bucket_per_peer() -> None:
    clock = FakeClock()
    lim = PeerLimiter(10.0, 20.0, max_peers=3, clock=clock)
    assert [lim.take("a") for _ in range(20)] == [0.0] * 20
    assert lim.take("a") == pytest.approx(0.1)  # empty: one token comes back in 1/rate
    assert lim.take("b") == 0.0  # another peer has its own bucket
    clock.advance(0.5)
    assert [lim.take("a") for _ in range(5)] == [0.0] * 5 and lim.take("a") > 0
    assert lim.take("a", cost=30.0) > 0 and lim.refused == 3
    for p in ("c", "d", "e"):
        lim.take(p)
    assert len(lim) == 3  # a spoofed-address flood cannot grow the map
    assert PeerLimiter(0.0, 0.0).take("x", 1e9) == 0.0  # rate 0: no limit


def test_admin_limits_costs_heavy_calls_and_messages() -> None:
    clock = FakeClock()
    limits = AdminLimits(rate=1.0, burst=10.0, heavy_calls=1, clock=clock)
    limits.check("ipv4:10.0.0.1:1000", "ApplyConfig", True)  # 10 tokens: the whole burst
    with pytest.raises(RateLimited) as exc:
        limits.check("ipv4:10.0.0.1:1001", "Status", False)  # same address, another port
    assert "Status" in str(exc.value) and len(str(exc.value)) < 200
    limits.check("ipv4:10.0.0.2:1000", "Status", False)
    with limits.heavy("ApplyConfig"), pytest.raises(RateLimited, match="in progress"), limits.heavy("x"):
        pass
    with limits.heavy("ApplyConfig"):  # released
        pass
    assert peer_key("ipv6:[::1]:5000") == "ipv6:[::1]" and peer_key("unix:/run/x.sock") == "unix"
    assert bounded("x" * 10) == "x" * 10
    cut = bounded("y" * 100_000)
    assert len(cut) <= 4096 and "more characters" in cut


def test_cursor_pages_are_stable_while_the_table_changes() -> None:
    clock = FakeClock()
    tab = ConnTable(clock, bits=8)
    dest = make_dest()
    rng = random.Random(7)
    conns = [new_conn(tab, dest, cport=1000 + i, caddr=0x0A000000 + rng.randrange(1 << 16))
             for i in range(3000)]
    stay = {c.key for c in conns[::2]}
    doomed = conns[1::2]
    seen: list[tuple[int, ...]] = []
    cursors: list[tuple[int, ...]] = []
    after = None
    while True:
        page = []
        for v in table_conns(tab, ConnFilter(), clock(), after):
            page.append(v)
            if len(page) == 100:
                break
        if not page:
            break
        seen += [(v.protocol, v.caddr, v.cport, v.vaddr, v.vport, v.daddr, v.dport) for v in page]
        cursors += [v.cursor for v in page]
        after = page[-1].cursor
        for _ in range(30):  # churn between pages: removals and new entries anywhere in the table
            if doomed:
                tab.expire(doomed.pop(rng.randrange(len(doomed))))
            new_conn(tab, dest, cport=20000 + rng.randrange(40000), caddr=0x0B000000 + rng.randrange(1 << 16))
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert len(set(seen)) == len(seen)
    got = set(seen)
    assert all((k[0], k[1], k[2], k[3], k[4], k[5], k[6]) in got for k in stay)


def test_rate_limited_calls_get_resource_exhausted(tmp_path: Path) -> None:
    lt = LoopThread()
    node = FakeNode()
    lt.run(node.apply_config(WEB_YAML, dry_run=False, prune=False))
    unix = str(tmp_path / f"admin-{uuid.uuid4().hex[:8]}.sock")
    cfg = AdminServerConfig(listen="127.0.0.1:0", unix_path=unix, auth=AdminAuth(tokens={"t": "admin"}),
                            insecure_tcp=True, limits=AdminLimits(rate=0.5, burst=5.0))
    server = lt.run(start_server(node, cfg))
    local = grpc.insecure_channel(f"unix:{unix}")
    tcp = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = pb_grpc.AdminStub(local)
        codes = []
        for _ in range(12):
            try:
                stub.Status(pb.StatusRequest(), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
                assert len(err.details() or "") < 300
        assert codes.count(grpc.StatusCode.OK) <= 6
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 6
        with pytest.raises(grpc.RpcError) as exc:
            list(stub.ListConns(pb.ListConnsRequest(page_size=10), timeout=10))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # another peer (TCP from 127.0.0.1) has its own bucket
        other = pb_grpc.AdminStub(tcp)
        assert other.Status(pb.StatusRequest(), metadata=(("authorization", "Bearer t"),), timeout=10).node_id
    finally:
        local.close()
        tcp.close()
        lt.run(server.stop(0))
        lt.close()
