"""Interface tracking (keepalived's ``track_interface``): a master whose link dies resigns.

Theory of operation
-------------------
`LinkTracker` polls the flags of the node's client- and server-side interfaces every ``interval``
(50 ms) on a small thread of its own, with one ``SIOCGIFFLAGS`` ioctl per interface (no sysfs, so it
sees the interfaces of the network namespace the process runs in). A link counts as up when it is
administratively up and has carrier (``IFF_UP`` and ``IFF_RUNNING``). On an up -> down transition it
calls ``on_down(ifname)`` on its thread; the node fences the packet path at once and resigns (well
within the 200 ms budget). ``all_up`` is read by the node's readiness check, so a backup with a
dead link never campaigns. An interface that does not exist counts as down.

`link_flags` is the pure decision (flags in, up/down out); the thread only does the polling.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40


def link_up(flags: int) -> bool:
    """Administratively up with carrier."""
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def read_flags(sock: socket.socket, ifname: str) -> int | None:
    """The interface flags, or None if it does not exist."""
    try:
        req = struct.pack("16sH", ifname.encode()[:15], 0)
        res = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req)
    except OSError:
        return None
    return int(struct.unpack("16sH", res[:18])[1])


class LinkTracker:
    def __init__(self, ifnames: Sequence[str], *, on_down: Callable[[str], None] | None = None,
                 interval: float = 0.05) -> None:
        self.ifnames = tuple(dict.fromkeys(ifnames))
        self.on_down = on_down
        self.interval = interval
        self.state: dict[str, bool] = {name: True for name in self.ifnames}
        self.all_up = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self, sock: socket.socket) -> list[str]:
        """Read every link once; returns the links that just went down."""
        went_down = []
        for name in self.ifnames:
            flags = read_flags(sock, name)
            up = flags is not None and link_up(flags)
            if self.state.get(name) and not up:
                went_down.append(name)
                log.warning("tracked link %s is down (flags %s)", name,
                            "absent" if flags is None else hex(flags))
            elif up and not self.state.get(name):
                log.info("tracked link %s is up again", name)
            self.state[name] = up
        self.all_up = all(self.state.values())
        return went_down

    def start(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            self.poll(sock)  # the first verdict is known before the node can campaign
        self._thread = threading.Thread(target=self._run, name="link-tracker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self._stop.wait(self.interval):
                for name in self.poll(sock):
                    if self.on_down is not None:
                        try:
                            self.on_down(name)
                        except Exception:
                            log.exception("link-down handler failed")
