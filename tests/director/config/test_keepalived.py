"""keepalived.conf importer: a corpus of realistic files (tests/director/config/keepalived/), each with
its expected services, node fragment and list of untranslated statements; results go through the
real config validators; nothing is dropped without being listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from director.config.keepalived import Stmt, parse, tokenize, translate
from director.config.keepalived_checks import CHECKERS
from director.config.node import node_config_from_dict
from director.config.services import config_from_dict

CORPUS = Path(__file__).parent / "keepalived"
CONFS = sorted(CORPUS.glob("*.conf"))
NODE_BASE = {"node_id": "d1", "etcd": {"endpoints": ["198.18.1.250:2379"]},
             "interfaces": {"external": "ext0", "internal": "int0"}, "sync": {"listen": "198.18.1.1:7100"}}

TRANSLATED = {
    "virtual_server", "virtual_server_group", "real_server", "vrrp_instance", "global_defs", "delay_loop",
    "lb_algo", "lvs_sched",
    "lb_kind", "lvs_method", "protocol", "persistence_timeout", "persistence_granularity", "sorry_server",
    "sh-port", "sh-fallback", "mh-port", "mh-fallback", "ops", "virtualhost", "retry", "nb_get_retry",
    "connect_timeout", "connect_port", "weight", "uthreshold", "lthreshold", "inhibit_on_failure", "url",
    "path", "digest", "status_code", "regex", "enable_sni", "misc_path", "misc_timeout", "misc_dynamic",
    "type", "name", "payload", "require_reply", "notify_master", "notify_backup", "notify_fault",
    "priority", "nopreempt", *CHECKERS,
}
"""Every keyword the importer turns into something; any other statement must be listed."""
DATA_BLOCKS = {"virtual_server_group"}
"""Blocks whose lines are data (addresses), read where they are used."""


def test_corpus_covers_the_manual() -> None:
    text = "\n".join(p.read_text() for p in CONFS)
    for needle in ("HTTP_GET", "SSL_GET", "TCP_CHECK", "MISC_CHECK", "misc_dynamic", "DNS_CHECK", "UDP_CHECK",
                   "PING_CHECK", "virtual_server fwmark", "virtual_server group", "sorry_server",
                   "vrrp_instance", "digest",
                   "notify_master", "include"):
        assert needle in text


@pytest.mark.parametrize("conf", CONFS, ids=[p.stem for p in CONFS])
def test_corpus_file_translates_as_expected(conf: Path) -> None:
    expected = yaml.safe_load(conf.with_suffix(".expected.yaml").read_text())
    imp = translate(conf.read_text())
    assert imp.services == expected["services"]
    assert imp.pending == expected["pending"]
    assert imp.node_fragment() == expected["node"]
    assert [f"{u.line}: {u.where}" for u in imp.untranslated] == expected["untranslated"]
    cfg = config_from_dict(imp.document())  # the real validator: raises ConfigError naming the field
    assert [s.name for s in cfg.services] == [s["name"] for s in expected["services"]]
    for i, svc in enumerate(imp.pending):  # fwmark services: valid once given selectors
        selector = {"protocol": "tcp", "vip": "198.18.0.250", "port": 1000 + i}
        config_from_dict({"services": [{**svc, "group": [selector]}]})
    node = node_config_from_dict({**NODE_BASE, **imp.node_fragment()})
    assert node.notify.master == tuple(expected["node"].get("notify", {}).get("master", ()))


def statements(block: tuple[Stmt, ...]) -> Iterator[Stmt]:
    for s in block:
        yield s
        if s.key not in DATA_BLOCKS:
            yield from statements(s.block or ())


def listed_lines(conf: Path) -> set[int]:
    return {u.line for u in translate(conf.read_text()).untranslated}


def inside_listed(stmt: Stmt, listed: set[int], tree: tuple[Stmt, ...]) -> bool:
    """The statement, or a block around it, is listed as not translated."""
    def walk(block: tuple[Stmt, ...], outer: bool) -> bool | None:
        for s in block:
            here = outer or s.line in listed
            if s is stmt:
                return here
            found = walk(s.block or (), here)
            if found is not None:
                return found
        return None
    return bool(walk(tree, False))


@pytest.mark.parametrize("conf", CONFS, ids=[p.stem for p in CONFS])
def test_nothing_is_dropped_silently(conf: Path) -> None:
    tree = parse(conf.read_text())
    listed = listed_lines(conf)
    silent = [f"{s.line}: {s.key}" for s in statements(tree)
              if s.key not in TRANSLATED and not inside_listed(s, listed, tree)]
    assert silent == []


def test_tokenizer_comments_quotes_and_braces() -> None:
    toks = list(tokenize('a "b c" {d}# x\n! all comment\ne "f#g"! h\n'))
    assert [(t.text, t.line) for t in toks] == [("a", 1), ("b c", 1), ("{", 1), ("d", 1), ("}", 1),
                                               ("e", 3), ("f#g", 3)]
    tree = parse("real_server 198.18.1.2 80\n{\n  weight 3\n}\nurl { path / }\n")
    assert tree == (Stmt("real_server", ("198.18.1.2", "80"), 1, (Stmt("weight", ("3",), 3),)),
                    Stmt("url", (), 5, (Stmt("path", ("/",), 5),)))


def test_checker_defaults_and_overrides() -> None:
    imp = translate("""virtual_server 198.18.0.10 80 {
  delay_loop 7
  connect_timeout 4
  real_server 198.18.1.2 80 {
    connect_timeout 2
    HTTP_GET { url { path /a } url { path /b } delay_loop 3 }
  }
}
""")
    hc = imp.services[0]["dests"][0]["healthcheck"]
    assert (hc["interval"], hc["timeout"], hc["path"], hc["on_failure"]) == (3, 2, "/a", "remove")
    assert [(u.line, u.why.startswith("one path per check")) for u in imp.untranslated] == [(6, True)]


def test_addresses_it_cannot_use_are_listed_not_written() -> None:
    imp = translate("""virtual_server 2001:db8::zz 80 {
  real_server 198.18.1.2 80 {
  }
}
virtual_server 198.18.0.10 http {
}
virtual_server 198.18.0.11 80 {
  real_server www.example.test 80 {
  }
  real_server 198.18.1.3 80 {
  }
}
""")
    assert [(u.line, u.why) for u in imp.untranslated] == [
        (1, "not an IP address: 2001:db8::zz (names are not resolved)"), (5, "not a port: http"),
        (8, "not an IP address: www.example.test (names are not resolved)")]
    (svc,) = config_from_dict(imp.document()).services
    assert [d.address for d in svc.dests] == ["198.18.1.3"]


def test_ipv6_virtual_servers_translate() -> None:
    imp = translate("""virtual_server 2001:db8::10 443 {
  lb_algo wrr
  lb_kind NAT
  persistence_timeout 600
  real_server fd00:2::1 8443 {
    weight 3
    TCP_CHECK { connect_timeout 2 }
  }
  real_server fd00:2::2 8443 {
  }
}
virtual_server_group v6 {
  2001:db8::20 80
  2001:db8::21-29 80
}
virtual_server group v6 {
  real_server fd00:2::3 80 {
  }
}
""")
    svcs = config_from_dict(imp.document()).services
    web = next(x for x in svcs if x.port == 443)
    assert (web.vip, web.scheduler, web.forward) == ("2001:db8::10", "wrr", "nat")
    assert [(d.address, d.port, d.weight) for d in web.dests] == [("fd00:2::1", 8443, 3),
                                                                  ("fd00:2::2", 8443, 1)]
    assert web.dests[0].healthcheck is not None
    assert {x.vip for x in svcs if x.port == 80} == {"2001:db8::20"}  # the range is listed, not guessed
    assert [u.why for u in imp.untranslated] == [
        "IPv6 address ranges are not supported (list the addresses): 2001:db8::21-29"]
