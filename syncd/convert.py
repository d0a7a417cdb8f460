"""Records of syncd.model <-> protobuf bytes of proto/sync.proto (the only module importing *_pb2).

Theory of operation
-------------------
Encoding goes straight to bytes: a batch is serialized once on the master and the same bytes are
written to every backup (the gRPC method uses identity serializers). Batches and snapshot chunks
carry their updates as packed rows (wire version 2, ``syncd.packed``: ``pack_updates``), an update
a row cannot hold as a full ConnEntry (``entry_body``); ``downgrade`` turns a message into the
version-1 layout for a backup that speaks version 1. Decoding takes bytes and
returns plain records; anything that does not parse, carries an unknown version or lacks a required
part raises ``ProtocolError`` so callers can refuse and log it without touching their table.
Addresses travel as big-endian bytes (4 bytes when the int fits in 32 bits, else 16); ints decode
back to the same value either way. Timeouts travel as integer milliseconds. Every decoded entry
field is range-checked here (``syncd.fields``): one bad field raises ``FieldRangeError`` (a
``ProtocolError``) and the whole message is refused before anything reaches a table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from google.protobuf.message import DecodeError

from director.services.service import DestKey
from director.table.entry import F_TEMPLATE as _TEMPLATE
from director.types import LOCAL_CONN_FLAGS
from lbd_pb import sync_pb2 as pb
from syncd import packed, wire
from syncd.fields import (
    MAX_IN_PKTS,
    address,
    check_control,
    check_families,
    check_in_pkts,
    check_old_key,
    check_ref,
    entry_fault,
    entry_ok,
)
from syncd.model import (
    MAX_PROMISE_MS,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    AckMsg,
    BatchMsg,
    ConnKey,
    FieldRangeError,
    FollowHello,
    HeartbeatMsg,
    ProtocolError,
    SnapshotBeginMsg,
    SnapshotChunkMsg,
    SnapshotEndMsg,
    SyncKind,
    SyncMsg,
    Update,
)

_LOCAL = int(LOCAL_CONN_FLAGS)
_EXPIRE, _REFRESH = int(SyncKind.EXPIRE), int(SyncKind.REFRESH)
_KINDS = {int(k): k for k in SyncKind}
_from = int.from_bytes
_tuple_new = tuple.__new__  # builds NamedTuples without their Python-level __new__ (hot path)
_U32 = 0xFFFFFFFF


def _ab(addr: int) -> bytes:
    return addr.to_bytes(4 if addr <= _U32 else 16, "big")


def _ms(seconds: float) -> int:
    return min(_U32, max(0, int(seconds * 1000.0 + 0.5)))


def _add_entry(add: Callable[..., object], u: Update, dest_refs: dict[DestKey, pb.DestRef],
               addrs: dict[int, bytes]) -> None:
    proto, caddr, cport, ivaddr, vport, idaddr, dport, fwmark, is_tpl = u.key
    vaddr = addrs.get(ivaddr)  # VIPs and real servers repeat: convert each once per message
    if vaddr is None:
        vaddr = addrs[ivaddr] = _ab(ivaddr)
    daddr = addrs.get(idaddr)
    if daddr is None:
        daddr = addrs[idaddr] = _ab(idaddr)
    flags = u.flags & ~_LOCAL
    flags = (flags | _TEMPLATE) if is_tpl else (flags & ~_TEMPLATE)
    kind = int(u.kind)
    if kind == _EXPIRE:
        add(kind=kind, protocol=proto, caddr=_ab(caddr), cport=cport, vaddr=vaddr, vport=vport,
            daddr=daddr, dport=dport, fwmark=fwmark, flags=flags)
        return
    remaining, timeout = u.remaining, u.timeout
    remaining_ms = int(remaining * 1000.0 + 0.5) if 0.0 <= remaining < 4e6 else _ms(remaining)
    timeout_ms = int(timeout * 1000.0 + 0.5) if 0.0 <= timeout < 4e6 else _ms(timeout)
    if kind == _REFRESH:
        add(kind=kind, protocol=proto, caddr=_ab(caddr), cport=cport, vaddr=vaddr, vport=vport,
            daddr=daddr, dport=dport, fwmark=fwmark, flags=flags, remaining_ms=remaining_ms,
            timeout_ms=timeout_ms)
        return
    dk = u.dest_key
    ref = None
    if dk is not None:
        ref = dest_refs.get(dk)
        if ref is None:  # a handful of dests: build each reference once per message
            ref = dest_refs[dk] = pb.DestRef(protocol=dk[0], vaddr=_ab(dk[1]), vport=dk[2], fwmark=dk[3],
                                             daddr=_ab(dk[4]), dport=dk[5])
    ck, ok = u.control_key, u.old_key
    add(kind=kind, protocol=proto, caddr=_ab(caddr), cport=cport, vaddr=vaddr, vport=vport,
        daddr=daddr, dport=dport, fwmark=fwmark, flags=flags, remaining_ms=remaining_ms,
        timeout_ms=timeout_ms, state=u.state, in_pkts=max(0, u.in_pkts), dest=ref,
        control=_conn_ref(ck) if ck is not None else None, old_key=_conn_ref(ok) if ok is not None else None)


def _conn_ref(key: ConnKey) -> pb.ConnRef:
    proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
    return pb.ConnRef(protocol=proto, caddr=_ab(caddr), cport=cport, vaddr=_ab(vaddr), vport=vport,
                      daddr=_ab(daddr), dport=dport, fwmark=fwmark, is_template=is_tpl)


def _ref_key(field: str, c: pb.ConnRef) -> ConnKey:
    """The key a ConnRef names, range-checked (``field`` names it in errors)."""
    check_ref(field, c.protocol, (c.cport, c.vport, c.dport))
    return (c.protocol, address(field, c.caddr), c.cport, address(field, c.vaddr), c.vport,
            address(field, c.daddr), c.dport, c.fwmark, c.is_template)


def _fill_entries(entries: object, updates: Iterable[Update]) -> int:
    add = entries.add  # type: ignore[attr-defined]
    refs: dict[DestKey, pb.DestRef] = {}
    addrs: dict[int, bytes] = {}
    n = 0
    for u in updates:
        _add_entry(add, u, refs, addrs)
        n += 1
    return n


def _entry_pb(u: Update) -> bytes:
    """One entry through upb (the reference encoding; also the fallback for out-of-range values)."""
    m = pb.Batch()
    _add_entry(m.entries.add, u, {}, {})
    return m.entries[0].SerializeToString()


def entry_body(u: Update) -> bytes:
    """The ConnEntry bytes of one update (what a batch or snapshot chunk carries)."""
    kind = int(u.kind)
    try:
        if kind == _EXPIRE:
            return wire.expire(u.key, u.flags)
        if kind == _REFRESH:
            return wire.refresh(u.key, u.flags, u.timeout, u.remaining)
        return wire.upsert(kind, u.key, u.flags, u.state, u.timeout, u.remaining, u.dest_key, u.control_key,
                           u.in_pkts, u.old_key)
    except (ValueError, OverflowError):
        return _entry_pb(u)  # raises as upb does, or encodes what the fast path does not cover


def _header(epoch: int, incarnation: int) -> pb.SyncMessage:
    return pb.SyncMessage(version=PROTOCOL_VERSION, epoch=epoch, incarnation=incarnation)


def pack_updates(updates: Iterable[Update]) -> packed.Packer:
    """Rows of `updates` (syncd.packed), each update a row when one can hold it, else a full entry."""
    p = packed.Packer(wire.dest_ref)
    rows, upsert, expire = p.rows, p.upsert, p.expire
    for u in updates:
        kind = int(u.kind)
        if kind == _EXPIRE:
            row = expire(u.key, u.flags)
        elif u.control_key is None and u.old_key is None:
            if kind == _REFRESH:
                row = upsert(kind, u.key, u.flags, 0, u.timeout, u.remaining, None, 0)
            else:
                row = upsert(kind, u.key, u.flags, u.state, u.timeout, u.remaining, u.dest_key,
                             max(0, u.in_pkts))
        else:
            row = None
        if row is None:
            p.add_full(entry_body(u))
        else:
            rows.append(row)
    return p


def encode_batch(epoch: int, incarnation: int, seq: int, first_event_ns: int,
                 updates: Iterable[Update]) -> bytes:
    p = pack_updates(updates)
    return wire.batch_packed(PROTOCOL_VERSION, epoch, incarnation, seq, first_event_ns, p.fulls,
                             b"".join(p.rows), p.dests)


def encode_batch_entries(epoch: int, incarnation: int, seq: int, first_event_ns: int,
                         bodies: list[bytes]) -> bytes:
    """A batch of already encoded entries (``entry_body``), no packed rows."""
    return wire.batch(PROTOCOL_VERSION, epoch, incarnation, seq, first_event_ns, bodies)


def encode_batch_packed(epoch: int, incarnation: int, seq: int, first_event_ns: int, fulls: list[bytes],
                        rows: bytes, dests: list[bytes]) -> bytes:
    """A batch of packed rows (``packed.Packer.parts``; the master's path)."""
    return wire.batch_packed(PROTOCOL_VERSION, epoch, incarnation, seq, first_event_ns, fulls, rows, dests)


def _fill_packed(msg: pb.Batch | pb.SnapshotChunk, updates: Iterable[Update]) -> None:
    p = pack_updates(updates)
    for body in p.fulls:
        msg.entries.add().MergeFromString(body)
    msg.packed = b"".join(p.rows)
    for body in p.dests:
        msg.dests.add().MergeFromString(body)


def encode_batch_pb(epoch: int, incarnation: int, seq: int, first_event_ns: int,
                    updates: Iterable[Update]) -> bytes:
    """encode_batch through upb: the reference the hand-rolled framing is tested against."""
    m = _header(epoch, incarnation)
    m.batch.seq = seq
    m.batch.first_event_unix_ns = first_event_ns
    _fill_packed(m.batch, updates)
    return m.SerializeToString()


def encode_batch_v1_pb(epoch: int, incarnation: int, seq: int, first_event_ns: int,
                       updates: Iterable[Update]) -> bytes:
    """A version-1 batch (every update a full ConnEntry) through upb: what a version-1 master sent."""
    m = _header(epoch, incarnation)
    m.version = 1
    m.batch.seq = seq
    m.batch.first_event_unix_ns = first_event_ns
    _fill_entries(m.batch.entries, updates)
    return m.SerializeToString()


def encode_snapshot_begin(epoch: int, incarnation: int, after_seq: int, entries_estimate: int) -> bytes:
    m = _header(epoch, incarnation)
    m.snapshot_begin.after_seq = after_seq
    m.snapshot_begin.entries_estimate = entries_estimate
    return m.SerializeToString()


def encode_snapshot_chunk(epoch: int, incarnation: int, index: int, updates: Iterable[Update]) -> bytes:
    p = pack_updates(updates)
    return wire.snapshot_chunk_packed(PROTOCOL_VERSION, epoch, incarnation, index, p.fulls, b"".join(p.rows),
                                      p.dests)


def encode_snapshot_chunk_pb(epoch: int, incarnation: int, index: int, updates: Iterable[Update]) -> bytes:
    """encode_snapshot_chunk through upb (reference for the tests)."""
    m = _header(epoch, incarnation)
    m.snapshot_chunk.index = index
    _fill_packed(m.snapshot_chunk, updates)
    return m.SerializeToString()


def downgrade(data: bytes) -> bytes:
    """A message of this version as version 1, for a backup that said hello with version 1: packed
    rows become full entries (an older master's encoding of the same updates)."""
    msg = decode_sync_message(data)
    if isinstance(msg, BatchMsg):
        return wire.batch(1, msg.epoch, msg.incarnation, msg.seq, msg.first_event_ns,
                          [entry_body(u) for u in msg.updates])
    if isinstance(msg, SnapshotChunkMsg):
        return wire.snapshot_chunk(1, msg.epoch, msg.incarnation, msg.chunk_index,
                                   [entry_body(u) for u in msg.updates])
    m = pb.SyncMessage.FromString(data)
    m.version = 1
    return m.SerializeToString()


def encode_snapshot_end(epoch: int, incarnation: int, chunks: int, entries: int) -> bytes:
    m = _header(epoch, incarnation)
    m.snapshot_end.chunks = chunks
    m.snapshot_end.entries = entries
    return m.SerializeToString()


def encode_heartbeat(epoch: int, incarnation: int, last_seq: int, head_seq: int, sent_ns: int,
                     promise_token: int = 0) -> bytes:
    m = _header(epoch, incarnation)
    hb = m.heartbeat
    hb.last_seq, hb.head_seq, hb.sent_unix_ns = last_seq, head_seq, sent_ns
    hb.promise_token = promise_token
    return m.SerializeToString()


def _decode_entry(e: pb.ConnEntry, dest_keys: dict[bytes, DestKey], addrs: dict[bytes, int]) -> Update:
    """One entry, every field range-checked (syncd.fields): FieldRangeError refuses the message.
    `dest_keys` / `addrs` cache the dest references and VIP / real server addresses of one message."""
    kind = _KINDS.get(e.kind)
    if kind is None:
        raise FieldRangeError("kind", f"unknown update kind {e.kind}")
    ca, va, da = e.caddr, e.vaddr, e.daddr
    proto, cport, vport, dport = e.protocol, e.cport, e.vport, e.dport
    flags = e.flags & ~_LOCAL
    state, timeout_ms, remaining_ms = e.state, e.timeout_ms, e.remaining_ms
    if not entry_ok(proto, len(ca), len(va), len(da), cport, vport, dport, flags, state, timeout_ms,
                    remaining_ms):
        raise entry_fault(proto, len(ca), len(va), len(da), cport, vport, dport, flags, state, timeout_ms,
                          remaining_ms)
    vaddr = addrs.get(va)
    if vaddr is None:
        vaddr = addrs[va] = _from(va, "big")
    daddr = addrs.get(da)
    if daddr is None:
        daddr = addrs[da] = _from(da, "big")
    caddr = _from(ca, "big")
    if len(ca) == 16 or len(da) == 16:  # IPv6 (or a v4 VIP to a v6 dest: refused below if in ::/96)
        check_families(ca, va, da, caddr, vaddr, daddr)
    key = (proto, caddr, cport, vaddr, vport, daddr, dport, e.fwmark, bool(flags & _TEMPLATE))
    if kind is SyncKind.EXPIRE:
        return Update(kind, key, flags)
    if kind is SyncKind.REFRESH:
        return Update(kind, key, flags, timeout=timeout_ms / 1000.0, remaining=remaining_ms / 1000.0)
    dest_key: DestKey | None = None
    has = e.HasField
    if has("dest"):
        d = e.dest
        raw = d.SerializeToString()
        dest_key = dest_keys.get(raw)
        if dest_key is None:
            dest_key = dest_keys[raw] = _dest_key(d)
    control_key = old_key = None
    if has("control"):
        control_key = _ref_key("control", e.control)
        check_control(key, control_key)
    if has("old_key"):
        old_key = _ref_key("old_key", e.old_key)
        check_old_key(key, old_key)
    in_pkts = e.in_pkts
    if in_pkts > MAX_IN_PKTS:
        check_in_pkts(in_pkts)
    return _tuple_new(Update, (kind, key, flags, state, timeout_ms / 1000.0, remaining_ms / 1000.0,
                               dest_key, control_key, in_pkts, old_key))


def _dest_key(d: pb.DestRef) -> DestKey:
    check_ref("dest", d.protocol, (d.vport, d.dport))
    return (d.protocol, address("dest", d.vaddr), d.vport, d.fwmark, address("dest", d.daddr), d.dport)


def _decode_entries(entries: Iterable[pb.ConnEntry]) -> list[Update]:
    dest_keys: dict[bytes, DestKey] = {}
    addrs: dict[bytes, int] = {}
    return [_decode_entry(e, dest_keys, addrs) for e in entries]


def _decode_updates(m: pb.Batch | pb.SnapshotChunk) -> list[Update]:
    """A batch's or chunk's updates: its packed rows with its full entries in place (version 2), or
    its full entries alone."""
    fulls = _decode_entries(m.entries)
    if not m.packed and not m.dests:
        return fulls
    return packed.unpack(m.packed, fulls, [_dest_key(d) for d in m.dests])


def decode_sync_message(data: bytes) -> SyncMsg:
    """Parse one SyncMessage; raises ProtocolError on garbage, unknown version or empty body."""
    try:
        m = pb.SyncMessage.FromString(data)
    except (DecodeError, ValueError) as exc:
        raise ProtocolError(f"undecodable sync message ({len(data)} bytes): {exc}") from None
    if m.version not in SUPPORTED_VERSIONS:
        raise ProtocolError(f"unknown sync protocol version {m.version}")
    body = m.WhichOneof("body")
    ep, inc = m.epoch, m.incarnation
    if body == "batch":
        b = m.batch
        return BatchMsg(ep, inc, b.seq, b.first_event_unix_ns, _decode_updates(b))
    if body == "snapshot_begin":
        return SnapshotBeginMsg(ep, inc, m.snapshot_begin.after_seq, m.snapshot_begin.entries_estimate)
    if body == "snapshot_chunk":
        return SnapshotChunkMsg(ep, inc, m.snapshot_chunk.index, _decode_updates(m.snapshot_chunk))
    if body == "snapshot_end":
        return SnapshotEndMsg(ep, inc, m.snapshot_end.chunks, m.snapshot_end.entries)
    if body == "heartbeat":
        hb = m.heartbeat
        return HeartbeatMsg(ep, inc, hb.last_seq, hb.head_seq, hb.sent_unix_ns, hb.promise_token)
    raise ProtocolError("sync message without a body")


def encode_hello(hello: FollowHello) -> bytes:
    m = pb.BackupMessage()
    h = m.hello
    h.version, h.node_id, h.last_applied_seq = hello.version, hello.node_id, hello.last_applied_seq
    h.epoch_seen, h.incarnation = hello.epoch_seen, hello.incarnation
    return m.SerializeToString()


def encode_ack(ack: AckMsg) -> bytes:
    m = pb.BackupMessage()
    m.ack.applied_seq = ack.applied_seq
    m.ack.in_sync = ack.in_sync
    m.ack.promise_token = ack.promise_token
    m.ack.promise_ms = ack.promise_ms
    return m.SerializeToString()


def decode_backup_message(data: bytes) -> FollowHello | AckMsg:
    """Parse a backup's message; hello versions are checked by the server (to answer with a status)."""
    try:
        m = pb.BackupMessage.FromString(data)
    except (DecodeError, ValueError) as exc:
        raise ProtocolError(f"undecodable backup message ({len(data)} bytes): {exc}") from None
    body = m.WhichOneof("body")
    if body == "hello":
        h = m.hello
        return FollowHello(h.node_id, h.last_applied_seq, h.epoch_seen, h.incarnation, h.version)
    if body == "ack":
        a = m.ack
        if a.promise_ms > MAX_PROMISE_MS or (a.promise_ms and not a.promise_token):
            raise ProtocolError(f"ack with a bad promise ({a.promise_ms} ms, token {a.promise_token})")
        return AckMsg(a.applied_seq, a.in_sync, a.promise_token, a.promise_ms)
    raise ProtocolError("backup message without a body")


def identity(data: bytes) -> bytes:
    """Serializer for pre-encoded messages (gRPC method handlers move bytes; this module parses)."""
    return data


__all__ = [
    "decode_backup_message", "decode_sync_message", "downgrade", "encode_ack", "encode_batch",
    "encode_batch_entries", "encode_batch_packed", "encode_batch_pb", "encode_batch_v1_pb",
    "encode_heartbeat", "encode_hello", "encode_snapshot_begin", "encode_snapshot_chunk",
    "encode_snapshot_chunk_pb", "encode_snapshot_end", "entry_body", "identity", "pack_updates",
]
