"""The shard function and its kernel twin: a cBPF interpreter (the opcodes the filter uses) runs the
program on real frames and must agree with ``shard_of`` for every address tried."""

from __future__ import annotations

import ipaddress
import random
import struct

from director.dataplane.io.shard import ACCEPT, DST, SRC, shard_filter, shard_of, widest_mask


def run_cbpf(code: bytes, frame: bytes) -> int:
    """Classic BPF for the instructions shard_filter emits (ld/ldh abs, and/rsh/xor/mod, tax, jeq, ret)."""
    prog = [struct.unpack_from("=HBBI", code, i) for i in range(0, len(code), 8)]
    a = x = pc = 0
    while True:
        op, jt, jf, k = prog[pc]
        pc += 1
        if op == 0x28:
            a = int.from_bytes(frame[k:k + 2], "big")
        elif op == 0x20:
            a = int.from_bytes(frame[k:k + 4], "big")
        elif op == 0x54:
            a &= k
        elif op == 0x74:
            a >>= k
        elif op == 0xAC:
            a ^= x
        elif op == 0x94:
            a %= k
        elif op == 0x07:
            x = a
        elif op == 0x15:
            pc += jt if a == k else jf
        elif op == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {op:#x} not expected")


def ipv4_frame(src: int, dst: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, src.to_bytes(4, "big"),
                     dst.to_bytes(4, "big"))
    return b"\x00" * 12 + b"\x08\x00" + ip + b"\x00" * 8


def test_the_filter_accepts_exactly_the_frames_of_its_shard() -> None:
    rng = random.Random(7)
    addrs = [rng.getrandbits(32) for _ in range(300)] + [int(ipaddress.IPv4Address("198.18.0.100")) + i
                                                          for i in range(10)]
    for count in (2, 3, 4):
        for mask in (0xFFFFFFFF, 0xFFFFFF00, 0xFFFF0000):
            progs = {(side, i): shard_filter(side, mask, i, count)
                     for side in (SRC, DST) for i in range(count)}
            for addr in addrs:
                owner = shard_of(addr, mask, count)
                peer = rng.getrandbits(32)
                for side, frame in ((SRC, ipv4_frame(addr, peer)), (DST, ipv4_frame(peer, addr))):
                    accepted = [i for i in range(count) if run_cbpf(progs[side, i], frame) == ACCEPT]
                    assert accepted == [owner], (hex(addr), hex(mask), count, side)


def test_a_persistence_scope_is_one_shard_and_consecutive_clients_spread() -> None:
    base = int(ipaddress.IPv4Address("198.18.0.100"))
    scope = {shard_of(base + i, 0xFFFFFF00, 2) for i in range(10)}
    assert len(scope) == 1
    assert {shard_of(base + i, 0xFFFFFFFF, 2) for i in range(10)} == {0, 1}
    assert widest_mask([0xFFFFFFFF, 0xFFFFFF00, 0xFFFF0000]) == 0xFFFF0000
    assert widest_mask([]) == 0xFFFFFFFF


def test_arp_goes_to_no_worker_and_other_frames_to_worker_zero() -> None:
    arp = b"\x00" * 12 + b"\x08\x06" + b"\x00" * 28
    ipv6 = b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 40
    for i in range(2):
        assert run_cbpf(shard_filter(SRC, 0xFFFFFFFF, i, 2), arp) == 0
        assert run_cbpf(shard_filter(SRC, 0xFFFFFFFF, i, 2), ipv6) == (ACCEPT if i == 0 else 0)


def test_an_ipv6_client_is_worker_zeros_like_its_frames() -> None:
    """The filter sends IPv6 frames to worker 0 only, so worker 0 holds every IPv6 entry: the shard
    function must say so too, or the worker's IPv6 events (filtered by it) never reach the parent's
    replica and sync (found by the IPv6 drill with two workers: half the IPv6 templates lost)."""
    v6 = [int(ipaddress.IPv6Address(f"fd00:18::{k:x}")) for k in range(1, 200)]
    for count in (2, 3, 4):
        assert {shard_of(a, 0xFFFFFFFF, count) for a in v6} == {0}
        assert {shard_of(a, 0xFFFFFF00, count) for a in v6} == {0}
    assert len({shard_of(a & 0xFFFFFFFF, 0xFFFFFFFF, 4) for a in v6}) > 1  # (IPv4 clients still spread)
