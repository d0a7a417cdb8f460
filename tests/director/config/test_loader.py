"""YAML with limits: what yaml.safe_load lets through (and what it costs) is refused before expanding."""

from __future__ import annotations

import tracemalloc

import pytest

from director.config.loader import DEFAULT_LIMITS, Limits, YamlError, load_yaml
from tests.director.config.hostile_docs import bomb


def refused(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(YamlError) as exc:
        load_yaml(text, limits)
    return str(exc.value)


def test_plain_documents_load_as_plain_data() -> None:
    assert load_yaml("a: 1\nb: [x, 2.5, true, null]\nc: {d: e}\n") == {
        "a": 1, "b": ["x", 2.5, True, None], "c": {"d": "e"}}
    assert load_yaml(b"a: 1\n") == {"a": 1}
    assert load_yaml("") is None


def test_alias_bomb_is_refused_before_it_is_expanded() -> None:
    text = bomb(9)  # ~9**9 = 387M nodes once expanded, in about 400 bytes
    assert len(text) < 600
    tracemalloc.start()
    try:
        msg = refused(text)
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert msg.startswith("refused: more than 200000 nodes once aliases are expanded")
    assert peak < 2 << 20  # nothing was expanded
    assert len(msg) < 300


def test_a_few_small_aliases_are_fine_and_shared_merges_work() -> None:
    assert load_yaml(bomb(3)) is not None  # 9**3 nodes
    doc = load_yaml("base: &b {weight: 2, port: 80}\ndests:\n- {<<: *b, address: a}\n- {<<: *b, weight: 3}\n")
    assert doc["dests"] == [{"weight": 2, "port": 80, "address": "a"}, {"weight": 3, "port": 80}]


def test_alias_count_limit() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * 50) + "]\n"
    assert load_yaml(text, Limits(max_aliases=50))["b"] == ["x"] * 50
    assert refused(text, Limits(max_aliases=49)) == "refused: more than 49 aliases"


@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000, "a:\n" + "".join(" " * i + "- \n" for i in range(1, 200)),
    "{a: " * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_refused_without_recursion_error(text: str) -> None:
    msg = refused(text)  # by our composer at 32 levels, or by libyaml's own limit (1000) while scanning ahead
    assert msg == "refused: nested deeper than 32 levels" or "exceeded maximum nesting depth" in msg, msg


def test_depth_counts_through_aliases() -> None:
    deep = "[" * 20 + "x" + "]" * 20
    ok = f"a: &a {deep}\nb: {'[' * 10}*a{']' * 10}\n"  # 1 + 10 lists + 21 levels of a = 32
    assert load_yaml(ok) is not None
    too_deep = f"a: &a {deep}\nb: {'[' * 11}*a{']' * 11}\n"
    assert refused(too_deep) == "refused: nested deeper than 32 levels (through an alias)"


def test_recursive_alias_is_refused() -> None:
    assert refused("a: &a [1, *a]\n") == "refused: recursive alias *'a'"
    assert refused("a: &a {b: *a}\n") == "refused: recursive alias *'a'"


def test_duplicate_keys_are_refused_at_any_level() -> None:
    assert "found duplicate key 'port'" in refused("port: 80\nport: 81\n")
    assert "found duplicate key 'x'" in refused("a: [{x: 1, y: 2, x: 3}]\n")
    assert "found duplicate key 1" in refused("{1: a, 1: b}")
    # a key merged in with << may be overridden: that is what merges are for
    assert load_yaml("m: {<<: {x: 1}, x: 2}\n") == {"m": {"x": 2}}


@pytest.mark.parametrize(("text", "tag"), [
    ("x: !!timestamp 2020-99-99\n", "timestamp"),
    ("x: !!python/object/apply:os.system [ls]\n", "python/object/apply:os.system"),
    ("x: !!binary aGk=\n", "binary"),
    ("x: !!set {a, b}\n", "set"),
    ("x: !!omap [a: 1]\n", "omap"),
    ("x: !custom 1\n", "!custom"),
])
def test_only_plain_data_tags(text: str, tag: str) -> None:
    msg = refused(text)
    assert msg.startswith("not valid YAML: could not determine a constructor for the tag") and tag in msg


def test_dates_stay_strings_and_bad_tagged_scalars_are_clean_errors() -> None:
    assert load_yaml("name: 2020-01-01\n") == {"name": "2020-01-01"}
    assert refused("x: !!int abc\n").startswith("not valid YAML: bad value:")
    assert refused("x: !!float y\n").startswith("not valid YAML: bad value:")
    assert refused("x: " + "9" * 5000 + "\n").startswith("not valid YAML: bad value:")


def test_encoding_and_size() -> None:
    assert refused(b"name: \xff\xfeweb\n") == "not valid UTF-8: byte 0xff at offset 6"
    assert refused(b"name: \xffweb\n".decode("utf-8", "surrogateescape")) == \
        "not valid UTF-8: undecodable character at offset 6"
    assert refused("a: b\n" * 300, Limits(max_bytes=1000)) == \
        "document too large: more than 1000 bytes"
    assert refused(b"a: b\n" * 300, Limits(max_bytes=1000)) == \
        "document too large: 1500 bytes (at most 1000)"
    assert refused("é" * 400, Limits(max_bytes=700)).startswith("document too large")  # bytes, not characters


def test_syntax_errors_are_bounded_single_lines() -> None:
    msg = refused("a: [" + "x, " * 10_000 + "\n" + "b: {" * 2)
    assert "\n" not in msg and len(msg) <= 260
    assert refused("a: 1\n---\nb: 2\n").startswith("not valid YAML: expected a single document")
    assert refused("x: *nope\n").startswith("not valid YAML: found undefined alias")
