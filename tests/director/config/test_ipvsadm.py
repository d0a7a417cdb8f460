"""ipvsadm rules: `ipvsadm -S -n` output read back into the service config, and written from it."""

from __future__ import annotations

from director.config.ipvsadm import format_rules, parse_rules, running_documents
from director.config.services import config_from_dict, parse_config

# what `ipvsadm -S -n` prints for a box with a persistent NAT web service, DR DNS, a TUN dest
SAVED = """\
-A -t 198.18.0.10:80 -s wlc -p 300 -M 255.255.255.0
-a -t 198.18.0.10:80 -r 198.18.1.2:8080 -m -w 2
-a -t 198.18.0.10:80 -r 198.18.1.3:8080 -m -w 1
-A -u 198.18.0.11:53 -s rr -o
-a -u 198.18.0.11:53 -r 198.18.1.4:53 -g -w 1
-a -u 198.18.0.11:53 -r 198.18.1.5:53 -i -w 0
"""


def test_saved_rules_become_a_valid_config() -> None:
    rules = parse_rules(SAVED)
    assert rules.problems == [] and not rules.clear
    cfg = config_from_dict(rules.document())
    web, dns = cfg.services
    assert (web.name, web.protocol, web.vip, web.port, web.scheduler) == (
        "tcp-198.18.0.10-80", "tcp", "198.18.0.10", 80, "wlc")
    assert web.persistence is not None and (web.persistence.timeout, web.persistence.netmask) == (
        300, "255.255.255.0")
    assert web.forward == "nat" and [(d.address, d.port, d.weight) for d in web.dests] == [
        ("198.18.1.2", 8080, 2), ("198.18.1.3", 8080, 1)]
    assert dns.forward == "dr" and dns.persistence is None and dns.ops and not web.ops
    assert [(d.address, d.forward, d.weight) for d in dns.dests] == [
        ("198.18.1.4", None, 1), ("198.18.1.5", "tun", 0)]


def test_round_trip_through_rules_keeps_every_expressible_field() -> None:
    cfg = config_from_dict(parse_rules(SAVED).document())
    text, dropped = format_rules(cfg)
    assert text == SAVED and dropped == []
    again = config_from_dict(parse_rules(text).document())
    assert again == cfg


def test_format_lists_what_rules_cannot_carry() -> None:
    cfg = parse_config("""
timeouts: {tcp: 600, tcpfin: 60, udp: 30}
services:
  - name: web
    protocol: tcp
    vip: 198.18.0.10
    port: 80
    scheduler: sh
    scheduler_options: {port: true, tab_bits: 10}
    expire_nodest_conn: true
    dests:
      - {address: 198.18.1.2, port: 8080, u_threshold: 100, l_threshold: 50, healthcheck: {type: tcp}}
""")
    text, dropped = format_rules(cfg)
    assert text.splitlines() == ["--set 600 60 30", "-A -t 198.18.0.10:80 -s sh -b sh-port",
                                 "-a -t 198.18.0.10:80 -r 198.18.1.2:8080 -m -w 1 -x 100 -y 50"]
    assert dropped == ["service web: scheduler_options {'tab_bits': 10}", "service web: expire_nodest_conn",
                       "service web: the health check of dest 198.18.1.2:8080"]
    back = config_from_dict(parse_rules(text).document())
    assert back.timeouts is not None and back.timeouts.tcp == 600
    assert back.services[0].dests[0].u_threshold == 100 and back.services[0].sched_opts == {"port": True}


def test_commands_replay_in_order_with_ipvsadm_defaults() -> None:
    rules = parse_rules("""
# a hand-written ipvsadm -R script
ipvsadm -C
-A -t 198.18.0.10:80
-a -t 198.18.0.10:80 -r 198.18.1.2
-a -t 198.18.0.10:80 -r 198.18.1.3:80 -w 5
-e -t 198.18.0.10:80 -r 198.18.1.3:80 -w 7
-E -t 198.18.0.10:80 -s rr --persistent
-A --tcp-service=198.18.0.10:443 --scheduler=lc
-a -t 198.18.0.10:443 -r 198.18.1.9:443
-d -t 198.18.0.10:80 -r 198.18.1.2:80
-D -t 198.18.0.10:443
--set 0 0 45
""")
    assert rules.problems == [] and rules.clear and rules.timeouts == {"udp": 45}
    (svc,) = config_from_dict(rules.document()).services
    assert (svc.scheduler, svc.forward) == ("rr", "dr")  # ipvsadm's default forwarding is -g
    assert svc.persistence is not None and svc.persistence.timeout == 300
    assert [(d.address, d.port, d.weight) for d in svc.dests] == [("198.18.1.3", 80, 7)]


def test_untranslatable_lines_are_reported_with_their_number() -> None:
    rules = parse_rules("""-A -t 198.18.0.10:80 -s wlc
-A -f 5 -s rr
-a -f 5 -r 198.18.1.2:80 -g
-A -t [2001:db8::1:80 -s rr
-A -t www.example.com:http -s rr
-a -t 198.18.0.10:80 -r 198.18.1.2:80 -g --frobnicate
-a -t 198.18.0.99:80 -r 198.18.1.2:80
-A -t 198.18.0.10:81 -s rr -6
-A -t 198.18.0.10:82 -s rr --pe sip
-a -t 198.18.0.10:80 -r 198.18.1.2:80 -w heavy
-a -t 198.18.0.10:80 -r 198.18.1.2:80 -m -w 1
""")
    lines = [p.split(":")[0] for p in rules.problems]
    assert lines == [f"line {n}" for n in range(2, 11)], rules.problems
    text = "\n".join(rules.problems)
    for needle in ("fwmark 5: its selectors", "write [IPV6]:PORT",
                   "numeric addresses and ports (ipvsadm -S -n)", "unknown option '--frobnicate'",
                   "no service tcp/198.18.0.99:80", "-6 with the IPv4 service",
                   "--pe not supported", "weight must be an integer"):
        assert needle in text
    (svc,) = config_from_dict(rules.document()).services  # what did translate is kept
    assert [(d.address, d.forward) for d in svc.dests] == [("198.18.1.2", None)] and svc.forward == "nat"


def test_restore_onto_running_keeps_names_and_what_ipvsadm_cannot_say() -> None:
    running = parse_config("""
services:
  - name: web
    protocol: tcp
    vip: 198.18.0.10
    port: 80
    expire_nodest_conn: true
    dests:
      - {address: 198.18.1.2, port: 8080, healthcheck: {type: tcp, interval: 5}}
""")
    rules = parse_rules(SAVED, running_documents(running))
    web = config_from_dict(rules.document()).services[0]
    assert web.name == "web" and web.expire_nodest_conn and web.scheduler == "wlc"
    hc = web.dests[0].healthcheck
    assert hc is not None and hc.interval == 5 and web.dests[1].healthcheck is None


GROUP = """
services:
  - name: shop
    fwmark: 7
    group:
      - {protocol: tcp, vip: 198.18.0.10, port: 80}
      - {protocol: tcp, vip: 198.18.0.10, port: 443}
    persistence: {timeout: 600}
    expire_quiescent_template: true
    dests: [{address: 198.18.1.2}, {address: 198.18.1.3, weight: 2}]
"""


def test_fwmark_services_round_trip_with_their_running_selectors() -> None:
    cfg = parse_config(GROUP)
    text, dropped = format_rules(cfg)
    assert text.splitlines() == ["-A -f 7 -s wlc -p 600", "-a -f 7 -r 198.18.1.2:0 -m -w 1",
                                 "-a -f 7 -r 198.18.1.3:0 -m -w 2"]
    assert dropped == ["service shop: expire_quiescent_template",
                       "service shop: the group selectors of fwmark 7 (on an IPVS box, the iptables rules "
                       "that set the mark)"]
    rules = parse_rules(text + "-a -f 7 -r 198.18.1.4 -m\n", running_documents(cfg))
    assert rules.problems == []
    (shop,) = config_from_dict(rules.document()).services
    assert (shop.name, shop.fwmark, [x.port for x in shop.group]) == ("shop", 7, [80, 443])
    assert shop.expire_quiescent_template
    assert [(d.address, d.port) for d in shop.dests][-1] == ("198.18.1.4", 0)
    unknown = parse_rules(text)  # no running service knows which packets carry mark 7
    assert [p.split(":")[0] for p in unknown.problems] == ["line 1", "line 2", "line 3"]
    assert "add the service with its group:" in unknown.problems[0]


V6_RULES = """-A -t [2001:db8::10]:80 -s rr -p 300 -M 64
-a -t [2001:db8::10]:80 -r [fd00:2::1]:8080 -m -w 2
-a -t [2001:db8::10]:80 -r [fd00:2::2]:8080 -m -w 1
-A -u [2001:DB8::10]:53 -s wrr -6
-a -u [2001:db8::10]:53 -r [fd00:2::1]:53 -g -w 1
"""


def test_ipv6_rules_read_in_ipvsadm_layout_and_written_back_the_same() -> None:
    rules = parse_rules(V6_RULES)
    assert rules.problems == []
    web, dns = config_from_dict(rules.document()).services
    assert (web.name, web.vip, web.port) == ("tcp-2001.db8..10-80", "2001:db8::10", 80)
    assert web.persistence is not None and web.persistence.netmask == "ffff:ffff:ffff:ffff::"
    assert [(d.address, d.port, d.weight) for d in web.dests] == [("fd00:2::1", 8080, 2),
                                                                  ("fd00:2::2", 8080, 1)]
    assert (dns.vip, dns.protocol, dns.dests[0].address) == ("2001:db8::10", "udp", "fd00:2::1")
    text, _dropped = format_rules(config_from_dict(rules.document()))
    assert text == V6_RULES.replace("DB8", "db8").replace(" -6", "")  # canonical, -6 implied by the address
    assert config_from_dict(parse_rules(text).document()) == config_from_dict(rules.document())
