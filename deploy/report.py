"""The drill report as one self-contained HTML page: data in, HTML string out.

Theory of operation
-------------------
`render_html` takes the drill's JSON report (deploy.drill: one entry per phase, each with a
``timeline``) and returns a page with no external references at all: CSS inline, every plot an inline
SVG drawn by matplotlib (Agg backend, glyphs as paths so no font is needed), no scripts. Per phase:

* a **timeline** (seconds relative to the fault): each node's forwarded-frame rate seen by the fabric
  observer (frames on the bridge ports, binned), below it one lane per node with its role (from its
  ``role`` events), its own view of forwarding (``forwarding``/``stopped_forwarding``) and the fabric's
  view (bins with frames); vertical markers for the fault, the takeover and the heal, and the fabric's
  longest silence shaded;
* the **distribution of per-connection stalls** (every long-lived connection's worst gap between two
  verified round trips in the phase, a histogram with a log-scaled count axis), with the UDP probe's
  worst gap and the takeover time as reference lines;

and a summary table of all phases. ``python -m deploy.report REPORT.json [OUT.html]`` re-renders a saved
report. Nothing here touches a lab: the tests render synthetic data.
"""

from __future__ import annotations

import html
import io
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

PHASE_ORDER = ("kill", "switchback", "freeze", "etcd-outage", "partition")
PHASE_TITLES = {
    "kill": "kill -9 the master",
    "switchback": "graceful switch back (directorctl failover)",
    "freeze": "master frozen (SIGSTOP)",
    "etcd-outage": "every etcd member down",
    "partition": "master cut from etcd",
}
NODE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
ROLE_COLORS = {"MASTER": "#2ca02c", "BACKUP": "#9ecae1", "FAULT": "#d62728"}
ROLE_OTHER = "#fdd0a2"
UNKNOWN = "#eeeeee"
FORWARDING_EVENTS = {"forwarding": True, "stopped_forwarding": False, "started": False, "stopped": False,
                     "killed": False}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1150px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em;
  border-bottom: 1px solid #ccc; padding-bottom: .2em; }
p.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: .9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td.ok { background: #e5f5e0; } td.bad { background: #fcbba1; font-weight: bold; }
.phase { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.plot svg { max-width: 100%; height: auto; }
.facts { font-size: .9em; color: #444; }
"""


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    start = text.find("<svg")
    return text[start:] if start >= 0 else text


def _lanes_from_events(events: Sequence[Mapping[str, Any]], start: float, end: float
                       ) -> tuple[list[tuple[float, float, str]], list[tuple[float, float]]]:
    """(role intervals (start, end, role), the node's own forwarding intervals) clipped to [start, end].

    Before the first role event the role is unknown ("?")."""
    roles: list[tuple[float, float, str]] = []
    fwd: list[tuple[float, float]] = []
    role, role_t = "?", start
    fwd_since: float | None = None
    for ev in sorted(events, key=lambda e: float(e["t"])):
        t = min(max(float(ev["t"]), start), end)
        kind = str(ev.get("event", ""))
        if kind in ("role", "stopped", "killed"):  # killed: the drill's kill -9 (the node logs nothing)
            new_role = str(ev.get("role", "?")).upper() if kind == "role" else "DOWN"
            if t > role_t:
                roles.append((role_t, t, role))
            role, role_t = new_role, t
        elif kind == "started":
            if t > role_t:
                roles.append((role_t, t, role))
            role, role_t = "?", t
        if kind in FORWARDING_EVENTS:
            if FORWARDING_EVENTS[kind] and fwd_since is None:
                fwd_since = t
            elif not FORWARDING_EVENTS[kind] and fwd_since is not None:
                fwd.append((fwd_since, t))
                fwd_since = None
    if end > role_t:
        roles.append((role_t, end, role))
    if fwd_since is not None:
        fwd.append((fwd_since, end))
    return roles, fwd


def _runs(values: Sequence[float], start: float, bin_s: float) -> list[tuple[float, float]]:
    """(start, width) of every run of non-zero bins."""
    out: list[tuple[float, float]] = []
    for i, v in enumerate(values):
        if v <= 0:
            continue
        x = start + i * bin_s
        if out and abs(out[-1][0] + out[-1][1] - x) < bin_s / 2:
            out[-1] = (out[-1][0], out[-1][1] + bin_s)
        else:
            out.append((x, bin_s))
    return out


def timeline_svg(name: str, phase: Mapping[str, Any]) -> str:
    tl = phase["timeline"]
    start, end, bin_s = float(tl["start_s"]), float(tl["end_s"]), float(tl["bin_s"])
    rates: Mapping[str, Sequence[float]] = tl.get("frame_rate", {})
    events: Mapping[str, Sequence[Mapping[str, Any]]] = tl.get("events", {})
    nodes = sorted(set(rates) | set(events))
    fig = plt.figure(figsize=(10.5, 2.2 + 0.75 * len(nodes)))
    gs = fig.add_gridspec(2, 1, height_ratios=[2.2, 0.75 * max(len(nodes), 1)], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    lanes = fig.add_subplot(gs[1], sharex=ax)
    for i, node in enumerate(nodes):
        series = rates.get(node, [])
        xs = [start + k * bin_s for k in range(len(series))]
        ax.step(xs, series, where="post", color=NODE_COLORS[i % len(NODE_COLORS)], lw=1.2,
                label=f"{node} (fabric)")
    silence_ms = float(phase.get("nobody_forwarding_ms", 0.0))
    if silence_ms > 0:
        at = float(phase.get("nobody_forwarding_at_s", 0.0))
        ax.axvspan(at, at + silence_ms / 1000.0, color="#d62728", alpha=0.15, lw=0,
                   label=f"longest fabric silence {silence_ms:.0f} ms")
    ax.set_ylabel("frames/s forwarded")
    ax.set_title(f"{name}: {PHASE_TITLES.get(name, name)}", loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    # lanes: per node, its role (top half), own forwarding view and the fabric's view
    yticks, ylabels = [], []
    for i, node in enumerate(nodes):
        base = (len(nodes) - 1 - i) * 3.0
        roles, fwd = _lanes_from_events(events.get(node, []), start, end)
        for a, b, role in roles:
            color = {"?": UNKNOWN, "DOWN": "#555555"}.get(role) or ROLE_COLORS.get(role, ROLE_OTHER)
            lanes.broken_barh([(a, b - a)], (base + 2.0, 0.8), facecolors=color, edgecolors="none")
            if b - a > (end - start) * 0.06 and role != "?":
                lanes.text((a + b) / 2, base + 2.4, role.lower(), ha="center", va="center", fontsize=7,
                           color="white" if role in ("MASTER", "DOWN") else "#222")
        lanes.broken_barh([(a, b - a) for a, b in fwd], (base + 1.05, 0.8), facecolors="#74c476")
        lanes.broken_barh(_runs(rates.get(node, []), start, bin_s), (base + 0.1, 0.8),
                          facecolors=NODE_COLORS[i % len(NODE_COLORS)])
        yticks += [base + 2.4, base + 1.45, base + 0.5]
        ylabels += [f"{node} role", f"{node} says fwd", f"{node} fabric"]
    lanes.set_yticks(yticks, ylabels, fontsize=8)
    lanes.set_ylim(-0.2, 3.0 * max(len(nodes), 1))
    lanes.set_xlim(start, end)
    lanes.set_xlabel("seconds since the fault")
    lanes.grid(axis="x", alpha=0.3)
    for k, m in enumerate(tl.get("markers", [])):
        t = float(m["t"])
        for axes in (ax, lanes):
            axes.axvline(t, color="#333", ls="--" if k else "-", lw=0.9)
        # horizontal labels, staggered downwards: markers a few ms apart stay readable
        ax.annotate(str(m["label"]), (t, 0.97 - 0.13 * (k % 6)), xycoords=("data", "axes fraction"),
                    va="top", ha="left", fontsize=8, xytext=(3, 0), textcoords="offset points",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color=ROLE_COLORS["MASTER"], label="master"), Patch(color=ROLE_COLORS["BACKUP"],
                label="backup"), Patch(color="#74c476", label="forwarding (node's events)")]
    labels += ["master", "backup", "forwarding (node's events)"]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _svg(fig)


def stalls_svg(name: str, phase: Mapping[str, Any]) -> str:
    stalls = [float(x) for x in phase.get("timeline", {}).get("stalls_ms", [])]
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    if stalls:
        top = max(max(stalls), 1.0)
        n_bins = 40
        edges = [top * k / n_bins for k in range(n_bins + 1)]
        ax.hist(stalls, bins=edges, color="#6baed6", edgecolor="#3182bd", log=True,
                label=f"{len(stalls)} connections")
    else:
        ax.text(0.5, 0.5, "no per-connection stall data", ha="center", va="center", transform=ax.transAxes)
    udp = float(phase.get("udp_max_gap_ms", 0.0))
    if udp > 0:
        ax.axvline(udp, color="#d62728", lw=1.2, label=f"UDP worst gap {udp:.0f} ms")
    takeover = float(phase.get("takeover_ms", 0.0))
    if takeover > 0:
        ax.axvline(takeover, color="#333", ls="--", lw=1, label=f"takeover {takeover:.0f} ms")
    if stalls:
        ax.set_ylim(bottom=0.7, top=max(ax.get_ylim()[1], 12.0))  # at least a decade on the log axis
    ax.set_xlabel("worst stall of a connection in the phase (ms)")
    ax.set_ylabel("connections")
    ax.set_title(f"{name}: per-connection stalls", loc="left", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def _cell(text: str, ok: bool | None = None) -> str:
    cls = "" if ok is None else (' class="ok"' if ok else ' class="bad"')
    return f"<td{cls}>{html.escape(text)}</td>"


def _v6_cells(p: Mapping[str, Any]) -> list[str]:
    """The IPv6 part of a phase (the drill's ``*_v6`` keys), "-" for a drill without IPv6 streams."""
    out = []
    for kept, total in (("connections_survived_v6", "connections_total_v6"),
                        ("templates_kept_v6", "templates_total_v6")):
        if total not in p:
            out.append(_cell("-"))
            continue
        n, of = int(p.get(kept, 0)), int(p[total])
        out.append(_cell(f"{n}/{of}", n == of))
    return out


def summary_table(phases: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    head = ("phase", "connections survived", "resets", "worst TCP stall", "median stall", "UDP worst gap",
            "UDP lost", "takeover", "nobody forwarding", "overlap", "templates kept", "IPv6 survived",
            "IPv6 templates", "split brain")
    rows = []
    for name, p in phases:
        stalls = sorted(float(x) for x in p.get("timeline", {}).get("stalls_ms", []))
        median = f"{stalls[len(stalls) // 2]:.0f} ms" if stalls else "-"
        survived = int(p.get("connections_survived", 0)) == int(p.get("connections_total", 0))
        split = bool(p.get("split_brain_seen", False))
        takeover = float(p.get("takeover_ms", 0.0))
        rows.append("<tr>" + "".join([
            _cell(name),
            _cell(f"{p.get('connections_survived', 0)}/{p.get('connections_total', 0)}", survived),
            _cell(str(p.get("resets_seen", 0)), int(p.get("resets_seen", 0)) == 0),
            _cell(f"{float(p.get('max_gap_ms', 0.0)):.0f} ms"),
            _cell(median),
            _cell(f"{float(p.get('udp_max_gap_ms', 0.0)):.0f} ms"),
            _cell(str(p.get("udp_lost", 0))),
            _cell(f"{takeover:.0f} ms" if takeover else ("same master" if p.get("same_master") else "-"),
                  bool(p["same_master"]) if "same_master" in p else None),
            _cell(f"{float(p.get('nobody_forwarding_ms', 0.0)):.0f} ms"),
            _cell(f"{float(p.get('overlap_ms', 0.0)):.0f} ms", float(p.get("overlap_ms", 0.0)) == 0),
            _cell(f"{p.get('templates_kept', 0)}/{p.get('templates_total', 0)}"),
            *_v6_cells(p),
            _cell("YES" if split else "no", not split),
        ]) + "</tr>")
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f'<table id="summary"><tr>{th}</tr>{"".join(rows)}</table>'


def phases_of(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    names = [n for n in PHASE_ORDER if isinstance(report.get(n), Mapping)]
    names += [n for n, v in report.items() if n not in names and isinstance(v, Mapping) and "timeline" in v]
    return [(n, report[n]) for n in names]


def render_html(report: Mapping[str, Any], title: str = "lbd failover drill") -> str:
    phases = phases_of(report)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">lab {html.escape(str(report.get("lab", "?")))}: {len(phases)} phases. Timelines: '
        "frames each director forwarded as seen on the bridge ports (fabric observer), each node's role "
        "and its own forwarding events; x = seconds since the fault. Histograms: every long-lived "
        "connection's worst stall in the phase.</p>",
        "<h2>Summary</h2>", summary_table(phases),
    ]
    for name, p in phases:
        facts = (f"takeover {float(p.get('takeover_ms', 0.0)):.0f} ms, " if p.get("takeover_ms") else "") + (
            f"nobody forwarding {float(p.get('nobody_forwarding_ms', 0.0)):.0f} ms, "
            f"UDP worst gap {float(p.get('udp_max_gap_ms', 0.0)):.0f} ms "
            f"({p.get('udp_lost', 0)} datagrams lost), "
            f"worst TCP stall {float(p.get('max_gap_ms', 0.0)):.0f} ms, "
            f"{p.get('connections_survived', 0)}/{p.get('connections_total', 0)} connections survived")
        if "frames_after_resume" in p:
            facts += f", frames after resume: {p['frames_after_resume']}"
        parts.append(f'<section id="phase-{html.escape(name)}"><h2>{html.escape(name)}: '
                     f"{html.escape(PHASE_TITLES.get(name, name))}</h2>"
                     f'<p class="facts">{html.escape(facts)}</p><div class="phase">')
        if "timeline" in p:
            parts.append(f'<div class="plot timeline">{timeline_svg(name, p)}</div>')
        parts.append(f'<div class="plot stalls">{stalls_svg(name, p)}</div></div></section>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?!#|data:)|<script|<link|@import|url\(\s*["']?http""",
                       re.I)


def external_references(page: str) -> list[str]:
    """Anything in `page` that would make a browser fetch something (must be empty)."""
    return [m.group(0) for m in _EXTERNAL.finditer(page)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print("usage: python -m deploy.report REPORT.json [OUT.html]", file=sys.stderr)
        return 2
    src = Path(args[0])
    out = Path(args[1]) if len(args) > 1 else src.with_suffix(".html")
    out.write_text(render_html(json.loads(src.read_text())))
    print(f"HTML report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
