"""A short seeded chaos run (deploy.chaos) in a fresh lab: the judge finds nothing, every fault ran
and recovered, and the report holds what an operator needs to replay and read it."""

from __future__ import annotations

import io

import pytest

from deploy.chaos import ChaosRun, summary
from deploy.chaos_schedule import make_schedule
from deploy.lab import new_name

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

SEED, MINUTES = 1, 2.5
"""This seed's first faults: the master cut from etcd, then from its backups, kill -9 of the master,
a paused etcd member, another master kill, a backup cut from etcd (see `--plan`)."""


def test_a_short_seeded_chaos_run_is_clean() -> None:
    out = io.StringIO()
    report = ChaosRun(SEED, MINUTES, conns=30, out=out, lab_name=new_name()).run()
    text = summary(report)
    assert report["violations"] == [], text + "\n" + out.getvalue()
    assert report["notes"] == [], text
    assert report["schedule"] == [f.as_dict() for f in make_schedule(SEED, MINUTES)]
    ran = report["faults"]
    assert len(ran) >= 4 and [f["kind"] for f in ran] == [f["kind"] for f in report["schedule"][:len(ran)]]
    assert all(f["settled"] and f["overlap_ms"] == 0 and f["lost_connections"] == 0 for f in ran), text
    assert {"kill-master", "etcd-pause", "cut-master-etcd"} <= {f["kind"] for f in ran}
    assert report["writes"]["acknowledged"] > 10 and report["final"]["master"]
    assert len(set(report["final"]["table_sizes"].values())) == 1 and report["traffic"]["bytes_verified"] > 0
    assert "replay: make chaos SEED=1 MINUTES=2.5" in text
