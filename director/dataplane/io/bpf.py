"""Classic BPF for packet sockets: socket filters (``attach_filter``) and PACKET_FANOUT membership.

A socket filter runs on every frame the socket would receive and returns how many bytes to keep (0:
not for this socket); ``director.dataplane.io.shard`` builds the workers' shard filters,
:func:`cbpf_not_arp` is the default of a ring socket (ARP is read on its own socket). A fanout group
shares an interface's frames among sockets; ``FANOUT_CBPF_SRC`` / ``FANOUT_CBPF_DST`` pick the member
by the client address (source on the external side, destination on the internal side) with a
fanout program (:func:`join_fanout`), so both directions of a NAT flow, and all flows of one client,
land on the same member; fanout programs see the frame from its network header on, so their offsets
are IP-header offsets. Programs are lists of 8-byte
instructions (``struct sock_filter``) handed to the kernel in a ``struct sock_fprog``.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass

SOL_PACKET = 263
PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
SO_ATTACH_FILTER = 26
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_LB = 1
PACKET_FANOUT_CPU = 2
PACKET_FANOUT_CBPF = 6
FANOUT_CBPF_SRC = "cbpf-src"
FANOUT_CBPF_DST = "cbpf-dst"


@dataclass(frozen=True)
class Fanout:
    """PACKET_FANOUT membership: ``group`` id (per interface), ``mode`` a PACKET_FANOUT_* int or a
    FANOUT_CBPF_* name selecting the worker by client address."""

    group: int
    mode: int | str = PACKET_FANOUT_HASH



class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _cbpf_client_key(ip_off: int) -> bytes:
    """Fanout cBPF: return the IPv4 address at ``ip_off`` from the IP header (12 = source,
    16 = destination); non-IPv4 frames return their protocol. The kernel takes it modulo the group
    size. Fanout programs run before the MAC header is pushed back: offsets start at the network
    header, and the ethertype comes from the ancillary load ``SKF_AD_PROTOCOL``."""
    prog = [
        (0x28, 0, 0, 0xFFFFF000),  # ldh [SKF_AD_OFF + SKF_AD_PROTOCOL]
        (0x15, 0, 1, 0x0800),      # jeq #0x800, next, skip
        (0x20, 0, 0, ip_off),      # ld [ip_off]       client address
        (0x16, 0, 0, 0),           # ret a
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def cbpf_not_arp() -> bytes:
    """cBPF socket filter: drop ARP, accept everything else."""
    prog = [
        (0x28, 0, 0, 12),          # ldh [12]
        (0x15, 0, 1, 0x0806),      # jeq #ARP, next, skip
        (0x06, 0, 0, 0),           # ret #0
        (0x06, 0, 0, 0x40000),     # ret #262144 (whole frame)
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def _fprog(code: bytes) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    buf = ctypes.create_string_buffer(code, len(code))
    return bytes(_SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))), buf


def attach_filter(sock: socket.socket, code: bytes) -> None:
    """SO_ATTACH_FILTER a classic BPF program (8-byte instructions)."""
    fprog, _keep = _fprog(code)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def join_fanout(sock: socket.socket, fanout: Fanout) -> None:
    """Join ``fanout.group``; FANOUT_CBPF_* modes install the client-address program."""
    if isinstance(fanout.mode, str):
        ip_off = {FANOUT_CBPF_SRC: 12, FANOUT_CBPF_DST: 16}[fanout.mode]
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, fanout.group | (PACKET_FANOUT_CBPF << 16))
        fprog, _keep = _fprog(_cbpf_client_key(ip_off))
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, fprog)
    else:
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, fanout.group | (fanout.mode << 16))


__all__ = [
    "FANOUT_CBPF_DST", "FANOUT_CBPF_SRC", "PACKET_FANOUT_CPU", "PACKET_FANOUT_HASH", "PACKET_FANOUT_LB",
    "Fanout", "attach_filter", "cbpf_not_arp", "join_fanout",
]
