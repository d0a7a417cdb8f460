"""Regression tests for the input and resource defects of issue 10.

3. a backup accepted out-of-range fields (cport 70000 stored as protocol 7 port 4464...): every
   decoded field is range-checked and a bad batch refused as a whole, counted, and the backup resumes
   (or re-snapshots when refused again at the same point);
4. idle streams could lock a real backup out, and every hostile ack logged a WARNING;
5. the master's retention ring had no byte or age bound (and drained dicts kept their peak size).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import grpc
import pytest

from director.table.conn import ConnTable
from lbd_pb import sync_pb2 as pb
from syncd.backup import BackupConfig, SyncBackup
from syncd.convert import (
    decode_sync_message,
    encode_ack,
    encode_batch,
    encode_hello,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
    identity,
)
from syncd.master import MasterConfig, SyncMaster
from syncd.model import AckMsg, BatchMsg, FollowHello, ProtocolError, SyncKind, Update
from syncd.policy import RefreshTracker, SyncPolicy
from syncd.server import FOLLOW_METHOD, ServerConfig, create_sync_server
from tests.syncd.helpers import CLIENT_NET, RIPS, VIP, FakeClock, make_services, run, table_view, wait_until
from tests.syncd.test_hostile import ScriptedMaster

V4 = (198 << 24 | 19 << 16).to_bytes(4, "big")
VIP4, RIP4 = VIP.to_bytes(4, "big"), RIPS[0].to_bytes(4, "big")


V6_CLIENT, V6_VIP, V6_RIP = (bytes.fromhex("fd00" + "00" * 12 + x) for x in ("0a01", "0010", "0b01"))


def _entry(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = dict(kind=1, protocol=6, caddr=V4, cport=1000, vaddr=VIP4, vport=80, daddr=RIP4,
                             dport=8080, flags=0x100, state=3, timeout_ms=30_000, remaining_ms=20_000,
                             in_pkts=1)
    e.update(over)
    return e


def _ref(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = dict(protocol=6, caddr=V4, cport=0, vaddr=VIP4, vport=80, daddr=RIP4, dport=8080,
                             is_template=True)
    r.update(over)
    return r


def _batch(*entries: dict[str, Any]) -> bytes:
    m = pb.SyncMessage(version=1, epoch=5, incarnation=0xABC)
    m.batch.seq = 12
    for e in entries:
        m.batch.entries.add(**e)
    return m.SerializeToString()


HOSTILE = [
    ("kind", _entry(kind=9)),
    ("protocol", _entry(protocol=300)),
    ("protocol", _entry(protocol=50)),
    ("caddr", _entry(caddr=b"\x01\x02\x03\x04\x05")),
    ("caddr", _entry(caddr=b"")),
    ("vaddr", _entry(vaddr=bytes(16))),                     # a v6 VIP for a v4 client
    ("daddr", _entry(daddr=b"\x01\x02\x03")),
    ("cport", _entry(cport=70000)),
    ("vport", _entry(vport=99999)),
    ("dport", _entry(dport=65536)),
    ("flags", _entry(flags=0x4000)),                        # an unknown bit
    ("flags", _entry(flags=0x0800)),                        # NO_CPORT with a real cport
    ("state", _entry(state=11)),                            # beyond TcpState
    ("state", _entry(protocol=17, state=1)),                # UDP has one state
    ("timeout_ms", _entry(timeout_ms=2**31)),
    ("remaining_ms", _entry(remaining_ms=2**32 - 1)),
    ("remaining_ms", _entry(kind=4, remaining_ms=2**31)),   # REFRESH too
    ("in_pkts", _entry(in_pkts=2**63)),
    ("dest", _entry(dest=dict(protocol=99, vaddr=VIP4, vport=80, daddr=RIP4, dport=8080))),
    ("dest", _entry(dest=dict(protocol=6, vaddr=VIP4, vport=70000, daddr=RIP4, dport=8080))),
    ("dest", _entry(dest=dict(protocol=6, vaddr=VIP4, vport=80, daddr=b"\x01", dport=8080))),
    ("control", _entry(control=_ref(is_template=False))),
    ("control", _entry(control=_ref(protocol=17))),
    ("control", _entry(control=_ref(cport=70000))),
    ("control", _entry(control=_ref(vaddr=b"\x00" * 5))),
    ("control", _entry(flags=0x1000, cport=0, control=_ref())),  # a template controlling itself
    ("old_key", _entry(kind=2, old_key=_ref(is_template=False, caddr=b"\x0a\x00\x00\x01"))),
    ("old_key", _entry(kind=2, old_key=_ref(is_template=False, vport=99999))),
    # a 16-byte address inside ::/96 would stand for an IPv4 address in the table (director.table.entry)
    ("caddr", _entry(caddr=bytes(12) + V4, vaddr=V6_VIP, daddr=V6_RIP)),
    ("vaddr", _entry(caddr=V6_CLIENT, vaddr=bytes(12) + VIP4, daddr=V6_RIP)),
    ("daddr", _entry(caddr=V6_CLIENT, vaddr=V6_VIP, daddr=bytes(12) + RIP4)),
    ("dest", _entry(dest=dict(protocol=6, vaddr=bytes(12) + VIP4, vport=80, daddr=RIP4, dport=8080))),
    ("control", _entry(control=_ref(caddr=bytes(16)))),
]


@pytest.mark.parametrize(("field", "entry"), HOSTILE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(HOSTILE)])
def test_every_out_of_range_field_refuses_the_whole_batch(field: str, entry: dict[str, Any]) -> None:
    good = _entry(cport=1001)
    assert isinstance(decode_sync_message(_batch(good)), BatchMsg)
    with pytest.raises(ProtocolError) as exc:
        decode_sync_message(_batch(good, entry))
    assert getattr(exc.value, "field", None) == field


def test_an_ipv6_entry_decodes_to_the_tables_ipv6_range() -> None:
    msg = decode_sync_message(_batch(_entry(caddr=V6_CLIENT, vaddr=V6_VIP, daddr=V6_RIP)))
    assert isinstance(msg, BatchMsg)
    (u,) = msg.updates
    assert u.key[1] == int.from_bytes(V6_CLIENT, "big") >= 1 << 32


def test_hostile_batch_refused_counted_resumed_then_resnapshot() -> None:
    """A batch with cport 70000 (once stored as protocol 7 port 4464) is refused as a whole; the backup
    resumes from its last seq, and when refused again at that point asks for a snapshot."""
    async def body() -> None:
        key = (6, CLIENT_NET, 1000, VIP, 80, RIPS[0], 8080, 0, False)
        good = Update(SyncKind.NEW, key, 0x100, 3, 30.0, 20.0, (6, VIP, 80, 0, RIPS[0], 8080), None, 1)
        hostile = _batch(_entry(cport=2000), _entry(cport=70000))
        hostile = hostile.replace(b"\x08\x0c", b"\x08\x0b", 1)  # seq 11: right after the snapshot
        snapshot = [encode_snapshot_begin(5, 0xABC, 10, 1), encode_snapshot_chunk(5, 0xABC, 0, [good]),
                    encode_snapshot_end(5, 0xABC, 1, 1)]
        fake = ScriptedMaster([snapshot + [hostile], [hostile], [], [encode_batch(5, 0xABC, 11, 0, [])]])
        server, port = await fake.start()
        table = ConnTable(FakeClock())
        f = SyncBackup(f"127.0.0.1:{port}", "b0", table, make_services(),
                       cfg=BackupConfig(reconnect_min=0.02, reconnect_max=0.05))
        f.start()
        try:
            await wait_until(lambda: len(fake.hellos) >= 3, 20, "two refusals")
            assert [c.key for c in table] == [key]  # nothing of either hostile batch was applied
            assert f.refused_fields.get("cport") == 2
            h1, h2 = fake.hellos[1], fake.hellos[2]
            assert isinstance(h1, FollowHello) and (h1.incarnation, h1.last_applied_seq) == (0xABC, 10)
            assert isinstance(h2, FollowHello) and h2.incarnation == 0  # asks for a snapshot now
        finally:
            await f.stop()
            await server.stop(0)
    run(body())


async def _idle_follow(target: str, node_id: str, acks: list[bytes] | None = None) -> Any:
    """A stream that says hello (and maybe sends `acks`) and then just sits there."""
    channel = grpc.aio.insecure_channel(target)
    call = channel.stream_stream(FOLLOW_METHOD, request_serializer=identity, response_deserializer=identity)()
    await call.write(encode_hello(FollowHello(node_id, 0, 0, 0)))
    for a in acks or []:
        await call.write(a)
    return channel, call


def test_idle_streams_cannot_lock_a_real_backup_out() -> None:
    async def body() -> None:
        table = ConnTable(FakeClock())
        d = next(iter(make_services())).dests[0]
        cfg = ServerConfig(max_backups=4, hello_timeout=0.3, follow_rate=100.0, follow_burst=100.0)
        server, port = await create_sync_server("127.0.0.1:0", table, make_services(), 1, cfg=cfg)
        server.start_serving()
        target = f"127.0.0.1:{port}"
        table.new(6, CLIENT_NET, 1000, VIP, 80, d.addr, d.port, 0, d)
        idle = [await _idle_follow(target, f"squatter{i}") for i in range(6)]
        backup_table = ConnTable(FakeClock())
        f = SyncBackup(target, "real", backup_table, make_services(),
                       cfg=BackupConfig(reconnect_min=0.05, reconnect_max=0.2))
        try:
            await wait_until(lambda: len(server.sessions) == 4, 20, "the squatters fill every slot")
            t0 = time.monotonic()
            await wait_until(lambda: time.monotonic() - t0 > cfg.hello_timeout, 5, "their grace")
            f.start()
            await wait_until(lambda: f.in_sync and len(backup_table) == 1, 20, "the real backup in sync")
            assert table_view(backup_table) == table_view(table)
            assert server.refused.get("evicted", 0) >= 1
            assert any(s.node_id == "real" for s in server.sessions)
        finally:
            await f.stop()
            for channel, call in idle:
                call.cancel()
                await channel.close()
            await server.stop(0)
    run(body())


def test_streams_without_hello_are_bounded_per_host_and_cut_at_the_deadline() -> None:
    async def body() -> None:
        cfg = ServerConfig(hello_timeout=0.5, max_pending_per_host=2, follow_rate=100.0, follow_burst=100.0)
        server, port = await create_sync_server("127.0.0.1:0", ConnTable(FakeClock()), make_services(), 1,
                                                cfg=cfg)
        server.start_serving()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        calls = [channel.stream_stream(FOLLOW_METHOD, request_serializer=identity,
                                       response_deserializer=identity)() for _ in range(3)]
        try:
            codes = []
            for call in calls:  # nothing written: no hello
                try:
                    await call.read()
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                else:
                    codes.append(await call.code())
            assert sorted(codes, key=str) == sorted([grpc.StatusCode.INVALID_ARGUMENT] * 2
                                                    + [grpc.StatusCode.RESOURCE_EXHAUSTED], key=str)
            assert server.refused.get("pending") == 1 and server.refused.get("no_hello") == 2
        finally:
            await channel.close()
            await server.stop(0)
    run(body())


def test_hostile_acks_are_refused_and_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        cfg = ServerConfig(follow_rate=1000.0, follow_burst=1000.0, max_backups_per_host=64)
        server, port = await create_sync_server("127.0.0.1:0", ConnTable(FakeClock()), make_services(), 1,
                                                cfg=cfg)
        server.start_serving()
        target = f"127.0.0.1:{port}"
        lie = encode_ack(AckMsg(10**6, True))
        streams = [await _idle_follow(target, f"liar{i}", [lie]) for i in range(40)]
        try:
            await wait_until(lambda: server.refused.get("ack_beyond_sent", 0) == 40, 20, "every lie refused")
            await wait_until(lambda: not server.sessions, 20, "every liar cut off")
        finally:
            for channel, call in streams:
                call.cancel()
                await channel.close()
            await server.stop(0)
    with caplog.at_level(logging.WARNING, logger="syncd"):
        run(body())
    lines = [r for r in caplog.records if "ack" in r.getMessage() and r.levelno >= logging.WARNING]
    assert 1 <= len(lines) <= 7  # the 1st, 2nd, 4th, ... 32nd, each with its count


def test_retention_ring_is_bounded_by_bytes_and_age() -> None:
    async def body() -> None:
        clock = FakeClock()
        table = ConnTable(clock)
        d = next(iter(make_services())).dests[0]
        cfg = MasterConfig(retention_bytes=20_000, retention_age=30.0)
        master = SyncMaster(table, clock, 1, cfg)
        master.start()
        try:
            for i in range(3000):
                table.new(6, CLIENT_NET + i, 1000, VIP, 80, d.addr, d.port, 0, d, state=1, timeout=900.0)
                if i % 50 == 49:
                    master.cut_batch()
            ring = master.ring
            assert master.head_seq == 60 and 0 < ring.bytes <= 20_000 and ring.trimmed > 0
            assert not master.retained(1) and master.retained(master.head_seq - 1)
            ring.trim(time.monotonic() + 31.0)  # half a minute later: nothing is resumable any more
            assert len(ring) == 0 and ring.bytes == 0 and master.retained(master.head_seq)
            assert not master.retained(master.head_seq - 1)
        finally:
            master.stop()
    run(body())


def test_refresh_tracker_gives_memory_back_when_entries_go() -> None:
    tracker = RefreshTracker(SyncPolicy())
    keys = [(6, i, 1, 2, 3, 4, 5, 0, False) for i in range(50_000)]
    for k in keys:
        tracker.sent(k, 100.0, 900.0)
    peak = sys.getsizeof(tracker._deadline)
    for k in keys:
        tracker.forget(k)
    tracker.due(0.0)
    assert len(tracker) == 0
    assert sys.getsizeof(tracker._deadline) < peak / 10


def test_backup_memory_is_bounded() -> None:
    assert BackupConfig().lag_samples <= 10_000
