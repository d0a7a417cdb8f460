"""Prometheus metrics of a node (real tables): names and types as prometheus_client parses them, values,
escaping, and the HTTP endpoint over a real socket."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from director.admin.api import DefenseView, HealthCounts, HookView, NodeStatus, WorkerView
from director.admin.metrics import EXPORTED, NodeCollector, exposition, registry, serve_metrics
from director.table.tcp import TcpState
from tests.director.admin.admin_fake import WEB_YAML, FakeNode

PROCESS = {"process_cpu_seconds": "counter", "process_resident_memory_bytes": "gauge",
           "process_start_time_seconds": "gauge", "process_open_fds": "gauge", "python_info": "gauge"}
NAME = re.compile(r"^lbd_[a-z][a-z0-9_]*$")


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


def families(text: str) -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]:
    """family name -> (type, {(sample name, sorted labels): value}), through prometheus_client's parser."""
    out: dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in out, f"family {fam.name} twice"
        out[fam.name] = (fam.type, {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples})
    return out


def scrape(api: Any) -> str:
    return exposition(registry(api))[0].decode()


def value(fams: dict[str, Any], sample: str, **labels: str) -> float:
    for _kind, samples in fams.values():
        key = (sample, tuple(sorted(labels.items())))
        if key in samples:
            return float(samples[key])
    raise KeyError(f"{sample}{labels}")


def test_names_and_types_follow_prometheus_conventions() -> None:
    fams = families(scrape(DefenseNode()))  # every family, the optional defense view included
    lbd = {name: kind for name, (kind, _) in fams.items() if name.startswith("lbd_")}
    assert lbd == EXPORTED  # the documented list (docs/METRICS.md) is what a scrape shows, types included
    for name, kind in lbd.items():
        assert NAME.match(name), name
        assert not re.search(r"(cps|pps|bps|_rate_|per_second|uptime)", name), f"pre-computed rate: {name}"
        if kind == "counter":  # samples of a counter family carry _total; no gauge may end in _total
            assert all(s == f"{name}_total" for s, _ in fams[name][1]), name
        else:
            assert not name.endswith("_total"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), f"unit not last: {name}"
    for name, kind in PROCESS.items():
        assert fams[name][0] == kind, name
    assert "lbd_connections" in lbd and "lbd_scheduled_connections" in lbd  # once one family, now two
    assert not {"lbd_conns", "lbd_cps", "lbd_inbps", "lbd_uptime_seconds", "lbd_drops"} & set(lbd)


def test_values_of_a_live_node() -> None:
    n = node()
    st = n.status()
    fams = families(scrape(n))
    web = n.svc(80)
    svc = "tcp/198.18.0.10:80"
    d = {"service": svc, "dest": "198.18.1.2:8080"}
    assert value(fams, "lbd_role", role="master") == 1 and value(fams, "lbd_role", role="backup") == 0
    assert value(fams, "lbd_epoch") == st.epoch and value(fams, "lbd_role_changes_total") == st.role_changes
    assert value(fams, "lbd_connections") == 3 and value(fams, "lbd_templates") == 1
    assert value(fams, "lbd_services") == 2 and value(fams, "lbd_dests") == 3
    assert abs(value(fams, "lbd_start_time_seconds") - (time.time() - st.uptime)) < 5
    assert value(fams, "lbd_sync_lag_events", backup="n2") == 4
    assert value(fams, "lbd_sync_state", backup="n2", state="streaming") == 1
    assert value(fams, "lbd_sync_state", backup="n2", state="behind") == 0
    assert value(fams, "lbd_packets_dropped_total", reason="no_service") == n.drops["no_service"]
    assert value(fams, "lbd_service_packets_total", service=svc, direction="in") == web.counters.inpkts == 100
    assert value(fams, "lbd_dest_bytes_total", direction="in", **d) == 10000
    assert value(fams, "lbd_dest_scheduled_connections_total", **d) == web.dests[0].counters.conns
    assert value(fams, "lbd_packets_total", direction="in") == 100
    assert value(fams, "lbd_dest_active_connections", **d) == web.dests[0].activeconns == 3
    assert value(fams, "lbd_dest_persistent_connections", **d) == web.dests[0].persistconns
    assert value(fams, "lbd_dest_weight", **d) == 2
    assert value(fams, "process_resident_memory_bytes") > 0
    n.flush()
    assert value(families(scrape(n)), "lbd_connections") == 0  # read at scrape time, not cached


def test_health_and_label_escaping() -> None:
    n = node()
    web = n.svc(80)
    n.health[web.dests[1].key] = "down"
    n.node_id = 'we"ird\\node\nx'
    fams = families(scrape(n))
    assert value(fams, "lbd_dest_up", service="tcp/198.18.0.10:80", dest="198.18.1.3:8080") == 0
    assert not any("198.18.1.2" in str(k) for k in fams["lbd_dest_up"][1])  # no check: no sample
    assert value(fams, "lbd_node_info", node='we"ird\\node\nx', version="test") == 1


class DefenseNode(FakeNode):
    """A node whose status carries a defense view (drop_packet engaged)."""

    def status(self) -> NodeStatus:
        defense = DefenseView(drop_entry="off", drop_packet="auto (engaged)", secure_tcp="always",
                              pressure=0.5, drop_rate=10, conn_threshold=1000, max_conns=4000,
                              rss_threshold=1 << 30, rss_max=2 << 30, entries_dropped=7,
                              packets_dropped=11, table_full_drops=2, engaged=1)
        return dataclasses.replace(super().status(), defense=defense)


def test_defense_families() -> None:
    fams = families(scrape(DefenseNode()))
    assert value(fams, "lbd_defense_mode", strategy="drop_packet", mode="auto") == 1
    assert value(fams, "lbd_defense_mode", strategy="drop_packet", mode="off") == 0
    assert value(fams, "lbd_defense_active", strategy="drop_packet") == 1
    assert value(fams, "lbd_defense_active", strategy="secure_tcp") == 1
    assert value(fams, "lbd_defense_active", strategy="drop_entry") == 0
    assert value(fams, "lbd_defense_packets_dropped_total") == 11
    assert value(fams, "lbd_defense_rss_max_bytes") == 2 << 30
    assert fams["lbd_defense_entries_dropped"][0] == "counter"


class HealthNode(FakeNode):
    """A node whose status carries health-check and notify-hook totals."""

    def status(self) -> NodeStatus:
        hooks = (("dest_down", HookView(runs=4, failed=1)), ("master", HookView(runs=2, killed=1, dropped=3)))
        return dataclasses.replace(super().status(), health=HealthCounts(120, 9, 2, hooks))


def test_health_check_and_notify_hook_families() -> None:
    fams = families(scrape(HealthNode()))
    assert value(fams, "lbd_health_probes_total") == 120
    assert value(fams, "lbd_health_probe_failures_total") == 9
    assert value(fams, "lbd_health_probes_killed_total") == 2
    assert value(fams, "lbd_notify_runs_total", hook="dest_down") == 4
    assert value(fams, "lbd_notify_failed_total", hook="dest_down") == 1
    assert value(fams, "lbd_notify_killed_total", hook="master") == 1
    assert value(fams, "lbd_notify_dropped_total", hook="master") == 3
    assert fams["lbd_notify_runs"][0] == "counter"


class WorkersNode(FakeNode):
    """A node with two packet workers, the second one down (restarting)."""

    def status(self) -> NodeStatus:
        workers = (WorkerView(0, True, 100, forwarded=5000, conns=40, ring_drops=3, cpu_seconds=1.5),
                   WorkerView(1, False))
        return dataclasses.replace(super().status(), workers=workers, worker_exits=2)


def test_worker_families_per_worker_and_none_without_workers() -> None:
    fams = families(scrape(WorkersNode()))
    assert value(fams, "lbd_worker_up", worker="0") == 1 and value(fams, "lbd_worker_up", worker="1") == 0
    assert value(fams, "lbd_worker_packets_total", worker="0") == 5000
    assert value(fams, "lbd_worker_connections", worker="0") == 40
    assert value(fams, "lbd_worker_ring_drops_total", worker="0") == 3
    assert value(fams, "lbd_worker_cpu_seconds_total", worker="0") == 1.5
    assert value(fams, "lbd_worker_exits_total") == 2
    plain = families(scrape(node()))
    assert not plain["lbd_worker_up"][1]  # in-process data plane: the family has no samples


def test_collector_alone_and_openmetrics() -> None:
    reg = CollectorRegistry()
    reg.register(NodeCollector(node()))
    body, ctype = exposition(reg, "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    text = body.decode()
    assert "# TYPE lbd_scheduled_connections counter\n" in text and "# TYPE lbd_connections gauge\n" in text
    assert "# UNIT lbd_bytes bytes\n" in text and text.endswith("# EOF\n")
    assert "process_" not in text  # only registry() adds those


def test_http_endpoint() -> None:
    async def main() -> None:
        n = node()
        srv = await serve_metrics(n, "127.0.0.1:0")
        try:
            status, headers, body = await get(srv.port, "/metrics")
            assert status == 200 and "Content-Type: text/plain; version=" in headers
            assert value(families(body), "lbd_connections") == 3
            n.flush()
            assert value(families((await get(srv.port, "/metrics"))[2]), "lbd_connections") == 0
            status, headers, body = await get(srv.port, "/metrics", "Accept: application/openmetrics-text")
            assert "application/openmetrics-text" in headers and body.endswith("# EOF\n")
            assert (await get(srv.port, "/nope"))[0] == 404
        finally:
            await srv.stop()
    asyncio.run(main())


async def get(port: int, path: str, *headers: str) -> tuple[int, str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{h}\r\n" for h in headers)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), head, body


def test_ipv6_services_and_dests_are_labelled_in_ipvsadm_form() -> None:
    n = FakeNode()
    n.docs_from("services:\n  - name: web6\n    protocol: tcp\n    vip: '2001:db8::10'\n    port: 443\n"
                "    dests: [{address: 'fd00:2::1', port: 8443}]\n")
    web6 = n.svc(443)
    n.add_conn(web6, "2001:db8:1::7", 7000, web6.dests[0], state=int(TcpState.ESTABLISHED))
    n.traffic(web6, web6.dests[0], 10, 1000, 2.0)
    fams = families(scrape(n))
    d = {"service": "tcp/[2001:db8::10]:443", "dest": "[fd00:2::1]:8443"}
    assert value(fams, "lbd_dest_active_connections", **d) == 1
    assert value(fams, "lbd_dest_bytes_total", direction="in", **d) == 1000
    assert value(fams, "lbd_service_packets_total", service=d["service"], direction="in") == 10
