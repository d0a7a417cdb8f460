"""Wire format round trips and refusals (convert.py), and the pure policy pieces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.convert import (
    decode_backup_message,
    decode_sync_message,
    encode_ack,
    encode_batch,
    encode_heartbeat,
    encode_hello,
)
from syncd.model import AckMsg, BatchMsg, FollowHello, HeartbeatMsg, ProtocolError, SyncKind, Update
from syncd.policy import RefreshTracker, SyncPolicy, TokenBucket

v4 = st.integers(0, 2**32 - 1)
v6 = st.integers(2**32, 2**128 - 1)
addr = st.one_of(v4, v6)
port = st.integers(0, 65535)
fwmark = st.integers(0, 2**32 - 1)
dest_key = st.tuples(st.sampled_from([6, 17]), addr, port, fwmark, addr, port)
ms = st.integers(0, 10**7).map(lambda v: v / 1000.0)
KNOWN_FLAGS = 0x0007 | 0x0080 | 0x0100 | 0x0800 | 0x2000  # fwd, NOOUTPUT, INACTIVE, NO_CPORT, ONE_PACKET


@st.composite
def conn_keys(draw: st.DrawFn, proto: int | None = None, template: bool | None = None) -> tuple:  # type: ignore[type-arg]
    """A key within the contract's ranges: known protocol, caddr and vaddr of one family."""
    p = proto if proto is not None else draw(st.sampled_from([1, 6, 17]))
    fam = draw(st.sampled_from([v4, v6]))
    tpl = draw(st.booleans()) if template is None else template
    return (p, draw(fam), draw(port), draw(fam), draw(port), draw(addr), draw(port), draw(fwmark), tpl)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    kind = draw(st.sampled_from(list(SyncKind)))
    k = draw(conn_keys())
    flags = draw(st.integers(0, 0x3FFF)) & KNOWN_FLAGS
    if k[2] != 0:
        flags &= ~0x0800  # NO_CPORT only with cport 0
    flags |= 0x1000 if k[8] else 0
    if kind == SyncKind.EXPIRE:
        return Update(kind, k, flags)
    if kind == SyncKind.REFRESH:
        return Update(kind, k, flags, timeout=draw(ms), remaining=draw(ms))
    control = draw(st.none() | conn_keys(k[0], True).filter(lambda c: c != k))
    old = None
    if kind == SyncKind.UPDATE and draw(st.booleans()):
        old = (k[0], k[1], draw(port), k[3], draw(port), k[5], draw(port), k[7], k[8])
    return Update(kind, k, flags, draw(st.integers(0, 10 if k[0] == 6 else 0)), draw(ms), draw(ms),
                  draw(st.none() | dest_key), control, draw(st.integers(0, 2**40)), old)


@given(st.lists(updates(), max_size=20), st.integers(1, 2**63), st.integers(1, 2**63 - 1))
def test_batch_round_trip(ups: list[Update], seq: int, epoch: int) -> None:
    msg = decode_sync_message(encode_batch(epoch, 7, seq, 123, ups))
    assert msg == BatchMsg(epoch, 7, seq, 123, ups)


def test_local_flags_never_travel() -> None:
    u = Update(SyncKind.NEW, (6, 1, 2, 3, 4, 5, 6, 0, False), 0x0020 | 0x0040 | 0x0100, 1, 1.0, 1.0)
    msg = decode_sync_message(encode_batch(1, 1, 1, 0, [u]))
    assert isinstance(msg, BatchMsg) and msg.updates[0].flags == 0x0100


BAD = [
    b"\xff\xff\xff",                                              # garbage
    b"\x08\x02",                                                   # version 2
    b"",                                                            # no version
    b"\x08\x01",                                                   # no body
    b"\x08\x01\x22\x04\x1a\x02\x08\x09",                             # entry of unknown kind 9
    b"\x08\x01\x22\x09\x1a\x07\x08\x01\x1a\x03\x01\x02\x03",             # 3-byte address
]


@pytest.mark.parametrize("data", BAD)
def test_garbage_or_unknown_version_or_empty_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_sync_message(data)


def test_control_messages_round_trip() -> None:
    hb = decode_sync_message(encode_heartbeat(3, 4, 5, 6, 7))
    assert hb == HeartbeatMsg(3, 4, 5, 6, 7)
    hello = FollowHello("node-1", 10, 2, 99)
    assert decode_backup_message(encode_hello(hello)) == hello
    assert decode_backup_message(encode_ack(AckMsg(5, True))) == AckMsg(5, True)
    with pytest.raises(ProtocolError):
        decode_backup_message(b"")


def test_refresh_tracker_orders_by_margin_and_forgets() -> None:
    tr = RefreshTracker(SyncPolicy(refresh_margin=2.0, refresh_min_margin=0.25))
    a, b, c = ((6, i, 1, 2, 3, 4, 5, 0, False) for i in range(3))
    tr.sent(a, 100.0, 900.0)   # margin 2 s: due at 98
    tr.sent(b, 50.0, 1.0)      # margin 0.5 s (half the timeout): due at 49.5
    tr.sent(c, 60.0, 900.0)
    tr.forget(c)
    tr.sent(a, 120.0, 900.0)   # re-sent later: the old heap item is stale
    assert tr.due(49.0) == []
    assert tr.due(99.0) == [(b, 50.0)]
    assert tr.due(118.0) == [(a, 120.0)]
    assert len(tr) == 0


def test_token_bucket() -> None:
    tb = TokenBucket(rate=1.0, burst=2.0)
    assert [tb.take(0.0) for _ in range(3)] == [True, True, False]
    assert tb.take(1.5) and not tb.take(1.6)
