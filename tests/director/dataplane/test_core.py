"""The packet path on a real ConnTable with a fake clock, frames built with scapy (no sockets)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.l2 import ARP, Ether

from director.dataplane.arp import vrrp_mac
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.neigh import NeighEvent
from director.dataplane.packet import Drop
from director.services.sched import registry
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import ConnTable
from director.table.tcp import TcpState
from director.types import ConnFlags, FwdMethod, SvcFlags

VIP = "198.18.0.100"
GW = "198.18.2.254"
DIR_INT = "198.18.2.253"
RS = ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
RS_MAC = ["02:00:00:00:02:01", "02:00:00:00:02:02", "02:00:00:00:02:03"]
CLIENT_MAC = "02:00:00:00:01:01"
VMAC = "00:00:5e:00:01:01"


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


@dataclass
class Lab:
    director: Director
    table: ConnTable
    svc: VirtualService
    now: list[float] = field(default_factory=lambda: [1000.0])

    def advance(self, dt: float) -> None:
        self.now[0] += dt
        self.table.tick()

    def dest(self, addr: str) -> Dest:
        d = self.svc.find_dest(_i(addr), 8080 if self.svc.port else 0)
        assert d is not None
        return d


def make_lab(fwd: FwdMethod = FwdMethod.NAT, sched: str = "rr", proto: int = 6, port: int = 80,
             persistent: bool = False, ndests: int = 2, **cfg_kw: object) -> Lab:
    now = [1000.0]

    def clock() -> float:
        return now[0]

    table = ConnTable(clock)
    services = ServiceTable()
    svc = VirtualService(protocol=proto, addr=_i(VIP), port=port, scheduler=registry.create(sched),
                         flags=SvcFlags.PERSISTENT if persistent else SvcFlags(0), timeout=300.0,
                         netmask=0xFFFFFF00)
    for a in RS[:ndests]:
        svc.add_dest(Dest(svc, _i(a), 8080 if port else 0, fwd=fwd))
    services.add(svc)
    cfg = CoreConfig(vmac=vrrp_mac(1), int_addr=_i(DIR_INT), gw_addrs=frozenset({_i(GW)}),
                     **cfg_kw)  # type: ignore[arg-type]
    d = Director(table, services, clock, cfg)
    assert d.set_active(True)  # gratuitous ARPs
    lab = Lab(d, table, svc, now)
    for a, m in zip(RS, RS_MAC, strict=True):  # the real servers announce themselves
        assert d.handle(bytearray(bytes(Ether(src=m, dst="ff:ff:ff:ff:ff:ff") /
                                        ARP(op=1, hwsrc=m, psrc=a, pdst=GW))), INT) is not None
    return lab


def client_pkt(flags: str = "S", sport: int = 40000, src: str = "198.18.1.10", dport: int = 80,
               payload: bytes = b"", ttl: int = 64) -> Ether:
    return (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=src, dst=VIP, ttl=ttl) /
            TCP(sport=sport, dport=dport, flags=flags, seq=1000) / payload)


def server_pkt(rs: str, flags: str = "SA", dport: int = 40000, dst: str = "198.18.1.10",
               payload: bytes = b"") -> Ether:
    return (Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst=dst, ttl=64) /
            TCP(sport=8080, dport=dport, flags=flags, seq=5000) / payload)


def expect_in(pkt: Ether, rs: str, dport: int = 8080) -> bytes:
    e = Ether(bytes(pkt))
    e.src, e.dst = VMAC, RS_MAC[RS.index(rs)]
    e[IP].dst = rs
    e[IP].ttl -= 1
    del e[IP].chksum
    l4 = e[TCP] if TCP in e else e[UDP]
    l4.dport = dport
    del l4.chksum
    return bytes(e)


def expect_out(pkt: Ether, vport: int = 80, dmac: str = CLIENT_MAC) -> bytes:
    e = Ether(bytes(pkt))
    e.src, e.dst = VMAC, dmac
    e[IP].src = VIP
    e[IP].ttl -= 1
    del e[IP].chksum
    l4 = e[TCP] if TCP in e else e[UDP]
    l4.sport = vport
    del l4.chksum
    return bytes(e)


def send(lab: Lab, pkt: Ether, side: int) -> tuple[int, bytes] | None:
    a = lab.director.handle(bytearray(bytes(pkt)), side)
    return None if a is None else (a[0], bytes(a[1]))


def drops(lab: Lab, reason: Drop) -> int:
    return lab.director.counters[reason]


# ---- NAT -----------------------------------------------------------------------------------


def test_nat_tcp_flow_both_directions_byte_exact() -> None:
    lab = make_lab()
    syn = client_pkt("S")
    out = send(lab, syn, EXT)
    assert out is not None and out[0] == INT
    conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert conn is not None and conn.state == TcpState.SYN_RECV
    rs = ipaddress.IPv4Address(conn.daddr).compressed
    assert out[1] == expect_in(syn, rs)
    synack = server_pkt(rs, "SA")
    assert send(lab, synack, INT) == (EXT, expect_out(synack))
    ack = client_pkt("A", payload=b"GET / HTTP/1.0\r\n\r\n")
    assert send(lab, ack, EXT) == (INT, expect_in(ack, rs))
    assert conn.state == TcpState.ESTABLISHED
    dest = lab.dest(rs)
    assert (dest.activeconns, dest.inactconns) == (1, 0)
    data = server_pkt(rs, "PA", payload=b"HTTP/1.0 200 OK\r\n\r\n" * 20)
    assert send(lab, data, INT) == (EXT, expect_out(data))
    # counters: 2 in, 2 out, bytes = IP lengths; service and dest agree
    for c in (dest.counters, lab.svc.counters):
        assert (c.conns, c.inpkts, c.outpkts) == (1, 2, 2)
        assert c.inbytes == len(syn[IP]) + len(ack[IP])
        assert c.outbytes == len(synack[IP]) + len(data[IP])
    assert conn.in_pkts == 2
    # close: client FIN, server FIN+ACK, client ACK
    assert send(lab, client_pkt("FA"), EXT) is not None
    assert conn.state == TcpState.CLOSE_WAIT
    assert send(lab, server_pkt(rs, "FA"), INT) is not None
    assert send(lab, client_pkt("A"), EXT) is not None
    assert conn.state in (TcpState.TIME_WAIT, TcpState.CLOSE, TcpState.LAST_ACK)
    assert (dest.activeconns, dest.inactconns) == (0, 1)


def test_many_random_flows_equal_scapy() -> None:
    lab = make_lab(ndests=3)
    rng = random.Random(5)
    for _ in range(150):
        src = f"198.18.1.{rng.randrange(1, 250)}"
        sport = rng.randrange(1024, 65536)
        if lab.table.in_get(6, _i(src), sport, _i(VIP), 80) is not None:
            continue
        payload = rng.randbytes(rng.randrange(0, 200))
        syn = client_pkt("S", sport=sport, src=src, payload=payload, ttl=rng.randrange(2, 256))
        out = send(lab, syn, EXT)
        conn = lab.table.in_get(6, _i(src), sport, _i(VIP), 80)
        assert out is not None and conn is not None
        rs = ipaddress.IPv4Address(conn.daddr).compressed
        assert out == (INT, expect_in(syn, rs))
        reply = server_pkt(rs, "SA", dport=sport, dst=src, payload=rng.randbytes(rng.randrange(0, 200)))
        assert send(lab, reply, INT) == (EXT, expect_out(reply))


def test_rr_spreads_new_conns_over_dests() -> None:
    lab = make_lab(ndests=3)
    for port in range(30000, 30030):
        assert send(lab, client_pkt("S", sport=port), EXT) is not None
    assert sorted(lab.dest(a).inactconns for a in RS) == [10, 10, 10]
    assert lab.svc.counters.conns == 30


def test_udp_first_datagram_creates_conn_and_reply_is_translated() -> None:
    lab = make_lab(proto=17, port=53)
    q = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP) / UDP(sport=5353, dport=53) / b"q"
    out = send(lab, q, EXT)
    conn = lab.table.in_get(17, _i("198.18.1.10"), 5353, _i(VIP), 53)
    assert out is not None and conn is not None
    rs = ipaddress.IPv4Address(conn.daddr).compressed
    assert out == (INT, expect_in(q, rs))
    assert conn.timeout == lab.director.cfg.timeouts.udp
    r = (Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst="198.18.1.10") /
         UDP(sport=8080, dport=5353) / b"answer")
    assert send(lab, r, INT) == (EXT, expect_out(r, vport=53))
    # a second datagram reuses the conn
    assert send(lab, q, EXT) == (INT, expect_in(q, rs))
    assert lab.table.count == 1


def test_non_syn_without_entry_is_dropped_unless_sloppy() -> None:
    lab = make_lab(sched="sh")
    assert send(lab, client_pkt("A"), EXT) is None
    assert drops(lab, Drop.NO_CONN) == 1
    assert send(lab, client_pkt("R"), EXT) is None
    assert drops(lab, Drop.RST_NO_CONN) == 1
    assert lab.table.count == 0
    # a conn made by SYN, then lost (as on a backup that never heard of it)
    assert send(lab, client_pkt("S"), EXT) is not None
    conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert conn is not None
    first_dest = conn.daddr
    lab.table.flush()
    lab.director.sloppy_until = lab.now[0] + 10
    out = send(lab, client_pkt("A", payload=b"mid-flow"), EXT)
    conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert out is not None and conn is not None
    assert conn.daddr == first_dest  # a consistent scheduler picks the same dest again
    lab.now[0] += 11  # sloppy window over
    assert send(lab, client_pkt("A", sport=40001), EXT) is None
    assert drops(lab, Drop.NO_CONN) == 2


def test_no_service_and_no_dest_are_bypass_and_not_a_vip_is_no_service() -> None:
    lab = make_lab()
    assert send(lab, client_pkt("S", dport=81), EXT) is None  # a VIP, but no service on this port
    assert drops(lab, Drop.BYPASS) == 1
    other = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst="198.18.0.99") / TCP(dport=80)
    assert send(lab, other, EXT) is None  # not a VIP at all
    assert drops(lab, Drop.NO_SERVICE) == 1
    for d in list(lab.svc.dests):
        lab.svc.edit_dest(d, weight=0)
    assert send(lab, client_pkt("S"), EXT) is None  # the service has no usable dest
    assert drops(lab, Drop.BYPASS) == 2
    assert drops(lab, Drop.NO_DEST) == 0


# ---- persistence ------------------------------------------------------------------------------


def test_persistent_service_reuses_template_dest() -> None:
    lab = make_lab(persistent=True, ndests=3)
    chosen = set()
    for port in (41000, 41001, 41002):
        assert send(lab, client_pkt("S", sport=port, src="198.18.1.10"), EXT) is not None
        conn = lab.table.in_get(6, _i("198.18.1.10"), port, _i(VIP), 80)
        assert conn is not None
        chosen.add(conn.daddr)
    assert len(chosen) == 1  # rr alone would have used three dests
    ct = lab.table.ct_in_get(6, _i("198.18.1.0"), 0, _i(VIP), 80)
    assert ct is not None and ct.flags & ConnFlags.TEMPLATE and ct.n_control == 3
    assert ct.daddr in chosen and ct.timeout == 300.0
    # same /24 -> same template; another /24 -> rr moves on
    assert send(lab, client_pkt("S", sport=41003, src="198.18.1.77"), EXT) is not None
    c2 = lab.table.in_get(6, _i("198.18.1.77"), 41003, _i(VIP), 80)
    assert c2 is not None and c2.daddr in chosen and c2.control is ct
    assert send(lab, client_pkt("S", sport=41004, src="198.18.9.77"), EXT) is not None
    c3 = lab.table.in_get(6, _i("198.18.9.77"), 41004, _i(VIP), 80)
    assert c3 is not None and c3.daddr not in chosen


def test_persistent_template_with_removed_dest_is_replaced() -> None:
    lab = make_lab(persistent=True, ndests=2)
    assert send(lab, client_pkt("S", sport=41000), EXT) is not None
    ct = lab.table.ct_in_get(6, _i("198.18.1.0"), 0, _i(VIP), 80)
    assert ct is not None and ct.dest is not None
    old = ct.dest
    lab.svc.remove_dest(old)
    assert send(lab, client_pkt("S", sport=41001), EXT) is not None
    c = lab.table.in_get(6, _i("198.18.1.10"), 41001, _i(VIP), 80)
    assert c is not None and c.dest is not old and c.control is not None and c.control is not ct
    assert ct.vport == 65535  # the old template was invalidated


def test_persistent_port_zero_service_keeps_client_ports() -> None:
    lab = make_lab(persistent=True, port=0)
    for dport in (80, 443):
        pkt = client_pkt("S", dport=dport)
        out = send(lab, pkt, EXT)
        conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), dport)
        assert out is not None and conn is not None and conn.dport == dport
        assert out[1] == expect_in(pkt, ipaddress.IPv4Address(conn.daddr).compressed, dport=dport)
    assert lab.table.ct_in_get(6, _i("198.18.1.0"), 0, _i(VIP), 0) is not None


# ---- dest removal ------------------------------------------------------------------------------


@pytest.mark.parametrize(("expire_nodest", "per_service"), [(False, False), (True, False), (True, True)])
def test_expire_nodest_conn(expire_nodest: bool, per_service: bool) -> None:
    """The setting works node-wide (CoreConfig) and per service (the YAML's expire_nodest_conn)."""
    lab = make_lab(ndests=2, expire_nodest_conn=expire_nodest and not per_service)
    lab.svc.expire_nodest_conn = per_service
    assert send(lab, client_pkt("S"), EXT) is not None
    conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert conn is not None and conn.dest is not None
    gone = conn.dest
    lab.svc.remove_dest(gone)
    assert send(lab, client_pkt("A"), EXT) is None
    assert drops(lab, Drop.DEST_UNAVAILABLE) == 1
    assert (lab.table.count == 0) is expire_nodest
    # a new SYN on the same tuple: rescheduled to the remaining dest only when the entry is gone
    out = send(lab, client_pkt("S"), EXT)
    again = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert again is not None
    if expire_nodest:
        assert out is not None and again.dest is not gone
    else:
        assert out is None and again is conn


# ---- DR and TUN ------------------------------------------------------------------------------


def test_dr_rewrites_macs_only_and_runs_input_only_states() -> None:
    lab = make_lab(fwd=FwdMethod.DR)
    syn = client_pkt("S")
    out = send(lab, syn, EXT)
    conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert out is not None and conn is not None
    assert conn.flags & ConnFlags.FWD_MASK == ConnFlags.DROUTE
    rs = ipaddress.IPv4Address(conn.daddr).compressed
    e = Ether(bytes(syn))
    e.src, e.dst = VMAC, RS_MAC[RS.index(rs)]
    e[IP].ttl -= 1
    del e[IP].chksum
    assert out == (INT, bytes(e))
    assert conn.state == TcpState.SYN_RECV
    assert send(lab, client_pkt("A"), EXT) is not None  # the client's ACK: input-only rows
    assert conn.state == TcpState.ESTABLISHED
    assert send(lab, client_pkt("FA"), EXT) is not None
    assert conn.state == TcpState.FIN_WAIT  # INPUT_ONLY fin (NAT INPUT would give CLOSE_WAIT)


def test_tun_encapsulates_and_sends_frag_needed_when_too_big() -> None:
    lab = make_lab(fwd=FwdMethod.TUN, mtu=1500)
    syn = client_pkt("S")
    out = send(lab, syn, EXT)
    conn = lab.table.in_get(6, _i("198.18.1.10"), 40000, _i(VIP), 80)
    assert out is not None and conn is not None and out[0] == INT
    rs = ipaddress.IPv4Address(conn.daddr).compressed
    inner = Ether(bytes(syn))[IP]
    inner.ttl -= 1
    del inner.chksum
    p = Ether(out[1])
    assert p[IP].proto == 4 and p[IP].src == DIR_INT and p[IP].dst == rs and p.dst == RS_MAC[RS.index(rs)]
    expected = (Ether(src=VMAC, dst=RS_MAC[RS.index(rs)]) /
                IP(src=DIR_INT, dst=rs, proto=4, id=p[IP].id, ttl=63) / inner)
    assert out[1] == bytes(expected)
    big = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP, flags="DF") / TCP(
        sport=40000, dport=80, flags="A") / (b"x" * 1460)
    a = send(lab, big, EXT)
    assert a is not None and a[0] == EXT
    icmp = Ether(a[1])
    assert icmp[ICMP].type == 3 and icmp[ICMP].code == 4 and icmp[ICMP].nexthopmtu == 1480
    assert icmp[IP].dst == "198.18.1.10" and icmp.dst == CLIENT_MAC
    assert drops(lab, Drop.TOO_BIG) == 1


def test_frag_needed_about_our_ipip_packet_reaches_the_client_for_its_own_packet() -> None:
    lab = make_lab(fwd=FwdMethod.TUN)
    syn = client_pkt("S", payload=b"x" * 100)
    out = send(lab, syn, EXT)
    assert out is not None and out[0] == INT
    tunnelled = Ether(out[1])[IP]
    rs = tunnelled.dst
    # a router on the way to the real server: its link is 1400 bytes; it quotes the whole IPIP packet
    err = (Ether(src=RS_MAC[0], dst=VMAC) / IP(src="198.18.2.250", dst=DIR_INT) /
           ICMP(type=3, code=4, nexthopmtu=1400) / bytes(tunnelled))
    res = send(lab, err, INT)
    assert res is not None and res[0] == EXT
    p = Ether(res[1])
    assert (p.dst, p[IP].src, p[IP].dst) == (CLIENT_MAC, VIP, "198.18.1.10")
    assert (p[ICMP].type, p[ICMP].code, p[ICMP].nexthopmtu) == (3, 4, 1380)
    inner = bytes(Ether(bytes(syn))[IP])
    quoted = bytes(p[ICMP].payload)
    assert quoted[:20] == bytes(tunnelled.payload)[:20] and quoted[20:28] == inner[20:28]
    chk = p.copy()
    del chk[ICMP].chksum
    assert Ether(bytes(chk))[ICMP].chksum == p[ICMP].chksum
    # about another host's tunnel, or arriving from the outside: not ours
    other = IP(bytes(tunnelled))
    other.dst = "198.18.2.99"
    del other.chksum
    err2 = (Ether(src=RS_MAC[0], dst=VMAC) / IP(src="198.18.2.250", dst=DIR_INT) /
            ICMP(type=3, code=4, nexthopmtu=1400) / bytes(other))
    assert send(lab, err2, INT) is None and rs != "198.18.2.99"
    assert send(lab, Ether(bytes(err)), EXT) is None
    assert drops(lab, Drop.ICMP_UNRELATED) == 2


# ---- ICMP ------------------------------------------------------------------------------------


def test_icmp_errors_are_translated_both_ways() -> None:
    lab = make_lab(proto=17, port=53)
    q = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP) / UDP(sport=5353, dport=53) / b"q"
    fwd = send(lab, q, EXT)
    conn = lab.table.in_get(17, _i("198.18.1.10"), 5353, _i(VIP), 53)
    assert fwd is not None and conn is not None
    rs = ipaddress.IPv4Address(conn.daddr).compressed
    # the dest says port unreachable about what it received
    err = (Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst="198.18.1.10") /
           ICMP(type=3, code=3) / IPerror(fwd[1][14:]))
    out = send(lab, err, INT)
    assert out is not None and out[0] == EXT
    p = Ether(out[1])
    assert p[IP].src == VIP and p[IPerror].dst == VIP and p[IPerror].dport == 53
    assert bytes(p[IPerror])[:20] != fwd[1][14:34]
    assert lab.dest(rs).counters.outpkts == 1
    # the client's side says time exceeded about a reply from the VIP
    reply = IP(src=VIP, dst="198.18.1.10", ttl=1) / UDP(sport=53, dport=5353) / b"a"
    err2 = (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.1", dst=VIP) / ICMP(type=11) /
            IPerror(bytes(reply)))
    out2 = send(lab, err2, EXT)
    assert out2 is not None and out2[0] == INT
    p2 = Ether(out2[1])
    assert p2[IP].dst == rs and p2[IPerror].src == rs and p2[IPerror].sport == 8080
    assert p2.dst == RS_MAC[RS.index(rs)]
    # errors about unknown flows and echo replies to the VIP are dropped
    unknown = IP(src=VIP, dst="198.18.1.99") / UDP(sport=53, dport=1)
    err3 = Ether(dst=VMAC) / IP(src="198.18.1.99", dst=VIP) / ICMP(type=3) / IPerror(bytes(unknown))
    assert send(lab, err3, EXT) is None
    assert send(lab, Ether(dst=VMAC) / IP(src="198.18.1.10", dst=VIP) / ICMP(type=0), EXT) is None
    assert drops(lab, Drop.ICMP_UNRELATED) == 2


def echo_request(dst: str = VIP, src: str = "198.18.1.10", ttl: int = 64, seq: int = 1) -> Ether:
    return (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=src, dst=dst, ttl=ttl) /
            ICMP(type=8, id=0x4242, seq=seq) / b"ping-data")


def test_echo_to_a_vip_is_answered_byte_exact_from_the_vip() -> None:
    lab = make_lab()
    out = send(lab, echo_request(ttl=1), EXT)  # a ping that reached the VIP: answered whatever its TTL
    assert out is not None and out[0] == EXT
    expected = (Ether(src=VMAC, dst=CLIENT_MAC) / IP(src=VIP, dst="198.18.1.10", ttl=64, id=0) /
                ICMP(type=0, id=0x4242, seq=1) / b"ping-data")
    assert out[1] == bytes(expected)
    assert lab.director.echo_replies == 1
    # the NAT gateway address answers on the inside too
    gw_ping = Ether(src=RS_MAC[0], dst=VMAC) / IP(src=RS[0], dst=GW) / ICMP(type=8) / b"x"
    out2 = send(lab, gw_ping, INT)
    assert out2 is not None and out2[0] == INT and Ether(out2[1])[IP].src == GW
    assert Ether(out2[1]).dst == RS_MAC[0]


def test_echo_not_answered_for_other_addresses_by_a_backup_or_when_off() -> None:
    lab = make_lab()
    assert send(lab, echo_request(dst="198.18.0.77"), EXT) is None  # not owned
    assert send(lab, echo_request(dst=GW), EXT) is None  # the inside gateway is not owned outside
    assert drops(lab, Drop.ICMP_UNRELATED) == 2
    lab.director.set_active(False)
    assert send(lab, echo_request(), EXT) is None
    assert drops(lab, Drop.NOT_ACTIVE) == 1
    off = make_lab(icmp_echo=False)
    assert send(off, echo_request(), EXT) is None
    assert drops(off, Drop.ICMP_UNRELATED) == 1 and off.director.echo_replies == 0


def test_echo_replies_stop_at_the_echo_ratelimit_and_resume_next_second() -> None:
    lab = make_lab(echo_ratelimit=3)
    answered = [send(lab, echo_request(seq=i), EXT) is not None for i in range(5)]
    assert answered == [True, True, True, False, False]
    assert drops(lab, Drop.ECHO_RATELIMIT) == 2
    lab.advance(1.0)
    assert send(lab, echo_request(seq=9), EXT) is not None


# ---- ARP, roles, neighbours --------------------------------------------------------------------


def test_arp_answered_only_for_owned_addresses_and_only_when_active() -> None:
    lab = make_lab()
    req = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT_MAC, psrc="198.18.1.10",
                                                                pdst=VIP)
    out = send(lab, req, EXT)
    assert out is not None and out[0] == EXT
    rep = Ether(out[1])
    assert rep[ARP].op == 2 and rep[ARP].hwsrc == VMAC and rep[ARP].psrc == VIP and rep.dst == CLIENT_MAC
    assert lab.director.neigh[EXT].get(_i("198.18.1.10")) == bytes.fromhex(CLIENT_MAC.replace(":", ""))
    gw_req = Ether(src=RS_MAC[0]) / ARP(op=1, hwsrc=RS_MAC[0], psrc=RS[0], pdst=GW)
    gw = send(lab, gw_req, INT)
    assert gw is not None and Ether(gw[1])[ARP].psrc == GW
    assert send(lab, Ether(src=CLIENT_MAC) / ARP(op=1, psrc="198.18.1.10", pdst="198.18.1.1"), EXT) is None
    assert drops(lab, Drop.ARP_IGNORED) == 1
    wrong_side = Ether(src=CLIENT_MAC) / ARP(op=1, psrc="198.18.1.10", pdst=GW)
    assert send(lab, wrong_side, EXT) is None
    assert lab.director.set_active(False) == []
    assert send(lab, req, EXT) is None
    assert drops(lab, Drop.NOT_ACTIVE) == 1


def test_backup_forwards_nothing_but_counts_and_garp_on_takeover() -> None:
    lab = make_lab()
    lab.director.set_active(False)
    assert send(lab, client_pkt("S"), EXT) is None
    assert drops(lab, Drop.NOT_ACTIVE) == 1 and lab.table.count == 0
    garps = lab.director.set_active(True)
    assert {(side, Ether(f)[ARP].psrc) for side, f in garps} == {(EXT, VIP), (INT, GW)}
    assert all(Ether(f).src == VMAC and Ether(f).dst == "ff:ff:ff:ff:ff:ff" for _, f in garps)
    assert send(lab, client_pkt("S"), EXT) is not None


def test_unknown_dest_mac_sends_rate_limited_arp_request() -> None:
    lab = make_lab()
    lab.director.neigh[INT].forget(_i(RS[0]))
    lab.director.neigh[INT].forget(_i(RS[1]))
    a = send(lab, client_pkt("S"), EXT)
    assert a is not None and a[0] == INT
    arp = Ether(a[1])
    assert arp[ARP].op == 1 and arp[ARP].psrc == DIR_INT and arp[ARP].hwsrc == VMAC
    target = arp[ARP].pdst
    assert send(lab, client_pkt("S"), EXT) is None  # retransmission within the probe interval
    assert drops(lab, Drop.NO_NEIGH) == 2
    m = RS_MAC[RS.index(target)]
    assert send(lab, Ether(src=m, dst=VMAC) / ARP(op=2, hwsrc=m, psrc=target, pdst=DIR_INT), INT) is None
    syn = client_pkt("S")
    assert send(lab, syn, EXT) == (INT, expect_in(syn, target))


def test_ttl_expiry_and_malformed_frames_are_counted_never_raised() -> None:
    lab = make_lab(icmp_ratelimit=2)
    expired = client_pkt("S", ttl=1)
    a = send(lab, expired, EXT)  # the client is not known yet: no route back, just the drop
    assert a is None and drops(lab, Drop.TTL_EXCEEDED) == 1
    lab.director.neigh[EXT].learn(_i("198.18.1.10"), bytes.fromhex(CLIENT_MAC.replace(":", "")), 0.0)
    a = send(lab, expired, EXT)
    assert a is not None and a[0] == EXT
    te = Ether(a[1])
    assert (te[ICMP].type, te[ICMP].code, te[IP].dst, te[IP].src, te.dst) == (11, 0, "198.18.1.10", VIP,
                                                                             CLIENT_MAC)
    assert bytes(te[ICMP].payload)[:28] == bytes(expired[IP])[:28]
    assert send(lab, expired, EXT) is not None
    assert send(lab, expired, EXT) is None  # rate limit: 2 per second
    lab.now[0] += 1.0
    assert send(lab, expired, EXT) is not None
    assert drops(lab, Drop.TTL_EXCEEDED) == 5 and lab.table.count == 0
    rng = random.Random(3)
    base = bytes(client_pkt("S", payload=b"abcdefgh"))
    before = lab.director.counters.total()
    handled = 0
    for _ in range(2000):
        f = bytearray(base)
        for _ in range(rng.randrange(1, 4)):
            f[rng.randrange(12, len(f))] = rng.randrange(256)
        f = f[: rng.randrange(0, len(f) + 1)]
        if lab.director.handle(f, rng.randrange(2)) is not None:
            handled += 1
    assert lab.director.counters.total() - before + handled >= 2000 - 5  # (ARP learning returns None)
    assert lab.director.counters[Drop.TRUNCATED] > 0


def test_conn_expiry_after_timeout_and_template_outlives_conn() -> None:
    lab = make_lab(persistent=True)
    assert send(lab, client_pkt("S"), EXT) is not None
    assert lab.table.count == 2  # conn + template
    lab.advance(lab.director.cfg.timeouts.tcp[TcpState.SYN_RECV] + 1)
    assert lab.table.count == 1  # the conn went, the template stays for its persistence timeout
    assert lab.table.ct_in_get(6, _i("198.18.1.0"), 0, _i(VIP), 80) is not None


def test_slow_parse_path_ip_options_and_small_udp_equal_scapy() -> None:
    """Frames the fast parser declines (IP options, tiny UDP) are forwarded identically."""
    from scapy.layers.inet import IPOption_RR

    lab = make_lab(proto=17, port=53, ndests=1)
    for i, (opts, payload) in enumerate([([IPOption_RR()], b"q" * 30), ([], b""), ([], b"abc"),
                                         ([IPOption_RR()], b"")]):
        q = (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP, options=opts) /
             UDP(sport=6000 + i, dport=53) / payload)
        assert send(lab, q, EXT) == (INT, expect_in(q, RS[0]))
        r = (Ether(src=RS_MAC[0], dst=VMAC) / IP(src=RS[0], dst="198.18.1.10", options=opts) /
             UDP(sport=8080, dport=6000 + i) / payload)
        assert send(lab, r, INT) == (EXT, expect_out(r, vport=53))


def test_handle_drop_reasons_match_the_parser() -> None:
    """The fast parse in handle() and parse_ipv4 agree on every malformed frame."""
    from director.dataplane.packet import parse_ipv4

    lab = make_lab(forward_fragments=True)
    rng = random.Random(11)
    bases = [bytes(client_pkt("A", payload=b"x" * 10)),
             bytes(Ether(dst=VMAC) / IP(src="198.18.1.10", dst=VIP) / UDP(sport=1, dport=80) / (b"y" * 12))]
    checked = 0
    for k in range(3000):
        f = bytearray(bases[k % 2])
        for _ in range(rng.randrange(1, 3)):
            f[rng.randrange(14, 52)] = rng.randrange(256)
        expected = parse_ipv4(f, verify=True, first_fragment=True)
        if not isinstance(expected, Drop) or expected in (Drop.NOT_IPV4, Drop.FRAGMENT):
            continue  # (fragments have their own tests)
        before = lab.director.counters[expected]
        assert lab.director.handle(f, EXT) is None
        assert lab.director.counters[expected] == before + 1, expected
        checked += 1
    assert checked > 1000


def test_synced_conn_learns_the_client_mac_from_its_next_packet() -> None:
    lab = make_lab(ndests=1)
    dest = lab.svc.dests[0]
    # an entry as sync would create it on a backup: no packet seen, no neighbour entry
    conn = lab.table.new(6, _i("198.18.1.10"), 40000, _i(VIP), 80, dest.addr, 8080,
                         int(ConnFlags.SYNC), dest, state=int(TcpState.ESTABLISHED), timeout=900.0)
    assert _i("198.18.1.10") not in lab.director.neigh[EXT]
    ack = client_pkt("A", payload=b"after takeover")
    assert send(lab, ack, EXT) == (INT, expect_in(ack, RS[0]))
    assert conn.in_pkts == 1
    reply = server_pkt(RS[0], "A", payload=b"ok")
    assert send(lab, reply, INT) == (EXT, expect_out(reply))


def test_reply_to_unknown_client_arps_for_it_or_uses_the_gateway() -> None:
    lab = make_lab(ndests=1, ext_addr=_i("198.18.1.253"), ext_gateway=_i("198.18.1.1"),
                   ext_net=_i("198.18.1.0"), ext_prefixlen=24)
    dest = lab.svc.dests[0]
    for client, port in (("198.18.1.10", 40000), ("203.0.113.9", 40001)):
        lab.table.new(6, _i(client), port, _i(VIP), 80, dest.addr, 8080, 0, dest,
                      state=int(TcpState.ESTABLISHED), timeout=900.0)
    a = send(lab, server_pkt(RS[0], "A", dport=40000, dst="198.18.1.10"), INT)
    assert a is not None and a[0] == EXT
    assert Ether(a[1])[ARP].pdst == "198.18.1.10" and Ether(a[1])[ARP].psrc == "198.18.1.253"
    off_link = server_pkt(RS[0], "A", dport=40001, dst="203.0.113.9")
    a = send(lab, off_link, INT)
    assert a is not None and Ether(a[1])[ARP].pdst == "198.18.1.1"  # the gateway, not the client
    router_mac = "02:00:00:00:01:fe"
    assert send(lab, Ether(src=router_mac, dst=VMAC) / ARP(op=2, hwsrc=router_mac, psrc="198.18.1.1",
                                                 pdst="198.18.1.253"), EXT) is None
    assert send(lab, off_link, INT) == (EXT, expect_out(off_link, dmac=router_mac))
    assert drops(lab, Drop.NO_NEIGH) == 2


def test_random_udp_flows_equal_scapy_fast_and_slow_parse() -> None:
    lab = make_lab(proto=17, port=53, ndests=3)
    rng = random.Random(9)
    for k in range(200):
        src, sport = f"198.18.1.{rng.randrange(1, 250)}", rng.randrange(1024, 65536)
        payload = rng.randbytes(rng.choice([0, 3, 9, 10, 11, 64, 300]))
        q = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src=src, dst=VIP) / UDP(sport=sport, dport=53) / payload
        if k % 5 == 0:
            q[UDP].chksum = 0  # sender without checksum: stays 0 through NAT
        out = send(lab, q, EXT)
        conn = lab.table.in_get(17, _i(src), sport, _i(VIP), 53)
        assert out is not None and conn is not None
        rs = ipaddress.IPv4Address(conn.daddr).compressed
        exp = Ether(expect_in(q, rs))
        if k % 5 == 0:
            exp[UDP].chksum = 0
        assert out == (INT, bytes(exp))
        r = (Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst=src) / UDP(sport=8080, dport=sport) /
             rng.randbytes(rng.choice([0, 5, 10, 100])))
        assert send(lab, r, INT) == (EXT, expect_out(r, vport=53))


def test_udp_checksum_becoming_zero_through_handle_is_sent_as_ffff() -> None:
    from director.dataplane.checksum import l4_checksum

    lab = make_lab(proto=17, port=53, ndests=1)
    base = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP) / UDP(sport=5353, dport=53)
    rewritten = bytearray(bytes(base / (b"\0" * 10)))
    rewritten[30:34] = ipaddress.IPv4Address(RS[0]).packed
    rewritten[36:38] = (8080).to_bytes(2, "big")
    for w in range(65536):  # the 2-byte payload word that makes the rewritten checksum 0 (-> 0xFFFF)
        rewritten[50:52] = w.to_bytes(2, "big")
        if l4_checksum(rewritten) == 0xFFFF:
            break
    q = base / (b"\0" * 8 + w.to_bytes(2, "big"))
    out = send(lab, q, EXT)
    assert out is not None and out[1][40:42] == b"\xff\xff"
    assert out == (INT, expect_in(q, RS[0]))


def test_random_bytes_with_every_ethertype_never_raise() -> None:
    lab = make_lab()
    rng = random.Random(21)
    types = [b"\x08\x00", b"\x08\x06", b"\x86\xdd", b"\x81\x00", rng.randbytes(2)]
    for k in range(3000):
        f = bytearray(rng.randbytes(12) + types[k % len(types)] + rng.randbytes(rng.randrange(0, 80)))
        if k % 3 == 0 and len(f) > 14:
            f[14] = 0x45
        lab.director.active = bool(k & 1)
        a = lab.director.handle(f, k % 2)
        assert a is None or (a[0] in (EXT, INT) and len(a[1]) >= 42)
    assert lab.director.counters.total() > 2000


# ---- fragments ---------------------------------------------------------------------------------


def _frags(pkt: Ether) -> list[Ether]:
    from scapy.layers.inet import fragment

    return [Ether(bytes(f)) for f in fragment(pkt, fragsize=1200)]  # type: ignore[no-untyped-call]


def test_fragmented_udp_datagrams_are_forwarded_both_ways_equal_scapy() -> None:
    lab = make_lab(proto=17, port=53, ndests=2, forward_fragments=True)
    big = (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP, id=4242) /
           UDP(sport=5353, dport=53) / (bytes(range(256)) * 12))
    parts = _frags(big)
    assert len(parts) == 3
    outs = [send(lab, p, EXT) for p in parts]
    conn = lab.table.in_get(17, _i("198.18.1.10"), 5353, _i(VIP), 53)
    assert conn is not None and all(o is not None and o[0] == INT for o in outs)
    rs = ipaddress.IPv4Address(conn.daddr).compressed
    # scapy: NAT the whole datagram, then fragment it the same way
    expected = [bytes(f) for f in _frags(Ether(expect_in(big, rs)))]
    assert [o[1] for o in outs if o is not None] == expected
    assert lab.dest(rs).counters.inpkts == 3
    # the reply, fragmented by the real server
    reply = (Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst="198.18.1.10", id=777) /
             UDP(sport=8080, dport=5353) / (bytes(range(256)) * 10))
    outs = [send(lab, p, INT) for p in _frags(reply)]
    assert outs == [(EXT, bytes(f)) for f in _frags(Ether(expect_out(reply, vport=53)))]


def test_fragment_before_its_first_fragment_or_after_timeout_is_dropped() -> None:
    lab = make_lab(proto=17, port=53, ndests=1, forward_fragments=True)
    big = (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP, id=99) /
           UDP(sport=5353, dport=53) / (b"z" * 3000))
    first, second, third = _frags(big)
    assert send(lab, second, EXT) is None
    assert drops(lab, Drop.FRAGMENT) == 1
    assert send(lab, first, EXT) is not None
    assert send(lab, third, EXT) is not None
    lab.now[0] += 31  # ipfrag_time
    assert send(lab, second, EXT) is None
    assert drops(lab, Drop.FRAGMENT) == 2


def test_fragments_of_a_dr_flow_get_new_macs_only() -> None:
    lab = make_lab(fwd=FwdMethod.DR, proto=17, port=53, ndests=1, forward_fragments=True)
    big = (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP, id=5) /
           UDP(sport=5353, dport=53) / (b"q" * 2500))
    for p in _frags(big):
        out = send(lab, p, EXT)
        e = Ether(bytes(p))
        e.src, e.dst = VMAC, RS_MAC[0]
        e[IP].ttl -= 1
        del e[IP].chksum
        assert out == (INT, bytes(e))


def test_fragments_are_dropped_by_default() -> None:
    lab = make_lab(proto=17, port=53, ndests=1)
    big = (Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP, id=7) /
           UDP(sport=5353, dport=53) / (b"z" * 3000))
    assert [send(lab, p, EXT) for p in _frags(big)] == [None, None, None]
    assert drops(lab, Drop.FRAGMENT) == 3 and lab.table.count == 0 and len(lab.director.frags) == 0


# ---- hostile L2 input (issue 17): tags, foreign MACs, spoofed neighbours, ARP outcomes -------------

FOREIGN_MAC = "02:66:66:66:66:66"


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def test_vlan_tagged_frames_are_dropped_with_their_own_counter() -> None:
    from scapy.layers.l2 import Dot1AD, Dot1Q

    lab = make_lab()
    for tag in (Dot1Q(vlan=5), Dot1AD(vlan=7) / Dot1Q(vlan=5)):
        syn = (Ether(src=CLIENT_MAC, dst=VMAC) / tag / IP(src="198.18.1.10", dst=VIP) /
               TCP(dport=80, flags="S"))
        assert send(lab, syn, EXT) is None
    bcast = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=5) / ARP(op=1, psrc="198.18.1.10",
                                                                                 pdst=VIP)
    assert send(lab, bcast, EXT) is None  # a tagged ARP is not answered either
    assert drops(lab, Drop.VLAN_TAGGED) == 3 and lab.table.count == 0 and lab.svc.counters.conns == 0


def test_only_frames_to_the_virtual_mac_are_taken() -> None:
    from scapy.layers.inet import IPOption_RR

    lab = make_lab()
    lab.director.host_macs = frozenset({_mac("02:1b:02:00:00:01")})
    for dst, reason in (("02:aa:bb:cc:dd:ee", Drop.NOT_VMAC), ("ff:ff:ff:ff:ff:ff", Drop.NOT_VMAC),
                        ("01:00:5e:00:00:01", Drop.NOT_VMAC), ("02:1b:02:00:00:01", Drop.TO_HOST)):
        plain = client_pkt("S")
        with_options = (Ether(src=CLIENT_MAC) / IP(src="198.18.1.10", dst=VIP, options=[IPOption_RR()]) /
                        TCP(sport=40000, dport=80, flags="S"))
        for pkt in (plain, with_options):  # fast and slow parse alike
            pkt.dst = dst
            before = drops(lab, reason)
            assert send(lab, pkt, EXT) is None
            assert drops(lab, reason) == before + 1, (dst, reason)
    assert lab.table.count == 0
    # unicast ARP to another MAC is not ours either; broadcast and virtual-MAC ARP are
    req = ARP(op=1, hwsrc=CLIENT_MAC, psrc="198.18.1.10", pdst=VIP)
    assert send(lab, Ether(src=CLIENT_MAC, dst="02:aa:bb:cc:dd:ee") / req, EXT) is None
    assert send(lab, Ether(src=CLIENT_MAC, dst=VMAC) / req, EXT) is not None
    assert send(lab, client_pkt("S"), EXT) is not None


def test_spoofed_syn_never_overwrites_a_known_client() -> None:
    """One SYN with a live client's address from a foreign MAC must not redirect that client's replies."""
    lab = make_lab(ndests=1)
    syn = client_pkt("S")
    assert send(lab, syn, EXT) is not None
    spoof = client_pkt("S", sport=40001)
    spoof.src = FOREIGN_MAC
    assert send(lab, spoof, EXT) is not None  # the conn is scheduled (a SYN is a SYN) ...
    assert lab.director.neigh[EXT].get(_i("198.18.1.10")) == _mac(CLIENT_MAC)  # ... the neighbour is kept
    assert lab.director.nb.stats[NeighEvent.NEIGH_REFUSED_DATA] == 1
    reply = server_pkt(RS[0], "SA")
    assert send(lab, reply, INT) == (EXT, expect_out(reply))  # to the real client's MAC
    # ARP is the source of truth: the client answering for its address moves the entry
    assert send(lab, Ether(src="02:00:00:00:01:02", dst=VMAC) / ARP(op=1, hwsrc="02:00:00:00:01:02",
                                                                    psrc="198.18.1.10", pdst=VIP), EXT)
    assert lab.director.neigh[EXT].get(_i("198.18.1.10")) == _mac("02:00:00:00:01:02")


def test_spoofed_server_side_frames_never_touch_the_real_servers_entries() -> None:
    lab = make_lab()
    for rs in RS[:2]:
        spoof = Ether(src=FOREIGN_MAC, dst=VMAC) / IP(src=rs, dst=VIP) / TCP(sport=8080, dport=80, flags="S")
        send(lab, spoof, INT)
    assert all(lab.director.neigh[INT].get(_i(rs)) == _mac(m) for rs, m in zip(RS, RS_MAC, strict=True))
    for port in (41000, 41001):
        syn = client_pkt("S", sport=port)
        out = send(lab, syn, EXT)
        assert out is not None and Ether(out[1]).dst in RS_MAC[:2]


def test_client_learning_is_rate_limited_and_skips_off_link_clients() -> None:
    lab = make_lab(ndests=1, neigh_learn_rate=1.0, neigh_learn_burst=2, ext_gateway=_i("198.18.1.1"),
                   ext_net=_i("198.18.1.0"), ext_prefixlen=24)
    for k in range(3):
        assert send(lab, client_pkt("S", src=f"198.18.1.{20 + k}"), EXT) is not None
    assert send(lab, client_pkt("S", src="203.0.113.9"), EXT) is not None
    ext = lab.director.neigh[EXT]
    assert _i("198.18.1.20") in ext and _i("198.18.1.21") in ext and _i("198.18.1.22") not in ext
    assert _i("203.0.113.9") not in ext  # off-link: through the gateway, never learned per client
    st = lab.director.nb.stats
    assert st[NeighEvent.NEIGH_LEARNED_DATA] == 2 and st[NeighEvent.NEIGH_RATE_LIMITED] == 1
    lab.now[0] += 1.0
    assert send(lab, client_pkt("S", src="198.18.1.22", sport=40002), EXT) is not None
    assert _i("198.18.1.22") in ext


def test_every_arp_outcome_is_counted() -> None:
    lab = make_lab()
    st = lab.director.nb.stats
    before = list(st.counts)

    def arp(op: int, psrc: str, pdst: str, hw: str = CLIENT_MAC, dst: str = "ff:ff:ff:ff:ff:ff") -> None:
        send(lab, Ether(src=hw, dst=dst) / ARP(op=op, hwsrc=hw, psrc=psrc, pdst=pdst), EXT)

    arp(1, "198.18.1.10", VIP)              # answered, learned
    arp(1, "198.18.1.11", "198.18.1.99")     # not ours: ignored, and an unknown sender is not learned
    arp(2, "198.18.1.12", "198.18.1.99", dst=VMAC)   # unsolicited reply about a stranger: ignored
    arp(2, "198.18.1.10", "198.18.1.99", hw="02:00:00:00:01:03", dst=VMAC)  # about a known one: updated
    arp(9, "198.18.1.10", VIP)              # unknown opcode
    arp(1, VIP, VIP, hw=FOREIGN_MAC)        # somebody else claims the VIP
    send(lab, Ether(src=CLIENT_MAC, dst=VMAC, type=0x0806) / (b"\x00" * 28), EXT)  # malformed
    lab.director.set_active(False)
    arp(1, "198.18.1.10", VIP)              # backup: not answered
    delta = {e.name.lower(): st[e] - before[e] for e in NeighEvent if st[e] != before[e]}
    assert delta == {"arp_request_answered": 1, "arp_request_ignored": 2, "arp_reply_ignored": 1,
                     "arp_reply_learned": 1, "arp_unknown_op": 1, "arp_conflicts": 1, "arp_malformed": 1,
                     "arp_request_not_active": 1, "neigh_learned_arp": 1, "neigh_updated_arp": 2}
    assert _i("198.18.1.11") not in lab.director.neigh[EXT]
    assert _i("198.18.1.12") not in lab.director.neigh[EXT]
    assert lab.director.arp_replies == before[NeighEvent.ARP_REQUEST_ANSWERED] + 1


def test_fenced_arp_learns_but_never_answers_or_counts_a_drop() -> None:
    lab = make_lab()
    before, answered = lab.director.counters.total(), lab.director.arp_replies
    req = Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=CLIENT_MAC, psrc="198.18.1.10",
                                                                pdst=VIP)
    lab.director.learn_arp(bytearray(bytes(req)), EXT)
    assert lab.director.neigh[EXT].get(_i("198.18.1.10")) == _mac(CLIENT_MAC)
    assert lab.director.counters.total() == before and lab.director.arp_replies == answered


def test_a_syn_on_a_closed_conns_4tuple_is_scheduled_anew() -> None:
    """IPVS conn_reuse_mode: a client reusing the source port of a conn in TIME_WAIT (or CLOSE) gets a
    new connection scheduled like any other, not the old entry's dest."""
    lab = make_lab(ndests=2)
    assert send(lab, client_pkt("S", sport=42000), EXT) is not None
    old = lab.table.in_get(6, _i("198.18.1.10"), 42000, _i(VIP), 80)
    assert old is not None and old.dest is not None
    first = old.dest
    lab.table.set_state(old, int(TcpState.TIME_WAIT), 120.0)
    assert send(lab, client_pkt("A", sport=42000), EXT) is not None  # a late ACK follows the old entry
    assert lab.table.in_get(6, _i("198.18.1.10"), 42000, _i(VIP), 80) is old
    assert send(lab, client_pkt("S", sport=42000), EXT) is not None
    new = lab.table.in_get(6, _i("198.18.1.10"), 42000, _i(VIP), 80)
    assert new is not None and new is not old and new.dest is not first  # rr moved on
    assert lab.director.conns_reused == 1
    lab.table.set_state(new, int(TcpState.ESTABLISHED), 900.0)
    assert send(lab, client_pkt("S", sport=42000), EXT) is not None  # a SYN on a live conn: no reuse
    assert lab.table.in_get(6, _i("198.18.1.10"), 42000, _i(VIP), 80) is new


def test_reuse_under_persistence_follows_the_current_template() -> None:
    """The chaos run's case: the template moved off a quiesced dest while a closed conn of the client
    still pointed at it; a SYN reusing that conn's port must follow the new template."""
    lab = make_lab(persistent=True, ndests=2)
    assert send(lab, client_pkt("S", sport=43000), EXT) is not None
    old = lab.table.in_get(6, _i("198.18.1.10"), 43000, _i(VIP), 80)
    assert old is not None and old.dest is not None and old.control is not None
    a = old.dest
    lab.table.set_state(old, int(TcpState.CLOSE), 10.0)
    lab.svc.edit_dest(a, weight=0)  # quiesced: new conns no longer go there
    lab.table.check_template(old.control, True)  # expire_quiescent_template: the template goes
    assert send(lab, client_pkt("S", sport=43001), EXT) is not None  # a new template, on b
    b = lab.table.in_get(6, _i("198.18.1.10"), 43001, _i(VIP), 80)
    assert b is not None and b.dest is not None and b.dest is not a
    assert send(lab, client_pkt("S", sport=43000), EXT) is not None  # the reused port
    again = lab.table.in_get(6, _i("198.18.1.10"), 43000, _i(VIP), 80)
    assert again is not None and again is not old and again.dest is b.dest  # sticky to the template


def test_an_icmp_error_with_a_bad_checksum_is_not_translated() -> None:
    """Translating recomputes the checksum: a corrupted error must be dropped first, not laundered."""
    lab = make_lab(proto=17, port=53)
    fwd = send(lab, Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.1.10", dst=VIP) /
               UDP(sport=5353, dport=53) / b"q", EXT)
    assert fwd is not None
    rs = Ether(fwd[1])[IP].dst
    err = bytearray(bytes(Ether(src=RS_MAC[RS.index(rs)], dst=VMAC) / IP(src=rs, dst="198.18.1.10") /
                          ICMP(type=3, code=3) / IPerror(fwd[1][14:])))
    good = send(lab, Ether(bytes(err)), INT)
    assert good is not None and good[0] == EXT
    err[-1] ^= 0x01
    assert lab.director.handle(err, INT) is None and drops(lab, Drop.BAD_L4) == 1
    ping = bytearray(bytes(echo_request()))
    ping[-1] ^= 0x01
    assert lab.director.handle(ping, EXT) is None and drops(lab, Drop.BAD_L4) == 2
