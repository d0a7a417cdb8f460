"""The data plane: a Director wired to two AF_PACKET interfaces (ext: clients, int: real servers).

Theory of operation
-------------------
:class:`DataPlane` owns one :class:`~director.dataplane.io.afpacket.PacketSocket` per side. ``attach(loop)``
registers both fds with ``loop.add_reader``; when a ring has ready blocks the callback drains them,
hands each frame to ``Director.handle(frame, side)``, queues the returned action on the TX ring of the
side it names, and flushes both TX rings once per batch. Nothing else runs per packet; an exception
from the packet path is counted (``handler_errors``) and logged, never fatal.
``send_gratuitous_arp()`` sends the director's gratuitous ARPs (on takeover), ``probe_neighbours()``
ARPs for dests whose MAC is unknown, ``run_blocking()`` is the same loop without asyncio.

Fanout workers (``fanout_group``): the data sockets join client-address fanout groups and filter ARP
out; each worker also has plain ETH_P_ARP sockets outside the group, so every worker sees every ARP
(replies to its own probes included) and keeps a complete neighbour cache. directord's packet
workers (``workers: N``, director.workers) open their sockets with a shard filter instead of a fanout
group (director.dataplane.io.shard) and set ``arp_answer`` False on all but one worker: every worker
learns from every ARP frame, one answers.

The director's own kernel addresses are never used as ARP sender addresses (a real server or peer
would then point that kernel address at the virtual MAC and the kernel, which drops frames not for
its own MAC, would go deaf): directord (director.node: ``core_config_for``, ``arp_sender_outside``)
uses the NAT gateway address inside and the first VIP outside, both owned by the active director's
virtual MAC anyway.

Fencing: :meth:`DataPlane.set_master_until` sets the mastership deadline on ``clock`` (CLOCK_MONOTONIC):
checked before every ring block, TX flush and control send; past it nothing is forwarded or sent and
the frames read are counted as ``not_master`` (``docs/DATAPLANE.md``). directord feeds it from the
election (or, in static mode, from its ``fence_file``). ``open()`` tells the Director its interfaces'
own MACs (``to_host``). ``stats()`` is the JSON snapshot a node writes to its ``stats_file``.

There is no stand-alone program here: ``directord`` runs the data plane, also for the lab tests and
benchmarks (node config ``cluster: none``, static mode: docs/CONFIG.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from director.dataplane.arp import arp_request
from director.dataplane.core import EXT, INT, Action, Director
from director.dataplane.io.afpacket import (
    ETH_P_ARP,
    INF,
    PacketSocket,
    RingSpec,
    TxRing,
    blocking_loop,
)
from director.dataplane.io.bpf import FANOUT_CBPF_DST, FANOUT_CBPF_SRC, Fanout
from director.dataplane.nd import ns_frame
from director.dataplane.packet import Drop
from director.services.service import Dest, ServiceTable
from director.table.entry import is_v6

log = logging.getLogger(__name__)
DEFAULT_RING = RingSpec()


class DataPlane:
    """Moves frames between two interfaces and a :class:`Director` while ``clock() < master_until``."""

    def __init__(self, director: Director, ext_ifname: str, int_ifname: str, *,
                 ring: RingSpec | None = DEFAULT_RING, fanout_group: int | None = None,
                 batch_blocks: int = 64, tx_ring: bool = True, clock: Callable[[], float] = time.monotonic,
                 master_until: float | None = INF) -> None:
        self.director = director
        self.clock = clock
        """The fencing clock (CLOCK_MONOTONIC by default): deadlines are on it."""
        self._until = -INF if master_until is None else master_until
        self.ifnames = (ext_ifname, int_ifname)
        self.ring = ring
        self.fanout_group = fanout_group
        self.batch_blocks = batch_blocks
        self.socks: list[PacketSocket] = []
        self.use_tx_ring = tx_ring
        self.tx_rings: list[TxRing] = []
        self.arp_socks: list[PacketSocket] = []
        """Fanout workers only: per-worker ARP sockets (outside the group) so every worker learns
        every neighbour; the fanout sockets filter ARP out."""
        self.rx_frames = [0, 0]
        self.ctl_sent = 0
        """Frames sent outside the packet path (gratuitous ARP, neighbour probes)."""
        self.tx_errors = 0
        self.ring_packets = 0
        self.ring_drops = 0
        self.handler_errors = 0
        """Frames on which ``Director.handle`` raised (it never should; counted and logged, not fatal)."""
        self.ctl_fenced = 0
        """Control frames (gratuitous ARP, probes) not sent because the mastership deadline had passed."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.arp_answer = True
        """False: frames of the ARP sockets (``arp_socks``) are learned, never answered (every worker of
        a node but one: one answer per request is enough)."""

    # -- fencing ------------------------------------------------------------------------------------
    def set_master_until(self, deadline: float | None) -> None:
        """Forward only while ``clock() < deadline`` (None: not master; ``math.inf``: no fencing).

        O(1), no I/O, safe from another thread (one attribute store, read live by every check): call
        it as often as the mastership is re-validated. Checked before every block
        taken from a ring, before every TX flush and before every control send; frames read at or
        after the deadline are dropped and counted as ``not_master``, nothing is sent, no ARP answered.
        """
        self._until = -INF if deadline is None else deadline

    @property
    def master_until(self) -> float | None:
        return None if self._until == -INF else self._until

    def fenced(self) -> bool:
        """True when the mastership deadline has passed (nothing is forwarded or sent)."""
        return self.clock() >= self._until
    # -- sockets ------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the sockets (once) and tell the Director its interfaces' own MACs (``to_host``)."""
        if not self.socks:
            self._open()
        self.director.host_macs = frozenset(s.mac for s in self.socks)

    def _open(self) -> None:
        g = self.fanout_group
        fan = (None, None) if g is None else (Fanout(g, FANOUT_CBPF_SRC), Fanout(g + 1, FANOUT_CBPF_DST))
        try:
            for side in (EXT, INT):
                self.socks.append(PacketSocket(self.ifnames[side], ring=self.ring, fanout=fan[side],
                                               drop_arp=g is not None))
                if g is not None:
                    self.arp_socks.append(PacketSocket(self.ifnames[side], ring=None, ethertype=ETH_P_ARP))
                if self.use_tx_ring:
                    self.tx_rings.append(TxRing(self.ifnames[side]))
                    self.tx_rings[-1].fence = self.fenced
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in [*self.socks, *self.arp_socks]:
            s.close()
        for t in self.tx_rings:
            t.close()
        self.socks = []
        self.arp_socks = []
        self.tx_rings = []

    def _readers(self) -> list[tuple[PacketSocket, int]]:
        return [(self.socks[EXT], EXT), (self.socks[INT], INT),
                *((s, side) for side, s in enumerate(self.arp_socks))]

    @property
    def csum_fixed(self) -> int:
        """Frames received with a CHECKSUM_PARTIAL L4 checksum that were completed in software."""
        return sum(s.csum_fixed for s in self.socks)

    # -- asyncio ----------------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the sockets (if needed) and start forwarding from ``loop``."""
        self.open()
        self._loop = loop
        for sock, side in self._readers():
            loop.add_reader(sock.fileno(), self._make_reader(sock, side))

    def detach(self) -> None:
        """Stop forwarding and close the sockets."""
        if self._loop is not None:
            for sock, _side in self._readers():
                self._loop.remove_reader(sock.fileno())
            self._loop = None
        self.close()

    def _make_reader(self, sock: PacketSocket, side: int) -> Callable[[], None]:
        sink = self.director.learn_arp
        handle = self.director.handle if self.arp_answer or sock not in self.arp_socks else sink
        fenced = self.fenced
        drops = self.director.counters.counts
        rx = self.rx_frames
        blocks = self.batch_blocks
        flushes = [t.flush for t in self.tx_rings]
        rings, drain_tx = self.tx_rings, sock.drain_tx
        sends = [] if rings else [s.send for s in self.socks]
        drain = sock.drain

        def pull() -> tuple[int, int, int]:
            if rings:  # the TX rings' slot writes inlined in the RX ring walk
                return drain_tx(handle, side, rings, blocks, fenced, sink)
            return drain(handle, side, sends, blocks, fenced, sink)

        def on_readable() -> None:
            n, errors, dropped = pull()
            for flush in flushes:  # (each flush checks the deadline again)
                flush()
            rx[side] += n + dropped
            if dropped:
                drops[Drop.NOT_MASTER] += dropped
            if errors:
                self.handler_errors += errors

        return on_readable

    # -- control ----------------------------------------------------------------------------------
    def send(self, actions: Iterable[Action]) -> int:
        """Send actions produced outside the packet path (gratuitous ARP, ...); returns frames sent."""
        self.open()
        if self.fenced():
            self.ctl_fenced += len(list(actions))
            return 0
        return self._send_all(actions, logging.WARNING)

    def send_gratuitous_arp(self) -> int:
        """Announce every owned address (VIPs outside, gateways inside) from the virtual MAC."""
        return self.send(self.director.garp_actions())

    def probe_neighbours(self) -> int:
        """ARP or NS (rate-limited) for every dest whose MAC is unknown, so first packets find it resolved.

        The active, unfenced master asks from the virtual MAC (with its gateway address: an
        announcement too). Anybody else asks quietly (RFC 5227 probe: the interface's own MAC, sender
        address 0; for IPv6 a DAD-form NS, source ``::``, answered to all-nodes), so a backup's caches
        stay warm for a takeover without making the switches move the virtual MAC to its port or
        anybody update a cache."""
        d = self.director
        loud = d.active and not self.fenced()
        self.open()
        macs = [s.mac for s in self.socks]
        now = d.clock()
        acts: list[Action] = []
        targets = [(INT, dest.addr) for svc in d.services for dest in svc.counted_dests()]  # sorry too
        if d.cfg.ext_gateway:  # the configured client-side gateway
            targets.append((EXT, d.cfg.ext_gateway))
        for side, addr in targets:
            cache = d.neigh[side]
            if addr in cache or not cache.should_probe(addr, now):
                continue
            if is_v6(addr):  # a Neighbor Solicitation: from IPv6's virtual MAC and link-local, or DAD-form
                acts.append((side, ns_frame(d.cfg.vmac6, d.path6.nd.ll, addr) if loud else
                             ns_frame(macs[side], 0, addr)))
            elif loud:
                acts.append((side, arp_request(d.cfg.vmac, d.cfg.int_addr if side == INT else d.cfg.ext_addr,
                                               addr)))
            else:
                acts.append((side, arp_request(macs[side], 0, addr)))
        if not acts:
            return 0
        return self.send(acts) if loud else self._send_quiet(acts)

    def _send_quiet(self, actions: list[Action]) -> int:
        """Probes from the interfaces' own MACs: no claim on any address, so never fenced."""
        return self._send_all(actions, logging.DEBUG)

    def _send_all(self, actions: Iterable[Action], failure_level: int) -> int:
        """Send control frames one by one (counted); returns how many left."""
        n = 0
        for side, frame in actions:
            try:
                self.socks[side].send(frame)
                self.ctl_sent += 1
                n += 1
            except OSError as exc:
                self.tx_errors += 1
                log.log(failure_level, "send on %s failed: %s", self.ifnames[side], exc)
        return n

    def run_blocking(self, should_stop: Callable[[], bool]) -> int:
        """Forward without asyncio until ``should_stop()``; returns frames handled."""
        self.open()
        return blocking_loop(self.socks, self.director.handle, should_stop,
                             extra=[(s, side) for side, s in enumerate(self.arp_socks)],
                             tx_rings=self.tx_rings, fenced=self.fenced)

    def kernel_stats(self) -> tuple[int, int]:
        """(packets, drops) the kernel counted on the receive sockets since the previous call."""
        got = [s.stats() for s in [*self.socks, *self.arp_socks]]
        self.ring_packets += sum(g[0] for g in got)
        self.ring_drops += sum(g[1] for g in got)
        return self.ring_packets, self.ring_drops

    def stats(self) -> dict[str, Any]:
        d = self.director
        ring_packets, ring_drops = self.kernel_stats()
        return {
            "ring_packets": ring_packets, "ring_drops": ring_drops,
            "rx_frames": list(self.rx_frames), "ctl_sent": self.ctl_sent, "tx_errors": self.tx_errors,
            "handler_errors": self.handler_errors, "csum_fixed": self.csum_fixed,
            "cpu_user": os.times().user, "cpu_sys": os.times().system,
            "arp_replies": d.arp_replies, "echo_replies": d.echo_replies, "conns": d.table.count,
            "active": d.active,
            "drops": d.counters.as_dict(), "neigh": d.nb.stats.as_dict(),
            "neigh_entries": [len(n) for n in d.neigh],
            "master_until": self.master_until, "fenced": self.fenced(), "ctl_fenced": self.ctl_fenced,
            "tx_fenced": sum(t.fenced for t in self.tx_rings), "services": service_stats(d.services),
        }


def service_stats(services: ServiceTable) -> list[dict[str, Any]]:
    """Per service: key, counters and dests (by address), as ``stats()`` (a node's stats_file) has them."""
    return [{"key": list(s.key), "counters": s.counters.as_dict(),
             "dests": {str(ipaddress.ip_address(x.addr)): _dest_stats(x) for x in s.dests}}
            for s in services]


def _dest_stats(dest: Dest) -> dict[str, int]:
    return {"weight": dest.weight, "activeconns": dest.activeconns, "inactconns": dest.inactconns,
            **dest.counters.as_dict()}
