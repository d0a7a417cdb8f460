from __future__ import annotations

import pytest

from director.services.sched.registry import NAMES, OPTIONS, check_options, create
from director.types import DestFlags
from tests.director.services.sched.helpers import clients, make_service, overload


def test_names_are_the_ipvs_schedulers() -> None:
    assert set(NAMES) == {"rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh"}
    assert set(OPTIONS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_create_returns_a_fresh_named_instance(name: str) -> None:
    a, b = create(name), create(name)
    assert a.name == name and a is not b
    assert a.schedule([], 1, 1) is None


@pytest.mark.parametrize("name", NAMES)
def test_every_scheduler_skips_weight0_overloaded_and_unavailable(name: str) -> None:
    svc = make_service(name, [0, 1, 1, 1, 1], fallback=True) if "fallback" in OPTIONS[name] \
        else make_service(name, [0, 1, 1, 1, 1])
    zero, over, gone, ok, removed = svc.dests
    overload(over)
    gone.flags &= ~DestFlags.AVAILABLE
    svc.remove_dest(removed)
    svc.scheduler.update(svc.dests)
    got = {svc.scheduler.schedule(svc.dests, c, 1000 + c % 50) for c in clients(400)}
    if name == "dh":  # hashing without fallback
        assert got <= {ok, None}  # "no dest" for the clients hashed to the unusable ones
        assert ok in got
    else:
        assert got == {ok}


def test_unknown_scheduler_and_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'xx'"):
        create("xx")
    with pytest.raises(ValueError, match="fallbak: unknown option for scheduler mh"):
        create("mh", fallbak=True)
    with pytest.raises(ValueError, match="port: must be a boolean"):
        create("sh", port=1)
    with pytest.raises(ValueError, match="table_size"):
        create("mh", table_size=True)
    assert check_options("mh", {"table_size": 1000}) == [
        "table_size: must be a prime in 3..1000003, got 1000"]
    assert check_options("rr", {}) == []
    assert check_options("wrr", {"port": True})[0].startswith("port: unknown option for scheduler wrr")


def test_options_are_kept_on_the_instance() -> None:
    assert create("mh", port=True, table_size=251).opts == {  # type: ignore[attr-defined]
        "port": True, "fallback": False, "table_size": 251}
