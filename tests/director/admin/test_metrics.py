"""Prometheus exposition of a node (real tables) and the HTTP endpoint over a real socket."""

from __future__ import annotations

import asyncio
import re

from director.admin.metrics import render, serve_metrics
from director.table.tcp import TcpState
from tests.director.admin.admin_fake import WEB_YAML, FakeNode

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+-]+)$')


def node() -> FakeNode:
    n = FakeNode()
    n.docs_from(WEB_YAML)
    web = n.svc(80)
    for i in range(3):
        n.add_conn(web, f"198.18.4.{i + 1}", 7000 + i, web.dests[0], state=int(TcpState.ESTABLISHED))
    n.add_conn(web, "198.18.4.1", 0, web.dests[0], state=0, template=True)
    for _ in range(2):
        n.traffic(web, web.dests[0], 50, 5000, 2.0)
    return n


def parse(text: str) -> dict[str, float]:
    """name{labels} -> value; also checks every line is HELP, TYPE or a well-formed sample."""
    out: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, f"bad line {line!r}"
        assert m.group(1) in typed, f"sample before its TYPE: {line}"
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_exposition_has_counters_sizes_roles_sync_drops() -> None:
    n = node()
    m = parse(render(n))
    st = n.status()
    assert m['lbd_role{role="master"}'] == 1 and m['lbd_role{role="backup"}'] == 0
    assert m["lbd_epoch"] == st.epoch and m["lbd_role_changes_total"] == st.role_changes
    assert m["lbd_conns"] == 3 and m["lbd_templates"] == 1 and m["lbd_services"] == 2 and m["lbd_dests"] == 3
    assert m['lbd_sync_lag_events{backup="n2"}'] == 4
    assert m['lbd_sync_state{backup="n2",state="streaming"}'] == 1
    assert m['lbd_drops_total{reason="no_service"}'] == n.drops["no_service"]
    web = n.svc(80)
    d = 'service="tcp/198.18.0.10:80",dest="198.18.1.2:8080"'
    assert m['lbd_service_inpkts_total{service="tcp/198.18.0.10:80"}'] == web.counters.inpkts == 100
    assert m[f"lbd_dest_inbytes_total{{{d}}}"] == 10000
    assert m[f"lbd_dest_inpps{{{d}}}"] > 0 and m["lbd_inpps"] > 0
    assert m[f"lbd_dest_active_conns{{{d}}}"] == web.dests[0].activeconns == 3
    assert m[f"lbd_dest_persistent_conns{{{d}}}"] == web.dests[0].persistconns
    assert m[f"lbd_dest_weight{{{d}}}"] == 2 and m["lbd_inpkts_total"] == 100


def test_health_and_label_escaping() -> None:
    n = node()
    web = n.svc(80)
    n.health[web.dests[1].key] = "down"
    n.node_id = 'we"ird\\node'
    text = render(n)
    m = parse(text)
    assert m['lbd_dest_up{service="tcp/198.18.0.10:80",dest="198.18.1.3:8080"}'] == 0
    assert not any(k.startswith("lbd_dest_up") and "198.18.1.2" in k for k in m)  # no check: no sample
    assert 'node="we\\"ird\\\\node"' in text


def test_http_endpoint() -> None:
    async def main() -> None:
        n = node()
        srv = await serve_metrics(n, "127.0.0.1:0")
        try:
            status, headers, body = await get(srv.port, "/metrics")
            assert status == 200 and "version=0.0.4" in headers
            assert parse(body)["lbd_conns"] == 3
            n.flush()
            assert parse((await get(srv.port, "/metrics"))[2])["lbd_conns"] == 0  # live, not cached
            assert (await get(srv.port, "/nope"))[0] == 404
        finally:
            await srv.stop()
    asyncio.run(main())


async def get(port: int, path: str) -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), head, body
