"""Sorry server, one-packet scheduling (ops), BYPASS and LOCALNODE in the packet core.

Services come from YAML through the real config path (``parse_config`` + ``apply_to_services``) onto a
real ConnTable with a fake clock; frames are built with scapy, expected frames too (no sockets).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from director.config.services import apply_to_services, parse_config
from director.dataplane.arp import vrrp_mac
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.packet import Drop
from director.services.service import ServiceTable, VirtualService
from director.table.conn import ConnTable
from director.table.events import EventKind
from director.types import ConnFlags, FwdMethod
from syncd.apply import BackupApplier
from syncd.convert import decode_sync_message, encode_batch
from syncd.model import BatchMsg, SyncKind, update_from_conn
from tests.director.dataplane.test_core import expect_out

VIP = "198.18.0.100"
GW = "198.18.2.254"
RS = ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
SORRY = "198.18.2.9"
HOSTS = [*RS, SORRY]
MAC = {a: f"02:00:00:00:02:{i + 1:02x}" for i, a in enumerate(HOSTS)}
CLIENT = "198.18.1.10"
CLIENT_MAC = "02:00:00:00:01:01"
VMAC = "00:00:5e:00:01:01"


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def _s(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


def yaml_of(protocol: str = "tcp", port: int = 80, extra: str = "", dests: tuple[str, ...] = tuple(RS),
            scheduler: str = "rr") -> str:
    rows = "".join(f"      - {{address: {a}, port: 8080}}\n" for a in dests)
    return (f"services:\n  - name: s\n    protocol: {protocol}\n    vip: {VIP}\n    port: {port}\n"
            f"    scheduler: {scheduler}\n{extra}    dests:\n{rows}")


@dataclass
class Node:
    director: Director
    table: ConnTable
    services: ServiceTable
    now: list[float] = field(default_factory=lambda: [1000.0])

    @property
    def svc(self) -> VirtualService:
        (svc,) = list(self.services)
        return svc

    def send(self, pkt: Ether, side: int) -> tuple[int, Ether] | None:
        a = self.director.handle(bytearray(bytes(pkt)), side)
        return None if a is None else (a[0], Ether(bytes(a[1])))

    def drops(self, reason: Drop) -> int:
        return self.director.counters[reason]

    def apply(self, text: str) -> None:
        apply_to_services(parse_config(text), self.services)


def make_node(text: str) -> Node:
    now = [1000.0]

    def clock() -> float:
        return now[0]

    table = ConnTable(clock)
    table.events.enabled = True
    services = ServiceTable()
    apply_to_services(parse_config(text), services)
    d = Director(table, services, clock, CoreConfig(vmac=vrrp_mac(1), gw_addrs=frozenset({_i(GW)})))
    d.set_active(True)
    for a in HOSTS:  # the real servers and the sorry server announce themselves
        d.handle(bytearray(bytes(Ether(src=MAC[a], dst="ff:ff:ff:ff:ff:ff") /
                                 ARP(op=1, hwsrc=MAC[a], psrc=a, pdst=GW))), INT)
    return Node(d, table, services, now)


def syn(sport: int = 40000, src: str = CLIENT, flags: str = "S") -> Ether:
    return Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=src, dst=VIP) / TCP(sport=sport, dport=80, flags=flags)


def datagram(sport: int = 5300, payload: bytes = b"q") -> Ether:
    return Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=CLIENT, dst=VIP) / UDP(sport=sport, dport=53) / payload


def reply(rs: str, dport: int, proto: str = "udp", sport: int = 8080, payload: bytes = b"r") -> Ether:
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else TCP(sport=sport, dport=dport, flags="SA")
    return Ether(src=MAC[rs], dst=VMAC) / IP(src=rs, dst=CLIENT) / l4 / payload


def quiesce_all(node: Node) -> None:
    for d in list(node.svc.dests):
        node.svc.edit_dest(d, weight=0)


# ---- sorry server ----------------------------------------------------------------------------


def test_sorry_server_takes_new_conns_only_while_no_dest_is_usable() -> None:
    node = make_node(yaml_of(extra=f"    sorry_server: {SORRY}:8080\n"))
    sorry = node.svc.sorry
    assert sorry is not None and sorry not in node.svc.dests
    first = node.send(syn(40000), EXT)
    assert first is not None and first[1][IP].dst in RS  # a dest is usable: no sorry
    quiesce_all(node)
    out = node.send(syn(40001), EXT)
    assert out is not None and out[0] == INT
    assert (out[1][IP].dst, out[1][TCP].dport, out[1].dst) == (SORRY, 8080, MAC[SORRY])
    conn = node.table.in_get(6, _i(CLIENT), 40001, _i(VIP), 80)
    assert conn is not None and conn.dest is sorry and sorry.inactconns == 1
    assert (sorry.counters.conns, node.svc.counters.conns) == (1, 2)
    back = node.send(reply(SORRY, 40001, "tcp"), INT)  # the sorry server answers through the VIP
    assert back is not None and back[1][IP].src == VIP and back[1][TCP].sport == 80
    node.svc.edit_dest(node.svc.dests[1], weight=1)  # a dest returns
    new = node.send(syn(40002), EXT)
    assert new is not None and new[1][IP].dst == RS[1]
    old = node.send(syn(40001, flags="A"), EXT)  # the flow already on the sorry server stays there
    assert old is not None and old[1][IP].dst == SORRY
    assert sorry.counters.conns == 1 and node.drops(Drop.BYPASS) == 0


def test_sorry_server_also_when_all_dests_are_down_overloaded_or_none() -> None:
    node = make_node(yaml_of(extra=f"    sorry_server: {SORRY}\n    sorry_forwarding: dr\n",
                             dests=(RS[0],)))
    node.svc.dests[0].flags |= node.svc.dests[0].flags.OVERLOAD
    out = node.send(syn(40010), EXT)
    assert out is not None and out[1][IP].dst == VIP and out[1].dst == MAC[SORRY]  # DR: MACs only
    node.svc.remove_dest(node.svc.dests[0])  # health check "remove": no dest at all
    out = node.send(syn(40011), EXT)
    assert out is not None and out[1].dst == MAC[SORRY]
    assert node.svc.sorry is not None and node.svc.sorry.fwd == FwdMethod.DR
    assert node.svc.sorry.counters.conns == 2


def test_sorry_conns_make_no_template_so_clients_return_to_the_dests() -> None:
    node = make_node(yaml_of(extra=f"    sorry_server: {SORRY}:8080\n    persistence: {{timeout: 300}}\n"))
    quiesce_all(node)
    out = node.send(syn(40020), EXT)
    assert out is not None and out[1][IP].dst == SORRY
    assert node.table.template_count == 0
    node.svc.edit_dest(node.svc.dests[2], weight=1)
    out = node.send(syn(40021), EXT)
    assert out is not None and out[1][IP].dst == RS[2] and node.table.template_count == 1


def test_sorry_conn_syncs_and_binds_to_the_backups_sorry_dest() -> None:
    text = yaml_of(extra=f"    sorry_server: {SORRY}:8080\n")
    master, backup = make_node(text), make_node(text)
    quiesce_all(master)
    assert master.send(syn(40030), EXT) is not None
    (ev,) = [e for e in master.table.events.drain() if e.kind == EventKind.NEW]
    assert ev.snap.dest_key == master.svc.sorry.key  # type: ignore[union-attr]
    conn = master.table.in_get(6, _i(CLIENT), 40030, _i(VIP), 80)
    msg = decode_sync_message(encode_batch(1, 1, 1, 0, [update_from_conn(SyncKind.NEW, conn, master.now[0])]))
    assert isinstance(msg, BatchMsg)
    BackupApplier(backup.table, backup.services).apply(msg.updates)
    copy = backup.table.in_get(6, _i(CLIENT), 40030, _i(VIP), 80)
    assert copy is not None and copy.dest is backup.svc.sorry
    assert backup.services.find_dest(master.svc.sorry.key) is backup.svc.sorry  # type: ignore[union-attr]


def test_changing_the_sorry_server_retires_the_old_one() -> None:
    node = make_node(yaml_of(extra=f"    sorry_server: {SORRY}:8080\n"))
    old = node.svc.sorry
    node.apply(yaml_of(extra=f"    sorry_server: {SORRY}:8080\n"))  # same: kept
    assert node.svc.sorry is old
    node.apply(yaml_of(extra=f"    sorry_server: {SORRY}:8081\n"))
    assert node.svc.sorry is not old and old is not None and not old.flags & old.flags.AVAILABLE
    node.apply(yaml_of())
    assert node.svc.sorry is None
    quiesce_all(node)
    assert node.send(syn(40040), EXT) is None and node.drops(Drop.BYPASS) == 1


# ---- one-packet scheduling -------------------------------------------------------------------


def ops_node(extra: str = "", scheduler: str = "rr") -> Node:
    return make_node(yaml_of("udp", 53, "    ops: true\n" + extra, scheduler=scheduler))


def test_ops_schedules_every_datagram_and_keeps_no_entry() -> None:
    node = ops_node()
    per_dest: Counter[str] = Counter()
    for i in range(30):  # one client, one source port: every datagram scheduled on its own
        out = node.send(datagram(payload=bytes([i])), EXT)
        assert out is not None and out[0] == INT and out[1][UDP].dport == 8080
        per_dest[out[1][IP].dst] += 1
    assert per_dest == dict.fromkeys(RS, 10)
    assert len(node.table) == 0 and node.table.events.drain() == []  # nothing kept, nothing to sync
    assert [d.counters.conns for d in node.svc.dests] == [10, 10, 10]
    assert [d.counters.inpkts for d in node.svc.dests] == [10, 10, 10]
    assert all(d.inactconns == d.activeconns == 0 for d in node.svc.dests)


def test_ops_replies_are_translated_back_to_the_vip_without_an_entry() -> None:
    node = ops_node()
    unknown = node.send(reply(RS[0], 5300), INT)  # the client's MAC is not known yet: ARP for it
    assert unknown is not None and unknown[1].haslayer(ARP) and unknown[1][ARP].pdst == CLIENT
    assert node.send(datagram(), EXT) is not None  # (a datagram from the client teaches its MAC)
    for rs in RS:
        pkt = reply(rs, 5300, payload=b"answer")
        out = node.send(pkt, INT)
        assert out is not None and out[0] == EXT
        assert bytes(out[1]) == expect_out(pkt, 53)  # from the VIP and service port, TTL - 1
    assert [d.counters.outpkts for d in node.svc.dests] == [2, 1, 1]
    assert node.send(reply(RS[0], 5300, sport=8081), INT) is None  # not a dest's port
    assert node.send(reply(RS[0], 5300, proto="tcp"), INT) is None  # not UDP
    assert node.drops(Drop.NO_SERVICE) == 2 and len(node.table) == 0


def test_ops_with_a_sorry_server_and_with_dr() -> None:
    node = ops_node(f"    sorry_server: {SORRY}:8080\n")
    quiesce_all(node)
    out = node.send(datagram(), EXT)
    assert out is not None and out[1][IP].dst == SORRY and len(node.table) == 0
    back = node.send(reply(SORRY, 5300), INT)
    assert back is not None and back[1][IP].src == VIP and back[1][UDP].sport == 53
    dr = make_node(yaml_of("udp", 53, "    ops: true\n    forward: dr\n").replace("port: 8080", "port: 53"))
    seen = {dr.send(datagram(), EXT)[1].dst for _ in range(3)}  # type: ignore[index]
    assert seen == {MAC[a] for a in RS} and len(dr.table) == 0


def test_ops_reply_index_follows_the_config() -> None:
    node = ops_node()
    assert set(node.services.ops_dest) == {(17, _i(a), 8080) for a in RS}
    node.apply(yaml_of("udp", 53, "    ops: true\n", dests=(RS[0],)))
    assert set(node.services.ops_dest) == {(17, _i(RS[0]), 8080)}
    node.apply(yaml_of("udp", 53))  # ops off: replies need entries again
    assert node.services.ops_dest == {}
    assert node.send(reply(RS[0], 5300), INT) is None
    out = node.send(datagram(), EXT)
    assert out is not None and len(node.table) == 1  # an ordinary UDP conn


# ---- LOCALNODE and BYPASS --------------------------------------------------------------------


def test_loopback_dest_is_localnode_and_dropped_with_its_own_reason() -> None:
    node = make_node(yaml_of(dests=("127.0.0.1",)))
    (dest,) = node.svc.dests
    assert dest.fwd == FwdMethod.LOCALNODE and dest.conn_flags == ConnFlags.LOCALNODE
    assert node.send(syn(40050), EXT) is None
    assert node.drops(Drop.LOCALNODE) == 1 and node.drops(Drop.NO_NEIGH) == 0


def test_bypass_counts_vip_traffic_with_no_service_or_no_dest() -> None:
    node = make_node(yaml_of())
    udp = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=CLIENT, dst=VIP) / UDP(sport=1, dport=80)
    assert node.send(udp, EXT) is None  # the VIP listens on TCP 80 only
    quiesce_all(node)
    assert node.send(syn(40060), EXT) is None
    assert node.drops(Drop.BYPASS) == 2
    assert (node.drops(Drop.NO_DEST), node.drops(Drop.NO_SERVICE)) == (0, 0)
    assert "bypass" in node.director.counters.as_dict()
    assert _s(node.svc.addr) == VIP


# ---- visible to the operator -------------------------------------------------------------------


def test_sorry_server_and_ops_are_listed_and_counted_in_metrics() -> None:
    from director.admin import cli_format, metrics
    from director.admin.convert import service_pb
    from director.admin.views import service_view

    node = make_node(yaml_of(extra=f"    sorry_server: {SORRY}:8080\n"))
    quiesce_all(node)
    assert node.send(syn(40070), EXT) is not None
    view = service_view(node.svc)
    assert [d.sorry for d in view.dests] == [False, False, False, True]
    assert view.dests[-1].counters.conns == 1 and view.dests[-1].inactconns == 1
    text = cli_format.services_table([service_pb(view)])
    (line,) = [x for x in text.splitlines() if SORRY in x]
    assert line.split() == ["->", f"{SORRY}:8080", "Masq", "1", "0", "1", "sorry"]
    fams = {f.name: f for f in metrics._dests((view,))}
    sorry_rows = {s.labels["dest"]: s.value for s in fams["lbd_dest_sorry"].samples}
    assert sorry_rows == {**{f"{a}:8080": 0 for a in RS}, f"{SORRY}:8080": 1}
    conns = {s.labels["dest"]: s.value for s in fams["lbd_dest_scheduled_connections"].samples
             if s.name.endswith("_total")}
    assert conns[f"{SORRY}:8080"] == 1
    ops = make_node(yaml_of("udp", 53, "    ops: true\n"))
    assert cli_format.services_table([service_pb(service_view(ops.svc))]).splitlines()[3] == (
        f"UDP  {VIP}:53 rr ops")
