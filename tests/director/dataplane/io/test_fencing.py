"""Fencing and VLAN metadata in the I/O layer, on an in-memory TPACKET_V3 ring (no sockets, injected clock).

A :class:`PacketSocket` is built around a ``bytearray`` laid out as the kernel lays out a TPACKET_V3 RX
ring (block header, packet headers with status / VLAN fields, frames), so the real ``drain`` code runs;
:class:`DataPlane` gets such sockets and a fake clock; a :class:`TxRing` gets an in-memory slot area.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from director.dataplane.arp import vrrp_mac
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.io import afpacket
from director.dataplane.io.afpacket import PacketSocket, TxRing
from director.dataplane.io.plane import DataPlane
from director.dataplane.packet import Drop
from director.services.sched import registry
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import ConnTable

VIP, RS, GW = "198.18.0.10", "198.18.1.10", "198.18.1.254"
VMAC = "00:00:5e:00:01:01"
CLIENT_MAC, RS_MAC = "02:00:00:00:00:01", "02:00:00:00:01:0a"
BLOCK = 4096
PKT_HDR = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) + room: frames start at hdr + PKT_HDR


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class FakeRing:
    """The memory of a TPACKET_V3 RX ring, filled block by block like the kernel does."""

    def __init__(self, blocks: int = 4) -> None:
        self.mem = bytearray(BLOCK * blocks)
        self.blocks = blocks
        self.next = 0

    def fill(self, frames: list[tuple[bytes, int, int]]) -> None:
        """One block of ``(frame, tp_status, vlan_tci)``, handed to user space."""
        base = self.next * BLOCK
        self.next = (self.next + 1) % self.blocks
        pos, first = base + 48, 48
        for k, (frame, status, tci) in enumerate(frames):
            nxt = 0 if k == len(frames) - 1 else PKT_HDR + (len(frame) + 15) // 16 * 16
            struct.pack_into("=IIIIIIHH", self.mem, pos, nxt, 0, 0, len(frame), len(frame),
                             status | afpacket.TP_STATUS_USER, PKT_HDR, 0)
            struct.pack_into("=IIH", self.mem, pos + 28, 0, tci, 0x8100)
            self.mem[pos + PKT_HDR:pos + PKT_HDR + len(frame)] = frame
            pos += nxt
        struct.pack_into("=III", self.mem, base + 8, afpacket.TP_STATUS_USER, len(frames), first)


def fake_socket(ring: FakeRing, sent: list[bytes]) -> PacketSocket:
    ps: Any = object.__new__(PacketSocket)
    ps.ifname, ps.csum_fixed, ps._block = "fake", 0, 0
    ps._mv, ps._ring = memoryview(ring.mem), None
    ps._block_size, ps._block_count = BLOCK, ring.blocks
    ps.send = lambda frame: sent.append(bytes(frame)) or len(frame)
    ps.mac = bytes.fromhex("021b02000001")
    ps.close = lambda: None
    ps.stats = lambda: (0, 0)
    result: PacketSocket = ps
    return result


Plane = tuple[DataPlane, list[FakeRing], list[list[bytes]]]


def make_plane(clock: Clock, master_until: float | None) -> Plane:
    table = ConnTable(clock)
    services = ServiceTable()
    svc = VirtualService(protocol=6, addr=_i(VIP), port=80, scheduler=registry.create("rr"))
    svc.add_dest(Dest(svc, _i(RS), 80))
    services.add(svc)
    d = Director(table, services, clock, CoreConfig(vmac=vrrp_mac(1), gw_addrs=frozenset({_i(GW)}),
                                                    int_addr=_i(GW)))
    d.set_active(True)
    d.neigh[INT].learn(_i(RS), bytes.fromhex(RS_MAC.replace(":", "")), clock.now)
    dp = DataPlane(d, "ext", "int", tx_ring=False, clock=clock, master_until=master_until)
    rings = [FakeRing(), FakeRing()]
    sent: list[list[bytes]] = [[], []]
    dp.socks = [fake_socket(rings[s], sent[s]) for s in (EXT, INT)]
    return dp, rings, sent


def syn(sport: int) -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.0.100", dst=VIP) /
                 TCP(sport=sport, dport=80, flags="S"))


ARP_REQ = bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") /
                ARP(op=1, hwsrc=CLIENT_MAC, psrc="198.18.0.100", pdst=VIP))


def test_master_forwards_until_the_deadline_then_drops_and_counts_every_frame() -> None:
    clock = Clock()
    dp, rings, sent = make_plane(clock, master_until=110.0)
    read = dp._make_reader(dp.socks[EXT], EXT)
    rings[EXT].fill([(syn(1000), 0, 0), (ARP_REQ, 0, 0)])
    read()
    assert len(sent[INT]) == 1 and len(sent[EXT]) == 1  # the SYN forwarded, the ARP answered
    clock.now = 110.0  # the deadline: reached is passed
    rings[EXT].fill([(syn(1001), 0, 0), (ARP_REQ, 0, 0), (syn(1002), 0, 0)])
    rings[EXT].fill([(syn(1003), 0, 0)])
    read()
    assert len(sent[INT]) == 1 and len(sent[EXT]) == 1  # nothing more left
    d = dp.director
    assert d.counters[Drop.NOT_MASTER] == 4 and d.table.count == 1 and dp.rx_frames[EXT] == 6
    assert dp.fenced() and dp.stats()["fenced"]
    # control frames are fenced as well
    assert dp.send_gratuitous_arp() == 0 and dp.ctl_fenced == 2 and sent == [[sent[EXT][0]], [sent[INT][0]]]
    # the elector re-validates: forwarding resumes at once
    dp.set_master_until(clock.now + 5)
    rings[EXT].fill([(syn(1004), 0, 0)])
    read()
    assert len(sent[INT]) == 2 and d.table.count == 2


def test_not_master_forwards_nothing_answers_no_arp_but_keeps_learning() -> None:
    clock = Clock()
    dp, rings, sent = make_plane(clock, master_until=None)
    assert dp.master_until is None and dp.fenced()
    rings[EXT].fill([(syn(1000), 0, 0), (ARP_REQ, 0, 0)])
    dp._make_reader(dp.socks[EXT], EXT)()
    assert sent == [[], []] and dp.director.counters[Drop.NOT_MASTER] == 2
    assert _i("198.18.0.100") in dp.director.neigh[EXT]  # learned from the ARP, not answered
    assert dp.director.arp_replies == 0 and dp.director.counters[Drop.NOT_ACTIVE] == 0


def test_a_fenced_node_learns_from_neighbour_discovery_too() -> None:
    """IPv6: the NA answering a backup's quiet probe (to all-nodes) goes to the learn-only sink like
    an ARP frame (the ring path here; the plain-socket path asks the same ``learnable``); other IPv6
    frames do not."""
    assert afpacket.learnable(ARP_REQ) and not afpacket.learnable(syn(1))
    assert not afpacket.learnable(b"\0" * 10)
    rs6 = "fd00:2::1"
    na = bytes(Ether(src=RS_MAC, dst="33:33:00:00:00:01") / IPv6(src=rs6, dst="ff02::1", hlim=255) /
               ICMPv6ND_NA(tgt=rs6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=RS_MAC))
    tcp6 = bytes(Ether(src=RS_MAC, dst=VMAC) / IPv6(src=rs6, dst="2001:db8::1") / TCP(sport=80, dport=1))
    assert afpacket.learnable(na) and not afpacket.learnable(tcp6)
    clock = Clock()
    dp, rings, sent = make_plane(clock, master_until=None)
    seen: list[bytes] = []
    sink = dp.director.learn_arp

    def spy(frame: bytearray, side: int) -> None:
        seen.append(bytes(frame))
        sink(frame, side)

    rings[INT].fill([(tcp6, 0, 0), (na, 0, 0), (ARP_REQ, 0, 0)])
    assert dp.socks[INT].drain(dp.director.handle, INT, [s.send for s in dp.socks], 64, dp.fenced,
                               spy) == (0, 0, 3)
    assert seen == [na, ARP_REQ] and sent == [[], []]


def test_stall_mid_drain_drops_the_blocks_read_after_the_deadline() -> None:
    """The loop resumes late: the clock is read before every block, so the blocks taken after the
    deadline are dropped even within one drain call."""
    clock = Clock()
    dp, rings, sent = make_plane(clock, master_until=105.0)
    rings[EXT].fill([(syn(1000), 0, 0), (syn(1001), 0, 0)])
    rings[EXT].fill([(syn(1002), 0, 0)])
    rings[EXT].fill([(syn(1003), 0, 0)])
    handle = dp.director.handle

    def stalling(frame: bytearray, side: int) -> Any:
        out = handle(frame, side)
        clock.now += 3.0  # each frame "takes" 3 s: the deadline passes inside the first block
        return out

    sock = dp.socks[EXT]
    handled, errors, fenced = sock.drain(stalling, EXT, [s.send for s in dp.socks], 64, dp.fenced,
                                         dp.director.learn_arp)
    assert (handled, errors, fenced) == (2, 0, 2)
    assert len(sent[INT]) == 2  # only the first block, checked before the deadline


def test_a_step_down_from_another_thread_is_seen_at_the_next_block() -> None:
    """The elector (on its own thread) revokes mastership while a drain runs: the deadline is read
    live, so the next block is already dropped (the TX flush's own check is tested below)."""
    clock = Clock()
    dp, rings, sent = make_plane(clock, master_until=float("inf"))
    rings[EXT].fill([(syn(1000), 0, 0), (syn(1001), 0, 0)])
    rings[EXT].fill([(syn(1002), 0, 0)])
    handle = dp.director.handle

    def step_down_midway(frame: bytearray, side: int) -> Any:
        dp.set_master_until(None)  # what Node._on_fence(None) does from the election thread
        return handle(frame, side)

    handled, _errors, fenced = dp.socks[EXT].drain(step_down_midway, EXT, [s.send for s in dp.socks], 64,
                                                    dp.fenced, dp.director.learn_arp)
    assert (handled, fenced) == (2, 1) and dp.master_until is None


def test_vlan_tag_from_ring_metadata_is_put_back_and_the_frame_dropped() -> None:
    clock = Clock()
    dp, rings, sent = make_plane(clock, master_until=float("inf"))
    rings[EXT].fill([(syn(1000), afpacket.TP_STATUS_VLAN_VALID | afpacket.TP_STATUS_VLAN_TPID_VALID, 5)])
    seen: list[bytes] = []
    handle = dp.director.handle

    def spy(frame: bytearray, side: int) -> Any:
        seen.append(bytes(frame))
        return handle(frame, side)

    dp.socks[EXT].drain(spy, EXT, [s.send for s in dp.socks])
    assert Ether(seen[0])[Dot1Q].vlan == 5 and Ether(seen[0])[IP].dst == VIP
    assert sent == [[], []] and dp.director.counters[Drop.VLAN_TAGGED] == 1 and dp.director.table.count == 0


def test_retag_from_auxdata_fields() -> None:
    frame = bytearray(syn(7))
    afpacket.retag(frame, afpacket.TP_STATUS_VLAN_VALID, 0x2007, 0)  # no TPID: 802.1Q
    tagged = Ether(bytes(frame))
    assert tagged[Dot1Q].vlan == 7 and tagged[Dot1Q].prio == 1 and tagged.type == 0x8100


class FakeTxSock:
    def __init__(self) -> None:
        self.sends = 0

    def send(self, data: bytes, flags: int = 0) -> int:
        self.sends += 1
        return len(data)


def test_tx_ring_discards_queued_frames_when_fenced() -> None:
    tx: Any = object.__new__(TxRing)
    tx.sock, tx._fsize, tx._nr = FakeTxSock(), 256, 4
    tx._mv = memoryview(bytearray(256 * 4))
    tx._slot = tx._queued = tx.fallback = tx.fenced = 0
    tx._max = 256 - TxRing.HDR
    fenced = [False]
    tx.fence = lambda: fenced[0]
    tx.send(b"a" * 60)
    tx.flush()
    assert tx.sock.sends == 1 and tx._slot == 1
    tx.send(b"b" * 60)
    tx.send(b"c" * 60)
    fenced[0] = True
    tx.flush()
    assert tx.sock.sends == 1 and tx.fenced == 2 and tx._slot == 1 and tx._queued == 0
    status = struct.unpack_from("=I", tx._mv, 256)[0]
    assert status == afpacket.TP_STATUS_AVAILABLE  # the slot is free again, nothing handed over


def test_probes_are_quiet_unless_active_and_unfenced() -> None:
    """Only the forwarding master asks from the virtual MAC; anybody else asks from the interface's own
    MAC with sender address 0 (claims nothing), and learns from the answer sent to that MAC."""
    clock = Clock()
    dp, _rings, sent = make_plane(clock, master_until=None)
    d = dp.director
    d.neigh[INT].forget(_i(RS))
    assert dp.probe_neighbours() == 1
    probe = Ether(sent[INT][-1])
    assert probe.src == "02:1b:02:00:00:01" and probe[ARP].psrc == "0.0.0.0" and probe[ARP].pdst == RS
    assert dp.ctl_fenced == 0
    dp.open()  # (sockets already there: tells the director its own MACs)
    answer = Ether(src=RS_MAC, dst=probe.src) / ARP(op=2, hwsrc=RS_MAC, psrc=RS, hwdst=probe.src,
                                                    pdst="0.0.0.0")
    assert d.handle(bytearray(bytes(answer)), INT) is None
    assert d.neigh[INT].get(_i(RS)) == bytes.fromhex(RS_MAC.replace(":", ""))
    assert d.counters[Drop.TO_HOST] == 1
    # the forwarding master asks loudly, from the virtual MAC with its gateway address
    dp.set_master_until(clock.now + 10)
    d.neigh[INT].forget(_i(RS))
    assert dp.probe_neighbours() == 1
    probe = Ether(sent[INT][-1])
    assert probe.src == VMAC and probe[ARP].psrc == GW


def test_the_sorry_dest_is_probed_like_the_dests() -> None:
    """Its MAC must be known before the first conn falls back to it (no first-packet drop)."""
    clock = Clock()
    dp, _rings, sent = make_plane(clock, master_until=clock.now + 10)
    svc = next(iter(dp.director.services))
    sorry = "198.18.1.99"
    svc.set_sorry(Dest(svc, _i(sorry), 80))
    assert dp.probe_neighbours() == 1  # RS is known; only the sorry dest is asked for
    assert Ether(sent[INT][-1])[ARP].pdst == sorry


def test_an_ipv6_dest_is_solicited_never_arped() -> None:
    """Probing resolves an IPv6 dest by a Neighbor Solicitation (never an ARP request, which could not
    hold a 128-bit address): from the virtual MAC while master, DAD-form (source ::) when fenced."""
    from scapy.layers.inet6 import ICMPv6ND_NS, IPv6
    from scapy.layers.l2 import Ether

    clock = Clock()
    dp, _rings, sent = make_plane(clock, master_until=clock.now + 10)
    dp.director.set_active(True)
    svc = next(iter(dp.director.services))
    svc.set_sorry(Dest(svc, int(ipaddress.IPv6Address("fd00:1::99")), 80))
    before = len(sent[INT])
    dp.probe_neighbours()
    new = [Ether(bytes(f)) for f in sent[INT][before:]]
    ns = [p for p in new if ICMPv6ND_NS in p]
    assert len(ns) == 1 and ns[0][ICMPv6ND_NS].tgt == "fd00:1::99" and ns[0][IPv6].src.startswith("fe80::")
    clock.now += 20  # fenced, and past the probe interval: a quiet probe
    before = len(sent[INT])
    dp.probe_neighbours()
    ns = [Ether(bytes(f)) for f in sent[INT][before:] if ICMPv6ND_NS in Ether(bytes(f))]
    assert len(ns) == 1 and ns[0][IPv6].src == "::" and ns[0].src != "00:00:5e:00:01:01"
