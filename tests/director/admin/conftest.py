"""Fixtures of the admin tests: `env`, a live admin server (unix socket and TCP) on a `FakeNode`
built on the real tables, and helpers to run `directorctl` against it in-process."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from director.admin import cli
from director.admin.server import AdminAuth, AdminServerConfig, start_server
from director.table.tcp import TcpState
from tests.director.admin.admin_fake import WEB_YAML, FakeNode, LoopThread


class Env:
    def __init__(self, lt: LoopThread, node: FakeNode, server: Any, addr: str) -> None:
        self.lt, self.node, self.server, self.addr = lt, node, server, addr

    def run(self, *argv: str) -> tuple[int, str, str]:
        return cli_run(["--addr", self.addr, "--timeout", "10", *argv])

    def conns(self, n: int, dest_index: int = 0) -> None:
        def fill() -> None:
            web = self.node.svc(80)
            for i in range(n):
                state = TcpState.ESTABLISHED if i % 2 == 0 else TcpState.SYN_RECV
                dest = web.dests[dest_index]
                self.node.add_conn(web, f"198.18.3.{i + 1}", 6000 + i, dest, state=int(state))
        self.lt.call(fill)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    lt = LoopThread()
    node = FakeNode()
    lt.run(node.apply_config(WEB_YAML, dry_run=False, prune=False))
    unix = str(tmp_path / f"ctl-{uuid.uuid4().hex[:8]}.sock")
    server = lt.run(start_server(node, AdminServerConfig(
        listen="127.0.0.1:0", unix_path=unix, auth=AdminAuth(tokens={"t0k": "admin"}), insecure_tcp=True)))
    try:
        yield Env(lt, node, server, f"unix:{unix}")
    finally:
        lt.run(server.stop(0))
        lt.close()


def cli_run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return cli.main(argv, out=out, err=err), out.getvalue(), err.getvalue()
