"""Hand-rolled protobuf encoding of sync entries and batches (the master's hot send path).

Theory of operation
-------------------
Building a upb message field by field costs microseconds per entry from Python, and the master
encodes every coalesced update. This module writes the wire bytes of proto/sync.proto directly,
byte for byte what upb's ``SerializeToString`` produces for the same values (fields in number
order, proto3 defaults - zero scalars, False, absent sub-messages - omitted); the tests compare
both. It imports no ``*_pb2``: decoding (and every refusal of bad input) stays in convert.py.

Pieces that repeat across entries are encoded once and kept in small caches keyed by the values
they encode (pure functions, so a cache hit is always right): the run of fields vaddr .. timeout_ms
(a VIP:port, a real server, flags, state, timeout: few distinct values), dest references and
template references (client ports are not cached: see ``_cport``). Caches are cleared when they
grow past ``_CACHE_MAX`` entries.

Values a field cannot hold (negative, or above 2**32 - 1 for a uint32 field) raise
``ValueError``, as upb does; convert.py then encodes that entry through upb, which raises the
same way, so behaviour on bad input is unchanged.

Wire layout
-----------
Protobuf wire format (proto/sync.proto, version 1). A tag byte is ``field << 3 | wire type``
(0 = varint, 2 = length-delimited); ``len`` is a varint byte count. Scalars equal to 0 and absent
sub-messages are not written. Every message this module writes::

    SyncMessage                                   (one gRPC message; the master writes it once)
    tag   field            type      value
    0x08  1 version        varint    PROTOCOL_VERSION (1)
    0x10  2 epoch          varint    master's election epoch
    0x18  3 incarnation    varint    random id of this serving period (seqs are per incarnation)
    0x22  4 batch          len+Batch           \
    0x32  6 snapshot_chunk len+SnapshotChunk    > exactly one body (begin/end/heartbeat: convert.py)

    Batch                                         SnapshotChunk
    0x08  1 seq                 varint            0x08  1 index     varint
    0x10  2 first_event_unix_ns varint            0x12  2 entries   len+ConnEntry (repeated)
    0x1a  3 entries             len+ConnEntry     0x1a  3 packed    len+rows (version 2)
    0x22  4 packed              len+rows (v2)     0x22  4 dests     len+DestRef (repeated, v2)
    0x2a  5 dests               len+DestRef (repeated, version 2)

    Version 2 (``batch_packed`` / ``snapshot_chunk_packed``): ``packed`` holds fixed 41-byte rows
    (``syncd.packed``), ``dests`` the DestRefs they index and ``entries`` only the updates a row
    cannot hold, each in the place of a kind-0 row. ``batch`` / ``snapshot_chunk`` write the
    version-1 layout (every update a ConnEntry), still valid in version 2.

    ConnEntry (one update)                 written for kind:  NEW/UPDATE  EXPIRE  REFRESH
    tag        field           type        bytes / values
    0x08       1 kind          varint      1 NEW 2 UPDATE 3 EXPIRE 4 REFRESH     x  x  x
    0x10       2 protocol      varint      1 ICMP, 6 TCP, 17 UDP                  x  x  x
    0x1a 04|10 3 caddr         len+bytes   4 (IPv4) or 16 (IPv6), big-endian      x  x  x
    0x20       4 cport         varint      0..65535                               x  x  x
    0x2a 04|10 5 vaddr         len+bytes                                          x  x  x
    0x30       6 vport         varint      0..65535                               x  x  x
    0x3a 04|10 7 daddr         len+bytes                                          x  x  x
    0x40       8 dport         varint      0..65535                               x  x  x
    0x48       9 fwmark        varint      0..2**32-1                             x  x  x
    0x50      10 flags         varint      ConnFlags, HASHED|SYNC cleared         x  x  x
    0x58      11 state         varint      TcpState for TCP, 0 otherwise          x
    0x60      12 timeout_ms    varint      the state's full timeout               x     x
    0x68      13 remaining_ms  varint      time left on the master's timer        x     x
    0x72      14 dest          len+DestRef   absent: not bound                    x
    0x7a      15 control       len+ConnRef   the controlling template             x
    0x80 0x01 16 in_pkts       varint                                             x
    0x8a 0x01 17 old_key       len+ConnRef   UPDATE of a re-keyed entry           x

    DestRef                                       ConnRef
    0x08  1 protocol varint                       0x08  1 protocol    varint
    0x12  2 vaddr    len+bytes (4|16)             0x12  2 caddr       len+bytes (4|16)
    0x18  3 vport    varint                       0x18  3 cport       varint
    0x20  4 fwmark   varint                       0x22  4 vaddr       len+bytes (4|16)
    0x2a  5 daddr    len+bytes (4|16)             0x28  5 vport       varint
    0x30  6 dport    varint                       0x32  6 daddr       len+bytes (4|16)
                                                  0x38  7 dport       varint
                                                  0x40  8 fwmark      varint
                                                  0x48  9 is_template varint (1)

The entry key is (protocol, caddr, cport, vaddr, vport, daddr, dport, fwmark, flags & TEMPLATE).
An IPv4 address is written as 4 bytes (the int fits in 32 bits), anything else as 16. Flag bits,
update kinds and the template bit come from their one definition (``director.types.ConnFlags``,
``director.table.entry``, ``syncd.model.SyncKind``); the field ranges a backup accepts are checked
by ``convert.decode_sync_message`` (see docs/CONTRACTS.md, "Sync").
"""

from __future__ import annotations

import struct
from typing import Any

from director.services.service import DestKey
from director.table.entry import F_TEMPLATE as TEMPLATE
from director.types import LOCAL_CONN_FLAGS
from syncd.model import ConnKey, SyncKind

U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
LOCAL_FLAGS = int(LOCAL_CONN_FLAGS)  # HASHED, SYNC: never sent
EXPIRE, REFRESH = int(SyncKind.EXPIRE), int(SyncKind.REFRESH)
_CACHE_MAX = 8192

_head4 = struct.Struct(">BBBBBBI").pack  # kind, protocol (< 128) and a 4-byte caddr in one go
_B1 = [bytes((i,)) for i in range(128)]


def varint(v: int) -> bytes:
    """Base-128 varint of 0 <= v < 2**64."""
    if v < 0x80:
        if v < 0:
            raise ValueError(f"value out of range: {v}")
        return _B1[v]
    if v < 0x4000:
        return bytes((v & 0x7F | 0x80, v >> 7))
    if v < 0x200000:
        return bytes((v & 0x7F | 0x80, (v >> 7) & 0x7F | 0x80, v >> 14))
    if v > U64:
        raise ValueError(f"value out of range: {v}")
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _rem(v: int) -> bytes:
    """Field 13 (remaining_ms) of a value 0 < v < 2**32: tag and varint in one object."""
    if v < 0x80:
        return bytes((0x68, v))
    if v < 0x4000:
        return bytes((0x68, v & 0x7F | 0x80, v >> 7))
    if v < 0x200000:
        return bytes((0x68, v & 0x7F | 0x80, (v >> 7) & 0x7F | 0x80, v >> 14))
    return b"\x68" + varint(v)


def _u32(v: int) -> bytes:
    if v > U32:
        raise ValueError(f"value out of uint32 range: {v}")
    return varint(v)


def _addr(tag: int, a: int) -> bytes:
    """Tagged address field: 4 bytes when the int fits in 32 bits, else 16 (as convert._ab)."""
    if 0 <= a <= U32:
        return bytes((tag, 4)) + a.to_bytes(4, "big")
    return bytes((tag, 16)) + a.to_bytes(16, "big")


def _tv(tag: int, v: int) -> bytes:
    """Tagged uint32 field, empty when v == 0 (proto3 default)."""
    if not v:
        return b""
    return _B1[tag] + _u32(v)


def _tl(tag: bytes, body: bytes) -> bytes:
    """Tagged length-delimited field."""
    return tag + varint(len(body)) + body


def ms(seconds: float) -> int:
    """Seconds as integer milliseconds clamped to uint32 (as convert._ms)."""
    if 0.0 <= seconds < 4e6:
        return int(seconds * 1000.0 + 0.5)
    return min(U32, max(0, int(seconds * 1000.0 + 0.5)))


# --- cached pieces ------------------------------------------------------------------------------------

_GROUP: dict[tuple[int, int, int, int, int, int, int, int], bytes] = {}
_DEST: dict[DestKey, bytes] = {}
_CONTROL: dict[ConnKey, bytes] = {}


def _cport(cport: int) -> bytes:
    """Field 4 (cport) of 0 < cport <= 0xFFFF. Built each time, not cached: a cache of client ports
    fills with 65k long-lived objects allocated amid the churn, which pins memory after load."""
    if cport < 0x80:
        return bytes((0x20, cport))
    if cport < 0x4000:
        return bytes((0x20, cport & 0x7F | 0x80, cport >> 7))
    return bytes((0x20, cport & 0x7F | 0x80, (cport >> 7) & 0x7F | 0x80, cport >> 14))


def _group(vaddr: int, vport: int, daddr: int, dport: int, fwmark: int, flags: int, state: int,
           timeout_ms: int) -> bytes:
    """Fields 5..12 of a ConnEntry (vaddr, vport, daddr, dport, fwmark, flags, state, timeout_ms)."""
    gk = (vaddr, vport, daddr, dport, fwmark, flags, state, timeout_ms)
    g = _GROUP.get(gk)
    if g is None:
        g = b"".join((_addr(0x2A, vaddr), _tv(0x30, vport), _addr(0x3A, daddr), _tv(0x40, dport),
                      _tv(0x48, fwmark), _tv(0x50, flags), _tv(0x58, state), _tv(0x60, timeout_ms)))
        if len(_GROUP) >= _CACHE_MAX:
            _GROUP.clear()
        _GROUP[gk] = g
    return g


def conn_ref(key: ConnKey) -> bytes:
    """Body of a ConnRef message."""
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
    return b"".join((_tv(0x08, proto), _addr(0x12, caddr), _tv(0x18, cport), _addr(0x22, vaddr),
                     _tv(0x28, vport), _addr(0x32, daddr), _tv(0x38, dport), _tv(0x40, fwmark),
                     b"\x48\x01" if is_tpl else b""))


def _control(key: ConnKey) -> bytes:
    c = _CONTROL.get(key)
    if c is None:
        c = _tl(b"\x7a", conn_ref(key))
        if len(_CONTROL) >= _CACHE_MAX:
            _CONTROL.clear()
        _CONTROL[key] = c
    return c


def dest_ref(dk: DestKey) -> bytes:
    """Body of a DestRef message."""
    proto, vaddr, vport, fwmark, daddr, dport = dk
    return b"".join((_tv(0x08, proto), _addr(0x12, vaddr), _tv(0x18, vport), _tv(0x20, fwmark),
                     _addr(0x2A, daddr), _tv(0x30, dport)))


def _dest(dk: DestKey) -> bytes:
    d = _DEST.get(dk)
    if d is None:
        d = _tl(b"\x72", dest_ref(dk))
        if len(_DEST) >= _CACHE_MAX:
            _DEST.clear()
        _DEST[dk] = d
    return d


def _head(kind: int, proto: int, caddr: int, cport: int) -> bytes:
    """Fields 1..4 (kind, protocol, caddr, cport)."""
    if 0 < proto < 0x80 and 0 <= caddr <= U32:
        h = _head4(0x08, kind, 0x10, proto, 0x1A, 4, caddr)
    else:
        h = _tv(0x08, kind) + _tv(0x10, proto) + _addr(0x1A, caddr)
    if not cport:
        return h
    return h + (_cport(cport) if cport <= 0xFFFF else _tv(0x20, cport))


def _flags(flags: int, is_tpl: bool) -> int:
    flags &= ~LOCAL_FLAGS
    return (flags | TEMPLATE) if is_tpl else (flags & ~TEMPLATE)


# --- entries ------------------------------------------------------------------------------------------

def upsert(kind: int, key: ConnKey, flags: int, state: int, timeout: float, remaining: float,
           dest_key: DestKey | None, control_key: ConnKey | None, in_pkts: int,
           old_key: ConnKey | None) -> bytes:
    """Body of a NEW / UPDATE ConnEntry."""
    snap = (key, flags, state, timeout, remaining, dest_key, control_key, in_pkts)
    return upsert_snap(kind, key, snap, 0.0, old_key)


def upsert_snap(kind: int, key: ConnKey, snap: tuple[Any, ...], now: float, old_key: ConnKey | None) -> bytes:
    """Body of a NEW / UPDATE ConnEntry for `key` in the state of a conn snapshot tuple
    (key, flags, state, timeout, expires, dest_key, control_key, in_pkts, ...) at `now`."""
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
    flags = snap[1] & ~LOCAL_FLAGS
    flags = (flags | TEMPLATE) if is_tpl else (flags & ~TEMPLATE)
    remaining = snap[4] - now
    timeout = snap[3]
    rm = int(remaining * 1000.0 + 0.5) if 0.0 <= remaining < 4e6 else ms(remaining)
    tm = int(timeout * 1000.0 + 0.5) if 0.0 <= timeout < 4e6 else ms(timeout)
    gk = (vaddr, vport, daddr, dport, fwmark, flags, snap[2], tm)
    g = _GROUP.get(gk)
    if g is None:
        g = _group(*gk)
    if 0 < proto < 0x80 and 0 <= caddr <= U32 and 0 < cport <= 0xFFFF:
        parts = [_head4(0x08, kind, 0x10, proto, 0x1A, 4, caddr), _cport(cport), g]
    else:
        parts = [_head(kind, proto, caddr, cport), g]
    if rm:
        parts.append(_rem(rm))
    dest_key = snap[5]
    if dest_key is not None:
        d = _DEST.get(dest_key)
        parts.append(d if d is not None else _dest(dest_key))
    control_key = snap[6]
    if control_key is not None:
        parts.append(_control(control_key))
    in_pkts = snap[7]
    if in_pkts > 0:
        parts.append(b"\x80\x01" + (_B1[in_pkts] if in_pkts < 0x80 else varint(in_pkts)))
    if old_key is not None:
        parts.append(_tl(b"\x8a\x01", conn_ref(old_key)))
    return b"".join(parts)


def expire(key: ConnKey, flags: int) -> bytes:
    """Body of an EXPIRE ConnEntry (key fields and flags only)."""
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
    return _head(EXPIRE, proto, caddr, cport) + _group(vaddr, vport, daddr, dport, fwmark,
                                                         _flags(flags, is_tpl), 0, 0)


def refresh(key: ConnKey, flags: int, timeout: float, remaining: float) -> bytes:
    """Body of a REFRESH ConnEntry (key fields, flags, timeout_ms, remaining_ms)."""
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
    return b"".join((_head(REFRESH, proto, caddr, cport),
                     _group(vaddr, vport, daddr, dport, fwmark, _flags(flags, is_tpl), 0, ms(timeout)),
                     _tv(0x68, ms(remaining))))


# --- messages -----------------------------------------------------------------------------------------

def _repeated(tag: bytes, bodies: list[bytes]) -> list[bytes]:
    parts: list[bytes] = []
    append = parts.append
    for b in bodies:
        n = len(b)
        append(tag)
        append(_B1[n] if n < 0x80 else varint(n))
        append(b)
    return parts


def _message(version: int, epoch: int, incarnation: int, body_tag: bytes, body: list[bytes]) -> bytes:
    n = 0
    for p in body:
        n += len(p)
    head = b"".join((_tv(0x08, version), _tv64(0x10, epoch), _tv64(0x18, incarnation), body_tag, varint(n)))
    body.insert(0, head)
    return b"".join(body)


def _tv64(tag: int, v: int) -> bytes:
    return _B1[tag] + varint(v) if v else b""


def batch(version: int, epoch: int, incarnation: int, seq: int, first_event_ns: int,
          bodies: list[bytes]) -> bytes:
    """A SyncMessage{batch} holding the given ConnEntry bodies (the version-1 layout)."""
    return batch_packed(version, epoch, incarnation, seq, first_event_ns, bodies, b"", [])


def snapshot_chunk(version: int, epoch: int, incarnation: int, index: int, bodies: list[bytes]) -> bytes:
    """A SyncMessage{snapshot_chunk} holding the given ConnEntry bodies (the version-1 layout)."""
    return snapshot_chunk_packed(version, epoch, incarnation, index, bodies, b"", [])


def _packed(tag: bytes, rows: bytes) -> list[bytes]:
    return [tag, varint(len(rows)), rows] if rows else []


def batch_packed(version: int, epoch: int, incarnation: int, seq: int, first_event_ns: int,
                 fulls: list[bytes], rows: bytes, dests: list[bytes]) -> bytes:
    """A version-2 SyncMessage{batch}: full ConnEntry bodies, packed rows, DestRef bodies (syncd.packed)."""
    parts = [_tv64(0x08, seq), _tv64(0x10, first_event_ns)]
    parts += _repeated(b"\x1a", fulls)
    parts += _packed(b"\x22", rows)
    parts += _repeated(b"\x2a", dests)
    return _message(version, epoch, incarnation, b"\x22", parts)


def snapshot_chunk_packed(version: int, epoch: int, incarnation: int, index: int, fulls: list[bytes],
                          rows: bytes, dests: list[bytes]) -> bytes:
    """A version-2 SyncMessage{snapshot_chunk} (as ``batch_packed``)."""
    parts = [_tv(0x08, index)]
    parts += _repeated(b"\x12", fulls)
    parts += _packed(b"\x1a", rows)
    parts += _repeated(b"\x22", dests)
    return _message(version, epoch, incarnation, b"\x32", parts)


__all__ = [
    "batch", "batch_packed", "conn_ref", "dest_ref", "expire", "ms", "refresh", "snapshot_chunk",
    "snapshot_chunk_packed", "upsert", "upsert_snap", "varint",
]
