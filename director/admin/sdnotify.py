"""systemd service notifications (``sd_notify``) in plain Python: readiness, watchdog, status.

Theory of operation
-------------------
Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract
namespace); a notification is one datagram of ``KEY=value`` lines. With ``WatchdogSec=`` it also
passes ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the pid meant): the service must send
``WATCHDOG=1`` more often than that or systemd kills it.

`Notifier.from_env(env)` reads those variables; without ``$NOTIFY_SOCKET`` (not under systemd) every
send is a no-op. `supervise(notifier, serving, status)` is a task on the node's event loop: it sends
``READY=1`` once `serving()` is first true (directord: master, or a backup in sync), ``WATCHDOG=1``
every half watchdog period, so a stuck loop stops the pings and systemd restarts the node, and
``STATUS=`` whenever `status()` changes (shown by ``systemctl status``). `message` is the pure
formatting of one datagram.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

TICK = 0.2
"""Seconds between checks of `serving()` and `status()` when no watchdog asks for more often."""


def message(**fields: str | int) -> bytes:
    """One notification datagram: ``KEY=value`` lines (keys upper-cased), newline-free values."""
    lines = []
    for key, value in fields.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"{key}: a notification value is one line")
        lines.append(f"{key.upper()}={text}")
    return "\n".join(lines).encode()


def socket_address(value: str) -> str:
    """$NOTIFY_SOCKET as a socket address: ``@name`` is the abstract namespace (leading NUL)."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if not value.startswith("/"):
        raise ValueError(f"NOTIFY_SOCKET: want an absolute path or @name, got {value!r}")
    return value


@dataclass
class Notifier:
    """Sends notifications to systemd; ``address`` None: not under systemd, sends nothing."""

    address: str | None = None
    watchdog: float | None = None
    """Seconds systemd waits for a WATCHDOG=1 (None: no watchdog for this process)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw) if raw else None
        watchdog = None
        usec = env.get("WATCHDOG_USEC", "")
        wd_pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not wd_pid or wd_pid == str(pid or os.getpid())):
            watchdog = int(usec) / 1e6
        return cls(address, watchdog)

    def send(self, **fields: str | int) -> bool:
        """One datagram; False (and a debug line) when it could not be sent, never an exception."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.setblocking(False)
                s.sendto(message(**fields), self.address)
        except OSError as err:
            log.debug("sd_notify %s failed: %s", sorted(fields), err)
            return False
        return True


async def supervise(notifier: Notifier, serving: Callable[[], bool], status: Callable[[], str]) -> None:
    """READY=1 once serving, WATCHDOG=1 every half watchdog period, STATUS= on change; until cancelled."""
    if notifier.address is None:
        return
    period = min(TICK, notifier.watchdog / 2) if notifier.watchdog else TICK
    ready = False
    last_status = ""
    last_ping = 0.0
    loop = asyncio.get_running_loop()
    while True:
        text = status()
        if text != last_status:
            notifier.send(status=text)
            last_status = text
        if not ready and serving():
            ready = notifier.send(ready=1, status=text)
            if ready:
                log.info("systemd notified: ready (%s)", text)
        now = loop.time()
        if notifier.watchdog and now - last_ping >= notifier.watchdog / 2:
            notifier.send(watchdog=1)
            last_ping = now
        await asyncio.sleep(period)


def stopping(notifier: Notifier) -> None:
    """STOPPING=1: the service is shutting down (systemd shows "deactivating")."""
    notifier.send(stopping=1, status="stopping")
