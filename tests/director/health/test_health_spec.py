"""The health-check spec: the shared validation layer, every problem collected, typed and bounded."""

from __future__ import annotations

from typing import Any

import pytest

from director.config.validate import ConfigError, Errors
from director.health.spec import HealthSpec, health_spec


def problems(d: Any, where: str = "health") -> tuple[str, ...]:
    with pytest.raises(ConfigError) as exc:
        HealthSpec.from_dict(d, where)
    assert isinstance(exc.value, ValueError)  # callers that caught ValueError keep working
    return exc.value.errors


def test_defaults_and_round_trip() -> None:
    assert HealthSpec.from_dict({}) == HealthSpec()
    spec = HealthSpec.from_dict({"type": "http", "interval": 0.5, "timeout": 0.25, "rise": 1, "fall": 5,
                                 "port": 8080, "path": "/healthz?full=1", "host": "www.example.com:8443",
                                 "expect_status": 204, "expect_body": "^ok$", "on_failure": "remove"})
    assert (spec.interval, spec.expect_status, spec.host) == (0.5, (204,), "www.example.com:8443")
    assert spec.port == 8080
    assert HealthSpec.from_dict(spec.as_dict()) == spec
    assert HealthSpec.from_dict({"rise": 2.0}).rise == 2  # an integral float is an integer


def test_every_problem_is_collected_with_its_path() -> None:
    errs = problems({"type": "icmp", "interval": float("nan"), "timeout": float("inf"), "rise": 0,
                     "fall": True, "port": 0, "path": "no-slash", "host": 5, "expect_status": [99],
                     "expect_body": "(", "on_failure": "kill", "bogus": 1}, "dests[0].health")
    fields = [e.split(":", 1)[0] for e in errs]
    assert fields == [f"dests[0].health.{f}" for f in (
        "bogus", "type", "interval", "timeout", "rise", "fall", "port", "path", "host", "expect_status",
        "expect_body", "on_failure")]
    assert "dests[0].health.interval: must be a number in 0.05..86400, got nan" in errs
    assert "dests[0].health.timeout: must be a number in 0.01..3600, got inf" in errs
    assert "dests[0].health.host: must be a string, got 5" in errs


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -1, 0, 10**30, "2", None, [1]])
def test_interval_must_be_a_finite_number_in_range(value: Any) -> None:
    (err,) = problems({"interval": value})
    assert err.startswith("health.interval: must be a number in 0.05..86400, got ")


@pytest.mark.parametrize("host", ["a b", "x\r\nInjected: 1", "-bad-.example", "a" * 254, "h:0", "h:99999",
                                  "[::1", ["www"], {"a": 1}])
def test_host_cannot_carry_anything_but_a_host(host: Any) -> None:
    (err,) = problems({"type": "http", "host": host})
    assert err.startswith("health.host: must be")
    assert len(err) < 200


@pytest.mark.parametrize("host", ["www.example.com", "198.18.2.10", "198.18.2.10:8080", "[fd00::1]:80",
                                  "fd00::1", "localhost", "example.com."])
def test_good_hosts(host: str) -> None:
    assert HealthSpec.from_dict({"type": "http", "host": host}).host == host


@pytest.mark.parametrize("path", ["/a b", "/x\r\nHost: evil", "/\x00", "/é", "relative", "/" + "a" * 3000])
def test_path_is_one_request_target(path: str) -> None:
    (err,) = problems({"type": "http", "path": path})
    assert err.startswith("health.path: must be")


@pytest.mark.parametrize("status", [[], [200] * 65, [True], 600, "200", [200, "x"]])
def test_expect_status_shape(status: Any) -> None:
    (err,) = problems({"type": "http", "expect_status": status})
    assert err.startswith("health.expect_status: must be an HTTP status 100..599 or a list of 1..64 of them")


def test_regex_is_bounded_before_compiling() -> None:
    (err,) = problems({"expect_body": "a{99999999999}"})
    assert err == "health.expect_body: repetition counts are limited to 1000, got '{99999999999}'"
    (err,) = problems({"expect_body": "(x{0,1001})+"})
    assert err.startswith("health.expect_body: repetition counts are limited to 1000")
    assert HealthSpec.from_dict({"expect_body": "a{1,1000}b{3}"}).expect_body == "a{1,1000}b{3}"


def test_collector_form_reports_into_the_callers_errors() -> None:
    errs = Errors()
    errs.add("other", "problem")
    assert health_spec({"fall": -1}, "svc.dests[2].health", errs) is None
    assert errs.result() == ["other: problem",
                             "svc.dests[2].health.fall: must be an integer in 1..1000, got -1"]
    assert health_spec("tcp", "h", Errors()) is None
    ok = Errors()
    assert health_spec({"type": "tcp"}, "h", ok) == HealthSpec() and ok.count == 0
