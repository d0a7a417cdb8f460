"""MISC check (keepalived's MISC_CHECK): run an operator's command; its exit code is the verdict.

* exit 0: up; exit 1: down;
* with `dynamic: true` (keepalived's ``misc_dynamic``) an exit code 2..255 means up with weight
  ``code - 2`` (the verdict carries it; every node applies it like the up/down flag); without it,
  any code other than 0 is down;
* killed by a signal, not startable (missing program, permission), or still running at `timeout`:
  down.

The command is an argv list run without a shell (asyncio subprocess, so the event loop never waits
on it; starts are serialized, one fork per loop iteration), stdin from /dev/null, in its own
session (process group). At `timeout` the whole group gets SIGKILL and the result says ``killed``
(`CheckResult.killed`; the health runner counts these); when the command exits, whatever it left
running in its group is killed too, so a misbehaving script can neither stall the probe loop nor
pile up processes. The first line of its output (stdout and stderr, at most `MAX_OUTPUT` bytes
kept) goes into the result's detail. The dest is described in the environment: ``LBD_DEST``
(addr:port), ``LBD_DEST_ADDR``, ``LBD_DEST_PORT``, ``LBD_CHECK_PORT`` (the probed port),
``LBD_SERVICE`` (proto/vip:port or fwm/N), ``LBD_TIMEOUT``, on top of the node's own environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import weakref
from collections.abc import Mapping, Sequence

from director.health.spec import CheckResult

MAX_OUTPUT = 4096
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
MAX_STDIN = 32768
OUTPUT_GRACE = 1.0
"""Seconds to collect the output after the exit (the group is dead by then: EOF comes at once)."""


async def check_misc(argv: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None,
                     dynamic: bool = False) -> CheckResult:
    """Run `argv` with `env` added to the environment; never raises."""
    try:
        code, said = await run_command(argv, timeout, env=env)
    except OSError as exc:
        return CheckResult(False, f"cannot run {argv[0]}: {exc.strerror or exc}")
    if code is None:
        return CheckResult(False, f"killed after {timeout:g}s", killed=True)
    return verdict(code, dynamic, said)


async def run_command(argv: Sequence[str], timeout: float, *, env: Mapping[str, str] | None = None,
                      stdin: bytes = b"") -> tuple[int | None, str]:
    """Run `argv` in its own process group, `stdin` (at most `MAX_STDIN` bytes) on its standard input;
    (exit status, or None if it was killed at `timeout`; the first line of its output). The group is
    killed when the command ends either way. OSError if it cannot start. Also the notify hooks'
    runner (director.admin.notify)."""
    loop = asyncio.get_running_loop()
    if len(stdin) > MAX_STDIN:
        raise ValueError(f"stdin of {len(stdin)} bytes, at most {MAX_STDIN}")
    in_r, in_w = os.pipe()
    os.write(in_w, stdin)  # fits in an empty pipe's buffer: never blocks
    os.close(in_w)
    rfd, wfd = os.pipe()  # our own pipe: Process.wait() (3.11) would also wait for a pipe it owns
    start = asyncio.ensure_future(_spawn(argv, in_r, wfd, {**os.environ, **(env or {})}))
    try:  # shielded: cancelling a starting subprocess can hang asyncio (3.11); finish, kill, reap
        proc = await asyncio.shield(start)
    except asyncio.CancelledError:
        os.close(rfd)
        with contextlib.suppress(OSError):
            started = await start
            _kill_group(started.pid)
            await started.wait()
        raise
    except BaseException:
        os.close(rfd)
        raise
    finally:
        os.close(wfd)
        os.close(in_r)
    stream = asyncio.StreamReader()
    pipe, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream),
                                           os.fdopen(rfd, "rb", buffering=0))
    output = asyncio.ensure_future(_read_bounded(stream))
    try:
        code: int | None = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        code = None
    except asyncio.CancelledError:
        output.cancel()
        pipe.close()
        raise
    finally:  # also on cancellation: nothing of the command outlives it
        _kill_group(proc.pid)  # leftovers of the script would also hold the output pipe
    said = b""
    try:
        if code is None:
            await proc.wait()
        said = await asyncio.wait_for(output, OUTPUT_GRACE)
    except TimeoutError:  # a descendant that left the group still holds the pipe
        pass
    finally:
        output.cancel()
        pipe.close()
    return code, _first_line(said)


async def _spawn(argv: Sequence[str], stdin: int, out: int,
                 env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start one process; at most one start per loop iteration (a fork takes milliseconds: twenty
    probes due together must not stall the packet path for all of them at once)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Lock()
    async with gate:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=stdin, stdout=out, stderr=out,
                                                    start_new_session=True, env=env)
        await asyncio.sleep(0)  # let the loop run what waited behind this fork
    return proc


def verdict(code: int, dynamic: bool, said: str = "") -> CheckResult:
    """Map an exit status (negative: killed by that signal) to a result."""
    tail = f": {said}" if said else ""
    if code == 0:
        return CheckResult(True, f"exit 0{tail}")
    if code < 0:
        return CheckResult(False, f"killed by signal {-code}{tail}")
    if dynamic and code >= 2:
        return CheckResult(True, f"exit {code}: weight {code - 2}{tail}", weight=code - 2)
    return CheckResult(False, f"exit {code}{tail}")


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    kept = b""
    while chunk := await stream.read(65536):
        if len(kept) < MAX_OUTPUT:
            kept += chunk[:MAX_OUTPUT - len(kept)]
    return kept


def _first_line(said: bytes) -> str:
    lines = said.decode("utf-8", "replace").strip().splitlines()
    return lines[0][:200] if lines else ""


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
