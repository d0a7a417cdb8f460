"""`ElectorThread`: the election and its keepalives on their own thread, loop and etcd connection.

Theory of operation
-------------------
The packet path, sync, config and admin share the node's main asyncio loop; a burst of packets or a
big admin read there can hold that loop for a long time. Mastership must not depend on it. So the
`Elector` runs here on a thread of its own, with its own asyncio loop and its own `EtcdStore`
(gRPC channels belong to one loop): its keepalives go out on time whatever the main loop does (the
GIL hands the thread a turn at least every ``sys.getswitchinterval()``, 5 ms by default).

Two kinds of output leave the thread:

* the **fence** (`on_fence(deadline | None)`), called *on the election thread* the moment the
  machine decides: the node hands it straight to the data plane, which reads it (one float) before
  every batch. A step-down therefore stops forwarding even while the main loop is busy or frozen,
  and after a stall the packet path drops what it reads until the election re-validated;
* the **role callbacks** (start/stop forwarding, role changes), which touch the node's main-loop
  objects (sync server, ARP, health): they are posted to the main loop with
  ``call_soon_threadsafe`` and run there in order.

``ready()`` is called on the election thread and must only read plain attributes.
The public surface mirrors `Elector` (role, master, epoch, poke, resign, stop, kill), callable from
the main loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from director.cluster.election import LeaderRecord, Role
from director.cluster.elector import Elector, NodeInfo, RoleChange
from director.cluster.store import EtcdStore

log = logging.getLogger(__name__)

T = TypeVar("T")


class ElectorThread:
    """An `Elector` driven on a dedicated thread; see the module docstring."""

    def __init__(
        self,
        make_store: Callable[[], EtcdStore],
        node: NodeInfo,
        *,
        ttl: int = 1,
        ready: Callable[[], bool] | None = None,
        on_start_forwarding: Callable[[int], None] | None = None,
        on_stop_forwarding: Callable[[], None] | None = None,
        on_change: Callable[[RoleChange], None] | None = None,
        on_fence: Callable[[float | None], None] | None = None,
        preempt: bool = False,
        member_info: dict[str, Any] | None = None,
    ) -> None:
        self._make_store = make_store
        self._node = node
        self._kw: dict[str, Any] = {"ttl": ttl, "ready": ready, "preempt": preempt, "on_fence": on_fence,
                                    "member_info": member_info}
        self._on_start = on_start_forwarding
        self._on_stop = on_stop_forwarding
        self._on_change = on_change
        self._main: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._elector: Elector | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._done: asyncio.Event | None = None

    # -- what the main loop reads -------------------------------------------------------------
    @property
    def elector(self) -> Elector:
        if self._elector is None:
            raise RuntimeError("elector thread not started")
        return self._elector

    @property
    def started(self) -> bool:
        return self._elector is not None

    @property
    def role(self) -> Role:
        return self.elector.role

    @property
    def is_master(self) -> bool:
        return self.elector.is_master

    @property
    def master(self) -> LeaderRecord | None:
        return self.elector.master

    @property
    def epoch(self) -> int:
        return self.elector.epoch

    @property
    def lease_id(self) -> int:
        """The lease we hold as master (0 otherwise): what the process-exit hook revokes."""
        m = self.elector.machine
        return m.lease.lease_id if m.role is Role.MASTER else 0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._main = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name=f"elector-{self._node.node_id}",
                                        daemon=True)
        self._thread.start()
        await self._main.run_in_executor(None, self._started.wait)
        if self._error is not None:
            raise self._error

    def poke(self) -> None:
        loop, el = self._loop, self._elector
        if loop is not None and el is not None and not loop.is_closed():
            loop.call_soon_threadsafe(el.poke)

    # -- static stability (callable from any thread) -------------------------------------------------
    @property
    def required(self) -> frozenset[str]:
        """Members whose promises the master needs (what it published in leader-members)."""
        return self.elector.required if self._elector is not None else frozenset()

    def grant_promises(self, until: float, used: frozenset[str]) -> None:
        self._soon(lambda el: el.grant_promises(until, used))

    def hold_promise(self, until: float, epoch: int) -> None:
        self._soon(lambda el: el.hold_promise(until, epoch))

    def _soon(self, fn: Callable[[Elector], None]) -> None:
        loop, el = self._loop, self._elector
        if loop is not None and el is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, el)

    async def resign(self) -> None:
        await self._call(lambda el: el.resign())

    async def stop(self) -> None:
        """Resign if master, stop the elector and the thread."""
        if self._loop is None or self._thread is None:
            return
        try:
            await self._call(lambda el: el.stop())
        finally:
            await self._finish()

    async def kill(self) -> None:
        """Simulate a crash of the election (tests): stop everything, revoke nothing."""
        if self._loop is None:
            return
        try:
            await self._call(lambda el: el.kill())
        finally:
            await self._finish()

    # -- internals -----------------------------------------------------------------------------------
    async def _call(self, fn: Callable[[Elector], Coroutine[Any, Any, T]]) -> T:
        loop, el = self._loop, self.elector
        if loop is None or loop.is_closed():
            raise RuntimeError("elector thread not running")
        fut = asyncio.run_coroutine_threadsafe(fn(el), loop)
        return await asyncio.wrap_future(fut)

    async def _finish(self) -> None:
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            loop.call_soon_threadsafe(done.set)
        if self._thread is not None and self._main is not None:
            await self._main.run_in_executor(None, self._thread.join, 5.0)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() if it happened before "started"
            if not self._started.is_set():
                self._error = exc
            else:
                log.exception("elector thread died")
        finally:
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        store = self._make_store()
        self._elector = Elector(store, self._node, on_start_forwarding=self._post(self._on_start),
                                on_stop_forwarding=self._post(self._on_stop),
                                on_change=self._post(self._on_change), **self._kw)
        try:
            await self._elector.start()
            self._started.set()
            await self._done.wait()
        finally:
            await store.close()

    def _post(self, fn: Callable[..., None] | None) -> Callable[..., None] | None:
        """Wrap a main-loop callback so that the election thread only queues it."""
        if fn is None:
            return None
        main = self._main

        def post(*args: Any) -> None:
            if main is not None and not main.is_closed():
                main.call_soon_threadsafe(fn, *args)

        post.__name__ = getattr(fn, "__name__", "callback")
        return post
