"""One packet worker of directord (``workers: N`` with N >= 2): a shard of the node's traffic.

Theory of operation
-------------------
``python -m director.workers.worker --fd F --fence-fd G --index I --count N --parent PID`` is started
by the parent (director.workers.pool) with one end of its control socketpair (fd F) and the shared
fence (fd G) inherited. It first asks the kernel to SIGKILL it when the parent dies
(``PR_SET_PDEATHSIG``; if the parent is already gone it exits), then waits for ``("init", ...)``:
interfaces, ``CoreConfig``, table size, ``max_conns`` and the shard mask. It builds its own
``ConnTable`` (its shard), ``ServiceTable`` and ``Director`` and a :class:`WorkerPlane`: the
node's ``DataPlane`` whose sockets carry the shard filter (director.dataplane.io.shard) and whose
fence is the shared deadline (director.workers.fence) instead of an attribute. Then it says
``("ready", index, pid)`` and forwards on its own asyncio loop; nothing else runs there.

Messages from the parent (``Channel``; tuples, first item the name):

=============================  ===============================================================
``config`` cfg, down            the validated services config the parent applied, and the dests
                                health checks hold down: ``apply_to_services`` + ``apply_timeouts``,
                                the code path of the in-process daemon
``active`` on, sloppy_until     role: ``Director.set_active``; worker 0 sends the gratuitous ARPs
``send`` actions                control frames (worker 0): the parent's ``DataPlane.send``
``garp``                        worker 0 repeats the gratuitous ARPs
``synced`` updates              entries the parent's sync backup applied (this shard): applied
                                with syncd's ``BackupApplier`` (event feed off: not re-reported)
``mask`` m                      new shard mask: the filters are replaced
``defense`` rate, tcp, entry    the node's defense levels (drop_packet rate, secure_tcp); with
                                drop_entry engaged an active worker runs random_drop on its shard
``expires?`` keys               the real deadlines of these entries (traffic moves them silently)
``flush`` / ``zero`` svc keys    admin: empty the table / zero these services' counters
``invalidate`` keys, quiescent  health took these dests down: ``check_template`` on their templates
``peers`` {dest key: (a, i)}    the other workers' active / inactive conns per dest (below)
``stop``                        leave
=============================  ===============================================================

To the parent: ``ready``, ``events`` (the table's ``RawEvent`` batches, cut once per loop turn,
events of entries outside this shard left out), ``stats`` every 100 ms (service / dest
counters, drops, ring and CPU figures) which the parent sums, and ``random_drop`` n (entries its
random_drop marked, for the node's defense counters).

*Backpressure.* If the parent falls behind (its end of the pipe holds more than ``MAX_BACKLOG``
bytes: a new-conn flood the parent cannot mirror as fast), the worker stops sending events (they are
dropped, the packet path never waits) and, once the backlog is below a quarter of that, sends
``resync``: every entry of its shard as NEW events. The parent then replaces the shard in its
replica and has every backup re-snapshot (the sync master's feed-overflow path).

*Global dest counts.* lc/wlc/sed/nq and the dests' overload thresholds must see the node's conns,
not one shard's. Each worker reports its *own* active/inactive counts per dest in its stats; the
parent sums them and sends every worker the others' share (``peers``), which the worker adds to
its ``Dest.activeconns`` / ``inactconns`` as an offset (replacing the previous offset), so the
schedulers and the conn table read node totals with no change to them. The view of the other
workers is at most ~0.2 s old (two stats periods): a burst of new conns within that time is
balanced per worker. An overload flag is re-evaluated at the dest's next bind/unbind.

A synced entry is held (``ConnTable.hold_synced``) while the worker is not active, so a backup
never expires what its master still has; the takeover releases the hold (full timeouts), as the
in-process backup does when it stops following.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from director.config.services import Config, apply_timeouts, apply_to_services
from director.dataplane.core import EXT, INT, CoreConfig, Director
from director.dataplane.io.afpacket import ETH_P_ARP, PacketSocket, TxRing
from director.dataplane.io.bpf import attach_filter
from director.dataplane.io.plane import DEFAULT_RING, DataPlane
from director.dataplane.io.shard import DST, SRC, shard_filter, shard_of
from director.services.service import ServiceTable, set_dest_weights
from director.table.conn import ConnTable
from director.table.entry import snapshot
from director.table.events import EventKind, RawEvent
from director.types import ConnFlags
from director.workers.channel import Channel, Message
from director.workers.fence import SharedFence
from syncd.apply import BackupApplier
from syncd.model import Update

log = logging.getLogger("directord.worker")
PR_SET_PDEATHSIG = 1
TEMPLATE = int(ConnFlags.TEMPLATE)
STATS_INTERVAL = 0.1
MAX_BACKLOG = 32 << 20


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:
        os._exit(0)


class WorkerPlane(DataPlane):
    """A DataPlane on the shard filter, fenced by the shared deadline."""

    def __init__(self, director: Director, ext: str, intf: str, fence: SharedFence, index: int,
                 count: int, mask: int) -> None:
        super().__init__(director, ext, intf, ring=DEFAULT_RING)
        self.shared = fence
        self.index, self.count, self.mask = index, count, mask
        self.arp_answer = index == 0

    def set_master_until(self, deadline: float | None) -> None:
        raise RuntimeError("a worker's deadline is the parent's (shared memory)")

    @property
    def master_until(self) -> float | None:
        return self.shared.master_until()

    def fenced(self) -> bool:
        return self.clock() >= self.shared.until()

    def _open(self) -> None:
        try:
            for side in (EXT, INT):
                # the shard filter (which drops ARP too) goes on before bind: not one frame of
                # another worker's shard reaches this ring while the socket starts
                self.socks.append(PacketSocket(self.ifnames[side], ring=self.ring, bpf=self._program(side)))
                self.arp_socks.append(PacketSocket(self.ifnames[side], ring=None, ethertype=ETH_P_ARP))
                self.tx_rings.append(TxRing(self.ifnames[side]))
                self.tx_rings[-1].fence = self.fenced
        except BaseException:
            self.close()
            raise

    def _program(self, side: int) -> bytes:
        return shard_filter(SRC if side == EXT else DST, self.mask, self.index, self.count)

    def _filter(self, sock: PacketSocket, side: int) -> None:
        attach_filter(sock.sock, self._program(side))

    def set_mask(self, mask: int) -> None:
        self.mask = mask
        for side, sock in enumerate(self.socks):
            self._filter(sock, side)


class Worker:
    def __init__(self, channel: Channel, fence: SharedFence, index: int, count: int) -> None:
        self.ch = channel
        self.fence = fence
        self.index, self.count = index, count
        self.clock = time.monotonic
        self.plane: WorkerPlane | None = None
        self.director: Director | None = None
        self.table: ConnTable | None = None
        self.applier: BackupApplier | None = None
        self.peers: dict[Any, tuple[int, int]] = {}
        """Dest -> the other workers' (active, inactive) counts currently added to its counters."""
        self._init: asyncio.Future[dict[str, Any]] | None = None
        self._flush_armed = False
        self._resync = False
        """Events were dropped (backpressure): a full ``resync`` is owed to the parent."""
        self._stop = asyncio.Event()
        self._rng = random.Random()

    # -- setup ----------------------------------------------------------------------------------------
    def build(self, init: dict[str, Any]) -> None:
        core: CoreConfig = init["core"]
        self.table = ConnTable(self.clock, bits=init["table_bits"])
        services = ServiceTable()
        self.director = Director(self.table, services, self.clock, core)
        self.director.gate.max_conns = init["max_conns"]
        self.applier = BackupApplier(self.table, services)
        self.table.hold_synced(True)
        self.plane = WorkerPlane(self.director, init["ext"], init["int"], self.fence, self.index, self.count,
                                 init["mask"])
        feed = self.table.events
        feed.enabled = True
        feed.on_ready = self._arm_flush

    # -- events to the parent ----------------------------------------------------------------------
    def _arm_flush(self) -> None:
        if not self._flush_armed:
            self._flush_armed = True
            asyncio.get_running_loop().call_soon(self._flush_events)

    def _flush_events(self) -> None:
        self._flush_armed = False
        assert self.table is not None
        evs: list[RawEvent] = self.table.events.drain_raw(1 << 30)
        if self.table.events.overflowed:
            self.table.events.clear_overflow()
            self._resync = True
        if not self._resync and self.ch.backlog > MAX_BACKLOG:
            log.warning("parent behind (%d bytes queued): events dropped, resync owed", self.ch.backlog)
            self._resync = True
        if self._resync:
            self._send_resync()
            return
        mine = self._mine()
        evs = [ev for ev in evs if mine(ev[0][1])]
        if evs:
            self.ch.send(("events", self.index, evs))

    def _send_resync(self) -> None:
        """Once the parent caught up: every entry of this shard, templates first, as NEW events."""
        if not self._resync or self.ch.backlog > MAX_BACKLOG // 4:
            return
        assert self.table is not None
        self._resync = False
        mine = self._mine()
        rows = [(*snapshot(c), EventKind.NEW, None) for c in self.table if mine(c.key[1])]
        rows.sort(key=lambda ev: not ev[0][8])
        self.ch.send(("resync", self.index, rows))

    def _mine(self) -> Callable[[int], bool]:
        """Whether a client address is in this worker's shard (under the plane's current mask)."""
        assert self.plane is not None
        mask, count, index = self.plane.mask, self.count, self.index
        return lambda caddr: count < 2 or shard_of(caddr, mask, count) == index

    # -- messages from the parent -------------------------------------------------------------------
    def on_message(self, msg: Message) -> None:
        kind = msg[0]
        if kind == "init":  # built at once: the messages queued behind it apply to the new tables
            self.build(msg[1])
            if self._init is not None and not self._init.done():
                self._init.set_result(msg[1])
            return
        d, plane = self.director, self.plane
        if d is None or plane is None:
            return
        if kind == "config":
            self._config(msg[1], msg[2], msg[3] if len(msg) > 3 else {})
        elif kind == "active":
            self._active(bool(msg[1]), float(msg[2]))
        elif kind == "send":
            plane.send(msg[1])
        elif kind == "garp":
            if d.active:
                plane.send_gratuitous_arp()
        elif kind == "synced":
            self._synced(msg[1])
        elif kind == "mask":
            plane.set_mask(int(msg[1]))
        elif kind == "defense":
            d.gate.todrop.set_rate(msg[1])
            d.cfg.timeouts.secure_tcp = msg[2]
            if msg[3] and d.active and (marked := d.table.random_drop(self._rng)):  # drop_entry engaged
                self.ch.send(("random_drop", marked))
        elif kind == "expires?":
            get = d.table.get
            rows = [(key, conn.expires) for key in msg[1] if (conn := get(key)) is not None]
            self.ch.send(("expires", rows, msg[1]))
        elif kind == "flush":
            d.table.flush()
        elif kind == "zero":
            for svc in d.services:
                if svc.key in msg[1]:
                    svc.counters.zero()
                    for dest in svc.counted_dests():
                        dest.counters.zero()
        elif kind == "invalidate":
            self._invalidate(msg[1], msg[2])
        elif kind == "peers":
            self._peers(msg[1])
        elif kind == "stop":
            self._stop.set()

    def _config(self, cfg: Config, down: frozenset[Any], weights: dict[Any, int]) -> None:
        d = self.director
        assert d is not None and self.applier is not None
        apply_to_services(cfg, d.services, down=down)
        set_dest_weights(d.services, weights)  # misc `dynamic` checks, as the parent applied them
        apply_timeouts(cfg.timeouts, d.cfg.timeouts)
        self.applier.rebind_pending()

    def _invalidate(self, keys: frozenset[Any], expire_quiescent: dict[Any, bool]) -> None:
        """Health took these dests down: check the templates bound to them (the in-process rule)."""
        table = self.table
        assert table is not None
        hits = [(c, c.dest.key) for c in table if c.flags & TEMPLATE and c.dest is not None
                and c.dest.key in keys]
        for ct, key in hits:
            table.check_template(ct, expire_quiescent.get(key, False))

    def _peers(self, counts: dict[Any, tuple[int, int]]) -> None:
        """Replace the other workers' share in every dest's counters (see the module docstring)."""
        d = self.director
        assert d is not None
        peers: dict[Any, tuple[int, int]] = {}
        for svc in d.services:
            for dest in svc.dests:
                new = counts.get(dest.key, (0, 0))
                old = self.peers.get(dest, (0, 0))
                dest.activeconns += new[0] - old[0]
                dest.inactconns += new[1] - old[1]
                if new != (0, 0):
                    peers[dest] = new
        self.peers = peers

    def _own(self) -> dict[Any, tuple[int, int]]:
        """This worker's own (active, inactive) conns per dest key (the peers' share taken out)."""
        d = self.director
        assert d is not None
        out: dict[Any, tuple[int, int]] = {}
        for svc in d.services:
            for dest in svc.dests:
                pa, pi = self.peers.get(dest, (0, 0))
                out[dest.key] = (dest.activeconns - pa, dest.inactconns - pi)
        return out

    def _active(self, on: bool, sloppy_until: float) -> None:
        d, plane, table = self.director, self.plane, self.table
        assert d is not None and plane is not None and table is not None
        d.sloppy_until = sloppy_until
        d.set_active(on)  # its gratuitous ARPs: the parent's ``send`` (through worker 0)
        table.hold_synced(not on)

    def _synced(self, updates: list[Update]) -> None:
        table, applier = self.table, self.applier
        assert table is not None and applier is not None
        feed = table.events
        feed.enabled = False
        try:
            applier.apply(updates)
        finally:
            feed.enabled = True

    # -- stats ---------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        d, plane = self.director, self.plane
        assert d is not None and plane is not None
        packets, drops = plane.kernel_stats()
        t = os.times()
        return {
            "services": {s.key: (tuple(s.counters.as_dict().values()),
                                 {x.key: tuple(x.counters.as_dict().values()) for x in s.counted_dests()})
                         for s in d.services},
            "own": self._own(),
            "forwarded": sum(s.counters.inpkts + s.counters.outpkts for s in d.services),
            "created": sum(s.counters.conns for s in d.services), "mask": plane.mask,
            "drops": list(d.counters.counts), "conns": d.table.count, "active": d.active,
            "rx_frames": list(plane.rx_frames), "ring_packets": packets, "ring_drops": drops,
            "handler_errors": plane.handler_errors, "tx_errors": plane.tx_errors,
            "tx_fenced": sum(r.fenced for r in plane.tx_rings), "ctl_fenced": plane.ctl_fenced,
            "cpu": t.user + t.system, "pid": os.getpid(), "neigh": d.nb.stats.as_dict(),
            "arp_replies": d.arp_replies, "echo_replies": d.echo_replies, "csum_fixed": plane.csum_fixed,
            "neigh_entries": [len(n) for n in d.neigh],
        }

    # -- main loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._init = loop.create_future()
        self.ch.on_message = self.on_message
        self.ch.on_close = self._stop.set
        self.ch.attach(loop)
        await self._init
        assert self.plane is not None and self.director is not None and self.table is not None
        self.plane.attach(loop)
        self.ch.send(("ready", self.index, os.getpid()))
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        last_stats = last_probe = last_neigh = 0.0
        while not self._stop.is_set():
            self.table.tick()
            self._send_resync()
            now = self.clock()
            if now - last_stats >= STATS_INTERVAL:
                last_stats = now
                self.ch.send(("stats", self.index, self.stats()))
            if self.index == 0 and now - last_probe > 1.0:
                last_probe = now
                with contextlib.suppress(OSError):
                    self.plane.probe_neighbours()
            if now - last_neigh > 60.0:
                last_neigh = now
                self.director.expire_neighbours()
            nxt = self.table.next_deadline()
            delay = 0.05 if nxt is None else min(0.05, max(0.005, nxt - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        self.plane.detach()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m director.workers.worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--fence-fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    die_with_parent(args.parent)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker{args.index}: %(message)s")
    # systemd (KillMode=control-group) and the lab signal the whole group: the parent decides when a
    # worker ends ("stop", or its end of the pipe closing), so a graceful resign keeps forwarding until
    # the handover; PR_SET_PDEATHSIG and the final SIGKILL still end a worker whatever happens
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ch = Channel(socket.socket(fileno=args.fd))
    worker = Worker(ch, SharedFence(args.fence_fd), args.index, args.count)
    asyncio.run(worker.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
