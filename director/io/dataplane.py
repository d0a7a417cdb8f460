"""The data plane: a Director wired to two AF_PACKET interfaces (ext: clients, int: real servers).

Theory of operation
-------------------
:class:`DataPlane` owns one :class:`~director.io.afpacket.PacketSocket` per side. ``attach(loop)``
registers both fds with ``loop.add_reader``; when a ring has ready blocks the callback drains them,
hands each frame to ``Director.handle(frame, side)``, queues the returned action on the TX ring of the
side it names, and flushes both TX rings once per batch. Nothing else runs per packet; an exception
from the packet path is counted (``handler_errors``) and logged, never fatal.
``send_gratuitous_arp()`` sends the director's gratuitous ARPs (on takeover), ``probe_neighbours()``
ARPs for dests whose MAC is unknown, ``run_blocking()`` is the same loop without asyncio.

Fanout workers (``fanout_group``): the data sockets join client-address fanout groups and filter ARP
out; each worker also has plain ETH_P_ARP sockets outside the group, so every worker sees every ARP
(replies to its own probes included) and keeps a complete neighbour cache.

The director's own kernel addresses are never used as ARP sender addresses (a real server or peer
would then point that kernel address at the virtual MAC and the kernel, which drops frames not for
its own MAC, would go deaf): :func:`core_config` uses the NAT gateway address inside and the first
VIP outside, both owned by the active director's virtual MAC anyway.

``python -m director.io.dataplane --ext IF --int IF --config services.yaml`` runs a stand-alone
director (the lab tests and benchmarks use it beside ``directord``), active unless ``--backup``;
SIGUSR1 / SIGUSR2 make it active (with gratuitous ARPs) / inactive; SIGHUP reloads the services
file (dests added, removed, re-weighted in place); ``--stats-file`` gets a JSON snapshot of the
counters every 200 ms; ``--workers N`` forks N PACKET_FANOUT workers that split traffic by client
address (each with its own conn table; stats from worker 0 only).
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
from pathlib import Path
from typing import Any

import yaml

from director.arp import arp_request, vrrp_mac
from director.conn import ConnTable
from director.core import EXT, INT, Action, CoreConfig, Director
from director.io.afpacket import (
    ETH_P_ARP,
    FANOUT_CBPF_DST,
    FANOUT_CBPF_SRC,
    Fanout,
    PacketSocket,
    RingSpec,
    TxRing,
    blocking_loop,
)
from director.sched import registry
from director.service import Dest, ServiceTable, VirtualService
from director.types import FwdMethod, Proto, SvcFlags

log = logging.getLogger(__name__)
DEFAULT_RING = RingSpec()


class DataPlane:
    """Moves frames between two interfaces and a :class:`Director`."""

    def __init__(self, director: Director, ext_ifname: str, int_ifname: str, *,
                 ring: RingSpec | None = DEFAULT_RING, fanout_group: int | None = None,
                 batch_blocks: int = 64, tx_ring: bool = True) -> None:
        self.director = director
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
        self.handler_errors = 0
        self.ring_packets = 0
        self.ring_drops = 0
        """Frames on which ``Director.handle`` raised (it never should; counted and logged, not fatal)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- sockets ------------------------------------------------------------------------------------
    def open(self) -> None:
        if self.socks:
            return
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
        handle = self.director.handle
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
            n, errors = drain(handle, side, sends, blocks)
            for flush in flushes:
                flush()
            rx[side] += n
            if errors:
                self.handler_errors += errors

        return on_readable

    # -- control ----------------------------------------------------------------------------------
    def send(self, actions: Iterable[Action]) -> int:
        """Send actions produced outside the packet path (gratuitous ARP, ...); returns frames sent."""
        self.open()
        n = 0
        for side, frame in actions:
            try:
                self.socks[side].send(frame)
                self.ctl_sent += 1
                n += 1
            except OSError as exc:
                self.tx_errors += 1
                log.warning("send on %s failed: %s", self.ifnames[side], exc)
        return n

    def send_gratuitous_arp(self) -> int:
        """Announce every owned address (VIPs outside, gateways inside) from the virtual MAC."""
        return self.send(self.director.garp_actions())

    def probe_neighbours(self) -> int:
        """ARP (rate-limited) for every dest whose MAC is unknown, so first packets find it resolved."""
        d = self.director
        neigh = d.neigh[INT]
        now = d.clock()
        acts: list[Action] = []
        for svc in d.services:
            for dest in svc.dests:
                if dest.addr not in neigh and neigh.should_probe(dest.addr, now):
                    acts.append((INT, arp_request(d.cfg.vmac, d.cfg.int_addr, dest.addr)))
        return self.send(acts) if acts else 0

    def run_blocking(self, should_stop: Callable[[], bool]) -> int:
        """Forward without asyncio until ``should_stop()``; returns frames handled."""
        self.open()
        return blocking_loop(self.socks, self.director.handle, should_stop,
                             extra=[(s, side) for side, s in enumerate(self.arp_socks)],
                             tx_rings=self.tx_rings)

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
            "drops": d.counters.as_dict(),
            "services": [
                {"key": list(s.key), "counters": s.counters.as_dict(),
                 "dests": {str(ipaddress.IPv4Address(x.addr)): _dest_stats(x) for x in s.dests}}
                for s in d.services],
        }


def _dest_stats(dest: Dest) -> dict[str, int]:
    return {"weight": dest.weight, "activeconns": dest.activeconns, "inactconns": dest.inactconns,
            **dest.counters.as_dict()}


# -- stand-alone director: config file, reload, stats ---------------------------------------------
_FWD = {"nat": FwdMethod.NAT, "masq": FwdMethod.NAT, "dr": FwdMethod.DR, "route": FwdMethod.DR,
        "tun": FwdMethod.TUN, "ipip": FwdMethod.TUN}
_PROTO = {"tcp": Proto.TCP, "udp": Proto.UDP}


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def load_config(path: str | Path) -> dict[str, Any]:
    """Read the stand-alone services file::

        vmac_id: 1
        expire_nodest_conn: false
        gateways: [198.18.1.254]
        services:
          - {protocol: tcp, vaddr: 198.18.0.10, vport: 80, scheduler: wrr, persistent: 60,
             netmask: 255.255.255.255, dests: [{addr: 198.18.1.10, port: 80, weight: 1, fwd: nat}]}
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def build_service(spec: dict[str, Any]) -> VirtualService:
    sched_opts = spec.get("scheduler_options", {}) or {}
    svc = VirtualService(int(_PROTO[str(spec["protocol"]).lower()]), _ip(spec["vaddr"]), int(spec["vport"]),
                         registry.create(str(spec.get("scheduler", "wlc")), **sched_opts))
    if spec.get("persistent"):
        svc.flags |= SvcFlags.PERSISTENT
        svc.timeout = float(spec["persistent"])
        svc.netmask = _ip(spec.get("netmask", "255.255.255.255"))
    sync_dests(svc, spec.get("dests", []))
    return svc


def sync_dests(svc: VirtualService, dest_specs: list[dict[str, Any]]) -> None:
    """Make ``svc.dests`` match ``dest_specs``: add, re-weight, remove (through the service)."""
    wanted = {(_ip(d["addr"]), int(d.get("port", svc.port))): d for d in dest_specs}
    for dest in list(svc.dests):
        if (dest.addr, dest.port) not in wanted:
            svc.remove_dest(dest)
    for (addr, port), d in wanted.items():
        cur = svc.find_dest(addr, port)
        weight = int(d.get("weight", 1))
        if cur is None:
            svc.add_dest(Dest(svc, addr, port, weight, _FWD[str(d.get("fwd", "nat")).lower()]))
        elif cur.weight != weight:
            svc.edit_dest(cur, weight=weight)


def apply_services(services: ServiceTable, specs: list[dict[str, Any]]) -> None:
    """Bring a live service table in line with ``specs`` (reload keeps conns and bound dests)."""
    by_key = {s.key: s for s in services}
    seen = set()
    for spec in specs:
        svc = build_service(spec)
        seen.add(svc.key)
        cur = by_key.get(svc.key)
        if cur is None:
            services.add(svc)
        else:
            sync_dests(cur, spec.get("dests", []))
    for key, svc in by_key.items():
        if key not in seen:
            services.remove(svc)


def core_config(conf: dict[str, Any], services: ServiceTable) -> CoreConfig:
    gws = frozenset(_ip(g) for g in conf.get("gateways", ["198.18.1.254"]))
    vips = sorted(services.vaddrs())
    cfg = CoreConfig(vmac=vrrp_mac(int(conf.get("vmac_id", 1))), gw_addrs=gws,
                     int_addr=min(gws) if gws else 0, ext_addr=vips[0] if vips else 0,
                     mtu=int(conf.get("int_mtu", 1600)),
                     expire_nodest_conn=bool(conf.get("expire_nodest_conn", False)))
    for name, seconds in (conf.get("timeouts") or {}).items():
        cfg.timeouts.set(str(name), float(seconds))
    return cfg


def build_director(conf: dict[str, Any]) -> Director:
    services = ServiceTable()
    apply_services(services, conf.get("services", []))
    clock = time.monotonic
    d = Director(ConnTable(clock, bits=16), services, clock, core_config(conf, services))
    return d


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


async def _serve(args: argparse.Namespace, fanout_group: int | None, worker: int) -> None:
    loop = asyncio.get_running_loop()
    conf = load_config(args.config)
    director = build_director(conf)
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
        try:
            apply_services(director.services, load_config(args.config).get("services", []))
            log.info("worker %d: services reloaded", worker)
        except Exception:
            log.exception("reload failed; running config kept")

    loop.add_signal_handler(signal.SIGHUP, reload)
    if args.ready_file and worker == 0:
        Path(args.ready_file).write_text(f"{os.getpid()}\n")
    while not stop.is_set():
        director.table.tick()
        dp.probe_neighbours()
        if args.stats_file and worker == 0:
            _write_json(args.stats_file, dp.stats())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    dp.detach()


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
    ap = argparse.ArgumentParser(prog="python -m director.io.dataplane",
                                 description="stand-alone always-active director on two interfaces")
    ap.add_argument("--ext", required=True)
    ap.add_argument("--int", required=True)
    ap.add_argument("--config", required=True, help="services YAML (see load_config)")
    ap.add_argument("--workers", type=int, default=1, help="PACKET_FANOUT worker processes")
    ap.add_argument("--no-rx-ring", action="store_true", help="plain recvmsg + PACKET_AUXDATA instead")
    ap.add_argument("--no-tx-ring", action="store_true", help="one send() per frame instead of a TX ring")
    ap.add_argument("--backup", action="store_true",
                    help="start inactive (SIGUSR1: become active + gratuitous ARP; SIGUSR2: inactive)")
    ap.add_argument("--ready-file")
    ap.add_argument("--stats-file")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.workers > 1:
        return _run_workers(args)
    asyncio.run(_serve(args, None, 0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
