"""The mastership deadline in shared memory: one writer (the parent), every worker reads it.

Theory of operation
-------------------
With ``workers: N`` the election (parent process, its own thread) decides the mastership deadline
and the packet workers (other processes) must check it before every ring block, as the in-process
data plane does (docs/HA.md section 1). The deadline lives in one page of shared memory (a memfd the
parent creates and hands to each worker at spawn)::

    offset 0   u64  seq        odd while the writer is in the middle of a store
    offset 8   f64  deadline   CLOCK_MONOTONIC seconds; -inf = not master, +inf = no fencing

:meth:`SharedFence.set` is a seqlock write (seq+1, deadline, seq+1); :meth:`SharedFence.until` reads
seq, deadline, seq and retries while they disagree or seq is odd, so a reader never sees a torn
double. CLOCK_MONOTONIC is one clock for every process of the host, so the parent's deadline means
the same instant in every worker. A read costs one ``unpack_from`` on the mapping: the same order as
the in-process check (an attribute load).

The fence is fail-safe: a fresh mapping reads -inf (not master); when the parent dies the value
stays, but so does its deadline: it passes within one lease TTL at most, and the workers are killed
by PR_SET_PDEATHSIG well before that (director.workers.worker).
"""

from __future__ import annotations

import mmap
import os
import struct

_LAYOUT = struct.Struct("=Qd")
_SEQ = struct.Struct("=Q")
_DEADLINE = struct.Struct("=d")
SIZE = 4096
NOT_MASTER = float("-inf")


class SharedFence:
    """A seqlock'ed deadline in a shared mapping of ``fd`` (create one with :meth:`create`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._mv = memoryview(self._map)

    @classmethod
    def create(cls) -> SharedFence:
        """A new fence (not master), backed by an anonymous memfd that children may inherit."""
        fd = os.memfd_create("directord-fence", 0)
        os.ftruncate(fd, SIZE)
        fence = cls(fd)
        fence.set(None)
        return fence

    def set(self, deadline: float | None) -> None:
        """Store the deadline (None: not master). One writer only (the election's fence callback)."""
        mv = self._mv
        seq = _SEQ.unpack_from(mv, 0)[0]
        _SEQ.pack_into(mv, 0, seq + 1)
        _DEADLINE.pack_into(mv, 8, NOT_MASTER if deadline is None else deadline)
        _SEQ.pack_into(mv, 0, seq + 2)

    def until(self) -> float:
        """The current deadline (-inf: not master); never torn."""
        unpack = _LAYOUT.unpack_from
        mv = self._mv
        while True:
            seq, deadline = unpack(mv, 0)
            if not seq & 1 and _SEQ.unpack_from(mv, 0)[0] == seq:
                return float(deadline)

    def master_until(self) -> float | None:
        """The deadline as ``DataPlane.master_until`` reports it (None: not master)."""
        until = self.until()
        return None if until == NOT_MASTER else until

    def close(self) -> None:
        self._mv.release()
        self._map.close()
        os.close(self.fd)
