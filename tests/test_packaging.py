"""The installable product: a wheel built from what a clean clone holds works without `make`.

The source tree is copied as `git` sees it (tracked and untracked files, without ignored ones: no
generated ``lbd_pb/*_pb2*``), built into a wheel with build isolation (setup.py's hook runs protoc),
and installed with ``constraints.txt`` into a fresh venv of the system Python. The venv then runs
`directord --version` and `directorctl --help`, and imports every module of the product, without
scapy (it is in the ``lab`` extra only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from director import __version__

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.timeout(240),
]


def test_the_build_tools_are_there() -> None:
    """git (to copy the tree as it is committed) and Debian's python3 (for a fresh venv): make setup."""
    assert shutil.which("git") and os.path.exists(SYSTEM_PYTHON)

IMPORT_ALL = """
import importlib, pkgutil, sys
import director, syncd
names = [m.name for p in (director, syncd) for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]
for name in names:
    importlib.import_module(name)
assert "scapy" not in sys.modules, "the product imported scapy"
print(len(names))
"""


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=200)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def clean_copy(dest: Path) -> Path:
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_wheel_from_a_clean_clone_installs_and_runs(tmp_path: Path) -> None:
    src = clean_copy(tmp_path / "src")
    assert not list((src / "lbd_pb").glob("*_pb2*")), "generated code leaked into the clean copy"
    dist = tmp_path / "dist"
    pins = src / "constraints.txt"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--build-constraint", pins, "-w", dist, src)
    (wheel,) = dist.glob("lbd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for mod in ("admin_pb2", "admin_pb2_grpc", "sync_pb2", "sync_pb2_grpc"):
        assert f"lbd_pb/{mod}.py" in names and f"lbd_pb/{mod}.pyi" in names
    grpc_code = zipfile.ZipFile(wheel).read("lbd_pb/admin_pb2_grpc.py").decode()
    assert "from lbd_pb import admin_pb2" in grpc_code and "\nimport admin_pb2" not in grpc_code
    metadata = zipfile.ZipFile(wheel).read(f"lbd-{__version__}.dist-info/METADATA").decode()
    runtime = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert runtime and not any("scapy" in ln for ln in runtime)
    assert any("scapy" in ln and 'extra == "lab"' in ln for ln in metadata.splitlines())

    venv = tmp_path / "venv"
    run(SYSTEM_PYTHON, "-m", "venv", venv)
    run(venv / "bin/python", "-m", "pip", "install", "-q", "-c", pins, wheel)
    assert run(venv / "bin/directord", "--version").strip() == f"directord {__version__}"
    assert "usage: directorctl" in run(venv / "bin/directorctl", "--help")
    # from outside the source tree, so only the installed copy can be imported
    assert int(run(venv / "bin/python", "-c", IMPORT_ALL, cwd=tmp_path)) > 50
