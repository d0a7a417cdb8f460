"""The shared fence (seqlock'ed deadline) and the control pipe's framing."""

from __future__ import annotations

import asyncio
import math
import os
import socket

from director.workers.channel import Channel, Message
from director.workers.fence import SharedFence


def test_a_fence_written_by_one_mapping_is_read_by_another() -> None:
    writer = SharedFence.create()
    reader = SharedFence(os.dup(writer.fd))  # a worker maps the same memfd
    try:
        assert reader.until() == -math.inf  # a fresh fence: not master
        writer.set(1234.5)
        assert reader.until() == 1234.5
        writer.set(math.inf)
        assert reader.until() == math.inf
        writer.set(None)
        assert reader.until() == -math.inf
    finally:
        reader.close()
        writer.close()


def test_messages_cross_the_pipe_in_order_whatever_their_size() -> None:
    async def main() -> list[Message]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        left, right = Channel(a), Channel(b)
        got: list[Message] = []
        done = loop.create_future()
        closed = loop.create_future()

        def on_message(m: Message) -> None:
            got.append(m)
            if m[0] == "last" and not done.done():
                done.set_result(None)

        right.on_message = on_message
        right.on_close = lambda: closed.done() or closed.set_result(None)
        left.attach(loop)
        right.attach(loop)
        big = bytes(range(256)) * 40_000  # 10 MB: far beyond a socket buffer, written in pieces
        for i in range(3):
            left.send(("small", i))
        left.send(("big", big))
        left.send(("last",))
        await asyncio.wait_for(done, 30)
        left.close()
        await asyncio.wait_for(closed, 30)  # the peer's end of file is seen
        right.close()
        assert got[3] == ("big", big)
        return got

    got = asyncio.run(main())
    assert [m[0] for m in got] == ["small", "small", "small", "big", "last"]
    assert [m[1] for m in got[:3]] == [0, 1, 2]
