"""Lab fixtures: one network-namespace lab per session, a stand-alone director process in it.

``lab`` builds a uniquely named lab (``lb<4 hex>``) with three directors and three real servers (their
HTTP / echo / UDP servers running) and removes it at the end, also when tests fail. Helpers to run a
director in it are in ``tests/lab/labutil.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.lab import Lab, new_name


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    lb = Lab(new_name(), n_clients=1, n_directors=3, n_reals=3)
    try:
        lb.up()
        yield lb
    finally:
        lb.down()
