"""Packed entry records (sync wire version 2): fixed-size rows instead of one protobuf message each.

Theory of operation
-------------------
Nearly every update a master sends is an IPv4 entry without a control link or a re-key: its fields
fit one fixed 41-byte row. A version-2 ``Batch`` / ``SnapshotChunk`` carries its updates as such
rows, concatenated in one ``packed`` bytes field, plus the ``DestRef`` table the rows index
(``dests``) and, for the updates a row cannot hold (IPv6, control link, old key, in_pkts above
2**32 - 1...), full ``ConnEntry`` messages in ``entries``. A row of kind 0 stands for "the next
entry of ``entries``", so the order of a message's updates is the order of its rows. Decoding is
one ``struct.iter_unpack`` pass plus one range check per row; no protobuf object is built per
update, which is what made the backup CPU-bound (proto/sync.proto, docs/CONTRACTS.md "Sync").

Row (big-endian, no padding; ``ROW``)::

    offset size field          range checked on decode
    0      1    kind           0 (next full entry), 1 NEW, 2 UPDATE, 3 EXPIRE, 4 REFRESH
    1      1    protocol       a known protocol
    2      4    caddr          IPv4 (the row holds 4-byte addresses only)
    6      2    cport          (0..65535 by its width; NO_CPORT only with 0)
    8      4    vaddr          IPv4
    12     2    vport
    14     4    daddr          IPv4
    18     2    dport
    20     4    fwmark
    24     2    flags          known ConnFlags bits (HASHED and SYNC cleared)
    26     1    state          valid for the protocol
    27     4    timeout_ms     <= 2**31 - 1
    31     4    remaining_ms   <= 2**31 - 1
    35     2    dest           1-based index into ``dests``; 0: not bound
    37     4    in_pkts

EXPIRE rows carry the key fields and flags (the rest is zero and ignored), REFRESH rows the key
fields, flags, timeout_ms and remaining_ms, as the full entries do.

``Packer`` builds rows (the master's window and snapshot paths), ``unpack`` reads them back into
``Update`` records after the checks of ``syncd.fields`` (a bad row raises ``FieldRangeError``: the
whole message is refused). This module imports no ``*_pb2``: convert.py frames and parses the
messages.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from director.services.service import DestKey
from director.table.entry import F_TEMPLATE
from director.types import LOCAL_CONN_FLAGS
from syncd.fields import entry_fault, entry_ok
from syncd.model import ConnKey, FieldRangeError, ProtocolError, SyncKind, Update
from syncd.wire import ms as _ms

ROW = struct.Struct(">BBIHIHIHIHBIIHI")
ROW_SIZE = ROW.size
FULL = bytes(ROW_SIZE)
"""The row of an update sent as a full ConnEntry (kind 0): take the next one of ``entries``."""

_LOCAL = int(LOCAL_CONN_FLAGS)
_NEW, _UPDATE, _EXPIRE, _REFRESH = (int(k) for k in (SyncKind.NEW, SyncKind.UPDATE, SyncKind.EXPIRE,
                                                     SyncKind.REFRESH))
_KINDS = (None, SyncKind.NEW, SyncKind.UPDATE, SyncKind.EXPIRE, SyncKind.REFRESH)
_pack = ROW.pack
_tuple_new = tuple.__new__


class Packer:
    """Rows of one message, or of one master window cut into several messages (the dest table is
    the window's: every part carries all of it). ``upsert`` / ``expire`` return an update's row (None
    when a row cannot hold it); ``add`` queues rows, ``add_full`` an update as a full ConnEntry."""

    __slots__ = ("rows", "fulls", "dests", "_dix", "_dest_body")

    def __init__(self, dest_body: Callable[[DestKey], bytes]) -> None:
        self.rows: list[bytes] = []
        self.fulls: list[bytes] = []
        self.dests: list[bytes] = []
        """DestRef bodies; a row's dest field is an index into this list, plus one."""
        self._dix: dict[DestKey, int] = {}
        self._dest_body = dest_body

    def __len__(self) -> int:
        return len(self.rows)

    def dest_index(self, dk: DestKey) -> int:
        i = self._dix.get(dk)
        if i is None:
            self.dests.append(self._dest_body(dk))
            i = self._dix[dk] = len(self.dests)
        return i

    def add_full(self, body: bytes) -> None:
        self.rows.append(FULL)
        self.fulls.append(body)

    def add(self, items: list[Any]) -> None:
        """Queue rows (bytes) and full entries (1-tuples of a ConnEntry body), in order."""
        rows = self.rows
        if tuple not in map(type, items):
            rows += items
            return
        for it in items:
            if type(it) is tuple:
                self.add_full(it[0])
            else:
                rows.append(it)

    def upsert(self, kind: int, key: ConnKey, flags: int, state: int, timeout: float, remaining: float,
               dest_key: DestKey | None, in_pkts: int) -> bytes | None:
        """The row of a NEW / UPDATE / REFRESH without control link or old key (None: a row cannot
        hold it)."""
        proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
        flags &= ~_LOCAL
        flags = (flags | F_TEMPLATE) if is_tpl else (flags & ~F_TEMPLATE)
        try:
            return _pack(kind, proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, flags, state,
                         _ms(timeout), _ms(remaining), 0 if dest_key is None else self.dest_index(dest_key),
                         in_pkts)
        except (struct.error, ValueError, OverflowError):
            return None

    def snap_row(self, kind: int, key: ConnKey, snap: tuple[Any, ...], now: float) -> bytes | None:
        """``upsert`` of a conn snapshot tuple (key, flags, state, timeout, expires, dest_key, control_key,
        in_pkts, ...) at `now`: the master's window path, inlined."""
        proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
        flags = snap[1] & ~_LOCAL
        flags = (flags | F_TEMPLATE) if is_tpl else (flags & ~F_TEMPLATE)
        timeout, remaining, dk = snap[3], snap[4] - now, snap[5]
        di = 0 if dk is None else (self._dix.get(dk) or self.dest_index(dk))
        tm = int(timeout * 1000.0 + 0.5) if 0.0 <= timeout < 4e6 else _ms(timeout)
        rm = int(remaining * 1000.0 + 0.5) if 0.0 <= remaining < 4e6 else _ms(remaining)
        try:
            return _pack(kind, proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, flags, snap[2], tm,
                         rm, di, snap[7])
        except (struct.error, ValueError, OverflowError):
            return None

    @staticmethod
    def expire(key: ConnKey, flags: int = 0) -> bytes | None:
        """The row of an EXPIRE (None: a row cannot hold the key)."""
        proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, is_tpl = key
        flags &= ~_LOCAL
        flags = (flags | F_TEMPLATE) if is_tpl else (flags & ~F_TEMPLATE)
        try:
            return _pack(_EXPIRE, proto, caddr, cport, vaddr, vport, daddr, dport, fwmark, flags, 0, 0, 0, 0,
                         0)
        except struct.error:
            return None

    def parts(self, step: int) -> list[tuple[bytes, list[bytes]]]:
        """The rows cut into messages of at most `step` updates: (packed rows, their full entries)."""
        rows, fulls = self.rows, self.fulls
        if len(rows) <= step:
            return [(b"".join(rows), fulls)]
        out: list[tuple[bytes, list[bytes]]] = []
        used = 0
        for i in range(0, len(rows), step):
            part = rows[i:i + step]
            n = part.count(FULL) if fulls else 0
            out.append((b"".join(part), fulls[used:used + n]))
            used += n
        return out


def unpack(data: bytes, fulls: Sequence[Update], dests: Sequence[DestKey]) -> list[Update]:
    """The updates of a message's rows (range-checked), with its full entries in place of kind-0 rows."""
    if len(data) % ROW_SIZE:
        raise ProtocolError(f"packed rows of {len(data)} bytes (not a multiple of {ROW_SIZE})")
    out: list[Any] = []
    append = out.append
    nd = len(dests)
    ok, tpl, kinds, tuple_new, upd = entry_ok, F_TEMPLATE, _KINDS, _tuple_new, Update
    nf = 0
    for (kind, proto, ca, cport, va, vport, da, dport, fwmark, flags, state, tm, rm, di,
         in_pkts) in ROW.iter_unpack(data):
        if not kind:
            if nf >= len(fulls):
                raise ProtocolError("more kind-0 rows than full entries")
            append(fulls[nf])
            nf += 1
            continue
        flags &= ~_LOCAL
        if not (0 < kind <= 4 and di <= nd and ok(proto, 4, 4, 4, cport, 0, 0, flags, state, tm, rm)):
            raise _fault(kind, proto, cport, flags, state, tm, rm, di, nd)
        key = (proto, ca, cport, va, vport, da, dport, fwmark, bool(flags & tpl))
        if kind == _EXPIRE:
            append(tuple_new(upd, (kinds[kind], key, flags, 0, 0.0, 0.0, None, None, 0, None)))
        elif kind == _REFRESH:
            append(tuple_new(upd, (kinds[kind], key, flags, 0, tm / 1000.0, rm / 1000.0, None, None, 0,
                                   None)))
        else:
            append(tuple_new(upd, (kinds[kind], key, flags, state, tm / 1000.0, rm / 1000.0,
                                   dests[di - 1] if di else None, None, in_pkts, None)))
    if nf != len(fulls):
        raise ProtocolError(f"{len(fulls) - nf} full entries without a kind-0 row")
    return out


def _fault(kind: int, proto: int, cport: int, flags: int, state: int, tm: int, rm: int, di: int,
           nd: int) -> FieldRangeError:
    if not 0 < kind <= 4:
        return FieldRangeError("kind", f"unknown update kind {kind}")
    if di > nd:
        return FieldRangeError("dest", f"dest index {di} of {nd}")
    return entry_fault(proto, 4, 4, 4, cport, 0, 0, flags, state, tm, rm)


__all__ = ["FULL", "ROW", "ROW_SIZE", "Packer", "unpack"]
