"""The drill's HTML report (deploy.report) rendered from a synthetic drill report (deploy.drill's JSON
shape): no lab needed."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

from deploy.report import PHASE_ORDER, _lanes_from_events, external_references, main, render_html
from deploy.traffic import Traffic, parse_args


def _phase(name: str, rng: random.Random) -> dict[str, Any]:
    failover = name in ("kill", "switchback", "freeze")
    takeover_ms = {"kill": 150.0, "switchback": 20.0, "freeze": 1100.0}.get(name, 0.0)
    end_s = 70.0 if name == "etcd-outage" else 8.0
    bin_s = max(0.05, round((end_s + 2.0) / 600, 2))
    n_bins = int((end_s + 2.0) / bin_s) + 1
    old, new = ("d1", "d2") if name != "switchback" else ("d2", "d1")
    gap = takeover_ms / 1000.0
    rates: dict[str, list[float]] = {old: [], new: []}
    for k in range(n_bins):
        t = -2.0 + k * bin_s
        busy = 4000.0 + rng.uniform(-300, 300)
        if not failover:
            rates[old].append(busy)
            rates[new].append(0.0)
        else:
            rates[old].append(busy if t < 0 else 0.0)
            rates[new].append(busy if t >= gap else 0.0)
    events: dict[str, list[dict[str, Any]]] = {
        old: [{"event": "role", "role": "MASTER", "epoch": 3, "t": -30.0},
              {"event": "forwarding", "t": -29.9}],
        new: [{"event": "role", "role": "BACKUP", "epoch": 3, "t": -30.0}],
    }
    markers = [{"t": 0.0, "label": f"{name} starts"}]
    if failover:
        events[old].append({"event": "killed" if name == "kill" else "stopped_forwarding", "t": 0.0})
        events[new] += [{"event": "role", "role": "MASTER", "epoch": 4, "t": gap - 0.01},
                        {"event": "forwarding", "t": gap - 0.005}, {"event": "first_forward", "t": gap}]
        markers.append({"t": gap, "label": f"{new} forwards"})
        if name == "freeze":
            events[old].append({"event": "role", "role": "BACKUP", "epoch": 4, "t": 5.1})
            markers.append({"t": 5.0, "label": f"SIGCONT {old}"})
    else:
        markers.append({"t": end_s - 5.0, "label": "healed"})
    extra = takeover_ms if failover else 0.0
    stalls = sorted(round(50.0 + rng.uniform(0, 30) + extra * rng.uniform(0.8, 1.6), 1) for _ in range(200))
    return {
        "overlap_ms": 0.0, "overlaps": 0, "nobody_forwarding_ms": takeover_ms or 3.0,
        "nobody_forwarding_at_s": 0.0, "connections_total": 200, "connections_survived": 200,
        "resets_seen": 0, "bytes_verified": 12_345_678, "max_gap_ms": stalls[-1], "takeover_ms": takeover_ms,
        "templates_total": 10, "templates_kept": 10, "new_connections_ok": 300, "new_connections_failed": 0,
        "udp_max_gap_ms": takeover_ms + 6.0, "udp_lost": int(takeover_ms / 5),
        "split_brain_seen": False, "node_reported_overlap": False,
        **({} if failover else {"same_master": True}),
        "timeline": {"t_fault": 1.7e9, "start_s": -2.0, "end_s": end_s, "bin_s": bin_s,
                     "frame_rate": rates, "events": events, "markers": markers, "stalls_ms": stalls},
    }


def synthetic_report(seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    report: dict[str, Any] = {name: _phase(name, rng) for name in PHASE_ORDER}
    report["lab"] = "synthetic"
    return report


def test_report_has_every_plot_and_the_summary() -> None:
    report = synthetic_report()
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert external_references(page) == []  # self-contained: nothing to fetch
    assert 'id="summary"' in page and page.count("<tr>") == 1 + len(PHASE_ORDER)
    for name in PHASE_ORDER:
        start = page.index(f'<section id="phase-{name}">')
        section = page[start:page.index("</section>", start)]
        # one timeline and one stall histogram per phase, each a real inline SVG with drawn paths
        svgs = re.findall(r"<svg\b.*?</svg>", section, re.S)
        assert len(svgs) == 2, name
        assert all(s.count("<path") > 20 for s in svgs), name
        assert 'class="plot timeline"' in section and 'class="plot stalls"' in section
    # the markers' labels and the legend are drawn as glyph paths (no fonts needed): check the ids
    # matplotlib gives the artists instead
    assert page.count('id="patch_') > 50


def test_report_tolerates_a_phase_without_timeline_data() -> None:
    report = synthetic_report()
    report["kill"]["timeline"].update(frame_rate={}, events={}, markers=[], stalls_ms=[])
    del report["partition"]["timeline"]
    page = render_html(report)
    assert external_references(page) == []
    assert '<section id="phase-partition">' in page


def test_role_lanes_from_events() -> None:
    evs = [{"event": "role", "role": "BACKUP", "t": -10.0}, {"event": "role", "role": "MASTER", "t": 1.0},
           {"event": "forwarding", "t": 1.1}, {"event": "stopped", "t": 3.0}]
    roles, fwd = _lanes_from_events(evs, -2.0, 5.0)
    assert roles == [(-2.0, 1.0, "BACKUP"), (1.0, 3.0, "MASTER"), (3.0, 5.0, "DOWN")]
    assert fwd == [(1.1, 3.0)]
    killed = [{"event": "role", "role": "MASTER", "t": -5.0}, {"event": "forwarding", "t": -4.0},
              {"event": "killed", "t": 0.0}, {"event": "started", "t": 2.0}]
    roles, fwd = _lanes_from_events(killed, -2.0, 5.0)
    assert roles == [(-2.0, 0.0, "MASTER"), (0.0, 2.0, "DOWN"), (2.0, 5.0, "?")]
    assert fwd == [(-2.0, 0.0)]


def test_external_references_catches_fetches() -> None:
    assert external_references('<img src="http://x/y.png"><script>1</script>') == ['src="', "<script"]
    assert external_references('<use xlink:href="#g1"/>') == []


def test_cli_rerenders_a_saved_report(tmp_path: Path) -> None:
    src = tmp_path / "r.json"
    src.write_text(json.dumps(synthetic_report()))
    assert main([str(src)]) == 0
    assert "<svg" in (tmp_path / "r.html").read_text()


def test_traffic_report_lists_every_connections_worst_stall() -> None:
    """The stall histogram's data: the traffic tool's per-connection worst stall, the current one included."""
    t = Traffic(parse_args(["--echo-vip", "10.0.0.1", "--http-vip", "10.0.0.1", "--sources", "10.0.0.2"]))
    now = time.monotonic()
    t.alive = {1, 2}
    t.last_progress = {1: now, 2: now - 2.0, 3: now - 9.0}  # 3 died: its current stall does not count
    t.phase.conn_max_gap_ms = {1: 120.0, 3: 40.0}
    stalls = t.report()["stalls_ms"]
    assert isinstance(stalls, list) and len(stalls) == 3
    assert stalls[0] == 40.0 and stalls[1] == 120.0 and 2000.0 <= stalls[2] < 2500.0


def test_summary_shows_the_ipv6_part_of_each_phase() -> None:
    report = synthetic_report()
    report["kill"].update(connections_total_v6=50, connections_survived_v6=49, templates_total_v6=10,
                          templates_kept_v6=10)
    page = render_html(report)
    assert "<th>IPv6 survived</th>" in page and "<th>IPv6 templates</th>" in page
    assert '<td class="bad">49/50</td>' in page and '<td class="ok">10/10</td>' in page
    assert page.count("<td>-</td>") >= len(PHASE_ORDER) - 1  # phases without IPv6 keys
