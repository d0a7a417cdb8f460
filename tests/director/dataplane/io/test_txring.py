"""The TX ring's slot layout (virtio_net_hdr before each frame) and ``PacketSocket.drain_tx`` (the slot
writes inlined in the RX ring walk), on in-memory rings: no sockets.

``drain_tx`` must put into the slots exactly the frames ``drain`` hands to ``TxRing.send``, with the same
headers, keep the ring's slot and count right across sides and busy slots, and send a frame no slot
takes by a plain send on a second socket (a send on the ring's own socket only flushes the ring).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from director.dataplane.arp import vrrp_mac
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.io import afpacket
from director.dataplane.io.afpacket import PacketSocket, TxRing
from director.dataplane.io.plane import DataPlane
from director.services.sched import registry
from director.services.service import Dest, ServiceTable, VirtualService
from director.table.conn import ConnTable

VIP, RS, GW = "198.18.0.10", "198.18.1.10", "198.18.1.254"
VMAC = "00:00:5e:00:01:01"
CLIENT_MAC, RS_MAC = "02:00:00:00:00:01", "02:00:00:00:01:0a"
BLOCK = 8192
SLOT = 256


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


class FakeSock:
    def __init__(self, ring: TxRing | None = None) -> None:
        self.ring = ring
        self.sends: list[bytes] = []
        self.flushes = 0

    def send(self, data: bytes, flags: int = 0) -> int:
        if self.ring is None:  # a plain socket: the frame itself
            self.sends.append(bytes(data))
            return len(data)
        self.flushes += 1  # the ring's socket: the kernel takes the slots, the buffer is ignored
        return 0


def tx_ring(slots: int = 8, vnet: bool = True) -> Any:
    tx: Any = object.__new__(TxRing)
    tx._ring, tx._mv = None, memoryview(bytearray(SLOT * slots))
    tx._m32 = tx._mv.cast("I")
    tx._fsize, tx._nr, tx._slot, tx._queued = SLOT, slots, 0, 0
    tx._vnet = TxRing.VNET if vnet else 0
    tx._data = TxRing.HDR + tx._vnet
    tx._max = SLOT - tx._data
    tx.fallback = tx.fenced = 0
    tx.fence = None
    tx.ifname = "fake"
    tx.sock = FakeSock(tx)
    tx._plain = FakeSock()
    return tx


def slots(tx: Any) -> list[tuple[int, int, int, bytes]]:
    """(status, tp_len, vnet hdr_len or -1, frame) of every slot handed to the kernel."""
    out = []
    for k in range(tx._nr):
        off = k * tx._fsize
        status, tp_len = struct.unpack_from("=II", tx._mv, off)
        if status != afpacket.TP_STATUS_SEND_REQUEST:
            continue
        hdr_len = struct.unpack_from("=H", tx._mv, off + 34)[0] if tx._vnet else -1
        n = tp_len - tx._vnet
        out.append((status, tp_len, hdr_len, bytes(tx._mv[off + tx._data:off + tx._data + n])))
    return out


class FakeRxRing:
    """The memory of a TPACKET_V3 RX ring; ``fill`` hands one block of frames to user space."""

    def __init__(self, blocks: int = 4) -> None:
        self.mem = bytearray(BLOCK * blocks)
        self.blocks = blocks
        self.next = 0

    def fill(self, frames: list[bytes]) -> None:
        base = self.next * BLOCK
        self.next = (self.next + 1) % self.blocks
        pos = base + 48
        for k, frame in enumerate(frames):
            nxt = 0 if k == len(frames) - 1 else 48 + (len(frame) + 15) // 16 * 16
            struct.pack_into("=IIIIIIHH", self.mem, pos, nxt, 0, 0, len(frame), len(frame),
                             afpacket.TP_STATUS_USER, 48, 0)
            self.mem[pos + 48:pos + 48 + len(frame)] = frame
            pos += nxt
        struct.pack_into("=III", self.mem, base + 8, afpacket.TP_STATUS_USER, len(frames), 48)


def rx_socket(ring: FakeRxRing) -> PacketSocket:
    ps: Any = object.__new__(PacketSocket)
    ps.ifname, ps.csum_fixed, ps._block = "fake", 0, 0
    ps._mv, ps._ring = memoryview(ring.mem), None
    ps._block_size, ps._block_count = BLOCK, ring.blocks
    ps.mac = bytes.fromhex("021b02000001")
    result: PacketSocket = ps
    return result


def director() -> Director:
    table = ConnTable(lambda: 100.0)
    services = ServiceTable()
    for proto in (6, 17):
        svc = VirtualService(protocol=proto, addr=_i(VIP), port=80, scheduler=registry.create("rr"))
        svc.add_dest(Dest(svc, _i(RS), 8080))
        services.add(svc)
    d = Director(table, services, lambda: 100.0, CoreConfig(vmac=vrrp_mac(1), gw_addrs=frozenset({_i(GW)}),
                                                             int_addr=_i(GW)))
    d.set_active(True)
    d.neigh[INT].learn(_i(RS), bytes.fromhex(RS_MAC.replace(":", "")), 100.0)
    return d


def client_frames(n: int) -> list[bytes]:
    cl = Ether(src=CLIENT_MAC, dst=VMAC) / IP(src="198.18.0.100", dst=VIP)
    out = [bytes(cl / UDP(sport=1000 + k, dport=80) / (b"\0" * 18)) for k in range(n)]
    out.append(bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") /
                     ARP(op=1, hwsrc=CLIENT_MAC, psrc="198.18.0.100", pdst=VIP)))  # answered on EXT
    out.append(bytes(cl / TCP(sport=2000, dport=80, flags="S")))
    return out


def expected(frames: list[bytes]) -> list[list[bytes]]:
    """What the generic ``drain`` sends on each side for the same frames (a twin director)."""
    sent: list[list[bytes]] = [[], []]
    sends = [lambda f, s=s: sent[s].append(bytes(f)) or len(f) for s in (EXT, INT)]
    ring = FakeRxRing()
    ring.fill(frames)
    rx_socket(ring).drain(director().handle, EXT, sends)
    return sent


def plane(rings: list[Any]) -> tuple[DataPlane, FakeRxRing]:
    dp = DataPlane(director(), "ext", "int", tx_ring=False)
    rx = FakeRxRing()
    dp.socks = [rx_socket(rx), rx_socket(FakeRxRing())]
    dp.tx_rings = rings
    return dp, rx


def test_drain_tx_fills_the_slots_with_what_drain_sends() -> None:
    frames = client_frames(3)
    want = expected(frames)
    rings = [tx_ring(), tx_ring()]
    dp, rx = plane(rings)
    rx.fill(frames)
    dp._make_reader(dp.socks[EXT], EXT)()
    for side in (EXT, INT):
        got = slots(rings[side])
        assert [g[3] for g in got] == want[side] and want[side]
        assert all(st == 1 and tp_len == len(f) + 10 and hdr_len == len(f) for st, tp_len, hdr_len, f in got)
        assert rings[side]._slot == len(want[side]) and rings[side]._queued == 0  # written back, flushed
        assert rings[side].sock.flushes == 1
    assert dp.rx_frames[EXT] == len(frames) and dp.handler_errors == 0


def test_drain_tx_without_vnet_header() -> None:
    frames = client_frames(2)
    rings = [tx_ring(vnet=False), tx_ring(vnet=False)]
    dp, rx = plane(rings)
    rx.fill(frames)
    dp._make_reader(dp.socks[EXT], EXT)()
    got = slots(rings[INT])
    assert [g[3] for g in got] == expected(frames)[INT]
    assert all(tp_len == len(f) for _st, tp_len, _h, f in got)


def test_a_busy_slot_goes_through_send_and_the_state_follows() -> None:
    """The next slot still belongs to the kernel: TxRing.send flushes, finds it busy still, and the frame
    leaves by the plain socket (the kernel sends the slots in order: none is skipped); once the slot is
    free again, the next frames take it and the ones after."""
    frames = client_frames(4)[:4]
    want = expected(frames)[INT]
    rings = [tx_ring(), tx_ring()]
    rings[INT]._slot = 2
    struct.pack_into("=I", rings[INT]._mv, 2 * SLOT, 2)  # TP_STATUS_SENDING
    dp, rx = plane(rings)
    rx.fill(frames[:2])
    read = dp._make_reader(dp.socks[EXT], EXT)
    read()
    t = rings[INT]
    assert t.fallback == 2 and t._plain.sends == want[:2] and t._slot == 2 and slots(t) == []
    struct.pack_into("=I", t._mv, 2 * SLOT, 0)  # the kernel is done with it
    rx.fill(frames[2:])
    read()
    assert [g[3] for g in slots(t)] == want[2:] and t._slot == 4 and t._queued == 0 and t.fallback == 2


def test_frames_too_big_for_a_slot_go_out_by_the_plain_socket() -> None:
    t = tx_ring()
    big = b"\x02" * (SLOT - TxRing.HDR - TxRing.VNET + 1)
    t.send(b"\x01" * 60)
    t.send(big)
    assert t.fallback == 1 and t._plain.sends == [big] and t.sock.flushes == 1  # queued frame first
    assert [g[3] for g in slots(t)] == [b"\x01" * 60]
