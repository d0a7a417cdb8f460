"""The hand-rolled wire encoding (syncd.wire, syncd.packed) is byte for byte upb's, the coalescer's
encoded and packed paths send exactly the updates of its record path, and version 1 still works."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from director.table.conn import ConnTable
from director.types import ConnFlags
from syncd import wire
from syncd.coalesce import Window
from syncd.convert import (
    decode_sync_message,
    downgrade,
    encode_batch,
    encode_batch_entries,
    encode_batch_packed,
    encode_batch_pb,
    encode_batch_v1_pb,
    encode_snapshot_chunk,
    encode_snapshot_chunk_pb,
    entry_body,
    pack_updates,
)
from syncd.model import BatchMsg, SyncKind, Update
from syncd.packed import Packer
from syncd.policy import RefreshTracker, SyncPolicy
from tests.syncd.helpers import CLIENT_NET, VIP, FakeClock, make_services
from tests.syncd.test_convert import updates

u64 = st.integers(0, 2**64 - 1)


@given(st.lists(updates(), max_size=20), u64, u64, u64, u64, st.integers(0, 2**32 - 1))
def test_encoding_is_upbs_byte_for_byte(ups: list[Update], epoch: int, inc: int, seq: int, ns: int,
                                        index: int) -> None:
    assert encode_batch(epoch, inc, seq, ns, ups) == encode_batch_pb(epoch, inc, seq, ns, ups)
    assert encode_snapshot_chunk(epoch, inc, index, ups) == encode_snapshot_chunk_pb(epoch, inc, index, ups)


def test_window_encode_sends_what_updates_says() -> None:
    clock = FakeClock()
    t = ConnTable(clock, event_capacity=1 << 16)
    t.events.enabled = True
    d = next(iter(make_services())).dests[0]
    tpl = t.new(6, CLIENT_NET, 0, VIP, 80, d.addr, d.port, int(ConnFlags.TEMPLATE), d, timeout=60.0)
    conns = [t.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, d, control=tpl if i % 2 else None)
             for i in range(1, 40)]
    for c in conns[::3]:
        t.set_state(c, 1, 900.0)
    for c in conns[::5]:
        t.expire(c)
    t.check_template(tpl, True)  # its dest is usable: no re-key, no event
    nocport = t.new(6, CLIENT_NET + 99, 0, VIP, 80, d.addr, d.port, 0, d)
    t.fill_cport(nocport, 4242)
    events = t.events.drain_raw(1 << 20)
    w1, w2, w3 = Window(), Window(), Window()
    for ev in events:
        for w in (w1, w2, w3):
            w.add(ev[8], ev, ev[9])
    policy = SyncPolicy()
    tr1, tr2, tr3 = RefreshTracker(policy), RefreshTracker(policy), RefreshTracker(policy)
    ups = w1.updates(clock(), policy, tr1)
    bodies = w2.encode(clock(), policy, tr2)
    rows = Packer(wire.dest_ref)
    w3.encode_packed(clock(), policy, tr3, rows)
    assert len(ups) == len(bodies) == len(rows) > 30
    assert 0 < len(rows.fulls) < len(rows)  # children of the template and the re-key go in full
    msg = decode_sync_message(encode_batch_entries(1, 2, 3, 4, bodies))
    assert isinstance(msg, BatchMsg) and msg == decode_sync_message(encode_batch(1, 2, 3, 4, ups))
    assert [entry_body(u) for u in ups] == bodies
    ((part, fulls),) = rows.parts(4096)
    assert encode_batch(1, 2, 3, 4, ups) == encode_batch_packed(1, 2, 3, 4, fulls, part, rows.dests)
    assert len(tr1) == len(tr2) == len(tr3)
    assert tr1.due(clock() + 1e6) == tr2.due(clock() + 1e6) == tr3.due(clock() + 1e6)


@given(st.lists(updates(), max_size=40), st.integers(1, 7))
def test_packed_parts_keep_every_update_in_order(ups: list[Update], step: int) -> None:
    """A window cut into several batches: each part decodes to its slice of the updates."""
    p = pack_updates(ups)
    got: list[Update] = []
    for i, (part, fulls) in enumerate(p.parts(step)):
        msg = decode_sync_message(encode_batch_packed(1, 2, i + 1, 0, fulls, part, p.dests))
        assert isinstance(msg, BatchMsg) and len(msg.updates) <= step
        got += msg.updates
    assert got == ups


@given(st.lists(updates(), max_size=20), u64, u64, u64, u64)
def test_downgrade_is_what_a_version_1_master_sends(ups: list[Update], epoch: int, inc: int, seq: int,
                                                    ns: int) -> None:
    v1 = encode_batch_v1_pb(epoch, inc, seq, ns, ups)
    assert downgrade(encode_batch(epoch, inc, seq, ns, ups)) == v1
    assert decode_sync_message(v1) == decode_sync_message(encode_batch(epoch, inc, seq, ns, ups))


def test_version_1_messages_still_decode_and_downgrade_gives_them() -> None:
    """A version-1 master's batch decodes; a version-2 batch downgraded for a version-1 backup is
    exactly what a version-1 master sends."""
    d = next(iter(make_services())).dests[0]
    ups = [Update(SyncKind.NEW, (6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, False), 0x100, 1,
                  900.0, 899.5, d.key, None, i) for i in range(5)]
    v1 = encode_batch_v1_pb(3, 4, 5, 6, ups)
    assert decode_sync_message(v1) == BatchMsg(3, 4, 5, 6, ups)
    v2 = encode_batch(3, 4, 5, 6, ups)
    assert v2 != v1 and downgrade(v2) == v1


def test_event_key_is_fresh_after_a_rekey_while_events_were_off() -> None:
    t = ConnTable(FakeClock())
    d = next(iter(make_services())).dests[0]
    c = t.new(6, CLIENT_NET, 0, VIP, 80, d.addr, d.port, 0, d)
    t.events.enabled = True
    t.set_state(c, 1, 10.0)       # caches c's key for its next event
    t.events.enabled = False
    t.fill_cport(c, 5555)          # key changes, no event
    t.events.enabled = True
    t.set_state(c, 2, 10.0)
    evs = t.events.drain()
    assert evs[-1].snap.key == c.key and evs[-1].snap.key[2] == 5555
