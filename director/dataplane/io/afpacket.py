"""AF_PACKET sockets for the data plane: a TPACKET_V3 receive ring, a TX ring, optional fanout.

Theory of operation
-------------------
One :class:`PacketSocket` per interface: an ``ETH_P_ALL`` AF_PACKET socket bound to it (bound to all
ethertypes so it taps frames before netdev ingress, where the lab drops VIP traffic for the kernel),
with ``PACKET_IGNORE_OUTGOING`` so it never re-receives frames sent on that interface (by itself or by
a sibling worker) and ``PACKET_QDISC_BYPASS`` for sends.

Receive: a TPACKET_V3 ring (``PACKET_RX_RING``) of ``block_count`` blocks. The kernel fills a block
and hands it over (``TP_STATUS_USER``) when it is full or its retire timeout expires; :meth:`recv_batch`
walks every ready block, copies each frame into a ``bytearray`` (the packet path rewrites in place),
and gives the block back. Each packet header carries ``tp_status``; ``TP_STATUS_CSUMNOTREADY`` means
the sender's stack left the L4 checksum to offload (veth, and real NICs on locally generated traffic):
the field holds only the pseudo-header sum, so :func:`..checksum.fix_partial_csum` completes it
before the director patches it incrementally. Without a ring (``ring=None``) the same information comes
from ``PACKET_AUXDATA`` control messages of ``recvmsg`` (slower; kept to compare and as a fallback).
The kernel also moves a received frame's 802.1Q/802.1ad tag into that metadata (``TP_STATUS_VLAN_VALID``,
``tp_vlan_tci``) before any tap sees the frame: :func:`retag` puts it back, so the packet path sees
(and drops) a tagged frame as it was on the wire.

Fencing: :meth:`PacketSocket.drain` asks its ``fenced()`` (one clock read) before each block it takes;
once fenced it gives every ready block back unhandled (ARP and ND frames to a learn-only ``sink``) and
reports them as fenced; :class:`TxRing` asks its ``fence`` before every flush and discards the queued
frames instead of sending them. See ``docs/DATAPLANE.md``.

Send: a :class:`TxRing` (PACKET_TX_RING, TPACKET_V2) per interface takes the frames of a batch into
its slots and one ``send()`` hands them all to the kernel. :meth:`PacketSocket.drain` walks the RX
ring and calls the handler frame by frame without building a list. Measured in the lab (bench_fwd,
one director core, same run, medians of 3): plain recvmsg + send 109k pps, RX ring 159k, RX + TX
ring 184k (the kernel's DNAT reached 343k in that run). :meth:`PacketSocket.drain_tx` (what the data
plane uses with TX rings) is the same walk with the TX slot writes inlined, and each slot carries a
``virtio_net_hdr`` so the kernel copies the whole frame into the skb instead of referencing the ring
page (which a veth then copied again, page by page): together 5.41 -> 4.79 us of director CPU per
forwarded frame (static directord, same lab, medians of 8 interleaved rounds).

Fanout and socket filters (classic BPF): :mod:`director.dataplane.io.bpf`.

:func:`blocking_loop` is the same loop without asyncio: poll both rings, hand frames to a handler,
send what it returns.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import select
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from director.dataplane.checksum import fix_partial_csum
from director.dataplane.io.bpf import Fanout, attach_filter, cbpf_not_arp, join_fanout

log = logging.getLogger(__name__)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_VERSION = 10
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
TPACKET_V2 = 1
TPACKET_V3 = 2
PACKET_TX_RING = 13
PACKET_VNET_HDR = 15
ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_8021Q = 0x8100


_BLOCK_HDR = struct.Struct("=III")      # block_status, num_pkts, offset_to_first_pkt (at block + 8)
_PKT_HDR = struct.Struct("=I8xIIIH")    # tp_next_offset, tp_snaplen, tp_len, tp_status, tp_mac
_U32 = struct.Struct("=I")
_VLAN = struct.Struct("=IH")            # tpacket3_hdr hv1: tp_vlan_tci, tp_vlan_tpid (at pkt + 32)
_TAG = struct.Struct("!HH")
_MARK = TP_STATUS_CSUMNOTREADY | TP_STATUS_VLAN_VALID
_TX_HDR = struct.Struct("=II")           # tpacket2_hdr: tp_status, tp_len
_TX_VNET = struct.Struct("=II24xBBH")   # the same, then (at 32) virtio_net_hdr flags, gso_type, hdr_len
_AUXDATA = struct.Struct("=IIIHHHH")    # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, vlan_tci, tpid
_REQ3 = struct.Struct("=7I")
_STATS_V3 = struct.Struct("=III")


Handler = Callable[[bytearray, int], "tuple[int, bytes | bytearray] | None"]
"""``Director.handle``: a frame and the side it came from in, ``(out_side, frame)`` or None out."""
Sink = Callable[[bytearray, int], None]
"""Where a fenced drain hands the ARP and IPv6 neighbour discovery frames it drops
(``Director.learn_arp``: learn, answer nothing)."""


def learnable(frame: bytes | bytearray | memoryview, start: int = 0, size: int | None = None) -> bool:
    """An untagged ARP frame, or an IPv6 NS/NA without extension headers (what a fenced node learns
    from: :data:`Sink`), at ``start`` in ``frame`` (``size`` bytes long)."""
    size = len(frame) - start if size is None else size
    if size < 14:
        return False
    if frame[start + 12] == 8 and frame[start + 13] == 6:
        return True
    return (size >= 78 and frame[start + 12] == 0x86 and frame[start + 13] == 0xDD and frame[start + 20] == 58
            and frame[start + 54] in (135, 136))
INF = float("inf")


def retag(frame: bytearray, status: int, tci: int, tpid: int) -> None:
    """Put back the 802.1Q/802.1ad tag the kernel moved into packet metadata (the packet path then sees
    and drops a tagged frame, as on the wire)."""
    frame[12:12] = _TAG.pack(tpid if status & TP_STATUS_VLAN_TPID_VALID and tpid else ETH_P_8021Q,
                             tci & 0xFFFF)


def _mark(frame: bytearray, status: int, mv: memoryview, hdr: int) -> bool:
    """A frame whose status bits ask for work: the VLAN tag back in (from the ring header at ``hdr``),
    the L4 checksum completed (CHECKSUM_PARTIAL). True if a checksum was completed."""
    if status & TP_STATUS_VLAN_VALID:
        tci, tpid = _VLAN.unpack_from(mv, hdr + 32)
        retag(frame, status, tci, tpid)
        return False  # dropped by the packet path: no checksum work
    return bool(status & TP_STATUS_CSUMNOTREADY) and fix_partial_csum(frame)


@dataclass(frozen=True)
class RingSpec:
    """TPACKET_V3 ring geometry. 64 x 256 KiB absorbs a long burst; 2 ms retire timeout."""

    block_size: int = 1 << 18
    block_count: int = 64
    frame_size: int = 2048
    retire_ms: int = 2


class PacketSocket:
    """An AF_PACKET socket bound to one interface; see the module docstring."""

    def __init__(self, ifname: str, *, ring: RingSpec | None = RingSpec(), fanout: Fanout | None = None,
                 promisc: bool = False, qdisc_bypass: bool = True, rcvbuf: int = 8 << 20,
                 ethertype: int = ETH_P_ALL, drop_arp: bool = False, bpf: bytes | None = None) -> None:
        self.ifname = ifname
        self.csum_fixed = 0
        """Frames received CHECKSUM_PARTIAL whose L4 checksum this socket completed."""
        self.ethertype = ethertype
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._ring: mmap.mmap | None = None
        self._mv: memoryview | None = None
        self._block = 0
        try:
            if bpf is not None or drop_arp:  # before bind: the socket never sees a frame it would refuse
                attach_filter(self.sock, bpf if bpf is not None else cbpf_not_arp())
            self._setup(ring, fanout, promisc, qdisc_bypass, rcvbuf)
        except BaseException:
            self.close()
            raise
        self.ifindex = socket.if_nametoindex(ifname)
        self.mac = read_mac(ifname)
        self.send = self.sock.send
        self.recv_batch: Callable[[int], list[bytearray]] = (
            self._recv_ring if self._ring is not None else self._recv_plain)

    def _setup(self, ring: RingSpec | None, fanout: Fanout | None, promisc: bool, qdisc_bypass: bool,
               rcvbuf: int) -> None:
        s = self.sock
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        if qdisc_bypass:
            s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        if ring is not None:
            self._map_ring(ring)
        else:
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        s.bind((self.ifname, self.ethertype))
        s.setblocking(False)
        if promisc:
            mreq = struct.pack("=iHH8s", socket.if_nametoindex(self.ifname), PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if fanout is not None:
            join_fanout(s, fanout)

    def _map_ring(self, spec: RingSpec) -> None:
        s = self.sock
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_nr = spec.block_size // spec.frame_size * spec.block_count
        req = _REQ3.pack(spec.block_size, spec.block_count, spec.frame_size, frame_nr, spec.retire_ms, 0, 0)
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self._ring = mmap.mmap(s.fileno(), spec.block_size * spec.block_count,
                               mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._mv = memoryview(self._ring)
        self._block_size = spec.block_size
        self._block_count = spec.block_count

    def fileno(self) -> int:
        return self.sock.fileno()

    def _recv_ring(self, max_blocks: int = 64) -> list[bytearray]:
        """Every frame of the ready blocks (up to ``max_blocks``), checksums completed; never blocks."""
        mv = self._mv
        assert mv is not None
        out: list[bytearray] = []
        append = out.append
        unpack_pkt = _PKT_HDR.unpack_from
        bsize = self._block_size
        for _ in range(max_blocks):
            base = self._block * bsize
            status, num, off = _BLOCK_HDR.unpack_from(mv, base + 8)
            if not status & TP_STATUS_USER:
                break
            pos = base + off
            for _ in range(num):
                nxt, snaplen, _len, pstatus, mac = unpack_pkt(mv, pos)
                start = pos + mac
                frame = bytearray(mv[start:start + snaplen])
                if pstatus & _MARK and _mark(frame, pstatus, mv, pos):
                    self.csum_fixed += 1
                append(frame)
                pos += nxt
            _U32.pack_into(mv, base + 8, TP_STATUS_KERNEL)
            self._block = (self._block + 1) % self._block_count
        return out

    def drain(self, handler: Handler, side: int, sends: Sequence[Callable[[bytes | bytearray], int]],
              max_blocks: int = 64, fenced: Callable[[], bool] | None = None,
              sink: Sink | None = None) -> tuple[int, int, int]:
        """Hand every ready frame to ``handler(frame, side)`` and send what it returns on
        ``sends[out_side]``, straight from the ring (no intermediate list); never blocks.

        Fencing: ``fenced()`` (one clock read and compare, live: another thread may move the deadline)
        is asked before each block; from the first block it says yes to, the rest of the ready blocks
        are dropped unhandled (their ARP and ND frames go to ``sink``, which must send nothing). Returns
        (frames handled, errors, frames dropped by the fence). A handler or send error is counted,
        never raised."""
        if self._mv is None:
            return self._drain_plain(handler, side, sends, fenced, sink)
        mv = self._mv
        unpack_pkt = _PKT_HDR.unpack_from
        bsize = self._block_size
        handled = errors = 0
        for _ in range(max_blocks):
            base = self._block * bsize
            status, num, pos = _BLOCK_HDR.unpack_from(mv, base + 8)
            if not status & TP_STATUS_USER:
                break
            if fenced is not None and fenced():
                return handled, errors, self._discard(side, max_blocks, sink)
            pos += base
            for _ in range(num):
                nxt, snaplen, _len, pstatus, mac = unpack_pkt(mv, pos)
                start = pos + mac
                frame = bytearray(mv[start:start + snaplen])
                if pstatus & _MARK and _mark(frame, pstatus, mv, pos):
                    self.csum_fixed += 1
                pos += nxt
                try:
                    act = handler(frame, side)
                    if act is not None:
                        sends[act[0]](act[1])
                except Exception:  # a packet-path bug or a send error must not stop the batch
                    errors += 1
                    if errors == 1:
                        log.exception("frame from %s: handler or send failed", self.ifname)
            handled += num
            _U32.pack_into(mv, base + 8, TP_STATUS_KERNEL)
            self._block = (self._block + 1) % self._block_count
        return handled, errors, 0

    def drain_tx(self, handler: Handler, side: int, rings: Sequence[TxRing], max_blocks: int = 64,
                 fenced: Callable[[], bool] | None = None, sink: Sink | None = None) -> tuple[int, int, int]:
        """:meth:`drain` sending on TX rings (``rings[out_side]``) with the slot write inlined: the
        ring a frame goes to keeps its slot and count in locals, written back when the output side
        changes, around :meth:`TxRing.send` (a busy slot: it flushes, retries, falls back) and at the
        end. Per frame that saves a call and eight attribute reads and writes (a tenth of the
        user-space cost of a forwarded frame). Same fencing, counting and error handling as :meth:`drain`."""
        mv = self._mv
        if mv is None:
            return self._drain_plain(handler, side, [r.send for r in rings], fenced, sink)
        buf: mmap.mmap | memoryview = mv if self._ring is None else self._ring  # mmap slices are cheaper
        unpack_pkt, marked, mark = _PKT_HDR.unpack_from, _MARK, _mark
        pack_hdr, pack_vnet = _TX_HDR.pack_into, _TX_VNET.pack_into
        bsize = self._block_size
        handled = errors = 0
        cur = -1  # the ring whose state the locals below hold
        ring = rings[0]
        tmv, t32, fsize, nr, data, vnet, fmax = ring._mv, ring._m32, ring._fsize, ring._nr, ring._data, 0, 0
        tbuf: mmap.mmap | memoryview = tmv
        slot = queued = 0
        try:
            for _ in range(max_blocks):
                base = self._block * bsize
                status, num, pos = _BLOCK_HDR.unpack_from(mv, base + 8)
                if not status & TP_STATUS_USER:
                    break
                if fenced is not None and fenced():
                    return handled, errors, self._discard(side, max_blocks, sink)
                pos += base
                for _ in range(num):
                    nxt, snaplen, _len, pstatus, mac = unpack_pkt(mv, pos)
                    start = pos + mac
                    frame = bytearray(buf[start:start + snaplen])
                    if pstatus & marked and mark(frame, pstatus, mv, pos):
                        self.csum_fixed += 1
                    pos += nxt
                    try:
                        act = handler(frame, side)
                        if act is None:
                            continue
                        o, out = act
                        if o != cur:
                            if cur >= 0:
                                ring._slot, ring._queued = slot, queued
                            cur, ring = o, rings[o]
                            tmv, t32, fsize, nr, data = ring._mv, ring._m32, ring._fsize, ring._nr, ring._data
                            vnet, fmax, slot, queued = ring._vnet, ring._max, ring._slot, ring._queued
                            tbuf = tmv if ring._ring is None else ring._ring
                        n = len(out)
                        off = slot * fsize
                        if t32[off >> 2] or n > fmax:  # busy (or too big): send() flushes and retries
                            ring._slot, ring._queued = slot, queued
                            try:
                                ring.send(out)
                            finally:
                                slot, queued = ring._slot, ring._queued
                            continue
                        start = off + data
                        tbuf[start:start + n] = out
                        if vnet:
                            pack_vnet(tmv, off, TP_STATUS_SEND_REQUEST, n + vnet, 0, 0, n)
                        else:
                            pack_hdr(tmv, off, TP_STATUS_SEND_REQUEST, n)
                        slot += 1
                        if slot == nr:
                            slot = 0
                        queued += 1
                    except Exception:  # a packet-path bug or a send error must not stop the batch
                        errors += 1
                        if errors == 1:
                            log.exception("frame from %s: handler or send failed", self.ifname)
                handled += num
                _U32.pack_into(mv, base + 8, TP_STATUS_KERNEL)
                self._block = (self._block + 1) % self._block_count
            return handled, errors, 0
        finally:
            if cur >= 0:
                ring._slot, ring._queued = slot, queued

    def _discard(self, side: int, max_blocks: int, sink: Sink | None) -> int:
        """Give every ready block back unhandled (fenced); ARP and ND frames go to ``sink``. Returns the
        frames dropped."""
        mv = self._mv
        assert mv is not None
        bsize = self._block_size
        dropped = 0
        for _ in range(max_blocks):
            base = self._block * bsize
            status, num, pos = _BLOCK_HDR.unpack_from(mv, base + 8)
            if not status & TP_STATUS_USER:
                break
            pos += base
            for _ in range(num):
                if sink is None:
                    break
                nxt, snaplen, _len, pstatus, mac = _PKT_HDR.unpack_from(mv, pos)
                start = pos + mac
                if not pstatus & TP_STATUS_VLAN_VALID and learnable(mv, start, snaplen):
                    with contextlib.suppress(Exception):  # learning only: never fatal
                        sink(bytearray(mv[start:start + snaplen]), side)
                pos += nxt
            dropped += num
            _U32.pack_into(mv, base + 8, TP_STATUS_KERNEL)
            self._block = (self._block + 1) % self._block_count
        return dropped

    def _drain_plain(self, handler: Handler, side: int, sends: Sequence[Callable[[bytes | bytearray], int]],
                     fenced: Callable[[], bool] | None, sink: Sink | None) -> tuple[int, int, int]:
        frames = self._recv_plain()
        if frames and fenced is not None and fenced():
            for frame in frames:
                if sink is not None and learnable(frame):
                    with contextlib.suppress(Exception):
                        sink(frame, side)
            return 0, 0, len(frames)
        errors = 0
        for frame in frames:
            try:
                act = handler(frame, side)
                if act is not None:
                    sends[act[0]](act[1])
            except Exception:
                errors += 1
                if errors == 1:
                    log.exception("frame from %s: handler or send failed", self.ifname)
        return len(frames), errors, 0

    def _recv_plain(self, max_frames: int = 256) -> list[bytearray]:
        """Up to ``max_frames`` frames by ``recvmsg`` with PACKET_AUXDATA; never blocks."""
        out: list[bytearray] = []
        recvmsg = self.sock.recvmsg
        space = socket.CMSG_SPACE(_AUXDATA.size)
        for _ in range(max_frames):
            try:
                data, anc, _flags, _addr = recvmsg(65536, space)
            except BlockingIOError:
                break
            frame = bytearray(data)
            for level, kind, cdata in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= _AUXDATA.size:
                    status, _len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(cdata)
                    if status & TP_STATUS_VLAN_VALID:
                        retag(frame, status, tci, tpid)
                    elif status & TP_STATUS_CSUMNOTREADY and fix_partial_csum(frame):
                        self.csum_fixed += 1
            out.append(frame)
        return out

    def stats(self) -> tuple[int, int]:
        """(packets, drops) counted by the kernel since the previous call."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
        packets, drops, _ = _STATS_V3.unpack_from(raw.ljust(_STATS_V3.size, b"\0"))
        return packets, drops

    def close(self) -> None:
        if self._mv is not None:
            self._mv.release()
            self._mv = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self.sock.close()


class TxRing:
    """A PACKET_TX_RING (TPACKET_V2) on its own socket bound to ``ifname``: :meth:`send` copies a
    frame into the next free slot, :meth:`flush` hands every queued slot to the kernel with one
    ``send()``. A full ring flushes; if the slot is still busy (or the frame does not fit in a slot)
    the frame goes out by a plain ``send`` on a second socket without a ring (``fallback``).

    Linear frames: with a plain TX ring the kernel copies only the Ethernet header into the skb and
    points the rest at the ring's page (zero copy); a veth (or anything that must own the data)
    then copies that fragment into a newly allocated page per frame (``skb_copy_ubufs``, with a
    page allocation and free: about 4 % of the director core at full load). With ``PACKET_VNET_HDR``
    each slot carries a ``virtio_net_hdr`` before the frame whose ``hdr_len`` (the part copied
    into the skb's linear area) is the whole frame, so the skb has no page fragment and nothing is
    copied again (no GSO, no checksum offload asked: the frame goes out as written). Kernels
    without it: the plain layout (``vnet`` 0)."""

    HDR = 32  # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): frame data offset in a slot
    VNET = 10  # sizeof(struct virtio_net_hdr)
    _vnet = 0
    """Bytes of virtio_net_hdr before each frame (0 or VNET)."""
    _data = HDR
    """Offset of the frame in a slot: HDR + _vnet."""
    _plain: socket.socket | None = None
    """A socket without a ring for the frames no slot takes (too big, or the ring still busy)."""

    def __init__(self, ifname: str, frame_size: int = 2048, frame_nr: int = 1024) -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s = self.sock
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        try:  # before the ring: the kernel refuses it on a socket with a ring
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            self._vnet = self.VNET
        except OSError as exc:
            log.info("%s: no PACKET_VNET_HDR on the TX ring (%s): frames leave by page reference",
                     ifname, exc)
        self._data = self.HDR + self._vnet
        block = 1 << 16  # a multiple of the page size holding whole slots
        s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                     struct.pack("=4I", block, frame_size * frame_nr // block, frame_size, frame_nr))
        s.bind((ifname, 0))
        self._ring = mmap.mmap(s.fileno(), frame_size * frame_nr, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        self._mv = memoryview(self._ring)
        self._m32 = self._mv.cast("I")
        """The ring as native u32 words: a slot's tp_status is ``_m32[offset >> 2]``."""
        self._fsize = frame_size
        self._nr = frame_nr
        self._slot = 0
        self._queued = 0
        self._max = frame_size - self._data
        self.fallback = 0
        self.fence: Callable[[], bool] | None = None
        """If set and true at a flush, the queued frames are discarded instead of sent (fencing)."""
        self.fenced = 0
        """Frames discarded by the fence."""

    def send(self, frame: bytes | bytearray) -> int:
        n = len(frame)
        off = self._slot * self._fsize
        mv = self._mv
        if _U32.unpack_from(mv, off)[0] != TP_STATUS_AVAILABLE or n > self._max:
            self.flush()
            if _U32.unpack_from(mv, off)[0] != TP_STATUS_AVAILABLE or n > self._max:
                if self.fence is not None and self.fence():
                    self.fenced += 1
                    return n
                self.fallback += 1
                return self._send_plain(frame)
        start = off + self._data
        mv[start:start + n] = frame
        if self._vnet:
            _TX_VNET.pack_into(mv, off, TP_STATUS_SEND_REQUEST, n + self._vnet, 0, 0, n)
        else:
            _TX_HDR.pack_into(mv, off, TP_STATUS_SEND_REQUEST, n)
        self._slot = (self._slot + 1) % self._nr
        self._queued += 1
        return n

    def _send_plain(self, frame: bytes | bytearray) -> int:
        """One frame by ``send()`` on a socket without a ring (opened on first use): a ``send()`` on
        the ring's own socket only flushes the ring (the kernel reads the slots, never the buffer)."""
        if self._plain is None:
            plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                plain.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                plain.bind((self.ifname, 0))
            except BaseException:
                plain.close()
                raise
            self._plain = plain
        return self._plain.send(frame)

    def flush(self) -> None:
        if self._queued:
            if self.fence is not None and self.fence():
                self.discard()
                return
            self._queued = 0
            with contextlib.suppress(BlockingIOError):
                self.sock.send(b"", socket.MSG_DONTWAIT)

    def discard(self) -> int:
        """Take back every frame queued since the last flush (the kernel only reads slots on send())."""
        n = self._queued
        for _ in range(n):
            self._slot = (self._slot - 1) % self._nr
            _TX_HDR.pack_into(self._mv, self._slot * self._fsize, TP_STATUS_AVAILABLE, 0)
        self._queued = 0
        self.fenced += n
        return n

    def close(self) -> None:
        self._m32.release()
        self._mv.release()
        self._ring.close()
        self.sock.close()
        if self._plain is not None:
            self._plain.close()


def read_mac(ifname: str) -> bytes:
    with open(f"/sys/class/net/{ifname}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def blocking_loop(socks: list[PacketSocket], handler: Handler, should_stop: Callable[[], bool],
                  poll_ms: int = 100, extra: Sequence[tuple[PacketSocket, int]] = (),
                  tx_rings: Sequence[TxRing] = (), fenced: Callable[[], bool] | None = None) -> int:
    """Forward until ``should_stop()``: frames from ``socks[side]`` go to ``handler(frame, side)``,
    a returned ``(out_side, frame)`` is sent on ``socks[out_side]`` (or queued on ``tx_rings[out_side]``
    and flushed after each batch); ``extra`` are more receive-only
    ``(socket, side)`` pairs (the per-worker ARP sockets of a fanout group). Returns frames handled."""
    poller = select.poll()
    by_fd = {}
    for ps, side in [*((ps, side) for side, ps in enumerate(socks)), *extra]:
        poller.register(ps.fileno(), select.POLLIN)
        by_fd[ps.fileno()] = (side, ps.drain)
    sends: list[Callable[[bytes | bytearray], int]] = (
        [t.send for t in tx_rings] if tx_rings else [ps.send for ps in socks])
    flushes = [t.flush for t in tx_rings]
    handled = errors = 0
    while not should_stop():
        for fd, _ev in poller.poll(poll_ms):
            side, drain = by_fd[fd]
            n, e, _dropped = drain(handler, side, sends, fenced=fenced)
            for flush in flushes:
                flush()
            handled += n
            errors += e
    return handled
