"""The health-check spec: the shared validation layer, every problem collected, typed and bounded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from director.config.validate import ConfigError, Errors
from director.health.spec import FIELDS, HealthSpec, health_spec


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


# ---- the keepalived-class checkers' fields --------------------------------------------------------

@pytest.mark.parametrize("doc", [
    {"type": "https", "path": "/h", "host": "www.lbd.test", "sni": "api.lbd.test", "verify": True,
     "ca_file": "/etc/lbd/ca.pem", "digest": "9E107D9D372BB6826BD81D3542A419D6", "expect_status": [200]},
    {"type": "http", "digest": "9e107d9d372bb6826bd81d3542a419d6"},
    {"type": "dns", "query": "_sip._udp.lbd.test.", "qtype": "SRV", "expect_rcode": "NXDOMAIN",
     "expect_answer": ["sip.lbd.test"], "port": 5353},
    {"type": "udp", "payload": "ping\n", "expect": "^pong", "require_reply": True},
    {"type": "udp", "payload_hex": "00ff"},
    {"type": "grpc", "grpc_service": "lbd.Db"},
    {"type": "misc", "command": ["/usr/local/bin/check", "--fast"], "dynamic": True, "timeout": 5},
    {"type": "misc", "command": "/usr/local/bin/check --name 'a b'"},
    {"type": "ping", "interval": 1},
])
def test_every_kind_round_trips(doc: dict[str, Any]) -> None:
    spec = HealthSpec.from_dict(doc)
    assert spec.kind == doc["type"]
    assert HealthSpec.from_dict(spec.as_dict()) == spec


def test_new_fields_are_parsed() -> None:
    s = HealthSpec.from_dict({"type": "https", "host": "www.lbd.test:8443", "digest": "AB" * 16})
    assert (s.digest, s.server_name, s.verify, s.port_for(443)) == ("ab" * 16, "www.lbd.test", False, 443)
    assert HealthSpec.from_dict({"type": "https", "host": "198.18.2.10"}).server_name is None
    assert HealthSpec.from_dict({"type": "https", "host": "a.test", "sni": "b.test"}).server_name == "b.test"
    d = HealthSpec.from_dict({"type": "dns", "query": "www.lbd.test", "expect_answer": "198.18.2.10"})
    assert (d.qtype, d.expect_rcode, d.expect_answer) == ("A", "NOERROR", ("198.18.2.10",))
    assert d.port_for(80) == 53
    assert HealthSpec.from_dict({"type": "udp", "payload": "é"}).payload == "é".encode()
    m = HealthSpec.from_dict({"type": "misc", "command": "check --name 'a b'"})
    assert (m.command, m.dynamic) == (("check", "--name", "a b"), False)


def test_new_fields_name_their_problems() -> None:
    errs = problems({"type": "dns", "qtype": "ANY", "expect_rcode": "OK", "expect_answer": [""],
                     "query": "bad name!"}, "s.dests[0].health")
    assert errs == (
        "s.dests[0].health.query: must be a DNS name, got 'bad name!'",
        "s.dests[0].health.expect_answer[0]: must be a string of 1..255 characters, got ''",
        "s.dests[0].health.qtype: must be one of A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, got 'ANY'",
        "s.dests[0].health.expect_rcode: must be one of NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, "
        "REFUSED, got 'OK'")
    assert problems({"type": "dns"}) == ("health.query: required for type dns",)
    assert problems({"type": "misc"}) == ("health.command: required for type misc",)
    assert problems({"type": "misc", "command": []}) == ("health.command: must name a program",)
    assert problems({"type": "misc", "command": ["ok", 5]}) == (
        "health.command[1]: must be a non-empty string without NUL, got 5",)
    assert problems({"type": "misc", "command": "a 'b"}) == (
        "health.command: cannot split the command: No closing quotation",)
    assert problems({"type": "misc", "command": ["x"], "dynamic": "yes"}) == (
        "health.dynamic: must be true or false, got 'yes'",)
    assert problems({"type": "https", "digest": "abc", "sni": "-x-", "verify": 1}) == (
        "health.digest: must be an MD5 digest: 32 hex digits, got 'abc'",
        "health.sni: must be a DNS name, got '-x-'", "health.verify: must be true or false, got 1")
    assert problems({"type": "udp", "payload": "a", "payload_hex": "00"}) == (
        "health.payload_hex: give payload or payload_hex, not both",)
    assert problems({"type": "udp", "payload_hex": "0g"}) == (
        "health.payload_hex: must be hex digits, two per byte, got '0g'",)
    assert problems({"type": "udp", "expect": "a{5000}"}) == (
        "health.expect: repetition counts are limited to 1000, got '{5000}'",)
    assert problems({"type": "grpc", "grpc_service": "a b"}) == (
        "health.grpc_service: must be a gRPC service name (visible ASCII, at most 200), got 'a b'",)


def test_a_field_of_another_type_is_an_error() -> None:
    assert problems({"type": "tcp", "sni": "a.test", "command": ["x"]}) == (
        "health.sni: applies to type https only, this check is tcp",
        "health.command: applies to type misc only, this check is tcp")
    assert problems({"type": "https", "query": "a.test"}) == (
        "health.query: applies to type dns only, this check is https",)
    assert problems({"type": "ping", "digest": "0" * 32}) == (
        "health.digest: applies to type http and https only, this check is ping",)


def test_the_examples_in_config_md_parse() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "CONFIG.md").read_text()
    section = text[text.index("## Health checks"):text.index("## Notify hooks")]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    kinds = [HealthSpec.from_dict(d["health"]).kind for d in yaml.safe_load(block)["dests"]]
    assert kinds == ["https", "dns", "udp", "grpc", "misc", "ping"]
    for row in re.findall(r"^\| `([a-z_]+)`", section, re.M):  # every field in the table is a real one
        assert row in FIELDS, row


def test_udp_payload_is_dumped_as_text_when_it_is_text() -> None:
    assert HealthSpec.from_dict({"type": "udp", "payload": "ping"}).as_dict()["payload"] == "ping"
    assert HealthSpec.from_dict({"type": "udp", "payload": "a\nb"}).as_dict()["payload_hex"] == "610a62"
    assert "payload" not in HealthSpec.from_dict({"type": "udp"}).as_dict()
