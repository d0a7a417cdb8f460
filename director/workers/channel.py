"""The control pipe between directord and a worker: length-prefixed messages on a socketpair.

Theory of operation
-------------------
One ``AF_UNIX`` stream socketpair per worker. A message is a tuple whose first item names it
(``("config", cfg, down)``, ``("events", [...])``...), pickled (both ends are the same program, the
parent spawned the child: nothing untrusted crosses this pipe) and framed as::

    +----------------+---------------------------+
    | u32 length (BE)| pickle (protocol 5)       |
    +----------------+---------------------------+

:class:`Channel` runs on an asyncio loop: ``send`` writes at once when the socket takes it and keeps
the rest in an output buffer flushed by a writer callback (never blocks the loop); the reader
callback parses every complete frame and hands each message to ``on_message``; end of file (the
peer died) calls ``on_close`` once. The receive side reads up to 1 MiB per callback, so a burst of
event batches from a worker is taken in a few syscalls.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
_LEN = struct.Struct("!I")
MAX_MESSAGE = 1 << 30
Message = tuple[Any, ...]


def encode(msg: Message) -> bytes:
    data = pickle.dumps(msg, protocol=5)
    return _LEN.pack(len(data)) + data


class Channel:
    """One end of a worker's control pipe (see the module docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._in = bytearray()
        self._out = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_message: Callable[[Message], None] = lambda _m: None
        self.on_close: Callable[[], None] = lambda: None
        self.closed = False

    @property
    def backlog(self) -> int:
        """Bytes queued for the peer and not yet taken by the socket."""
        return len(self._out)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def send(self, msg: Message) -> None:
        """Queue one message; written now if the socket takes it, else from the loop's writer."""
        if self.closed:
            return
        frame = encode(msg)
        if self._out:
            self._out += frame
            return
        try:
            n = self.sock.send(frame)
        except BlockingIOError:
            n = 0
        except OSError:
            self._lost()
            return
        if n < len(frame):
            self._out += memoryview(frame)[n:]
            if self._loop is not None:
                self._loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            n = self.sock.send(self._out)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self._out[:n]
        if not self._out and self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())

    def _readable(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        buf = self._in
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > MAX_MESSAGE:
                log.error("control message of %d bytes: closing the pipe", n)
                self._lost()
                return
            if len(buf) - pos - 4 < n:
                break
            msg = pickle.loads(bytes(buf[pos + 4:pos + 4 + n]))
            pos += 4 + n
            try:
                self.on_message(msg)
            except Exception:  # one bad message must not end the pipe
                log.exception("handling control message %r failed", msg[0] if msg else msg)
        del buf[:pos]

    def _lost(self) -> None:
        if self.closed:
            return
        self.close()
        self.on_close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
            if self._out:
                self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
