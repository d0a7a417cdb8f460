"""Wire version 2: packed rows are range-checked like full entries, the backup's bulk insert creates
exactly what ``ConnTable.new`` creates, and a version-1 backup is still served (version-1 messages)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from director.table.conn import ConnTable
from director.types import ConnFlags
from lbd_pb import sync_pb2 as pb
from syncd import wire
from syncd.apply import BackupApplier
from syncd.convert import (
    decode_sync_message,
    encode_batch,
    encode_batch_packed,
    encode_hello,
    entry_body,
    identity,
)
from syncd.model import FieldRangeError, FollowHello, ProtocolError, SnapshotEndMsg, SyncKind, Update
from syncd.packed import FULL, ROW
from syncd.server import FOLLOW_METHOD
from tests.syncd.helpers import (
    CLIENT_NET,
    RIPS,
    VIP,
    Cluster,
    FakeClock,
    dest_counters,
    expires_view,
    make_services,
    run,
    table_view,
    wait_until,
)

DEST = (6, VIP, 80, 0, RIPS[0], 8080)
_SYNC = int(ConnFlags.SYNC)
_TEMPLATE = int(ConnFlags.TEMPLATE)


def _row(**over: int) -> bytes:
    f = dict(kind=1, protocol=6, caddr=CLIENT_NET, cport=1000, vaddr=VIP, vport=80, daddr=RIPS[0], dport=8080,
             fwmark=0, flags=0x100, state=3, timeout_ms=30_000, remaining_ms=20_000, dest=1, in_pkts=1)
    f.update(over)
    return ROW.pack(*f.values())


def _batch(rows: list[bytes], fulls: list[bytes] | None = None, dests: list[bytes] | None = None) -> bytes:
    return encode_batch_packed(5, 0xABC, 12, 0, fulls or [], b"".join(rows),
                               [wire.dest_ref(DEST)] if dests is None else dests)


HOSTILE_ROWS = [
    ("kind", _row(kind=9)),
    ("protocol", _row(protocol=50)),
    ("flags", _row(flags=0x4000)),                   # an unknown bit
    ("flags", _row(flags=0x0800)),                   # NO_CPORT with a real cport
    ("state", _row(state=11)),                       # beyond TcpState
    ("state", _row(protocol=17, state=1)),           # UDP has no states
    ("timeout_ms", _row(timeout_ms=2**31)),
    ("remaining_ms", _row(remaining_ms=2**31)),
    ("dest", _row(dest=2)),                          # one dest in the table
]


@pytest.mark.parametrize(("field", "row"), HOSTILE_ROWS)
def test_a_bad_row_refuses_the_whole_batch(field: str, row: bytes) -> None:
    data = _batch([_row(cport=1), row, _row(cport=2)])
    with pytest.raises(FieldRangeError) as err:
        decode_sync_message(data)
    assert err.value.field == field


def test_malformed_packing_is_refused() -> None:
    good = _row()
    full = entry_body(Update(SyncKind.EXPIRE, (6, 1, 2, 3, 4, 5, 6, 0, False)))
    bad_dest = pb.DestRef(protocol=300, vaddr=bytes(4), daddr=bytes(4)).SerializeToString()
    for data in (_batch([good[:-1]]),                    # not a whole number of rows
                 _batch([good, FULL]),                   # a kind-0 row without its entry
                 _batch([good], fulls=[full])):          # an entry without its kind-0 row
        with pytest.raises(ProtocolError):
            decode_sync_message(data)
    with pytest.raises(FieldRangeError) as err:
        decode_sync_message(_batch([good], dests=[bad_dest]))
    assert err.value.field == "dest"
    assert len(decode_sync_message(_batch([good, FULL], fulls=[full])).updates) == 2  # type: ignore[union-attr]


def test_new_synced_creates_what_new_creates() -> None:
    clock = FakeClock()
    one, bulk = ConnTable(clock), ConnTable(clock)
    svc_one, svc_bulk = make_services(), make_services()
    rows_one, rows_bulk = [], []
    for i in range(300):
        tpl = i % 7 == 0
        cport = 0 if i % 11 == 0 else 1000 + i
        key = (6 if i % 3 else 17, CLIENT_NET + i, cport, VIP, 80, RIPS[i % 2], 8080, 0, tpl)
        flags = (_TEMPLATE if tpl else 0) | (0x100 if i % 2 else 0) | _SYNC
        state = 3 if key[0] == 6 and not tpl else 0
        rows = []
        for services in (svc_one, svc_bulk):
            dest = None if i % 5 == 0 else services.find_dest((6, VIP, 80, 0, RIPS[i % 2], 8080))
            rows.append((key, flags, state, 60.0 + i, 1.0 + i, dest))
        rows_one.append(rows[0])
        rows_bulk.append(rows[1])
    for key, flags, state, timeout, rem, dest in rows_one:
        p, ca, cp, va, vp, da, dp, fw, _ = key
        one.new(p, ca, cp, va, vp, da, dp, flags, dest, fw, state=state, timeout=timeout, remaining=rem)
    created = bulk.new_synced(rows_bulk)
    assert all(c is not None for c in created)
    assert table_view(bulk) == table_view(one) and len(bulk) == len(one) == 300
    assert expires_view(bulk, clock()) == expires_view(one, clock())
    assert dest_counters(svc_bulk) == dest_counters(svc_one)
    assert (bulk.no_cport_count, bulk.template_count) == (one.no_cport_count, one.template_count) != (0, 0)
    # keys it holds are left alone (None), in row order
    before = table_view(bulk)
    again = bulk.new_synced([rows_bulk[4], (rows_bulk[5][0], _SYNC, 9, 1.0, 1.0, None)])
    assert again == [None, None] and table_view(bulk) == before


def test_a_version_1_backup_is_served_version_1_messages() -> None:
    """An older backup (hello version 1) gets every update as a full ConnEntry, never a packed row,
    and its table ends equal to the master's."""
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(0)
        t, d = cluster.table, next(iter(cluster.services)).dests[0]
        tpl = t.new(6, CLIENT_NET, 0, VIP, 80, d.addr, d.port, _TEMPLATE, d, timeout=60.0)
        for i in range(1, 50):
            ctl = tpl if i % 4 == 0 else None
            t.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, d, control=ctl)
        table, services = ConnTable(FakeClock()), make_services()
        applier = BackupApplier(table, services)
        try:
            async with grpc.aio.insecure_channel(cluster.target) as channel:
                call = channel.stream_stream(FOLLOW_METHOD, request_serializer=identity,
                                             response_deserializer=identity)()
                await call.write(encode_hello(FollowHello("old", 0, 0, 0, version=1)))
                versions: set[int] = set()
                seen_end = False

                async def read_one() -> None:
                    nonlocal seen_end
                    data = await call.read()
                    m = pb.SyncMessage.FromString(data)
                    versions.add(m.version)
                    body = m.batch if m.HasField("batch") else m.snapshot_chunk
                    assert not body.packed and not body.dests
                    msg = decode_sync_message(data)
                    applier.handle(msg)
                    seen_end = seen_end or isinstance(msg, SnapshotEndMsg)

                while not seen_end:
                    await asyncio.wait_for(read_one(), 10)
                for i in range(50, 80):  # live batches too
                    t.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, d)
                cluster.server.master.cut_batch()
                head = cluster.server.master.head_seq
                while applier.applied_seq < head:
                    await asyncio.wait_for(read_one(), 10)
                call.cancel()
            assert versions == {1}
            assert table_view(table) == table_view(t) and len(table) == 80
            assert cluster.server.refused.get("version", 0) == 0
        finally:
            await cluster.close()
    run(body())


def test_version_2_backups_get_packed_rows_over_grpc() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(1)
        t, d = cluster.table, next(iter(cluster.services)).dests[0]
        try:
            await cluster.synced()
            for i in range(100):
                t.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, d)
            await cluster.synced()
            entry = cluster.server.master.ring.after(cluster.server.master.head_seq - 1,
                                                     cluster.server.master.head_seq, 1)
            assert entry
            m = pb.SyncMessage.FromString(entry[0].data)
            assert m.version == 2 and len(m.batch.packed) == 100 * ROW.size and not m.batch.entries
            await wait_until(lambda: table_view(cluster.backup_tables[0]) == table_view(t))
        finally:
            await cluster.close()
    run(body())


def test_packed_and_full_entries_round_trip_in_order() -> None:
    v6 = (6, 2**100 + 1, 1, 2**100 + 2, 80, RIPS[0], 8080, 0, False)
    ups = [Update(SyncKind.NEW, (6, CLIENT_NET + i, 1000 + i, VIP, 80, RIPS[0], 8080, 0, False), 0x100, 3,
                  30.0, 20.0, DEST, None, 1) for i in range(3)]
    ups.insert(1, Update(SyncKind.NEW, v6, 0x100, 3, 30.0, 20.0, None, None, 2**40))
    data = encode_batch(1, 2, 3, 4, ups)
    m = pb.SyncMessage.FromString(data)
    assert len(m.batch.entries) == 1 and len(m.batch.packed) == 4 * ROW.size
    assert decode_sync_message(data).updates == ups  # type: ignore[union-attr]
