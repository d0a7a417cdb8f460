"""The lab's lifecycle: ``up`` is idempotent, ``down`` removes everything, also a crashed run's."""

from __future__ import annotations

import subprocess

import pytest

from deploy.lab import Lab, list_namespaces, new_name

pytestmark = pytest.mark.lab


def _mine(name: str) -> list[str]:
    return sorted(ns for ns in list_namespaces() if ns.startswith(f"{name}-"))


def test_up_is_idempotent_and_down_removes_a_crashed_runs_leftovers() -> None:
    name = new_name()
    crashed = Lab(name, n_directors=1, n_reals=1)
    try:
        crashed.up()
        first = _mine(name)
        assert f"{name}-sw" in first and f"{name}-r1" in first and f"{name}-d1" in first
        servers_pid = (crashed.workdir / f"{name}-r1.ready").read_text()
        crashed.up()  # again: nothing rebuilt, servers still the same process
        assert _mine(name) == first
        assert (crashed.workdir / f"{name}-r1.ready").read_text() == servers_pid
        # A new Lab object with the same name (a later run after a crash) finds and removes it all.
        Lab(name, n_directors=1, n_reals=1).down()
        assert _mine(name) == []
        assert not crashed.workdir.exists()
    finally:
        crashed.down()
        assert _mine(name) == []


def _host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def test_lab_adds_nothing_to_the_host_namespace() -> None:
    """Bridges live in the switch namespace and every veth is created there with its peer moved
    straight into its host: the machine's own namespace gains no interface."""
    before = _host_links()
    with Lab(new_name(), n_directors=1, n_reals=1, start_servers=False) as lab:
        assert _host_links() - before == set()
        bridges = lab.exec(lab.switch, "ip -o link show type bridge").stdout
        assert "brext" in bridges and "brint" in bridges
