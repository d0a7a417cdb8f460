"""`Elector`: runs `ElectionMachine` against etcd (membership: director.cluster.members).

Theory of operation
-------------------
One asyncio task (`_run`) owns the machine.  Each loop turn it feeds readiness and the
time, executes the returned actions, then sleeps until the machine's next deadline or
until an input arrives in its inbox.  RPCs run as separate tasks that post their result
back to the inbox as a closure ``(machine, now) -> actions``, so the machine is only ever
touched by the loop, one input at a time.  Forwarding callbacks run synchronously inside
the loop turn that decided them: a step-down is acted on at once, not after an await.

A second task watches the prefix ``leader`` (which covers ``leader`` and the preemption
key ``leader-handover``): it reads the keys, posts what it saw, then watches from that
revision + 1; after any error (etcd restart, outage, compaction) it starts over with a
fresh read after a 200 ms - 1 s backoff, so nothing is missed.

Keepalives are one request each, with a deadline the machine computed (never past the
step-down time); the send time is taken before the request so the machine can bound the
lease's life.  ``kill()`` simulates a crash (stop everything, revoke nothing);
``resign()`` stops forwarding and revokes the lease so a backup wins within one watch
round trip; ``stop()`` resigns and shuts down.

Use (directord)::

    store = EtcdStore(endpoints, prefix="lbd", cluster="default")
    el = Elector(store, NodeInfo("d1", sync_addr="198.18.0.2:7100", admin_addr="..."),
                 ttl=1, ready=table_synced_or_no_master,
                 on_start_forwarding=lambda epoch: director.activate(epoch),   # ARP + GARP + fwd
                 on_stop_forwarding=director.deactivate,                      # at once, sync
                 on_change=lambda rc: syncd.follow(rc.master))                # master's sync addr
    await el.start();  ...;  el.poke()  # after a snapshot is applied
    await el.resign()   # directorctl failover;  await el.stop() on SIGTERM
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aetcd import rpc

from director.cluster.compactor import COMPACT_EVERY, compact_history
from director.cluster.election import (
    Act,
    Action,
    ElectionMachine,
    ElectionParams,
    LeaderRecord,
    Role,
    Why,
)
from director.cluster.members import (
    MemberPublisher,
    Membership,
    members_key,
    parse_members,
    parse_released,
    release_epoch,
    released_key,
)
from director.cluster.store import KV, Backoff, EtcdError, EtcdStore, EventKind
from director.types import Clock

log = logging.getLogger(__name__)

Input = Callable[[ElectionMachine, float], list[Action]]


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    sync_addr: str = ""
    admin_addr: str = ""
    priority: int = 0


@dataclass(frozen=True)
class RoleChange:
    """Published whenever the role, the leader record or the epoch changes."""

    role: Role
    master: LeaderRecord | None  # the current master (ourselves when role is MASTER)
    epoch: int  # the current master's epoch, 0 when none is known
    at: float
    uncertain: bool = False  # STEPPED_DOWN because renewals were late: it may resume with this epoch


class Elector:
    """Campaign for the leader key of `store`'s cluster on behalf of `node`."""

    def __init__(
        self,
        store: EtcdStore,
        node: NodeInfo,
        *,
        ttl: int = 1,
        margin: float = 0.2,
        ready: Callable[[], bool] | None = None,
        on_start_forwarding: Callable[[int], None] | None = None,
        on_stop_forwarding: Callable[[], None] | None = None,
        on_change: Callable[[RoleChange], None] | None = None,
        on_fence: Callable[[float | None], None] | None = None,
        preempt: bool = False,
        resign_holdoff: float | None = None,
        clock: Clock = time.monotonic,
        ready_poll: float = 0.1,
        member_info: dict[str, Any] | None = None,
        touch: float = ElectionParams.touch,
        compact_every: float = COMPACT_EVERY,
    ) -> None:
        self.compact_every = compact_every
        self.store = store
        self.node = node
        self.clock = clock
        self.ready_poll = ready_poll
        self.machine = ElectionMachine(ElectionParams(
            ttl=float(ttl), margin=margin, priority=node.priority, preempt=preempt,
            resign_holdoff=2.0 * ttl if resign_holdoff is None else resign_holdoff, node_id=node.node_id,
            touch=touch))
        self.history: list[RoleChange] = []
        self._ttl = ttl
        self._ready = ready or (lambda: True)
        self._on_start = on_start_forwarding
        self._on_stop = on_stop_forwarding
        self._on_change = on_change
        self._on_fence = on_fence
        self._fence: float | None = None
        self._inbox: asyncio.Queue[Input] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._subs: list[asyncio.Queue[RoleChange]] = []
        self._last: tuple[Role, LeaderRecord | None, int] | None = None
        self.handover_key = store.leader_key + "-handover"
        self.members_key = members_key(store)
        self.released_key = released_key(store)
        self._members: tuple[str, ...] | None = None
        self._released = 0
        self._publisher: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self.membership = Membership(store, node.node_id, dict(member_info or {}))
        """Our ``nodes/<id>`` record: it makes us a member the master waits for (and lists)."""
        self._killed = False

    # -- public ----------------------------------------------------------------------
    @property
    def role(self) -> Role:
        return self.machine.role

    @property
    def is_master(self) -> bool:
        return self.machine.role is Role.MASTER

    @property
    def epoch(self) -> int:
        """The current master's epoch (0 when no master is known)."""
        ldr = self.master
        return ldr.epoch if ldr is not None else 0

    @property
    def granted_ttl(self) -> float:
        return self.machine.lease.ttl

    @property
    def master(self) -> LeaderRecord | None:
        """The current master as far as we know (ourselves while MASTER)."""
        m = self.machine
        if m.role is Role.MASTER:
            return self._own_record(m.epoch, m.lease.lease_id)
        return m.master

    async def start(self) -> None:
        await self.store.connect()
        await self.membership.start()
        self._loops = [asyncio.create_task(self._run(), name=f"elector-{self.node.node_id}"),
                       asyncio.create_task(self._watch_leader(), name=f"leader-watch-{self.node.node_id}")]

    async def resign(self) -> None:
        """Graceful handover: stop forwarding, revoke the lease (returns once revoked)."""
        await self._feed_and_wait(self.machine.resign(self.clock()))

    async def stop(self) -> None:
        """Clean shutdown: resign, then stop all tasks."""
        if self.machine.role is Role.STOPPED or self._killed:
            return
        for t in self._loops:
            t.cancel()
        await self._feed_and_wait(self.machine.stop(self.clock()))
        await self._cancel_all()
        await self.membership.stop()

    async def kill(self) -> None:
        """Simulate a crash: stop every task, revoke nothing, call no callback."""
        self._killed = True
        await self._cancel_all()
        await self.membership.abandon()

    def poke(self) -> None:
        """Readiness (or anything the loop should look at) may have changed."""
        self._inbox.put_nowait(lambda m, now: [])

    async def changes(self) -> AsyncGenerator[RoleChange, None]:
        """Every RoleChange from now on (starting with the current state)."""
        q: asyncio.Queue[RoleChange] = asyncio.Queue()
        self._subs.append(q)
        q.put_nowait(self._snapshot())
        try:
            while True:
                yield await q.get()
        finally:
            self._subs.remove(q)

    # -- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        m = self.machine
        while True:
            now = self.clock()
            self._feed(m.set_ready(now, self._safe_ready()))
            self._feed(m.tick(now))
            item = await self._next_input(self._sleep_for(self.clock()))
            if item is None:
                continue
            self._feed(item(m, self.clock()))
            while not self._inbox.empty():
                self._feed(self._inbox.get_nowait()(m, self.clock()))

    async def _next_input(self, timeout: float | None) -> Input | None:
        """The next inbox item, or None after `timeout`. Not `asyncio.wait_for`: on Python 3.11 it
        swallows a cancellation that arrives together with the item (gh-86296), and stop() would
        then wait forever for this loop."""
        if not self._inbox.empty():
            return self._inbox.get_nowait()
        get = asyncio.ensure_future(self._inbox.get())
        try:
            done, _ = await asyncio.wait({get}, timeout=timeout)
        finally:
            if not get.done():
                get.cancel()
        return get.result() if done else None

    def _sleep_for(self, now: float) -> float | None:
        dl = self.machine.next_deadline()
        t = None if dl is None else max(0.001, dl - now)
        if self.machine.waiting_for_ready:
            t = self.ready_poll if t is None else min(t, self.ready_poll)
        return t

    def _safe_ready(self) -> bool:
        try:
            return bool(self._ready())
        except Exception:
            log.exception("ready() raised; treating as not ready")
            return False

    def _feed(self, acts: Iterable[Action]) -> list[asyncio.Task[Any]]:
        acts = list(acts)
        self._fence_now()  # a step-down fences the packet path before anything else runs
        spawned = [t for a in acts if (t := self._do(a)) is not None]
        self._fence_now()
        self._publish()
        return spawned

    def _fence_now(self) -> None:
        until = self.machine.forward_until()
        if until != self._fence and self._on_fence is not None:
            self._fence = until
            self._callback(self._on_fence, until)

    async def _feed_and_wait(self, acts: list[Action]) -> None:
        spawned = self._feed(acts)
        if spawned:
            await asyncio.gather(*spawned, return_exceptions=True)
        self.poke()

    def _do(self, a: Action) -> asyncio.Task[Any] | None:
        if a.act is Act.START_FORWARDING:
            self._callback(self._on_start, a.epoch)
            self._start_publisher(a.lease_id, a.epoch)
            return self._spawn(self._publish_epoch(a.lease_id, a.epoch))
        if a.act is Act.STOP_FORWARDING:
            self._callback(self._on_stop)
            self._stop_publisher()
            return None
        runner = {
            Act.GRANT_LEASE: self._grant, Act.CAMPAIGN: self._campaign, Act.RENEW: self._renew,
            Act.VERIFY: self._verify, Act.REVOKE: self._revoke, Act.REQUEST_HANDOVER: self._request_handover,
            Act.TOUCH: self._touch, Act.DELETE_STALE: self._delete_stale,
        }[a.act]
        return self._spawn(runner(a))

    def _callback(self, fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("election callback %s failed", getattr(fn, "__name__", fn))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _post(self, item: Input) -> None:
        self._inbox.put_nowait(item)

    # -- static stability ----------------------------------------------------------------
    def grant_promises(self, until: float, used: frozenset[str]) -> None:
        """Master: the earliest promise over the members in `used` (on the election loop)."""
        self._post(lambda m, now: m.promises_granted(now, until, used))

    def hold_promise(self, until: float, epoch: int) -> None:
        """Backup: we promised the master of `epoch` not to campaign before `until`."""
        self._post(lambda m, now: m.promise_held(now, until, epoch))

    @property
    def listed(self) -> bool:
        """The master's member list names us (we may campaign when it goes)."""
        members = self.machine.promises.members
        return members is not None and self.node.node_id in members

    @property
    def required(self) -> frozenset[str]:
        """The members whose promises the master needs (what it published in leader-members)."""
        return self.machine.promises.required

    def _set_required(self, nodes: frozenset[str], epoch: int) -> None:
        m = self.machine
        m.promises.required = nodes
        m.promises.required_epoch = epoch
        if not nodes <= m.promises.granted_for:  # a grant computed without a new member is void
            m.promises.granted_until = 0.0
        self._fence_now()

    def _start_publisher(self, lease_id: int, epoch: int) -> None:
        self._stop_publisher()
        pub = MemberPublisher(self.store, self.node.node_id, self._set_required)
        self._publisher = self._spawn(pub.run(lease_id, epoch))
        if self.compact_every > 0:
            self._compactor = self._spawn(compact_history(self.store, self.compact_every))

    def _stop_publisher(self) -> None:
        for task in (self._publisher, self._compactor):
            if task is not None:
                task.cancel()
        self._publisher = self._compactor = None

    async def _cancel_all(self) -> None:
        tasks = [*self._loops, *self._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops = []

    # -- publishing ------------------------------------------------------------------
    def _own_record(self, epoch: int, lease_id: int) -> LeaderRecord:
        n = self.node
        return LeaderRecord(n.node_id, n.sync_addr, n.admin_addr, epoch, lease_id, n.priority,
                            self.machine.touch_window())

    def _snapshot(self) -> RoleChange:
        m = self.machine
        return RoleChange(m.role, self.master, self.epoch, self.clock(),
                          uncertain=m.role is Role.STEPPED_DOWN and m.why is Why.UNCERTAIN)

    def _publish(self) -> None:
        snap = self._snapshot()
        key = (snap.role, snap.master, snap.epoch)
        if key == self._last:
            return
        self._last = key
        self.history.append(snap)
        log.info("node %s: %s, master %s epoch %d", self.node.node_id, snap.role.name,
                 snap.master.node_id if snap.master else None, snap.epoch)
        self._callback(self._on_change, snap)
        for q in self._subs:
            q.put_nowait(snap)

    # -- RPC runners (each posts its result) -----------------------------------------
    async def _grant(self, a: Action) -> None:
        sent = self.clock()
        try:
            lease_id, ttl = await self.store.lease_grant(self._ttl, timeout=a.timeout)
        except EtcdError as err:
            log.info("lease grant failed: %s", err)
            self._post(lambda m, now: m.lease_failed(now))
            return
        self._post(lambda m, now: m.lease_granted(now, lease_id, float(ttl), sent))

    async def _campaign(self, a: Action) -> None:
        lk = self.store.leader_key.encode()
        value = self._own_record(0, a.lease_id).to_json().encode()
        compare = [_eq(lk, rpc.Compare.CREATE, create_revision=0)]
        success = [rpc.RequestOp(request_put=rpc.PutRequest(key=lk, value=value, lease=a.lease_id))]
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=lk))]
        lid = a.lease_id
        try:
            resp = await self.store.txn(compare, success, failure, timeout=a.timeout)
        except EtcdError as err:
            log.info("campaign txn failed: %s", err)
            self._post(lambda m, now: m.txn_failed(now, lid))
            return
        if resp.succeeded:
            epoch = int(resp.header.revision)
            self._post(lambda m, now: m.txn_won(now, lid, epoch))
            return
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        record = _record(KV.from_pb(kvs[0])) if kvs else None
        self._post(lambda m, now: m.txn_lost(now, lid, record))

    async def _renew(self, a: Action) -> None:
        sent = self.clock()
        lid = a.lease_id
        try:
            ttl = await self.store.lease_keepalive(lid, timeout=a.timeout)
        except EtcdError as err:
            log.debug("keepalive failed: %s", err)
            self._post(lambda m, now: m.renew_failed(now, lid))
            return
        self._post(lambda m, now: m.renew_ok(now, lid, sent, float(ttl)))

    def _rewrite(self, epoch: int, lease_id: int) -> tuple[list[Any], list[Any]]:
        """(compare, ops) of a txn that rewrites our leader value iff the key still has this epoch
        (create revision) and lease: a touch, or publishing the epoch."""
        lk = self.store.leader_key.encode()
        value = self._own_record(epoch, lease_id).to_json().encode()
        compare = [_eq(lk, rpc.Compare.CREATE, create_revision=epoch),
                   _eq(lk, rpc.Compare.LEASE, lease=lease_id)]
        return compare, [rpc.RequestOp(request_put=rpc.PutRequest(key=lk, value=value, lease=lease_id))]

    async def _touch(self, a: Action) -> None:
        """Rewrite our leader value if the key still has our epoch and lease (see election.py)."""
        compare, success = self._rewrite(a.epoch, a.lease_id)
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self.store.leader_key.encode()))]
        lid, sent = a.lease_id, self.clock()
        try:
            resp = await self.store.txn(compare, success, failure, timeout=a.timeout)
        except EtcdError as err:
            log.debug("touch failed: %s", err)
            self._post(lambda m, now: m.touch_failed(now, lid))
            return
        if resp.succeeded:
            self._post(lambda m, now: m.touch_ok(now, lid, sent))
            return
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        record = _record(KV.from_pb(kvs[0])) if kvs else None
        self._post(lambda m, now: m.touch_lost(now, lid, record))

    async def _delete_stale(self, a: Action) -> None:
        """Delete a leader key whose master stopped touching it, unless it moved since we saw it."""
        lk = self.store.leader_key.encode()
        compare = [_eq(lk, rpc.Compare.MOD, mod_revision=a.revision)]
        success = [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=lk))]
        deleted = False
        try:
            resp = await self.store.txn(compare, success, [], timeout=a.timeout)
            deleted = bool(resp.succeeded)
        except EtcdError as err:
            log.info("deleting the stale leader key failed: %s", err)
        if deleted:
            log.warning("deleted the stale leader key (revision %d)", a.revision)
            self._post(lambda m, now: m.leader_observed(now, None))
        self._post(lambda m, now: m.stale_done(now, deleted))

    async def _verify(self, a: Action) -> None:
        try:
            kv, _ = await self.store.get(self.store.leader_key, timeout=max(0.2, self._ttl / 3))
        except EtcdError:
            self._post(lambda m, now: m.verify_failed(now))
            return
        record = _record(kv) if kv else None
        self._post(lambda m, now: m.leader_observed(now, record))

    async def _revoke(self, a: Action) -> None:
        if a.epoch:  # a master stopping for good: backups may drop their promise to it at once
            try:
                await release_epoch(self.store, a.epoch, timeout=max(0.5, float(self._ttl)))
            except EtcdError as err:
                log.info("announcing the release of epoch %d failed (promises will lapse): %s", a.epoch, err)
        try:
            await self.store.lease_revoke(a.lease_id, timeout=max(0.5, float(self._ttl)))
        except EtcdError as err:
            log.info("revoking lease %x failed (it will expire): %s", a.lease_id, err)

    async def _publish_epoch(self, lease_id: int, epoch: int) -> None:
        """Rewrite the leader value with its epoch, only if the key is still ours (when touching, the
        first touch, sent with START_FORWARDING, writes that same value), then clear a handover request
        of ours."""
        with contextlib.suppress(EtcdError):
            if not self.machine.touch_window():
                await self.store.txn(*self._rewrite(epoch, lease_id), timeout=max(0.5, float(self._ttl)))
            hk, _ = await self.store.get(self.handover_key)
            if hk is not None and _handover(hk)[0] == self.node.node_id:
                await self.store.delete(self.handover_key)

    async def _request_handover(self, a: Action) -> None:
        body = json.dumps({"node_id": self.node.node_id, "priority": self.node.priority, "epoch": a.epoch})
        with contextlib.suppress(EtcdError):
            await self.store.put(self.handover_key, body)

    # -- watching the leader key -----------------------------------------------------
    async def _watch_leader(self) -> None:
        backoff = Backoff()
        lk = self.store.leader_key
        while True:
            try:
                kvs, rev = await self.store.get_prefix(lk)
                by_key = {kv.key: kv for kv in kvs}
                self._observe_members(by_key.get(self.members_key), by_key.get(self.released_key))
                self._observe(by_key.get(lk), fresh=True)
                self._observe_handover(by_key.get(self.handover_key))
                async for batch in self.store.watch(lk, prefix=True, start_revision=rev + 1):
                    backoff.reset()
                    for ev in batch.events:
                        live = ev.kv if ev.kind is EventKind.PUT else None
                        if ev.kv.key == lk:
                            self._observe(live)
                        elif ev.kv.key == self.handover_key:
                            self._observe_handover(live)
                        elif ev.kv.key == self.members_key:
                            self._observe_members(live, None, keep_released=True)
                        elif ev.kv.key == self.released_key and live is not None:
                            self._observe_members(None, live, keep_members=True)
            except EtcdError as err:
                delay = backoff.next()
                self._post(lambda m, now: m.watch_lost(now))
                log.info("leader watch interrupted (%s); re-reading in %.2fs", err, delay)
                await asyncio.sleep(delay)

    def _observe(self, kv: KV | None, *, fresh: bool = False) -> None:
        record = _record(kv) if kv is not None else None
        self._post(lambda m, now: m.leader_observed(now, record, fresh=fresh))

    def _observe_members(self, members: KV | None, released: KV | None, *, keep_members: bool = False,
                         keep_released: bool = False) -> None:
        if not keep_members:
            self._members = parse_members(members.value) if members is not None else None
        if not keep_released:
            self._released = parse_released(released.value) if released is not None else 0
        nodes, rel = self._members, self._released
        self._post(lambda m, now: m.members_observed(now, nodes, rel))

    def _observe_handover(self, kv: KV | None) -> None:
        node_id, prio = _handover(kv) if kv is not None else ("", 0)
        self._post(lambda m, now: m.handover_requested(now, node_id, prio))


def _eq(key: bytes, target: Any, **value: int) -> Any:
    return rpc.Compare(key=key, target=target, result=rpc.Compare.EQUAL, **value)


def _record(kv: KV) -> LeaderRecord:
    return LeaderRecord.from_json(kv.value, epoch=kv.create_revision, lease=kv.lease,
                                  revision=kv.mod_revision)


def _handover(kv: KV) -> tuple[str, int]:
    try:
        obj = json.loads(kv.value)
        return str(obj["node_id"]), int(obj.get("priority", 0))
    except (ValueError, KeyError, TypeError):
        return "", 0


# ---------------------------------------------------------------------------- membership
