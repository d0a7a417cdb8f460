"""Hostile input on both ends is refused (and logged) without corrupting any table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from director.table.conn import ConnTable
from director.types import ConnFlags
from syncd.backup import BackupConfig, SyncBackup
from syncd.convert import (
    decode_backup_message,
    encode_ack,
    encode_batch,
    encode_heartbeat,
    encode_hello,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
    identity,
)
from syncd.model import AckMsg, FollowHello, SyncKind, Update
from syncd.server import FOLLOW_METHOD, SERVICE, ServerConfig, create_sync_server
from tests.syncd.helpers import (
    CLIENT_NET,
    RIPS,
    VIP,
    Cluster,
    FakeClock,
    make_services,
    run,
    table_view,
    wait_until,
)

INC, EPOCH = 0xABC, 5
DEST = (6, VIP, 80, 0, RIPS[0], 8080)


def _entry(i: int, kind: SyncKind = SyncKind.NEW) -> Update:
    key = (6, CLIENT_NET + i, 1000 + i, VIP, 80, RIPS[0], 8080, 0, False)
    return Update(kind, key, 0x100, 3, 30.0, 20.0, DEST, None, 1)


class ScriptedMaster:
    """Speaks the Follow method with scripted bytes: script i is sent on the i-th connection."""

    def __init__(self, scripts: list[list[bytes]]) -> None:
        self.scripts = scripts
        self.hellos: list[Any] = []

    async def follow(self, request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self.hellos.append(decode_backup_message(await anext(request_iterator)))
        i = len(self.hellos) - 1
        for data in self.scripts[i] if i < len(self.scripts) else []:
            yield data
        await asyncio.sleep(60)  # until the backup hangs up (ending first could cut the tail)

    async def start(self) -> tuple[Any, int]:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(self.follow, request_deserializer=identity,
                                                        response_serializer=identity)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Follow": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port


def _scripts() -> list[list[bytes]]:
    good = encode_batch(EPOCH, INC, 12, 0, [_entry(0, SyncKind.EXPIRE)])
    v99 = b"\x08\x63" + good[2:]  # field 1 (version) = 99
    assert good[:2] == b"\x08\x02"
    return [
        [encode_snapshot_begin(EPOCH, INC, 10, 3),
         encode_snapshot_chunk(EPOCH, INC, 0, [_entry(i) for i in range(3)]),
         encode_snapshot_end(EPOCH, INC, 1, 3), encode_batch(EPOCH, INC, 11, 0, [_entry(3)]),
         encode_batch(EPOCH - 1, INC, 12, 0, [_entry(9)])],                  # stale epoch
        [encode_batch(EPOCH, INC, 14, 0, [_entry(9)])],                      # sequence gap
        [b"\xff\xff\xff\x00 garbage"],                                       # garbage bytes
        [v99],                                                               # unknown version
        [encode_batch(EPOCH, INC, 12, 0, [_entry(100 + i) for i in range(2000)])],  # oversize
        [encode_batch(EPOCH, 0xDEF, 12, 0, [_entry(9)])],                    # other incarnation
        [encode_snapshot_chunk(EPOCH, INC, 0, [_entry(9)])],                 # chunk outside snapshot
        [encode_heartbeat(EPOCH, INC, 20, 20, 0)],                           # heartbeat: we missed seqs
        [encode_batch(EPOCH, INC, 11, 0, [_entry(9)])],                      # duplicate of seq 11
        [good],                                                              # and it still works
    ]


def test_follower_refuses_hostile_master_input_without_corrupting_table() -> None:
    async def body() -> None:
        scripts = _scripts()
        fake = ScriptedMaster(scripts)
        server, port = await fake.start()
        table = ConnTable(FakeClock())
        f = SyncBackup(f"127.0.0.1:{port}", "b0", table, make_services(),
                     cfg=BackupConfig(reconnect_min=0.02, reconnect_max=0.05, max_message=64 << 10))
        f.start()
        try:
            await wait_until(lambda: len(fake.hellos) >= 2, 20, "the first refusal")
            assert len(table) == 4
            after_good = table_view(table)
            assert all(c.flags & ConnFlags.SYNC for c in table)
            await wait_until(lambda: len(fake.hellos) >= len(scripts), 30, "every script played")
            # every refusal left the table and the resume point untouched
            for hello in fake.hellos[1:]:
                assert isinstance(hello, FollowHello)
                assert (hello.incarnation, hello.last_applied_seq, hello.epoch_seen) == (INC, 11, EPOCH)
            await wait_until(lambda: len(table) == 3, 20, "the last, valid batch")
            assert f.applier.applied_seq == 12
            del after_good[_entry(0).key]  # exactly what the valid batch removed, nothing else
            assert table_view(table) == after_good
            counts = f._logs.counts
            assert counts.get("StaleEpochError", 0) >= 1
            assert counts.get("SequenceGapError", 0) >= 3  # gap, heartbeat, duplicate
            assert counts.get("ProtocolError", 0) >= 4     # garbage, version, incarnation, chunk
            assert counts.get(str(grpc.StatusCode.RESOURCE_EXHAUSTED), 0) >= 1
        finally:
            await f.stop()
            await server.stop(0)
    run(body())


async def _raw_follow(target: str, messages: list[bytes]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(FOLLOW_METHOD, request_serializer=identity,
                                     response_deserializer=identity)()
        try:
            for m in messages:
                await call.write(m)
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        code: grpc.StatusCode = await call.code()
        return code


def test_master_refuses_hostile_followers_and_keeps_serving_others() -> None:
    async def body() -> None:
        cluster = Cluster(FakeClock())
        await cluster.start(1)
        t, svc = cluster.table, next(iter(cluster.services))
        d = svc.dests[0]
        for i in range(20):
            t.new(6, CLIENT_NET + i, 2000 + i, VIP, 80, d.addr, d.port, 0, d)
        try:
            await cluster.synced()
            before = table_view(t)
            hello = encode_hello(FollowHello("evil", 0, 0, 0))
            target = cluster.target
            assert await _raw_follow(target, [b"\xff\x00garbage"]) == grpc.StatusCode.INVALID_ARGUMENT
            ack = encode_ack(AckMsg(1, True))
            assert await _raw_follow(target, [ack]) == grpc.StatusCode.INVALID_ARGUMENT
            v99 = encode_hello(FollowHello("evil", 0, 0, 0, version=99))
            assert await _raw_follow(target, [v99]) == grpc.StatusCode.FAILED_PRECONDITION
            huge = encode_hello(FollowHello("x" * (100 << 10), 0, 0, 0))
            assert await _raw_follow(target, [huge]) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await _raw_follow(target, [hello, b"\xff\x00garbage"]) == grpc.StatusCode.INVALID_ARGUMENT
            assert await _raw_follow(target, [hello, hello]) == grpc.StatusCode.INVALID_ARGUMENT
            assert cluster.server.refused.get("garbage", 0) >= 2
            # the honest backup is still in sync and the master's table is untouched
            assert table_view(t) == before
            t.new(6, CLIENT_NET + 99, 99, VIP, 80, d.addr, d.port, 0, d)
            await cluster.synced()
            assert table_view(cluster.backup_tables[0]) == table_view(t)
        finally:
            await cluster.close()
    run(body())


def test_backup_refuses_follow_and_follow_rate_is_limited() -> None:
    async def body() -> None:
        table = ConnTable(FakeClock())
        server, port = await create_sync_server("127.0.0.1:0", table, make_services(), 1,
                                                cfg=ServerConfig(follow_rate=0.001, follow_burst=3))
        target = f"127.0.0.1:{port}"
        hello = encode_hello(FollowHello("b0", 0, 0, 0))
        try:
            # not serving (a backup): FAILED_PRECONDITION, and it counts against the rate limit too
            assert await _raw_follow(target, [hello]) == grpc.StatusCode.FAILED_PRECONDITION
            server.start_serving()
            codes = [await _raw_follow(target, [b"\xff"]) for _ in range(4)]
            assert codes[:2] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
            assert codes[2:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        finally:
            await server.stop(0)
    run(body())
