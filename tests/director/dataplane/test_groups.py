"""Service groups (fwmark semantics) in the packet core: selectors, one template over ports and VIPs,
the packet's port kept, ARP for every group VIP, BYPASS for a group VIP's other ports, sync to a backup.

Services come from YAML through ``parse_config`` + ``apply_to_services`` (the real config path) onto a
real ConnTable with a fake clock; frames are scapy-built (no sockets).
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from director.dataplane.core import EXT, INT
from director.dataplane.packet import Drop, mac_bytes
from director.types import ConnFlags
from syncd.apply import BackupApplier
from syncd.convert import decode_sync_message, encode_batch
from syncd.model import BatchMsg, SyncKind, update_from_conn
from tests.director.dataplane.test_sorry_ops import CLIENT, CLIENT_MAC, MAC, RS, VMAC, make_node

VIP1, VIP2 = "198.18.0.100", "198.18.0.101"


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def group_yaml(persistent: bool = True, selectors: str = "", scheduler: str = "rr") -> str:
    sels = selectors or (f"      - {{protocol: tcp, vip: {VIP1}, port: 80}}\n"
                         f"      - {{protocol: tcp, vip: {VIP1}, port: 443}}\n"
                         f"      - {{protocol: tcp, vip: {VIP2}, ports: 10000-10100}}\n"
                         f"      - {{protocol: udp, vip: {VIP2}, port: 53}}\n")
    rows = "".join(f"      - {{address: {a}}}\n" for a in RS)
    persistence = "    persistence: {timeout: 300, netmask: 255.255.255.0}\n" if persistent else ""
    return (f"services:\n  - name: shop\n    fwmark: 7\n    scheduler: {scheduler}\n    group:\n{sels}"
            f"{persistence}    dests:\n{rows}")


def tcp(vip: str, dport: int, sport: int, src: str = CLIENT, flags: str = "S") -> Ether:
    return Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=src, dst=vip) / TCP(sport=sport, dport=dport, flags=flags)


def test_one_template_binds_a_client_network_over_every_selector() -> None:
    node = make_node(group_yaml())
    svc = node.svc
    assert svc.fwmark == 7 and svc.key == (6, 0, 0, 7)
    first = node.send(tcp(VIP1, 80, 41000), EXT)
    assert first is not None and first[0] == INT
    dest = first[1][IP].dst
    for vip, port, sport in ((VIP1, 443, 41001), (VIP2, 10000, 41002), (VIP2, 10100, 41003)):
        out = node.send(tcp(vip, port, sport), EXT)
        assert out is not None and out[1][IP].dst == dest  # sticky over ports and VIPs together
        assert out[1][TCP].dport == port  # dest port 0: the packet's port is kept
    other_net = node.send(tcp(VIP1, 80, 41004, src="198.18.3.10"), EXT)
    assert other_net is not None and other_net[1][IP].dst != dest  # rr: the next client net, next dest
    (tpl,) = [c for c in node.table if c.flags & ConnFlags.TEMPLATE and c.caddr == _i(CLIENT) & 0xFFFFFF00]
    assert (tpl.vaddr, tpl.vport, tpl.fwmark, tpl.n_control) == (7, 0, 7, 4)  # IPVS: the mark as vaddr
    conn = node.table.in_get(6, _i(CLIENT), 41002, _i(VIP2), 10000)
    assert conn is not None and conn.fwmark == 7 and conn.dest is not None and conn.dest.svc is svc
    reply = (Ether(src=MAC[dest], dst=VMAC) / IP(src=dest, dst=CLIENT) /
             TCP(sport=10000, dport=41002, flags="SA"))
    back = node.send(reply, INT)
    assert back is not None and (back[1][IP].src, back[1][TCP].sport) == (VIP2, 10000)


def test_udp_selector_in_the_same_group_and_rr_without_persistence() -> None:
    node = make_node(group_yaml(persistent=False))
    seen: Counter[str] = Counter()
    for sport in range(42000, 42006):
        out = node.send(tcp(VIP1, 443, sport), EXT)
        assert out is not None
        seen[out[1][IP].dst] += 1
    assert seen == dict.fromkeys(RS, 2)
    dns = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=CLIENT, dst=VIP2) / UDP(sport=5300, dport=53) / b"q"
    out = node.send(dns, EXT)
    assert out is not None and out[1][UDP].dport == 53 and node.svc.counters.conns == 7


def test_group_vips_are_owned_and_other_ports_are_bypass() -> None:
    node = make_node(group_yaml())
    assert node.services.vaddrs() == {_i(VIP1), _i(VIP2)}
    ask = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT, pdst=VIP2)
    answer = node.send(ask, EXT)
    assert answer is not None and answer[1][ARP].op == 2 and answer[1][ARP].psrc == VIP2
    for port in (81, 9999, 10101):
        assert node.send(tcp(VIP2 if port > 9000 else VIP1, port, 43000), EXT) is None
    assert node.drops(Drop.BYPASS) == 3 and len(node.table) == 0


def test_group_selectors_follow_the_config() -> None:
    node = make_node(group_yaml())
    live = node.svc
    node.apply(group_yaml(selectors=f"      - {{protocol: tcp, vip: {VIP1}, ports: 8000-8010}}\n"))
    assert node.svc is live  # the same live service, re-indexed
    assert node.services.get(6, _i(VIP1), 8005) is live and node.services.get(6, _i(VIP1), 80) is None
    assert node.services.vaddrs() == {_i(VIP1)}
    node.apply(f"services:\n  - {{name: web, protocol: tcp, vip: {VIP1}, port: 80,"
               f" dests: [{{address: {RS[0]}}}]}}\n")
    assert [s.fwmark for s in node.services] == [0] and node.services.get(6, _i(VIP1), 8005) is None


def test_group_conn_and_template_sync_to_the_backups_group() -> None:
    text = group_yaml()
    master, backup = make_node(text), make_node(text)
    assert master.send(tcp(VIP2, 10050, 44000), EXT) is not None
    entries = sorted(master.table, key=lambda c: not c.flags & ConnFlags.TEMPLATE)  # template first
    ups = [update_from_conn(SyncKind.NEW, c, master.now[0]) for c in entries]
    msg = decode_sync_message(encode_batch(1, 1, 1, 0, ups))
    assert isinstance(msg, BatchMsg)
    BackupApplier(backup.table, backup.services).apply(msg.updates)
    copy = backup.table.in_get(6, _i(CLIENT), 44000, _i(VIP2), 10050)
    assert copy is not None and copy.fwmark == 7 and copy.dest is not None and copy.dest.svc is backup.svc
    assert copy.control is not None and copy.control.vaddr == 7 and copy.control.dest is copy.dest
    # the backup, taking over, keeps the client on the same dest for another selector
    out = backup.send(tcp(VIP1, 80, 44001), EXT)
    assert out is not None and _i(out[1][IP].dst) == copy.daddr




def test_group_is_listed_as_an_fwm_row_like_ipvsadm() -> None:
    from director.admin import cli_format
    from director.admin.convert import service_pb
    from director.admin.views import service_view

    node = make_node(group_yaml())
    assert node.send(tcp(VIP1, 80, 45000), EXT) is not None
    lines = cli_format.services_table([service_pb(service_view(node.svc))]).splitlines()
    assert lines[3] == "FWM  7 rr persistent 300 mask 255.255.255.0"
    assert [line.split()[1] for line in lines[4:]] == [f"{a}:0" for a in RS]


def test_tcp_and_udp_selectors_stick_together_with_same_protocol_templates_that_sync() -> None:
    text = group_yaml()
    master, backup = make_node(text), make_node(text)
    first = master.send(tcp(VIP1, 443, 46000), EXT)
    assert first is not None
    dns = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=CLIENT, dst=VIP2) / UDP(sport=5300, dport=53) / b"q"
    out = master.send(dns, EXT)
    assert out is not None and out[1][IP].dst == first[1][IP].dst  # the UDP selector follows the TCP one
    templates = {c.protocol: c for c in master.table if c.flags & ConnFlags.TEMPLATE}
    assert set(templates) == {6, 17} and templates[6].dest is templates[17].dest
    conns = [c for c in master.table if not c.flags & ConnFlags.TEMPLATE]
    assert all(c.control is templates[c.protocol] for c in conns)  # each child under its own protocol's
    ups = [update_from_conn(SyncKind.NEW, c, master.now[0]) for c in [*templates.values(), *conns]]
    msg = decode_sync_message(encode_batch(1, 1, 1, 0, ups))
    assert isinstance(msg, BatchMsg)
    applier = BackupApplier(backup.table, backup.services)
    assert applier.apply(msg.updates) == 4 and applier.stats["apply_errors"] == 0
    copy = backup.table.in_get(17, _i(CLIENT), 5300, _i(VIP2), 53)
    assert copy is not None and copy.control is not None and copy.control.protocol == 17


VIP6A, VIP6B = "2001:db8::10", "2001:db8::11"
RS6 = {"fd00:2::1": "02:00:00:00:06:01", "fd00:2::2": "02:00:00:00:06:02"}
CLIENT6 = "2001:db8:1::77"


def group6_yaml() -> str:
    rows = "".join(f'      - {{address: "{a}"}}\n' for a in RS6)
    return ("services:\n  - name: shop6\n    fwmark: 9\n    scheduler: rr\n    group:\n"
            f'      - {{protocol: tcp, vip: "{VIP6A}", port: 80}}\n'
            f'      - {{protocol: tcp, vip: "{VIP6A}", port: 443}}\n'
            f'      - {{protocol: tcp, vip: "{VIP6B}", ports: 10000-10100}}\n'
            f"    persistence: {{timeout: 300, netmask: 64}}\n    dests:\n{rows}")


def tcp6(vip: str, dport: int, sport: int, src: str = CLIENT6) -> Ether:
    return Ether(src=CLIENT_MAC, dst=VMAC) / IPv6(src=src, dst=vip) / TCP(sport=sport, dport=dport, flags="S")


def test_an_ipv6_group_binds_a_client_prefix_over_every_selector_and_syncs() -> None:
    text = group6_yaml()
    master, backup = make_node(text), make_node(text)
    for node in (master, backup):
        for a, m in RS6.items():
            node.director.neigh[INT].learn(_i6(a), mac_bytes(m), node.now[0])
    first = master.send(tcp6(VIP6A, 80, 41000), EXT)
    assert first is not None and first[0] == INT
    dest = first[1][IPv6].dst
    for vip, port, sport in ((VIP6A, 443, 41001), (VIP6B, 10000, 41002), (VIP6B, 10100, 41003)):
        out = master.send(tcp6(vip, port, sport, src="2001:db8:1::99"), EXT)  # same /64, another host
        assert out is not None and out[1][IPv6].dst == dest and out[1][TCP].dport == port
    other = master.send(tcp6(VIP6A, 80, 41004, src="2001:db8:2::77"), EXT)
    assert other is not None and other[1][IPv6].dst != dest  # rr: the next prefix, the next dest
    (tpl,) = [c for c in master.table if c.flags & ConnFlags.TEMPLATE and c.caddr == _i6("2001:db8:1::")]
    assert (tpl.vaddr, tpl.fwmark, tpl.n_control) == (9 << 96, 9, 4)  # IPVS: htonl(mark) in an in6_addr
    assert master.send(tcp6(VIP6A, 81, 41005), EXT) is None and master.drops(Drop.BYPASS) == 1
    # sync: the backup gets the conns and the template, and keeps the prefix on the dest
    entries = sorted(master.table, key=lambda c: not c.flags & ConnFlags.TEMPLATE)
    msg = decode_sync_message(encode_batch(1, 1, 1, 0, [update_from_conn(SyncKind.NEW, c, 1000.0)
                                                         for c in entries]))
    assert isinstance(msg, BatchMsg)
    BackupApplier(backup.table, backup.services).apply(msg.updates)
    copy = backup.table.in_get(6, _i6(CLIENT6), 41000, _i6(VIP6A), 80)
    assert copy is not None and copy.fwmark == 9 and copy.control is not None
    out = backup.send(tcp6(VIP6B, 10050, 41006), EXT)
    assert out is not None and out[1][IPv6].dst == dest


def _i6(a: str) -> int:
    return int(ipaddress.IPv6Address(a))
