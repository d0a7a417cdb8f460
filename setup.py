"""Build hook: the gRPC code in ``lbd_pb/`` is generated from ``proto/`` at build time, never committed.

Theory of operation
-------------------
Everything about the package lives in pyproject.toml; this file only adds a ``build_py`` command that
runs ``grpc_tools.protoc`` (with the mypy-protobuf plugins for ``.pyi`` stubs) on ``proto/*.proto`` and
rewrites the generated ``import x_pb2`` lines to ``from lbd_pb import x_pb2``, so a wheel or
``pip install .`` from a clean clone contains a working ``lbd_pb``. A regular build writes into the
build directory (the source tree stays clean); an editable install writes into ``lbd_pb/`` in the
source tree, as ``make proto`` does (it calls `generate` from here: one recipe for both).
grpcio-tools and mypy-protobuf are pinned in ``[build-system] requires``: the generated code demands
grpcio and protobuf runtimes at least as new as the protoc that wrote it (the floors in
``dependencies`` match the pins).
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import resources
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "lbd_pb"
_IMPORT = re.compile(r"^import ([a-z_]+_pb2)( as |$)", re.MULTILINE)


def generate(out_dir: str | Path) -> list[Path]:
    """protoc + import rewrite of every proto/*.proto into out_dir; returns the files written."""
    from grpc_tools import protoc  # a build requirement, not a runtime one

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files in {PROTO_DIR}")
    include = resources.files("grpc_tools") / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}"]
    for plugin, flag in (("protoc-gen-mypy", "mypy_out"), ("protoc-gen-mypy_grpc", "mypy_grpc_out")):
        exe = _find_plugin(plugin)
        args += [f"--plugin={plugin}={exe}", f"--{flag}={out}"]
    if protoc.main([*args, *protos]) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {protos}")
    written = sorted(p for p in out.iterdir() if p.name.endswith((".py", ".pyi")) and "_pb2" in p.name)
    for path in written:
        path.write_text(_IMPORT.sub(rf"from {PACKAGE} import \1\2", path.read_text()))
    return written


def _find_plugin(name: str) -> str:
    """The mypy-protobuf plugin script: on PATH, else beside the running interpreter."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"{name} not found: mypy-protobuf must be installed for the build")
    return found


class BuildPyWithProto(build_py):  # type: ignore[misc]  # setuptools is untyped
    """build_py that also generates lbd_pb/*_pb2*.py(i) from proto/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            generate(ROOT / PACKAGE)
        else:
            generate(Path(self.build_lib) / PACKAGE)


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithProto})
