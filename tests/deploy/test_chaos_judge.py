"""The chaos judge on synthetic observations: each rule fires on a violation of it, and only then."""

from __future__ import annotations

from deploy.chaos_judge import FaultObs, Move, Observations, Sample, Write, expected_config, judge


def steady(name: str, t0: float, t1: float, step: float = 0.01) -> list[float]:
    return [t0 + i * step for i in range(int((t1 - t0) / step))]


def clean() -> Observations:
    """d1 forwards 0-10 s, a kill at 10 s, d2 forwards from 10.3 s: one clean takeover."""
    return Observations(
        frames={"d1": steady("d1", 0, 10), "d2": steady("d2", 10.3, 20), "d3": []},
        faults=[FaultObs(0, "kill-master", "d1", 10.0, 12.0, 15.0, lost=0)],
        writes=[Write("stream/198.18.1.10:7/weight", "2", 5), Write("stream/198.18.1.10:7/weight", "3", 9)],
        configs={"d1": {"stream/198.18.1.10:7/weight": "3"}, "d2": {"stream/198.18.1.10:7/weight": "3"}},
        tables={"d1": frozenset({"a", "b"}), "d2": frozenset({"a", "b"})}, master="d2",
        samples=[Sample("d2", 7, float(t), 100_000, 40, 300) for t in range(0, 120, 10)],
    )


def rules(obs: Observations) -> list[str]:
    return [v["rule"] for v in judge(obs)[0]]


def test_a_clean_run_has_no_violation_and_its_figures() -> None:
    violations, figures = judge(clean())
    assert violations == []
    (f,) = figures
    assert 290 <= f["nobody_forwarding_ms"] <= 320 and f["overlap_ms"] == 0 and f["lost_connections"] == 0


def test_two_forwarders_at_once_is_an_overlap() -> None:
    obs = clean()
    obs.frames["d3"] = [12.0]  # one frame from a deposed node inside d2's interval
    assert rules(obs) == ["overlap"]
    assert judge(obs)[1][0]["overlap_ms"] == 0.0 and "fault 0" in judge(obs)[0][0]["what"]


def test_lost_connections_outside_the_documented_faults() -> None:
    obs = clean()
    obs.faults[0].lost = 3
    assert rules(obs) == ["lost"]
    obs.faults[0].kind = "master-dies-in-quorum-loss"  # documented: connections may go
    assert rules(obs) == []
    obs.faults[0].settled = False
    assert rules(obs) == ["lost"]


def test_a_sticky_source_may_leave_only_a_server_that_failed() -> None:
    obs = clean()
    obs.moves = [Move(11.0, "198.18.0.101", "r4", "r1")]
    assert rules(obs) == ["sticky"]
    obs.server_down = {"r4": [(10.5, 12.0)]}
    assert rules(obs) == []
    obs.server_down = {"r4": [(11.5, 12.0)]}  # failed only after the move
    assert rules(obs) == ["sticky"]
    obs.server_down = {"r4": [(2.0, 4.0)]}  # failed long before: the move is not explained by it
    assert rules(obs) == ["sticky"]


def test_final_config_must_hold_the_last_acknowledged_write() -> None:
    obs = clean()
    obs.configs["d2"] = {"stream/198.18.1.10:7/weight": "2"}  # the older acknowledged value
    assert rules(obs) == ["config"]
    obs.writes.append(Write("stream/198.18.1.10:7/weight", "2", 0))  # unknown outcome: acceptable
    assert rules(obs) == []
    assert expected_config(obs.writes) == {"stream/198.18.1.10:7/weight": {"2", "3"}}


def test_every_table_converges_to_the_masters() -> None:
    obs = clean()
    obs.tables["d1"] = frozenset({"a"})
    assert rules(obs) == ["table"]
    obs.tables = {"d1": frozenset({"a"})}
    obs.master = ""
    assert rules(obs) == ["table"]  # nobody is master at the end


def test_unbounded_growth_of_rss_fds_or_table() -> None:
    for attr, grow in (("rss_kb", 400_000), ("fds", 200), ("conns", 5000)):
        obs = clean()
        obs.samples = [Sample("d2", 7, float(t), 100_000 + (grow * t // 120 if attr == "rss_kb" else 0),
                              40 + (grow * t // 120 if attr == "fds" else 0),
                              300 + (grow * t // 120 if attr == "conns" else 0)) for t in range(0, 130, 10)]
        got = judge(obs)[0]
        assert [v["rule"] for v in got] == ["growth"] and got[0]["attr"] == attr
    short = clean()
    short.samples = [Sample("d2", 7, float(t), 100_000 * (t + 1), 40, 300) for t in range(0, 30, 5)]
    assert rules(short) == []  # a life too short to judge


def test_a_silent_fabric_during_a_fault_that_allows_no_failover_is_an_outage() -> None:
    obs = clean()
    obs.faults = [FaultObs(0, "etcd-quorum-loss", "etcd", 3.0, 6.0, 9.5)]
    obs.frames = {"d1": steady("d1", 0, 4) + steady("d1", 6.5, 20)}  # 2.5 s of silence
    got = judge(obs)[0]
    assert [v["rule"] for v in got] == ["outage"] and got[0]["fault"] == 0
    obs.faults[0].kind = "kill-master"  # a takeover may cost a gap: a figure, not a violation
    assert rules(obs) == []
    obs.faults[0].kind = "etcd-quorum-loss"
    obs.frames = {"d1": steady("d1", 0, 4) + steady("d1", 5.0, 20)}  # 1 s: within the bound
    assert rules(obs) == []


def test_a_move_on_a_reused_source_port_says_where_that_port_went_before() -> None:
    obs = clean()
    obs.moves = [Move(11.0, "198.18.0.107", "r3", "r4", 40001, "r4", 30.0)]
    (v,) = judge(obs)[0]
    assert v["rule"] == "sticky" and v["port_reuse"] == "r4" and "port 40001 reached r4" in v["what"]
