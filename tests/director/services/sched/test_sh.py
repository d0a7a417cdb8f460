from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from tests.director.services.sched.helpers import clients, make_service, overload, picks, shuffled_twin


@pytest.mark.parametrize("sched", ["sh", "dh"])
def test_same_client_same_dest(sched: str) -> None:
    svc = make_service(sched, [1, 1, 1, 1])
    cs = clients(500)
    assert picks(svc, cs) == picks(svc, cs)
    assert len(set(picks(svc, cs))) == 4  # and the clients are spread over every dest


@pytest.mark.parametrize("sched", ["sh", "dh"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_independent_instances_agree_whatever_the_dest_order(sched: str, seed: int) -> None:
    svc = make_service(sched, [1, 3, 2, 1, 5])
    twin = shuffled_twin(svc, seed)
    assert [d.addr for d in twin.dests] != [d.addr for d in svc.dests]
    cs = clients(5000, seed)
    assert picks(svc, cs) == picks(twin, cs)


def test_sh_buckets_follow_weights() -> None:
    svc = make_service("sh", [1, 2, 5])
    owners = Counter(b.addr for b in svc.scheduler._buckets)  # type: ignore[attr-defined]
    shares = [owners[d.addr] for d in svc.dests]
    # 256 buckets in rounds of 1+2+5: each dest within one round of its exact share
    for d, got in zip(svc.dests, shares, strict=True):
        assert abs(got - 256 * d.weight / 8) <= d.weight


def test_dh_buckets_ignore_weights() -> None:
    svc = make_service("dh", [1, 2, 5, 1])
    owners = Counter(b.addr for b in svc.scheduler._buckets)  # type: ignore[attr-defined]
    assert sorted(owners.values()) == [64, 64, 64, 64]


@pytest.mark.parametrize("sched", ["sh", "dh"])
def test_unusable_hashed_dest_means_no_dest_without_fallback(sched: str) -> None:
    svc = make_service(sched, [1, 1, 1])
    cs = clients(300)
    before = picks(svc, cs)
    victim = svc.dests[1]
    overload(victim)
    after = picks(svc, cs)
    for b, a in zip(before, after, strict=True):
        assert a == (None if b == (victim.addr, victim.port) else b)


def test_sh_fallback_moves_only_the_clients_of_the_unusable_dest() -> None:
    svc = make_service("sh", [1, 1, 1], fallback=True)
    cs = clients(300)
    before = picks(svc, cs)
    victim = svc.dests[1]
    svc.edit_dest(victim, weight=0)  # quiesce: sh keeps one bucket per round for it, never picks it
    after = picks(svc, cs)
    assert all(a is not None and a != (victim.addr, victim.port) for a in after)
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    assert moved < len(cs)  # clients of other dests keep theirs except for the quiesce reshuffle
    overload(svc.dests[0])
    overload(svc.dests[2])
    assert picks(svc, cs[:10]) == [None] * 10


def test_sh_port_option_spreads_one_client_over_dests() -> None:
    plain = make_service("sh", [1, 1, 1, 1])
    ported = make_service("sh", [1, 1, 1, 1], port=True)
    c = clients(1)[0]
    assert len({plain.scheduler.schedule(plain.dests, c, p) for p in range(1024, 1124)}) == 1
    assert len({ported.scheduler.schedule(ported.dests, c, p) for p in range(1024, 1124)}) == 4


@pytest.mark.parametrize("sched", ["sh", "dh", "mh"])
def test_choice_is_the_same_in_another_process(sched: str) -> None:
    """No salted hash(): a process with another PYTHONHASHSEED maps every client the same way."""
    code = (
        "import sys; from tests.director.services.sched.helpers import make_service, clients, picks;"
        f"print(picks(make_service({sched!r}, [1, 2, 3, 1]), clients(2000)))"
    )
    here = str(picks(make_service(sched, [1, 2, 3, 1]), clients(2000)))
    for seed in ("1", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."})
        assert out.stdout.strip() == here
