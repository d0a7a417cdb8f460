from __future__ import annotations

from collections import Counter

import pytest

from director.services.sched.mh import MaglevHashing, is_prime
from director.services.service import Dest, VirtualService
from tests.director.services.sched.helpers import clients, make_service, overload, picks, shuffled_twin


def _table(svc: VirtualService) -> list[tuple[int, int] | None]:
    sched = svc.scheduler
    assert isinstance(sched, MaglevHashing)
    return [None if d is None else (d.addr, d.port) for d in sched.table]


def test_default_table_is_prime_65537_and_full() -> None:
    svc = make_service("mh", [1, 1, 1])
    table = _table(svc)
    assert len(table) == 65537 and is_prime(len(table))
    assert None not in table


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_removing_one_of_n_dests_remaps_about_one_nth(n: int) -> None:
    svc = make_service("mh", [1] * n)
    before = _table(svc)
    victim = svc.dests[n // 2]
    svc.remove_dest(victim)
    after = _table(svc)
    vkey = (victim.addr, victim.port)
    changed = sum(b != a for b, a in zip(before, after, strict=True)) / len(before)
    owned = before.count(vkey) / len(before)
    assert vkey not in after
    assert abs(owned - 1 / n) < 0.01                  # it held its fair share
    assert changed <= 1 / n + 0.01                    # and little more than that moved
    # clients of the surviving dests almost all keep their dest
    cs = clients(20000)
    moved = [b != a for b, a in zip(picks(make_service("mh", [1] * n), cs), picks(svc, cs), strict=True)]
    assert sum(moved) / len(cs) <= 1 / n + 0.02


def test_readding_a_removed_dest_restores_the_table() -> None:
    svc = make_service("mh", [1, 2, 3, 4])
    before = _table(svc)
    d = svc.dests[2]
    svc.remove_dest(d)
    svc.add_dest(Dest(svc, d.addr, d.port, weight=d.weight))
    assert _table(svc) == before


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_independent_instances_agree_on_every_slot_and_client(seed: int) -> None:
    svc = make_service("mh", [1, 3, 2, 1, 5, 1, 1])
    twin = shuffled_twin(svc, seed)
    assert [d.addr for d in twin.dests] != [d.addr for d in svc.dests]
    assert _table(svc) == _table(twin)
    cs = clients(5000, seed)
    assert picks(svc, cs) == picks(twin, cs)


@pytest.mark.parametrize("weights", [[1, 2, 3], [5, 1], [10, 10, 20, 40], [1, 1, 1, 7]])
def test_slots_and_clients_follow_weights(weights: list[int]) -> None:
    svc = make_service("mh", weights)
    table = _table(svc)
    total = sum(weights)
    owners = Counter(table)
    for d in svc.dests:
        assert abs(owners[(d.addr, d.port)] / len(table) - d.weight / total) < 0.005
    cs = clients(30000)
    got = Counter(picks(svc, cs))
    for d in svc.dests:
        assert abs(got[(d.addr, d.port)] / len(cs) - d.weight / total) < 0.03


def test_quiesce_keeps_the_table_and_only_drops_that_dests_clients() -> None:
    svc = make_service("mh", [1, 1, 1, 1])
    before_table = _table(svc)
    cs = clients(4000)
    before = picks(svc, cs)
    victim = svc.dests[0]
    vkey = (victim.addr, victim.port)
    table_obj = svc.scheduler.table  # type: ignore[attr-defined]
    svc.edit_dest(victim, weight=0)
    assert _table(svc) == before_table           # last_weight keeps its slots...
    assert svc.scheduler.table is table_obj      # type: ignore[attr-defined]  # ...without a rebuild
    after = picks(svc, cs)
    for b, a in zip(before, after, strict=True):
        assert a == (None if b == vkey else b)
    svc.edit_dest(victim, weight=1)
    assert picks(svc, cs) == before


def test_fallback_reroutes_only_the_unusable_dests_clients() -> None:
    svc = make_service("mh", [1, 1, 1, 1], fallback=True)
    cs = clients(4000)
    before = picks(svc, cs)
    victim = svc.dests[2]
    vkey = (victim.addr, victim.port)
    overload(victim)
    after = picks(svc, cs)
    for b, a in zip(before, after, strict=True):
        if b == vkey:
            assert a is not None and a != vkey
        else:
            assert a == b
    for d in svc.dests:
        overload(d)
    assert picks(svc, cs[:20]) == [None] * 20


def test_port_option_hashes_the_client_port() -> None:
    plain = make_service("mh", [1, 1, 1, 1])
    ported = make_service("mh", [1, 1, 1, 1], port=True)
    c = clients(1)[0]
    assert len({plain.scheduler.schedule(plain.dests, c, p) for p in range(1024, 1124)}) == 1
    assert len({ported.scheduler.schedule(ported.dests, c, p) for p in range(1024, 1124)}) == 4


def test_dest_added_at_weight_zero_holds_no_slots() -> None:
    svc = make_service("mh", [1, 0, 1])
    assert (svc.dests[1].addr, svc.dests[1].port) not in set(_table(svc))


def test_no_usable_dests() -> None:
    svc = make_service("mh", [0, 0])
    assert set(_table(svc)) == {None}
    assert picks(svc, clients(10)) == [None] * 10


def test_huge_weights_are_shifted_but_still_proportional() -> None:
    svc = make_service("mh", [60000, 30000, 10000], table_size=4093)
    owners = Counter(_table(svc))
    shares = [owners[(d.addr, d.port)] / 4093 for d in svc.dests]
    assert shares == sorted(shares, reverse=True)
    assert abs(shares[0] - 0.6) < 0.05


@pytest.mark.parametrize("size", [4, 65536, 1, 0])
def test_table_size_must_be_prime(size: int) -> None:
    with pytest.raises(ValueError, match="table_size"):
        MaglevHashing(table_size=size)
