"""The Grafana dashboard and docs/METRICS.md name only metrics a node exports, and cover what matters.

Every PromQL expression of deploy/grafana/lbd.json (panel targets, template variable queries,
annotations) is reduced to the metric names it selects: string literals, label matchers, range and
`by (...)` clauses and Grafana variables removed, function names and keywords dropped. Each name
must be a sample name of a real scrape (a FakeNode with real tables, through `registry()`, so
``process_*`` included) or of `EXPORTED`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from director.admin.metrics import EXPORTED, exposition, registry
from tests.director.admin.test_metrics import DefenseNode

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "lbd.json"
DOC = ROOT / "docs" / "METRICS.md"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
            "unless", "inf", "nan"}
CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported_samples() -> set[str]:
    body = exposition(registry(DefenseNode()))[0].decode()
    scraped = {s.name for fam in text_string_to_metric_families(body) for s in fam.samples}
    return scraped | {f"{n}_total" if kind == "counter" else n for n, kind in EXPORTED.items()}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers that are not functions or keywords)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables: $__range, ${datasource}
    e = CLAUSE.sub(" ", e)
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges, subqueries
    names = set()
    for m in IDENT.finditer(e):
        if e[m.end():].lstrip().startswith("(") or m.group().lower() in KEYWORDS:
            continue  # a function call or an operator
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # 1e3, 0.5
        names.add(m.group())
    return names


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: targets' expr, variable and annotation queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_the_extractor_finds_names_and_skips_functions() -> None:
    expr = ('8 * sum by (service, dest) (rate(lbd_dest_bytes_total{direction="in", x=~"a|b"}'
            '[$__rate_interval])) / on (instance) group_left lbd_x > 0.5 and time() - lbd_start_time_seconds'
            " offset 5m")
    assert metric_names(expr) == {"lbd_dest_bytes_total", "lbd_x", "lbd_start_time_seconds"}
    assert metric_names('label_values(lbd_node_info{job=~"$job"}, instance)') == {"lbd_node_info", "instance"}


def test_every_dashboard_expression_names_exported_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = list(expressions(dash))
    assert len(exprs) > 20
    known = exported_samples()
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        if expr.startswith("label_values("):  # label_values(metric, label): the label is not a metric
            names -= {expr.rstrip(")").rsplit(",", 1)[-1].strip()}
        unknown = names - known
        assert not unknown, f"{expr!r} names {sorted(unknown)}, not exported"
        used |= names
    # what an operator wants to see: role and epoch, takeovers, sync lag, traffic per service and dest, drops
    assert {"lbd_role", "lbd_epoch", "lbd_elections_total", "lbd_sync_lag_seconds",
            "lbd_service_packets_total", "lbd_service_scheduled_connections_total", "lbd_dest_packets_total",
            "lbd_dest_active_connections", "lbd_packets_dropped_total"} <= used


def test_panels_have_unique_ids_and_a_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"])
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]


def test_metrics_doc_lists_exactly_the_exported_families() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"`(lbd_[a-z0-9_]+)`", text))
    samples = {f"{n}_total" if kind == "counter" else n for n, kind in EXPORTED.items()}
    assert samples <= documented, f"undocumented: {sorted(samples - documented)}"
    in_tables = {n for n in re.findall(r"^\| `(lbd_[a-z0-9_]+)` \|", text, re.MULTILINE)}
    assert in_tables == samples
    for name in re.findall(r"`[^`]*?\b(process_[a-z_]+|python_info)\b", text):
        assert name in exported_samples(), name
