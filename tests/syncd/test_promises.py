"""Promises over the sync stream (static stability, docs/HA.md), over real gRPC on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from syncd.backup import BackupConfig
from syncd.convert import decode_backup_message, encode_ack
from syncd.master import MasterConfig
from syncd.model import MAX_PROMISE_MS, AckMsg, ProtocolError
from tests.syncd.helpers import Cluster, run, wait_until


def test_backups_promise_and_the_master_counts_each_promise_from_its_send_time() -> None:
    async def body() -> None:
        cluster = Cluster(master_cfg=MasterConfig(promise_interval=0.05, promise_margin=0.1))
        moves: list[int] = []
        given: list[tuple[float, int]] = []
        await cluster.start(2)
        cluster.server.master.on_promise = lambda: moves.append(1)
        for b in cluster.backups:
            b.on_promise = lambda until, epoch: given.append((until, epoch))
        try:
            await wait_until(lambda: set(cluster.server.promises()) == {"b0", "b1"}
                             and min(cluster.server.promises().values()) > 0, what="both backups promised")
            first = dict(cluster.server.promises())
            await wait_until(lambda: all(cluster.server.promises()[n] > first[n] for n in first),
                             what="promises renewed")
            now = time.monotonic()
            for node, until in cluster.server.promises().items():
                backup = next(b for b in cluster.backups if b.node_id == node)
                own, epoch = backup.promise
                assert epoch == cluster.epoch
                assert until < own  # the master's view ends before the backup's own promise
                assert until <= now + 1.0  # never more than promise_ms (1 s) ahead of the send
            assert moves and given
        finally:
            await cluster.close()
    run(body())


def test_a_backup_configured_not_to_promise_gives_none() -> None:
    async def body() -> None:
        cluster = Cluster(master_cfg=MasterConfig(promise_interval=0.05),
                          backup_cfg=BackupConfig(reconnect_min=0.05, reconnect_max=0.2, promise_ms=0))
        await cluster.start(1)
        try:
            await cluster.synced()
            await wait_until(lambda: cluster.server.backups()[0].acked_seq >= 0
                             and cluster.backups[0].stats["messages"] > 10, what="a few heartbeats")
            assert cluster.server.promises() == {"b0": 0.0}
            assert cluster.backups[0].promise == (0.0, 0)
        finally:
            await cluster.close()
    run(body())


def test_a_master_that_stopped_promising_keeps_its_stream_and_lets_promises_lapse() -> None:
    """A stepped-down master (it may resume with its epoch) keeps streaming in the same incarnation
    but asks for no promise: the backups' own promises run out, so they are free to campaign."""
    async def body() -> None:
        cluster = Cluster(master_cfg=MasterConfig(promise_interval=0.05))
        await cluster.start(1)
        try:
            await wait_until(lambda: cluster.server.promises().get("b0", 0.0) > 0, what="a promise")
            master, backup = cluster.server.master, cluster.backups[0]
            incarnation, connects = master.incarnation, backup.stats["connects"]
            snapshots = backup.applier.stats["snapshots"]
            master.promising = False
            own = backup.promise[0]
            await wait_until(lambda: time.monotonic() > own + 0.2, what="the backup's promise to run out")
            assert backup.promise[0] == own  # never renewed while not asked
            assert cluster.server.serving and master.incarnation == incarnation
            master.promising = True  # resumed with the same epoch: promises again, no resnapshot
            await wait_until(lambda: backup.promise[0] > own, what="a fresh promise")
            assert master.incarnation == incarnation and backup.applier.stats["snapshots"] == snapshots >= 1
            assert backup.stats["connects"] == connects  # the same stream throughout
        finally:
            await cluster.close()
    run(body())


def test_a_closed_stream_takes_its_promise_with_it_on_the_master() -> None:
    async def body() -> None:
        cluster = Cluster(master_cfg=MasterConfig(promise_interval=0.05))
        await cluster.start(1)
        try:
            await wait_until(lambda: cluster.server.promises().get("b0", 0.0) > 0, what="a promise")
            await cluster.backups[0].stop()
            await wait_until(lambda: "b0" not in cluster.server.promises(), what="the session to close")
            assert cluster.backups[0].promise[0] > 0  # the backup still holds its own word
        finally:
            await cluster.close()
    run(body())


def test_hostile_promises_are_refused_at_the_decode_boundary() -> None:
    ok = AckMsg(5, True, 7, 1000)
    assert decode_backup_message(encode_ack(ok)) == ok
    with pytest.raises(ProtocolError):
        decode_backup_message(encode_ack(AckMsg(5, True, 7, MAX_PROMISE_MS + 1)))
    with pytest.raises(ProtocolError):
        decode_backup_message(encode_ack(AckMsg(5, True, 0, 1000)))  # a promise on no request


def test_a_backup_in_sync_when_its_masters_stream_ends_stays_fit_to_take_over_from_it() -> None:
    """The master died (or its stream was lost) while this backup was in sync: its table is that
    master's up to the break, so it may take over from it (the election's readiness); a backup that
    never synced with that master is not."""
    async def body() -> None:
        cluster = Cluster(master_cfg=MasterConfig(promise_interval=0.05))
        await cluster.start(1)
        try:
            await cluster.synced()
            backup = cluster.backups[0]
            assert backup.in_sync and backup.fit_for(cluster.epoch)
            assert backup.synced_epoch == 0  # nothing ended yet
            cluster.server.stop_serving()  # the stream ends (as when the master's process dies)
            await wait_until(lambda: not backup.connected, what="the stream to end")
            assert not backup.in_sync
            assert backup.fit_for(cluster.epoch) and not backup.fit_for(cluster.epoch + 1)
        finally:
            await cluster.close()
    run(body())
