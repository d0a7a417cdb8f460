"""The config model: strict validation with field paths, canonical dump, live apply."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from director.config.services import (
    Config,
    ConfigError,
    DestConfig,
    ServiceConfig,
    TimeoutsConfig,
    apply_timeouts,
    apply_to_services,
    config_from_dict,
    config_from_texts,
    dump_config,
    dump_service,
    dump_timeouts,
    load_config,
    parse_config,
    parse_service,
    parse_timeouts,
)
from director.services.service import ServiceTable, VirtualService
from director.table.tcp import Timeouts
from director.types import DestFlags, FwdMethod, Proto, SvcFlags

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "services.yaml"


def svc_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "web", "protocol": "tcp", "vip": "198.18.1.1", "port": 80,
                           "dests": [{"address": "198.18.2.10", "port": 80}]}
    doc.update(over)
    return doc


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(data)
    assert str(exc.value) == "\n".join(exc.value.errors)
    return list(exc.value.errors)


def ip(s: str) -> int:
    return int(ipaddress.IPv4Address(s))


# -- parsing and validation -------------------------------------------------------------------

def test_example_file_parses_and_round_trips() -> None:
    cfg = load_config(str(EXAMPLE))
    assert [s.name for s in cfg.services] == ["web", "shop-tls", "dns", "ftp"]
    text = dump_config(cfg)
    assert parse_config(text) == cfg
    assert dump_config(parse_config(text)) == text
    shop = cfg.service("shop-tls")
    assert shop is not None and shop.persistence is not None
    assert shop.persistence.mask == ip("255.255.255.0")
    assert shop.sched_opts == {"fallback": True, "port": False}
    dns = cfg.service("dns")
    assert dns is not None
    assert [dns.fwd_of(d) for d in dns.dests] == [FwdMethod.DR, FwdMethod.TUN]


def test_defaults_are_filled_in() -> None:
    cfg = config_from_dict({"services": [svc_doc()]})
    svc = cfg.services[0]
    assert (svc.scheduler, svc.forward, svc.persistence) == ("wlc", "nat", None)
    assert not svc.expire_nodest_conn and not svc.expire_quiescent_template
    assert svc.dests[0] == DestConfig("198.18.2.10", 80, 1, 0, 0, None, None)
    assert cfg.timeouts is None
    assert config_from_dict({"timeouts": {}}).timeouts == TimeoutsConfig(900, 120, 300)


def test_error_names_the_field_path() -> None:
    bad = svc_doc(name="b", port=81, dests=[{"address": "198.18.2.10", "weight": -3}])
    doc = {"services": [svc_doc(), bad]}
    assert errors_of(doc) == ["services[1].dests[0].weight: must be an integer in 0..65535, got -3"]


def test_all_errors_are_collected() -> None:
    doc = {
        "services": [
            svc_doc(protocol="sctp", vip="2001:db8::zz", scheduler="fastest",
                    dests=[{"address": "198.18.2.300", "weight": True, "u_threshold": 5, "l_threshold": 9}]),
            svc_doc(name="", port=70000, forward="masq"),
        ],
        "timeouts": {"tcp": 0},
    }
    errs = errors_of(doc)
    for expected in [
        "services[0].protocol: must be one of tcp, udp, got 'sctp'",
        "services[0].vip: must be an IPv4 or IPv6 address, got '2001:db8::zz'",
        "services[0].scheduler: must be one of rr, wrr, lc, wlc, sh, dh, sed, nq, mh, got 'fastest'",
        "services[0].dests[0].address: must be an IPv4 address, got '198.18.2.300'",
        "services[0].dests[0].weight: must be an integer in 0..65535, got True",
        "services[0].dests[0].l_threshold: must not exceed u_threshold (5), got 9",
        "services[1].port: must be an integer in 0..65535, got 70000",
        "services[1].forward: must be one of nat, dr, tun, got 'masq'",
        "timeouts.tcp: must be an integer in 1..2147483, got 0",
    ]:
        assert expected in errs
    assert any(e.startswith("services[1].name: must be 1-63 letters") for e in errs)


@pytest.mark.parametrize(("doc", "path"), [
    ({"servics": []}, "servics"),
    ({"services": [svc_doc(weight=1)]}, "services[0].weight"),
    ({"services": [svc_doc(dests=[{"address": "198.18.2.10", "wieght": 1}])]}, "services[0].dests[0].wieght"),
    ({"services": [svc_doc(persistence={"timeout": 60, "mask": 24})]}, "services[0].persistence.mask"),
    ({"timeouts": {"tcp": 10, "sctp": 5}}, "timeouts.sctp"),
    ({"services": [svc_doc(dests=[{"address": "198.18.2.10", "healthcheck": {"intervl": 1}}])]},
     "services[0].dests[0].healthcheck.intervl"),
])
def test_unknown_keys_are_rejected_by_name(doc: dict[str, Any], path: str) -> None:
    errs = errors_of(doc)
    assert any(e.startswith(f"{path}: unknown field") for e in errs), errs


@pytest.mark.parametrize(("over", "expected"), [
    ({"dests": [{"address": "198.18.2.10"}, {"address": "198.18.2.10", "port": 80}]},
     "services[0].dests[1]: duplicate dest 198.18.2.10:80 (also dests[0])"),
    ({"port": 0}, "services[0].port: 0 (any port) needs persistence, like ipvsadm"),
    ({"forward": "dr", "dests": [{"address": "198.18.2.10", "port": 8080}]},
     "services[0].dests[0].port: must equal the service port 80 with forward dr (no port translation), "
     "got 8080"),
    ({"scheduler": "mh", "scheduler_options": {"table_size": 1000}},
     "services[0].scheduler_options.table_size: must be a prime in 3..1000003, got 1000"),
    ({"scheduler": "rr", "scheduler_options": {"fallback": True}},
     "services[0].scheduler_options.fallback: unknown option for scheduler rr (allowed: none)"),
    ({"persistence": {"timeout": 60, "netmask": "255.0.255.0"}},
     "services[0].persistence.netmask: must be a netmask or a prefix length 0..32, got '255.0.255.0'"),
    ({"dests": {"address": "198.18.2.10"}}, "services[0].dests: must be a list, got a mapping"),
    ({"expire_nodest_conn": "yes"}, "services[0].expire_nodest_conn: must be true or false, got 'yes'"),
    ({"vip": None}, "services[0].vip: must be an IPv4 address, got None"),
])
def test_semantic_checks(over: dict[str, Any], expected: str) -> None:
    assert expected in errors_of({"services": [svc_doc(**over)]})


def test_required_fields_and_cross_service_uniqueness() -> None:
    errs = errors_of({"services": [{"name": "a"}, svc_doc(name="b"), svc_doc(name="b", port=81),
                                   svc_doc(name="c")]})
    assert "services[0].protocol: required" in errs
    assert "services[0].vip: required" in errs
    assert "services[2].name: duplicate service name 'b' (also services[1])" in errs
    assert "services[3]: same protocol, vip and port as services[1] (tcp 198.18.1.1:80)" in errs
    assert not any("same protocol" in e for e in errors_of({"services": [{"name": "a"}, {"name": "b"}]}))


def test_prefix_length_netmask_and_port0_service() -> None:
    cfg = config_from_dict({"services": [svc_doc(port=0, persistence={"timeout": 60, "netmask": 24},
                                                 dests=[{"address": "198.18.2.10"}])]})
    svc = cfg.services[0]
    assert svc.persistence is not None and svc.persistence.netmask == "255.255.255.0"
    assert svc.dests[0].port == 0


def test_bad_yaml_and_wrong_shapes() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("services: [\n")
    assert errors_of(["x"]) == ["(top level): must be a mapping, got a list"]
    assert errors_of({"services": ["x"]}) == ["services[0]: must be a mapping, got 'x'",
                                             "services[0].protocol: required", "services[0].vip: required",
                                             "services[0].port: required", "services[0].name: required"]


# -- etcd per-key texts -------------------------------------------------------------------------

def test_service_text_round_trip_and_paths() -> None:
    cfg = load_config(str(EXAMPLE))
    for svc in cfg.services:
        assert parse_service(svc.name, dump_service(svc)) == svc
    body = yaml.safe_dump({k: v for k, v in svc_doc(dests=[{"address": "198.18.2.10", "weight": -3}]).items()
                           if k != "name"})
    with pytest.raises(ConfigError) as exc:
        parse_service("web", body)
    assert exc.value.errors == ("services[web].dests[0].weight: must be an integer in 0..65535, got -3",)
    with pytest.raises(ConfigError, match=r"services\[web\]\.name: must match the key's name 'web', got"):
        parse_service("web", yaml.safe_dump(svc_doc(name="api")))


def test_timeouts_text_round_trip() -> None:
    t = TimeoutsConfig(600, 60, 30)
    assert parse_timeouts(dump_timeouts(t)) == t
    with pytest.raises(ConfigError, match="timeouts.udp: must be an integer"):
        parse_timeouts("udp: -1\n")


def test_config_from_texts_collects_errors_of_every_key() -> None:
    good = dump_service(config_from_dict({"services": [svc_doc()]}).services[0])
    clash = yaml.safe_dump(svc_doc(name="web2"))
    broken = yaml.safe_dump(svc_doc(name="zz", port=-1))
    with pytest.raises(ConfigError) as exc:
        config_from_texts({"web": good, "web2": clash, "zz": broken}, "tcp: x\n")
    assert "services[zz].port: must be an integer in 0..65535, got -1" in exc.value.errors
    assert "timeouts.tcp: must be an integer in 1..2147483, got 'x'" in exc.value.errors
    clash_line = "services[web2]: same protocol, vip and port as services[web] (tcp 198.18.1.1:80)"
    assert clash_line in exc.value.errors
    ok = config_from_texts({"web": good}, dump_timeouts(TimeoutsConfig()))
    assert ok.services[0].name == "web" and ok.timeouts == TimeoutsConfig()


# -- live apply -------------------------------------------------------------------------------

def _view(services: ServiceTable) -> dict[tuple[int, int, int], Any]:
    """What the live table says, in config terms."""
    out = {}
    for s in services:
        dests = {(d.addr, d.port): (d.weight, d.u_threshold, d.l_threshold, d.fwd) for d in s.dests}
        out[(s.protocol, s.addr, s.port)] = (s.name, s.scheduler.name, getattr(s.scheduler, "opts", None),
                                             s.persistent, s.timeout if s.persistent else None,
                                             s.netmask if s.persistent else None,
                                             s.expire_nodest_conn, s.expire_quiescent_template, dests)
    return out


def _want(cfg: Config) -> dict[tuple[int, int, int], Any]:
    from director.services.sched.registry import create

    out = {}
    for s in cfg.services:
        dests = {(d.daddr, d.port): (d.weight, d.u_threshold, d.l_threshold, s.fwd_of(d)) for d in s.dests}
        p = s.persistence
        out[s.key] = (s.name, s.scheduler, getattr(create(s.scheduler, **s.sched_opts), "opts", None),
                      p is not None, float(p.timeout) if p else None, p.mask if p else None,
                      s.expire_nodest_conn, s.expire_quiescent_template, dests)
    return out


def test_apply_builds_the_table() -> None:
    cfg = load_config(str(EXAMPLE))
    table = ServiceTable()
    apply_to_services(cfg, table)
    assert _view(table) == _want(cfg)
    shop = table.get(int(Proto.TCP), ip("198.18.1.100"), 443)
    assert shop is not None and shop.flags & SvcFlags.PERSISTENT and shop.netmask == ip("255.255.255.0")
    assert shop.scheduler.schedule(shop.dests, ip("198.18.9.9"), 5555) in shop.dests


def test_apply_edits_in_place() -> None:
    table = ServiceTable()
    first = config_from_dict({"services": [svc_doc(scheduler="rr", dests=[
        {"address": "198.18.2.10"}, {"address": "198.18.2.11"}, {"address": "198.18.2.12"}])]})
    apply_to_services(first, table)
    svc = table.get(int(Proto.TCP), ip("198.18.1.1"), 80)
    assert svc is not None
    a, b, c = svc.dests
    held_by_a_conn = c
    sched = svc.scheduler
    second = config_from_dict({"services": [svc_doc(scheduler="rr", forward="nat", dests=[
        {"address": "198.18.2.10", "weight": 0}, {"address": "198.18.2.11", "u_threshold": 9},
        {"address": "198.18.2.13"}])]})
    apply_to_services(second, table)
    assert table.get(int(Proto.TCP), ip("198.18.1.1"), 80) is svc and svc.scheduler is sched
    assert svc.dests[:2] == [a, b] and svc.dests[0] is a and svc.dests[1] is b
    assert (a.weight, b.u_threshold) == (0, 9)
    assert c not in svc.dests and not held_by_a_conn.flags & DestFlags.AVAILABLE
    assert {sched.schedule(svc.dests, 0, 0) for _ in range(6)} == {b, svc.dests[2]}  # scheduler was told
    assert _view(table) == _want(second)


def test_reapplying_the_same_config_changes_nothing() -> None:
    cfg = load_config(str(EXAMPLE))
    table = ServiceTable()
    apply_to_services(cfg, table)
    calls: list[str] = []
    before = {s.key: (s, s.scheduler, list(s.dests)) for s in table}
    for s in table:
        orig = s.scheduler.update

        def spy(dests: Any, o: Any = orig, n: str = s.name) -> None:
            calls.append(n)
            o(dests)
        setattr(s.scheduler, "update", spy)  # noqa: B010
    apply_to_services(load_config(str(EXAMPLE)), table)
    assert calls == []
    assert {s.key: (s, s.scheduler, list(s.dests)) for s in table} == before


def test_apply_scheduler_change_removal_and_fwd_edit() -> None:
    table = ServiceTable()
    apply_to_services(config_from_dict({"services": [svc_doc(), svc_doc(name="b", port=81)]}), table)
    web = table.get(int(Proto.TCP), ip("198.18.1.1"), 80)
    b = table.get(int(Proto.TCP), ip("198.18.1.1"), 81)
    assert web is not None and b is not None
    dest = web.dests[0]
    apply_to_services(config_from_dict({"services": [
        svc_doc(scheduler="mh", scheduler_options={"fallback": True}, forward="dr")]}), table)
    assert table.get(int(Proto.TCP), ip("198.18.1.1"), 81) is None
    assert not b.dests[0].flags & DestFlags.AVAILABLE
    assert web.scheduler.name == "mh" and getattr(web.scheduler, "opts", {})["fallback"] is True
    assert web.dests == [dest] and dest.fwd == FwdMethod.DR and dest.conn_flags == int(FwdMethod.DR)
    assert web.scheduler.schedule(web.dests, ip("198.19.0.1"), 1) is dest


def test_dests_held_down_by_health_checks_stay_down() -> None:
    hc = {"type": "tcp", "on_failure": "quiesce"}
    docs = [{"address": "198.18.2.10", "weight": 2, "healthcheck": hc},
            {"address": "198.18.2.11", "weight": 2, "healthcheck": {**hc, "on_failure": "remove"}},
            {"address": "198.18.2.12", "weight": 2}]
    cfg = config_from_dict({"services": [svc_doc(dests=docs)]})
    key = (int(Proto.TCP), ip("198.18.1.1"), 80, 0)
    down = {(*key, ip(a), 80) for a in ("198.18.2.10", "198.18.2.11", "198.18.2.12")}
    table = ServiceTable()
    apply_to_services(cfg, table, down=down)
    svc = table.get(int(Proto.TCP), ip("198.18.1.1"), 80)
    assert svc is not None
    # quiesced one kept at weight 0, removed one unlinked, one without healthcheck unaffected
    assert [(d.addr, d.weight) for d in svc.dests] == [(ip("198.18.2.10"), 0), (ip("198.18.2.12"), 2)]
    apply_to_services(cfg, table)  # verdicts cleared: configured weights, and the removed one is back
    assert [(d.addr, d.weight) for d in svc.dests] == [
        (ip("198.18.2.10"), 2), (ip("198.18.2.12"), 2), (ip("198.18.2.11"), 2)]


def test_apply_timeouts() -> None:
    t = Timeouts()
    apply_timeouts(TimeoutsConfig(600, 60, 30), t)
    assert (t.as_dict()["established"], t.as_dict()["fin_wait"], t.udp) == (600, 60, 30)
    apply_timeouts(None, t)
    assert t.udp == 30


DEST_ADDRS = [f"198.18.2.{i}" for i in range(10, 16)]
SERVICE_DOC = st.fixed_dictionaries({
    "port": st.sampled_from([80, 81, 82]),
    "scheduler": st.sampled_from(["rr", "wrr", "wlc", "sh", "mh"]),
    "persist": st.booleans(),
    "dests": st.dictionaries(st.sampled_from(DEST_ADDRS), st.integers(0, 5), max_size=5),
})


def _cfg(docs: list[dict[str, Any]]) -> Config:
    services = []
    for d in {d["port"]: d for d in docs}.values():
        opts = {"table_size": 251} if d["scheduler"] == "mh" else {}
        services.append(svc_doc(name=f"s{d['port']}", port=d["port"], scheduler=d["scheduler"],
                                scheduler_options=opts,
                                persistence={"timeout": 30} if d["persist"] else None,
                                dests=[{"address": a, "weight": w} for a, w in d["dests"].items()]))
    return config_from_dict({"services": services})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(SERVICE_DOC, max_size=3), min_size=1, max_size=5))
def test_any_sequence_of_applies_converges_and_keeps_objects(steps: list[list[dict[str, Any]]]) -> None:
    table = ServiceTable()
    prev: dict[tuple[Any, ...], Any] = {}
    for docs in steps:
        cfg = _cfg(docs)
        apply_to_services(cfg, table)
        assert _view(table) == _want(cfg)
        now = {(s.key, d.addr, d.port): d for s in table for d in s.dests}
        for k, d in now.items():
            if k in prev:
                assert prev[k] is d  # a dest that stayed is the same object
        prev = now
        assert all(s.scheduler.schedule(s.dests, 1, 1) in [*s.dests, None] for s in table)


def test_service_config_is_frozen() -> None:
    svc = ServiceConfig("web", "tcp", "198.18.1.1", 80)
    with pytest.raises(AttributeError):
        svc.port = 81  # type: ignore[misc]
    assert isinstance(VirtualService, type)
