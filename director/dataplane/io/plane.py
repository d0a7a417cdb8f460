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
its own MAC, would go deaf): :func:`core_config` uses the NAT gateway address inside and the first
VIP outside, both owned by the active director's virtual MAC anyway.

Fencing: :meth:`DataPlane.set_master_until` sets the mastership deadline on ``clock`` (CLOCK_MONOTONIC):
checked before every ring block, TX flush and control send; past it nothing is forwarded or sent and
the frames read are counted as ``not_master`` (``docs/DATAPLANE.md``). The stand-alone runner takes it
from ``--deadline-file`` (tests). ``open()`` tells the Director its interfaces' own MACs (``to_host``).

``python -m director.dataplane.io.plane --ext IF --int IF --config runner.yaml`` runs a stand-alone
director (the lab tests and benchmarks use it beside ``directord``), active unless ``--backup``.
Its file (:func:`load_config`) holds a few node settings (``vmac_id``, ``gateways``, ``int_mtu``)
beside ``services`` / ``timeouts`` in exactly ``director.config.services``'s schema (the one ``directorctl
apply`` takes), validated by it; every problem is reported at once as a ``ConfigError`` line
naming its field, and a bad file stops the start before any socket is opened.
SIGUSR1 / SIGUSR2 make it active (with gratuitous ARPs) / inactive; SIGHUP re-reads the file and
applies services and timeouts with ``director.config.services.apply_to_services`` / ``apply_timeouts``
(services and dests edited in place, so existing conns keep their ``Dest``; a bad file is logged
and the running config kept; node settings need a restart); ``--stats-file`` gets a JSON snapshot
of the counters every 200 ms; ``--workers N`` forks N PACKET_FANOUT workers that split traffic by
client address (each with its own conn table; stats from worker 0 only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from director.config.loader import YamlError, load_yaml
from director.config.services import Config, ConfigError, apply_timeouts, apply_to_services, config_from_dict
from director.config.validate import Errors, excerpt, integer, item, keys, mapping, number, sequence
from director.dataplane.arp import arp_request, vrrp_mac
from director.dataplane.core import EXT, INT, Action, CoreConfig, Director
from director.dataplane.io.afpacket import (
    ETH_P_ARP,
    FANOUT_CBPF_DST,
    FANOUT_CBPF_SRC,
    INF,
    Fanout,
    PacketSocket,
    RingSpec,
    TxRing,
    blocking_loop,
)
from director.dataplane.packet import Drop
from director.services.service import Dest, ServiceTable
from director.table.conn import ConnTable

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
        drain = sock.drain
        sink = self.director.learn_arp
        handle = self.director.handle if self.arp_answer or sock not in self.arp_socks else sink
        fenced = self.fenced
        drops = self.director.counters.counts
        rx = self.rx_frames
        blocks = self.batch_blocks
        sends: list[Callable[[bytes | bytearray], int]]
        flushes: list[Callable[[], None]] = []
        if self.tx_rings:
            sends = [t.send for t in self.tx_rings]
            flushes = [t.flush for t in self.tx_rings]
        else:
            sends = [s.send for s in self.socks]

        def on_readable() -> None:
            n, errors, dropped = drain(handle, side, sends, blocks, fenced, sink)
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
        """ARP (rate-limited) for every dest whose MAC is unknown, so first packets find it resolved.

        The active, unfenced master asks from the virtual MAC (with its gateway address: an
        announcement too). Anybody else asks quietly (RFC 5227 probe: the interface's own MAC, sender
        address 0), so a backup's caches stay warm for a takeover without making the switches move the
        virtual MAC to its port or anybody update a cache."""
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
            if loud:
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
            "arp_replies": d.arp_replies, "conns": d.table.count, "active": d.active,
            "drops": d.counters.as_dict(), "neigh": d.nb.stats.as_dict(),
            "neigh_entries": [len(n) for n in d.neigh],
            "master_until": self.master_until, "fenced": self.fenced(), "ctl_fenced": self.ctl_fenced,
            "tx_fenced": sum(t.fenced for t in self.tx_rings),
            "services": [
                {"key": list(s.key), "counters": s.counters.as_dict(),
                 "dests": {str(ipaddress.IPv4Address(x.addr)): _dest_stats(x) for x in s.dests}}
                for s in d.services],
        }


def _dest_stats(dest: Dest) -> dict[str, int]:
    return {"weight": dest.weight, "activeconns": dest.activeconns, "inactconns": dest.inactconns,
            **dest.counters.as_dict()}


# -- stand-alone director: config file, reload, stats ---------------------------------------------
NODE_KEYS = ("vmac_id", "gateways", "int_mtu", "neigh_max_entries", "neigh_learn_rate")
"""Node-level settings of the stand-alone runner; everything else is ``director.config.services``'s schema."""
MIN_MTU, MAX_MTU = 576, 65535


@dataclass(frozen=True)
class RunnerConfig:
    """The stand-alone runner's file: node settings plus ``services`` / ``timeouts``."""

    vmac_id: int = 1
    """Virtual MAC 00:00:5e:00:01:<vmac_id>: source of every frame sent, owner of the VIPs."""
    gateways: tuple[str, ...] = ()
    """Addresses answered on the internal side (the NAT real servers' default gateway); the lowest
    is the director's ARP sender / IPIP source inside."""
    int_mtu: int = 1500
    """MTU of the internal side (TUN: bigger packets get frag-needed)."""
    neigh_max_entries: int = 16384
    """Neighbour cache bound per side (``CoreConfig.neigh_max_entries``)."""
    neigh_learn_rate: float = 1000.0
    """Client entries learned from data frames per second (``CoreConfig.neigh_learn_rate``)."""
    config: Config = Config()
    """The virtual services and timeouts, exactly as ``director.config.services`` (``directorctl apply``)."""


def _node_settings(d: dict[str, Any], errs: Errors) -> dict[str, Any]:
    """The node-level keys, checked with the shared validators (director.config.validate)."""
    out: dict[str, Any] = {
        "vmac_id": integer(d, "vmac_id", "", errs, 1, 255, 1),
        "int_mtu": integer(d, "int_mtu", "", errs, MIN_MTU, MAX_MTU, 1500),
        "neigh_max_entries": integer(d, "neigh_max_entries", "", errs, 1, 1 << 24,
                                     RunnerConfig.neigh_max_entries),
        "neigh_learn_rate": number(d, "neigh_learn_rate", "", errs, 0, 1e9, RunnerConfig.neigh_learn_rate),
    }
    gws = sequence(d.get("gateways", []), "gateways", errs, max_items=64)
    good = []
    for i, g in enumerate(gws):
        try:
            if not isinstance(g, str) or len(g) > 15:
                raise ValueError
            good.append(str(ipaddress.IPv4Address(g)))
        except ValueError:
            errs.add(item("gateways", i), f"must be an IPv4 address, got {excerpt(g)}")
    out["gateways"] = tuple(good)
    return out


def runner_config_from_dict(data: Any) -> RunnerConfig:
    """Validate a loaded runner file; one ``ConfigError`` lists every problem, each naming its field."""
    errs = Errors()
    d = mapping({} if data is None else data, "", errs)
    keys(d, (*NODE_KEYS, "services", "timeouts"), (), "", errs)
    node = _node_settings(d, errs)
    cfg = Config()
    try:
        cfg = config_from_dict({k: v for k, v in d.items() if k in ("services", "timeouts")})
    except ConfigError as exc:
        errs.extend(exc.errors)
    errs.raise_if_any()
    return RunnerConfig(config=cfg, **node)


def parse_runner_config(text: str | bytes) -> RunnerConfig:
    """Parse with the shared YAML loader (size, depth, alias and tag limits; strict UTF-8)."""
    try:
        data = load_yaml(text)
    except YamlError as exc:
        raise ConfigError([f"(top level): {exc}"]) from None
    return runner_config_from_dict(data)


def load_config(path: str | Path) -> RunnerConfig:
    """Read the stand-alone runner's file (``ConfigError`` lines are prefixed with the path)::

        vmac_id: 1                  # node settings (all optional)
        gateways: [198.18.1.254]
        int_mtu: 1600
        timeouts: {tcp: 900, tcpfin: 120, udp: 300}    # director.config.services's schema from here on
        services:
          - name: web
            protocol: tcp
            vip: 198.18.0.10
            port: 80
            scheduler: wrr
            persistence: {timeout: 60, netmask: 255.255.255.255}
            expire_nodest_conn: true
            dests: [{address: 198.18.1.10, port: 8080, weight: 2, forward: nat}]
    """
    try:
        return parse_runner_config(Path(path).read_bytes())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {line}" for line in exc.errors) from None


def core_config(rc: RunnerConfig, services: ServiceTable) -> CoreConfig:
    """CoreConfig for ``rc``; the ARP senders are the gateway inside and the first VIP outside."""
    gws = frozenset(int(ipaddress.IPv4Address(g)) for g in rc.gateways)
    vips = sorted(services.vaddrs())
    cfg = CoreConfig(vmac=vrrp_mac(rc.vmac_id), gw_addrs=gws, int_addr=min(gws) if gws else 0,
                     ext_addr=vips[0] if vips else 0, mtu=rc.int_mtu, neigh_max_entries=rc.neigh_max_entries,
                     neigh_learn_rate=float(rc.neigh_learn_rate))
    apply_timeouts(rc.config.timeouts, cfg.timeouts)
    return cfg


def build_director(rc: RunnerConfig) -> Director:
    """A stand-alone (inactive) Director with ``rc``'s services and timeouts."""
    services = ServiceTable()
    apply_to_services(rc.config, services)
    clock = time.monotonic
    return Director(ConnTable(clock, bits=16), services, clock, core_config(rc, services))


def reload_config(director: Director, running: RunnerConfig, path: str | Path) -> RunnerConfig:
    """Re-read ``path`` and apply its services and timeouts in place (existing services, dests and
    conns stay; see ``director.config.services.apply_to_services``). Node settings need a restart: a change
    is logged and ignored. Raises ``ConfigError`` / ``OSError`` with the running config untouched.
    """
    new = load_config(path)
    for key in NODE_KEYS:
        was, now = getattr(running, key), getattr(new, key)
        if was != now:
            log.warning("reload: %s changed (%s -> %s); restart to apply it", key, was, now)
    apply_to_services(new.config, director.services)
    apply_timeouts(new.config.timeouts, director.cfg.timeouts)
    if director.cfg.ext_addr not in director.services.vaddrs():
        vips = sorted(director.services.vaddrs())
        director.cfg.ext_addr = vips[0] if vips else 0
    return replace(new, **{k: getattr(running, k) for k in NODE_KEYS})


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


async def _serve(args: argparse.Namespace, fanout_group: int | None, worker: int) -> None:
    loop = asyncio.get_running_loop()
    running = load_config(args.config)
    director = build_director(running)
    dp = DataPlane(director, args.ext, args.int, fanout_group=fanout_group,
                   ring=None if args.no_rx_ring else DEFAULT_RING, tx_ring=not args.no_tx_ring)
    dp.attach(loop)
    if not args.backup:
        dp.send(director.set_active(True))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, lambda: dp.send(director.set_active(True)))
    loop.add_signal_handler(signal.SIGUSR2, lambda: dp.send(director.set_active(False)))
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def reload() -> None:
        nonlocal running
        try:
            running = reload_config(director, running, args.config)
            log.info("worker %d: services reloaded", worker)
        except (ConfigError, OSError) as exc:
            log.error("reload failed; running config kept:\n%s", exc)
        except Exception:
            log.exception("reload failed; running config kept")

    loop.add_signal_handler(signal.SIGHUP, reload)
    if args.ready_file and worker == 0:
        Path(args.ready_file).write_text(f"{os.getpid()}\n")
    deadline_seen: tuple[int, float | None] | None = None
    while not stop.is_set():
        if args.deadline_file:
            deadline_seen = _apply_deadline_file(dp, args.deadline_file, deadline_seen)
        director.table.tick()
        dp.probe_neighbours()
        if args.stats_file and worker == 0:
            _write_json(args.stats_file, dp.stats())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    dp.detach()


def read_deadline(text: str) -> float | None:
    """A deadline file's content: a CLOCK_MONOTONIC time, ``inf`` (no fencing) or ``none`` (not master)."""
    word = text.strip().lower()
    return None if word in ("", "none") else float(word)


def _apply_deadline_file(dp: DataPlane, path: str, seen: tuple[int, float | None] | None
                         ) -> tuple[int, float | None] | None:
    """Stand-alone runner: feed ``set_master_until`` from a file when its mtime changed (tests)."""
    try:
        mtime = os.stat(path).st_mtime_ns
        if seen is not None and seen[0] == mtime:
            return seen
        deadline = read_deadline(Path(path).read_text())
    except (OSError, ValueError) as exc:
        log.warning("deadline file %s unusable: %s", path, exc)
        return seen
    dp.set_master_until(deadline)
    log.info("mastership deadline now %s", deadline)
    return mtime, deadline


def _run_workers(args: argparse.Namespace) -> int:
    group = (os.getpid() & 0x7FFE) or 2
    pids = []
    for w in range(args.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(_serve(args, group, w))
            except BaseException:
                log.exception("worker %d failed", w)
                code = 1
            os._exit(code)
        pids.append(pid)

    def forward(sig: int, _frame: object) -> None:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    for p in pids:
        os.waitpid(p, 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m director.dataplane.io.plane",
                                 description="stand-alone always-active director on two interfaces")
    ap.add_argument("--ext", required=True)
    ap.add_argument("--int", required=True)
    ap.add_argument("--config", required=True,
                    help="node settings + services/timeouts in the service schema (see load_config)")
    ap.add_argument("--workers", type=int, default=1, help="PACKET_FANOUT worker processes")
    ap.add_argument("--no-rx-ring", action="store_true", help="plain recvmsg + PACKET_AUXDATA instead")
    ap.add_argument("--no-tx-ring", action="store_true", help="one send() per frame instead of a TX ring")
    ap.add_argument("--backup", action="store_true",
                    help="start inactive (SIGUSR1: become active + gratuitous ARP; SIGUSR2: inactive)")
    ap.add_argument("--deadline-file",
                    help="fencing: file with the mastership deadline on CLOCK_MONOTONIC ('inf': unfenced, "
                         "'none': not master); re-read every 200 ms when it changes")
    ap.add_argument("--ready-file")
    ap.add_argument("--stats-file")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        load_config(args.config)  # fail before forking workers or opening sockets
    except (ConfigError, OSError) as exc:
        log.error("bad config, not starting:\n%s", exc)
        return 2
    if args.workers > 1:
        return _run_workers(args)
    asyncio.run(_serve(args, None, 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
