"""The hand-rolled wire encoding (syncd.wire) is byte for byte upb's, and the coalescer's encoded
path sends exactly the updates of its record path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from director.table.conn import ConnTable
from director.types import ConnFlags
from syncd.coalesce import Window
from syncd.convert import (
    decode_sync_message,
    encode_batch,
    encode_batch_entries,
    encode_batch_pb,
    encode_snapshot_chunk,
    encode_snapshot_chunk_pb,
)
from syncd.model import BatchMsg, Update
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
    w1, w2 = Window(), Window()
    for ev in events:
        w1.add(ev[8], ev, ev[9])
        w2.add(ev[8], ev, ev[9])
    policy = SyncPolicy()
    tr1, tr2 = RefreshTracker(policy), RefreshTracker(policy)
    ups = w1.updates(clock(), policy, tr1)
    bodies = w2.encode(clock(), policy, tr2)
    assert len(ups) == len(bodies) > 30
    msg = decode_sync_message(encode_batch_entries(1, 2, 3, 4, bodies))
    assert isinstance(msg, BatchMsg)
    assert encode_batch(1, 2, 3, 4, ups) == encode_batch_entries(1, 2, 3, 4, bodies)
    assert len(tr1) == len(tr2) and tr1.due(clock() + 1e6) == tr2.due(clock() + 1e6)


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
