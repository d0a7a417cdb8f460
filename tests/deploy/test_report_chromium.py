"""The drill's HTML report opened in headless Chromium (Debian `chromium`, in the Makefile's DEB_PKGS):
the inline SVG plots are in the DOM the browser built and are drawn in its screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib import image

from deploy.report import PHASE_ORDER, render_html
from tests.deploy.test_report import synthetic_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "chromium is missing: `make setup` installs the Debian package"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(synthetic_report()))
    return path


def test_chromium_dom_holds_every_plot(page: Path, tmp_path: Path) -> None:
    res = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert '<table id="summary">' in dom
    for name in PHASE_ORDER:
        start = dom.index(f'<section id="phase-{name}">')
        section = dom[start:dom.index("</section>", start)]
        svgs = re.findall(r"<svg\b.*?</svg>", section, re.S)
        assert len(svgs) == 2, name  # the timeline and the stall histogram, parsed as SVG elements
        assert all(s.count("<path") > 20 for s in svgs), name


def test_chromium_screenshot_shows_the_plots(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    res = chromium(tmp_path, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 10_000, res.stderr[-2000:]
    px = image.imread(str(shot))  # floats in [0, 1], RGB(A)
    assert px.shape[0] == 1600 and px.shape[1] == 1200
    rgb = (px[:, :, :3] * 255).round().astype(int)

    def count(color: str) -> int:
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
        near = (abs(rgb[:, :, 0] - r) <= 12) & (abs(rgb[:, :, 1] - g) <= 12) & (abs(rgb[:, :, 2] - b) <= 12)
        return int(near.sum())

    # colours only the SVG plots use (the CSS has none of them): both nodes' frame-rate lines and
    # lanes, the master role bars, the histogram's bars
    for color in ("#1f77b4", "#ff7f0e", "#2ca02c", "#6baed6"):
        assert count(color) > 500, color
