"""Issue 17's hostile config documents: each is refused with a clean, field-named, bounded error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from director.config.services import (
    ConfigError,
    config_from_dict,
    config_from_texts,
    dump_service,
    load_config,
    parse_config,
    parse_service,
    parse_timeouts,
    read_document,
)
from director.config.validate import MAX_ERRORS, MAX_LINE
from tests.director.config.hostile_docs import bomb

MAX_MESSAGE = 16 * 1024  # what an admin error response can carry


def svc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "web", "protocol": "tcp", "vip": "198.18.1.1", "port": 80,
                           "dests": [{"address": "198.18.2.10", "port": 80}]}
    doc.update(over)
    return doc


def errors(doc: Any) -> list[str]:
    text = doc if isinstance(doc, str | bytes) else yaml.safe_dump(doc)
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    err = exc.value
    assert str(err) == "\n".join(err.errors)
    assert len(str(err)) < MAX_MESSAGE and all(len(line) <= MAX_LINE for line in err.errors)
    return list(err.errors)


def health(**hc: Any) -> dict[str, Any]:
    return {"services": [svc(dests=[{"address": "198.18.2.10", "healthcheck": hc}])]}


HC = "services[0].dests[0].healthcheck"


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+400"])
@pytest.mark.parametrize("field", ["interval", "timeout"])
def test_health_numbers_must_be_finite(field: str, value: str) -> None:
    text = yaml.safe_dump(health()).replace("healthcheck: {}", f"healthcheck: {{{field}: {value}}}")
    errs = errors(text)
    assert len(errs) == 1 and errs[0].startswith(f"{HC}.{field}: must be a number in"), errs


@pytest.mark.parametrize("host", [7, ["a"], {"a": 1}, True, "a b", "x\r\nX-Injected: 1", "a" * 300])
def test_health_host_is_a_host_name(host: Any) -> None:
    errs = errors(health(type="http", host=host))
    assert len(errs) == 1 and errs[0].startswith(f"{HC}.host: must be"), errs


def test_health_host_alias_bomb_is_refused_cheaply() -> None:
    text = bomb(9) + "services: [{name: web, protocol: tcp, vip: 198.18.1.1, port: 80, dests: " \
        "[{address: 198.18.2.10, healthcheck: {type: http, host: *l8}}]}]\n"
    start = time.process_time()
    errs = errors(text)
    assert time.process_time() - start < 5  # the 421-byte bomb of the issue cost 42 s; generous bound
    assert errs == ["(top level): refused: more than 200000 nodes once aliases are expanded"]


@pytest.mark.parametrize(("vip", "why"), [
    ("0.0.0.0", "this network"), ("0.1.2.3", "this network"), ("255.255.255.255", "reserved or broadcast"),
    ("240.0.0.1", "reserved or broadcast"), ("224.0.0.1", "multicast"), ("239.1.1.1", "multicast"),
    ("127.0.0.1", "loopback"), ("169.254.1.1", "link-local"),
])
def test_vips_no_host_can_own_are_refused(vip: str, why: str) -> None:
    errs = errors({"services": [svc(vip=vip)]})
    assert errs == [f"services[0].vip: must be a unicast address a host can own, got {vip} ({why})"]


@pytest.mark.parametrize("addr", ["0.0.0.0", "255.255.255.255", "224.0.0.5", "240.1.1.1"])
def test_dests_no_host_can_own_are_refused(addr: str) -> None:
    errs = errors({"services": [svc(dests=[{"address": addr}])]})
    assert len(errs) == 1 and errs[0].startswith(
        f"services[0].dests[0].address: must be a unicast address a host can own, got {addr}"), errs


def test_link_local_and_local_node_dests_are_allowed() -> None:
    cfg = config_from_dict({"services": [svc(dests=[{"address": "169.254.0.10"}, {"address": "127.0.0.1"}])]})
    assert [d.address for d in cfg.services[0].dests] == ["169.254.0.10", "127.0.0.1"]


def test_duplicate_keys_are_refused() -> None:
    text = "services:\n- name: web\n  protocol: tcp\n  vip: 198.18.1.1\n  port: 80\n  port: 8080\n"
    (err,) = errors(text)
    assert err.startswith("(top level): not valid YAML:") and "found duplicate key 'port'" in err


@pytest.mark.parametrize(("over", "line"), [
    ({"dests": {}}, "services[0].dests: must be a list, got a mapping"),
    ({"dests": ""}, "services[0].dests: must be a list, got ''"),
    ({"dests": 0}, "services[0].dests: must be a list, got 0"),
    ({"dests": False}, "services[0].dests: must be a list, got False"),
    ({"scheduler_options": []}, "services[0].scheduler_options: must be a mapping, got a list"),
    ({"scheduler_options": 0}, "services[0].scheduler_options: must be a mapping, got 0"),
])
def test_wrong_shape_collections_are_refused(over: dict[str, Any], line: str) -> None:
    assert line in errors({"services": [svc(**over)]})


@pytest.mark.parametrize(("doc", "line"), [
    ({"services": {}}, "services: must be a list, got a mapping"),
    ({"services": "web"}, "services: must be a list, got 'web'"),
])
def test_top_level_wrong_shapes(doc: dict[str, Any], line: str) -> None:
    assert errors(doc) == [line]


def test_empty_collections_that_mean_nothing_given_are_fine() -> None:
    cfg = parse_config("services:\n- {name: web, protocol: tcp, vip: 198.18.1.1, port: 80, dests: }\n")
    assert cfg.services[0].dests == ()
    assert parse_config("services: []\n").services == ()


def test_bad_timestamp_tag_is_a_clean_error() -> None:
    (err,) = errors("services: []\ntimeouts: {tcp: !!timestamp 2020-99-99}\n")
    assert err.startswith("(top level): not valid YAML: could not determine a constructor for the tag")


@pytest.mark.parametrize("regex", ["a{99999999999}", "a{1001}", "(a{2,5000})", "x{3,1234567}"])
def test_huge_regex_repetition_is_refused_before_compiling(regex: str) -> None:
    errs = errors(health(type="http", expect_body=regex))
    assert len(errs) == 1 and errs[0].startswith(f"{HC}.expect_body: repetition counts are limited to 1000")


def test_bad_regex_and_long_regex() -> None:
    (err,) = errors(health(type="http", expect_body="("))
    assert err.startswith(f"{HC}.expect_body: bad regular expression: missing )")
    (err,) = errors(health(type="http", expect_body="a" * 2000))
    assert err == f"{HC}.expect_body: must be at most 1024 characters, got 2000"


def test_deep_nesting_is_a_clean_error() -> None:
    (err,) = errors("services: " + "[" * 10_000 + "]" * 10_000)
    assert err.startswith("(top level): ") and "nest" in err


def test_error_excerpts_are_bounded() -> None:
    huge = "x" * 100_000
    errs = errors({"services": [svc(name=huge, protocol=huge, dests=[{"address": huge, huge: 1}])]})
    assert len("\n".join(errs)) < 2000
    assert f"services[0].protocol: must be one of tcp, udp, got '{'x' * 55}...'" in errs
    assert any(e.startswith("services[0].dests[0].'xxxxxxxx") and "unknown field" in e for e in errs)
    big_int = 10 ** 4000
    errs = errors("services:\n- " + yaml.safe_dump(svc(port=big_int), default_flow_style=True))
    assert "services[0].port: must be an integer in 0..65535, got an integer of 13288 bits" in errs


def test_error_count_is_bounded_and_the_rest_counted() -> None:
    errs = errors({"services": [svc(**{f"bad{i}": 1 for i in range(500)})]})
    assert len(errs) == MAX_ERRORS + 1
    assert errs[-1] == f"... and {500 - MAX_ERRORS} more problems"


def test_non_utf8_input_is_a_clean_error(tmp_path: Path) -> None:
    assert errors(b"services: [{name: \xff}]\n") == ["(top level): not valid UTF-8: byte 0xff at offset 18"]
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"\xfe\xff\x00s")
    with pytest.raises(ConfigError, match=r"\(top level\): not valid UTF-8"):
        load_config(str(path))


def test_etcd_texts_that_are_garbage_are_clean_errors() -> None:
    good = dump_service(config_from_dict({"services": [svc()]}).services[0])
    garbage = {
        "deep": "[" * 50_000,
        "bomb": bomb(9),
        "binary": b"\xff\xfe\x00\x01".decode("utf-8", "surrogateescape"),
        "tag": "x: !!python/object/apply:os.system [ls]\n",
        "ts": "name: ts\nport: !!timestamp 2020-99-99\n",
        "nul": "name: \x00\n",
    }
    with pytest.raises(ConfigError) as exc:
        config_from_texts({"web": good, **garbage}, "tcp: .nan\n")
    lines = exc.value.errors
    for name in garbage:
        assert any(line.startswith(f"services[{name}]: ") for line in lines), (name, lines)
    assert "timeouts.tcp: must be an integer in 1..2147483, got nan" in lines
    with pytest.raises(ConfigError, match=r"^services\['a b'\]\.name: must match"):
        parse_service("a b", good)
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        parse_timeouts(b"tcp: \xff\n")


def test_scheduler_tables_are_bounded_across_services() -> None:
    many = [svc(name=f"s{i}", port=i + 1, scheduler="mh", scheduler_options={"table_size": 1_000_003})
            for i in range(70)]
    errs = errors({"services": many})
    assert errs == ["services: scheduler tables need 70000210 slots together, more than 67108864 "
                    "(use smaller mh table_size / sh, dh tab_bits, or fewer hashing services)"]
    assert len(config_from_dict({"services": many[:60]}).services) == 60


def test_read_document_for_the_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("services: []\n")
    assert read_document(str(good)) == "services: []\n"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"services: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        read_document(str(bad))
    assert exc.value.errors == (f"{bad}: not valid UTF-8: byte 0xe9 at offset 18",)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="document too large"):
        read_document(str(big))


def test_a_snapshot_too_large_in_total_is_refused_before_parsing() -> None:
    one = "#" * (1 << 20)  # each text under the per-document limit
    with pytest.raises(ConfigError) as exc:
        config_from_texts({f"s{i}": one for i in range(17)})
    assert exc.value.errors == (f"services: {17 << 20} characters of config text, more than {16 << 20}",)
