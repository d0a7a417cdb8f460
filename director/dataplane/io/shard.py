"""Which worker owns a client: the shard function and its kernel twin, a cBPF socket filter.

Theory of operation
-------------------
With ``workers: N`` every worker process opens its own packet sockets on both interfaces and
attaches a classic BPF *socket filter* that accepts a frame only when the frame's client address
falls into the worker's shard (and drops ARP, which every worker reads on a separate socket):

* external side: the client is the IPv4 **source** (client -> VIP);
* internal side: the client is the IPv4 **destination** (NAT reply real server -> client).

The shard of a client is :func:`shard_of`: ``mix(addr & mask) % N`` with ``mask`` the widest
persistence netmask configured (the AND of every persistent service's netmask; all ones without
persistence), so both directions of a flow and every flow of a persistence scope reach the same
worker, which therefore holds the conn, its template and every later conn of the scope. ``mix``
folds the upper bytes into the lowest one (``x ^= x >> 16; x ^= x >> 8``) so consecutive clients
spread over workers. The same function, in Python, routes entries synced from a master and rebuilds
a restarted worker's shard (``director.workers``).

Why a filter per worker rather than PACKET_FANOUT: a fanout group's member order (the kernel's
``hash % members`` picks a member by its *join position*) changes when a member leaves and rejoins
(the last member takes the leaver's slot), so after a worker restart the mapping "address ->
worker" would no longer be a pure function of the address and the conn tables would be on the
wrong workers. A filter makes the shard a pure function of (address, mask, N, index): a restarted
worker takes exactly its old share, and while it is down its share is dropped (counted by the
kernel as not received) instead of landing on a worker without the flows' state. The price is one
filter run per worker per frame in the kernel (a few instructions).

Frames that are not IPv4 (IPv6 for now, anything else the packet path drops with a reason) go to
worker 0 only, so each is counted once; :func:`shard_of` agrees (an IPv6 client is worker 0's), so
worker 0's IPv6 entries reach the parent's replica (and sync) and synced ones are routed back to it.
ICMP errors are sharded by their outer addresses (an error about a conn from a router goes to the
router's worker, which drops it if it holds no conn).
"""

from __future__ import annotations

import struct

SRC, DST = 26, 30
"""Frame offsets of the IPv4 source and destination (14-byte Ethernet header + 12 / 16)."""
ACCEPT = 0x40000


def mix(addr: int) -> int:
    """The fold both the kernel filter and :func:`shard_of` apply (32-bit)."""
    x = addr & 0xFFFFFFFF
    x ^= x >> 16
    x ^= x >> 8
    return x


def shard_of(addr: int, mask: int, count: int) -> int:
    """The worker (0..count-1) that owns client ``addr`` under the widest persistence ``mask``; an
    IPv6 client (an int above 32 bits) is worker 0's, where the filter sends every non-IPv4 frame."""
    return mix(addr & mask) % count if count > 1 and addr <= 0xFFFFFFFF else 0


def shard_filter(offset: int, mask: int, index: int, count: int) -> bytes:
    """cBPF socket filter (8-byte instructions) accepting the frames of worker ``index`` of
    ``count``: IPv4 whose address at frame ``offset`` (``SRC`` or ``DST``) is in its shard; non-IPv4,
    non-ARP frames in worker 0 only; ARP never (read on the workers' own ARP sockets)."""
    other = ACCEPT if index == 0 else 0
    code = [
        (0x28, 0, 0, 12),                 # 0  ldh [12]           ethertype
        (0x15, 0, 12, 0x0800),            # 1  jeq #IPv4, 2, 14
        (0x20, 0, 0, offset),             # 2  ld [offset]        A = client address
        (0x54, 0, 0, mask & 0xFFFFFFFF),  # 3  and #mask          A = addr & mask
        (0x07, 0, 0, 0),                  # 4  tax                X = x
        (0x74, 0, 0, 16),                 # 5  rsh #16            A = x >> 16
        (0xAC, 0, 0, 0),                  # 6  xor x              A = x ^ (x >> 16)
        (0x07, 0, 0, 0),                  # 7  tax                X = x'
        (0x74, 0, 0, 8),                  # 8  rsh #8             A = x' >> 8
        (0xAC, 0, 0, 0),                  # 9  xor x              A = x' ^ (x' >> 8)
        (0x94, 0, 0, max(count, 1)),      # 10 mod #count
        (0x15, 0, 1, index),              # 11 jeq #index, 12, 13
        (0x06, 0, 0, ACCEPT),             # 12 ret accept
        (0x06, 0, 0, 0),                  # 13 ret drop
        (0x15, 1, 0, 0x0806),             # 14 jeq #ARP, 16, 15
        (0x06, 0, 0, other),              # 15 ret other (worker 0 only)
        (0x06, 0, 0, 0),                  # 16 ret drop (ARP)
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in code)


def widest_mask(netmasks: list[int]) -> int:
    """The AND of the persistence netmasks (all ones when there is none)."""
    m = 0xFFFFFFFF
    for nm in netmasks:
        m &= nm
    return m
