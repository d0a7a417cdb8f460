"""pytest plugin: real etcd servers for tests (marker ``etcd``).

Register it from a test module (``pytest_plugins = ["tests.plugins.etcd"]``), from the root
``tests/conftest.py`` the same way, or on the command line with ``-p tests.plugins.etcd``.

Fixtures:
    etcd          one tuned etcd for the whole session; isolate tests with `etcd_cluster`
    etcd_cluster  a per-test unique cluster name (keys live under /lbd-test/<name>/)
    etcd_factory  make private servers (``etcd_factory(tuned=False)``) for tests that stop,
                  restart or pause etcd; each is stopped and its run dir removed at teardown
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploy.etcd import EtcdServer

ETCD_TEST_PREFIX = "lbd-test"


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_cluster() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def etcd_factory() -> Iterator[Callable[..., EtcdServer]]:
    made: list[EtcdServer] = []

    def make(**kwargs: Any) -> EtcdServer:
        server = EtcdServer(**kwargs)
        made.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.close()
