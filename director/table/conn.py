"""The IPVS connection table (``ip_vs_conn.c`` semantics) with a lazy timer wheel.

Theory of operation
-------------------
*Entries.* ``Conn`` (``director.table.entry``, re-exported here with ``snapshot``, ``dest_key``
and ``make_key``): one flow or a persistence template, its client triple packed into one int key.
Random drop lives in ``director.table.defense``.

*Hash table.* Like the kernel, one table hashed by the client triple serves both directions
(``in_get`` hashes the packet source, ``out_get`` its destination): ``2**bits`` buckets (bits
in [8, 20], default 12; bucket ``(caddr ^ cport) & mask``), each a dict from ``_key`` to the
head of a chain (``Conn._next``, new entries first) of entries sharing the triple. The dicts
keep lookups O(1) at any fill (and are not open to chain-flooding, so the kernel's random hash
seed is not needed); the bucket array is what ``random_drop`` samples.

*Lookups* (``director.table.lookup.Lookups``, a base of ``ConnTable``): ``in_get`` matches
vaddr/vport and the NO_CPORT rule (a port-0 lookup matches only NO_CPORT entries, a real port
only entries without it); on a miss it retries with port 0 only while NO_CPORT entries exist.
``ct_in_get`` matches templates only, no retry. ``out_get`` matches daddr/dport.

*Life cycle.* ``new`` binds the dest (forwarding flags, INACTIVE, dest counters, upper-threshold
OVERLOAD), hashes the entry and arms its timer (state 0, 3 s unless told otherwise).
``expire`` is ``ip_vs_conn_expire``: timeout := 60 s; an entry that controls others, or that is
not hashed, is re-armed for later; otherwise it is unhashed, detached from its template,
unbound from its dest (with the overload clearing rule) and counted out.

*Timers.* ``director.table.timer.Wheel``: ``refresh`` only moves ``expires`` (O(1)); ``tick`` collects
due slots (O(due), plus one hop per 32 s of long timeouts); ``expire_now`` fires at the next tick.
``hold_synced(True)`` (a backup following a live master) keeps due SYNC entries instead of expiring
them until sync re-arms or removes them; releasing arms the ones still held.

*Events.* NEW / UPDATE / EXPIRE go to ``events`` (``director.table.events``) when enabled, as
flat ``RawEvent`` tuples built in one go; a dest's key is taken from a small identity cache (it
never changes during the dest's life) and an entry's key is reused from the previous event when
that event was about the same entry (every change of key fields emits an event, so the cached key
is always current). ``refresh`` emits nothing. Kernel errors (double hash, control-del underflow) are logged
(rate-limited) and counted in ``errors``, never raised.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import cast

from director.services.service import Dest
from director.table import defense
from director.table.entry import (
    D_AVAILABLE,
    D_OVERLOAD,
    DEST_KEYS,
    EXPIRE_LATER,
    F_FWD_MASK,
    F_HASHED,
    F_INACTIVE,
    F_NO_CPORT,
    F_NOOUTPUT,
    F_SYNC,
    F_TEMPLATE,
    INITIAL_TIMEOUT,
    INVALID_PORT,
    S_ESTABLISHED,
    TCP,
    Conn,
    canon,
    chain,
    dest_key,
    make_key,
    snapshot,
)
from director.table.events import ConnEvent, ConnKey, ConnSnapshot, EventFeed, EventKind, RawEvent
from director.table.lookup import Lookups
from director.table.timer import DEFAULT_HORIZON, Wheel
from director.types import Clock, DestFlags

log = logging.getLogger(__name__)

MIN_BITS, MAX_BITS, DEFAULT_BITS = 8, 20, 12

_NEW, _UPDATE, _EXPIRE = EventKind.NEW, EventKind.UPDATE, EventKind.EXPIRE
_int_and = int.__and__  # dest.flags is an IntFlag: test bits without its Python-level __and__
_canon = canon


class ConnTable(Lookups):
    """Hash table of conns + timers + counters + event feed. Single-threaded, never blocks."""

    def __init__(self, clock: Clock, bits: int = DEFAULT_BITS, event_capacity: int = 65536,
                 timer_hz: int = 16, timer_horizon: float = DEFAULT_HORIZON) -> None:
        self.bits = min(MAX_BITS, max(MIN_BITS, bits))
        self.size = 1 << self.bits
        self._mask = self.size - 1
        self._tab: list[dict[int, Conn]] = [{} for _ in range(self.size)]
        self._clock = clock
        self._wheel = Wheel(timer_hz, timer_horizon)
        self._intern: dict[int, int] = {}
        self._todrop_counter = [0] * 9
        self.count = 0
        self.no_cport_count = 0
        self.template_count = 0  # templates among count: status never walks the table
        self.events = EventFeed(event_capacity)
        self.errors: dict[str, int] = {}
        self._ev_conn: Conn | None = None  # entry of the last event built, and its key
        self._ev_key: ConnKey | None = None
        self._hold = False
        self._held: dict[Conn, None] = {}

    # ---- creation and dest binding ---------------------------------------------------------

    def new(self, protocol: int, caddr: int, cport: int, vaddr: int, vport: int, daddr: int,
            dport: int, flags: int, dest: Dest | None, fwmark: int = 0, *, state: int = 0,
            timeout: float = INITIAL_TIMEOUT, control: Conn | None = None,
            remaining: float | None = None) -> Conn:
        """Create, bind, hash and arm an entry (``ip_vs_conn_new``); emits NEW.

        NO_CPORT is set when asked for, or when ``cport == 0`` on a non-template. ``control``
        links the entry to its template before the NEW event is emitted. ``remaining`` (sync: the
        master's time left) arms the timer for that long instead of ``timeout``.
        """
        flags = int(flags)
        if cport == 0 and not flags & F_TEMPLATE:
            flags |= F_NO_CPORT
        if flags & F_NO_CPORT:
            self.no_cport_count += 1
        elif flags & F_TEMPLATE:
            self.template_count += 1
        self.count += 1
        intern = self._intern
        now = self._clock()
        c = Conn((caddr << 24) | (protocol << 16) | cport, intern.setdefault(vaddr, vaddr),
                 intern.setdefault(vport, vport), intern.setdefault(daddr, daddr),
                 intern.setdefault(dport, dport), fwmark, flags, state, timeout, now)
        if dest is not None:
            flags = self._bind(c, flags, dest, new=True)
        # hash (ip_vs_conn_hash); a fresh entry cannot be hashed yet
        k = c._key
        d = self._tab[(caddr ^ cport) & self._mask]
        c._next = d.get(k)
        d[k] = c
        c.flags = _canon(flags | F_HASHED)
        self._wheel.arm(c, c.expires if remaining is None else now + remaining, now)
        if control is not None:
            if self.alive(control):
                self._control_add(c, control)
            else:
                self._error("control_add_removed", "new() controlled by removed %r", control)
        if self.events.enabled:
            self._event(_NEW, c)
        return c

    def new_synced(self,
                   rows: list[tuple[ConnKey, int, int, float, float, Dest | None]]) -> list[Conn | None]:
        """Bulk ``new`` for a backup (sync): rows (key, flags, state, timeout, remaining, dest), flags
        including SYNC. Entries whose key the table holds are left alone (None in the result, in row
        order; the caller updates them); the others are created exactly as ``new`` does, on one clock
        reading, without per-entry calls."""
        tab, mask, intern, arm, bind = self._tab, self._mask, self._intern, self._wheel.arm, self._bind
        now, emit = self._clock(), self.events.enabled
        out: list[Conn | None] = []
        for key, flags, state, timeout, rem, dest in rows:
            protocol, caddr, cport, vaddr, vport, daddr, dport, fwmark, tpl = key
            k = (caddr << 24) | (protocol << 16) | cport
            d = tab[(caddr ^ cport) & mask]
            c = head = d.get(k)
            while c is not None:
                if (c.vport == vport and c.vaddr == vaddr and c.dport == dport and c.daddr == daddr
                        and c.fwmark == fwmark and bool(c.flags & F_TEMPLATE) == tpl):
                    break
                c = c._next
            if c is not None:
                out.append(None)
                continue
            if cport == 0 and not flags & F_TEMPLATE:
                flags |= F_NO_CPORT
            if flags & F_NO_CPORT:
                self.no_cport_count += 1
            elif flags & F_TEMPLATE:
                self.template_count += 1
            self.count += 1
            c = Conn(k, intern.setdefault(vaddr, vaddr), intern.setdefault(vport, vport),
                     intern.setdefault(daddr, daddr), intern.setdefault(dport, dport), fwmark, flags, state,
                     timeout, now)
            if dest is not None:
                flags = bind(c, flags, dest, True)
            c._next = head
            d[k] = c
            c.flags = _canon(flags | F_HASHED)
            arm(c, now + rem, now)
            if emit:
                self._event(_NEW, c)
            out.append(c)
        return out

    def _bind(self, c: Conn, flags: int, dest: Dest, new: bool) -> int:
        """ip_vs_bind_dest: flags from the dest, counters, OVERLOAD; returns the new flags."""
        cflags = dest.conn_flags
        if new and not flags & F_SYNC:
            flags |= cflags | F_INACTIVE
        else:  # sync'd or re-bound: keep the activity flag, take the dest's forwarding method
            flags = (flags & ~(F_FWD_MASK | F_NOOUTPUT)) | (cflags & ~F_INACTIVE)
        c.dest = dest
        if flags & F_TEMPLATE:
            dest.persistconns += 1
        elif flags & F_INACTIVE:
            dest.inactconns += 1
        else:
            dest.activeconns += 1
        u = dest.u_threshold
        if u and dest.activeconns + dest.inactconns >= u:
            dest.flags |= DestFlags.OVERLOAD
        return flags

    def _unbind(self, c: Conn) -> None:
        """ip_vs_unbind_dest: counters and the overload clearing rule."""
        dest = c.dest
        if dest is None:
            return
        f = c.flags
        if f & F_TEMPLATE:
            dest.persistconns -= 1
        elif f & F_INACTIVE:
            dest.inactconns -= 1
        else:
            dest.activeconns -= 1
        if dest.l_threshold:
            if dest.activeconns + dest.inactconns < dest.l_threshold:
                self._clear_overload(dest)
        elif dest.u_threshold:
            if (dest.activeconns + dest.inactconns) * 4 < dest.u_threshold * 3:
                self._clear_overload(dest)
        else:
            self._clear_overload(dest)
        c.dest = None

    @staticmethod
    def _clear_overload(dest: Dest) -> None:
        if _int_and(dest.flags, D_OVERLOAD):
            dest.flags &= ~DestFlags.OVERLOAD

    @staticmethod
    def alive(conn: Conn) -> bool:
        """Still in the table (hashed, or armed while briefly unhashed)."""
        return bool(conn.flags & F_HASHED) or conn._tslot is not None

    def bind_dest(self, conn: Conn, dest: Dest) -> None:
        """(Re)bind an entry to ``dest`` (sync): counters follow its INACTIVE/TEMPLATE flags."""
        if conn.dest is dest or not self.alive(conn):
            return
        self._unbind(conn)
        conn.flags = _canon(self._bind(conn, conn.flags, dest, new=False))
        self._emit(_UPDATE, conn)

    def unbind_dest(self, conn: Conn) -> None:
        if conn.dest is None:
            return
        self._unbind(conn)
        self._emit(_UPDATE, conn)

    # ---- state, timers ---------------------------------------------------------------------

    def set_state(self, conn: Conn, state: int, timeout: float) -> None:
        """Set state and timeout and re-arm; a TCP conn entering/leaving ESTABLISHED moves
        between its dest's inactive and active counters. Emits UPDATE if the state or the timeout
        changed (a backup's copy must learn its new timeout; per-packet calls change neither)."""
        old = conn.state
        changed = state != old or timeout != conn.timeout
        if state != old:
            conn.state = state
            dest = conn.dest
            f = conn.flags
            if dest is not None and (conn._key >> 16) & 0xFF == TCP and not f & F_TEMPLATE:
                if not f & F_INACTIVE:
                    if state != S_ESTABLISHED:
                        dest.activeconns -= 1
                        dest.inactconns += 1
                        conn.flags = _canon(f | F_INACTIVE)
                elif state == S_ESTABLISHED:
                    dest.inactconns -= 1
                    dest.activeconns += 1
                    conn.flags = _canon(f & ~F_INACTIVE)
        conn.timeout = timeout
        if conn.flags & F_HASHED:
            now = self._clock()
            self._wheel.rearm(conn, now + timeout, now)
        if changed and self.events.enabled:
            self._event(_UPDATE, conn)

    def refresh(self, conn: Conn, timeout: float | None = None) -> None:
        """expires := now + (timeout or conn.timeout). O(1), no event, conn.timeout unchanged."""
        ts = conn._tslot
        if ts is None:
            if conn.flags & F_HASHED:  # held (hold_synced): armed again
                now = self._clock()
                self._wheel.arm(conn, now + (conn.timeout if timeout is None else timeout), now)
            return  # else removed
        now = self._clock()
        e = now + (conn.timeout if timeout is None else timeout)
        conn.expires = e
        if e < ts.deadline:
            self._wheel.arm(conn, e, now)

    def expire_now(self, conn: Conn) -> None:
        """Fire the entry's timer at the next tick (``ip_vs_conn_expire_now``)."""
        if conn._tslot is not None or conn.flags & F_HASHED:
            self._wheel.arm_now(conn, self._clock())

    def tick(self) -> int:
        """Run due timers; returns how many entries were removed."""
        return self._tick(self._hold)

    def _tick(self, hold: bool) -> int:
        now = self._clock()
        n = 0
        for c in self._wheel.collect(now):
            if hold and c.flags & F_SYNC:  # type: ignore[attr-defined]
                self._held[cast(Conn, c)] = None
            elif self._expire(cast(Conn, c), now):
                n += 1
        return n

    def hold_synced(self, hold: bool) -> int:
        """While held, a due ``SYNC`` entry is kept, unarmed, until sync re-arms (``refresh``,
        ``set_state``) or removes it (``expire``): a backup following a live master never expires a
        synced entry on its own clock (docs/CONTRACTS.md, "Sync"). Releasing arms each entry still
        held for a full ``timeout`` from now (as IPVS backups do); returns how many."""
        self._hold = hold
        if hold or not self._held:
            return 0
        held, self._held = self._held, {}
        now = self._clock()
        n = 0
        for c in held:
            if c._tslot is None and c.flags & F_HASHED:
                self._wheel.arm(c, now + c.timeout, now)
                n += 1
        return n

    @property
    def held(self) -> int:  # entries due but held by hold_synced (some may be re-armed since)
        return len(self._held)

    def next_deadline(self) -> float | None:
        return self._wheel.next_deadline()

    # ---- expiry ----------------------------------------------------------------------------

    def expire(self, conn: Conn) -> bool:
        """Run the expire logic now (``ip_vs_conn_expire``); True if the entry was removed.
        An entry that was already removed is left alone (False)."""
        if conn._tslot is None and not conn.flags & F_HASHED:
            return False
        return self._expire(conn, self._clock())

    def _expire(self, c: Conn, now: float) -> bool:
        c.timeout = EXPIRE_LATER
        if c.n_control or not self._unhash(c):
            self._wheel.rearm(c, now + EXPIRE_LATER, now)  # expire later
            if c.n_control and self.events.enabled:
                self._event(_UPDATE, c)  # its new timeout and deadline go to the backups
            return False
        if self._held:
            self._held.pop(c, None)
        if self.events.enabled:
            self._event(_EXPIRE, c)
        self._wheel.disarm(c)
        if c.control is not None:
            self._control_del(c)
        self._unbind(c)
        if c.flags & F_NO_CPORT:
            self.no_cport_count -= 1
        elif c.flags & F_TEMPLATE:
            self.template_count -= 1
        self.count -= 1
        return True

    def _unhash(self, c: Conn) -> bool:
        f = c.flags
        if not f & F_HASHED:
            return False
        k = c._key
        i = ((k >> 24) ^ (k & 0xFFFF)) & self._mask
        d = self._tab[i]
        head = d[k]
        if head is c:
            if c._next is None:
                del d[k]
                if not d:  # a drained dict keeps its peak size: give the memory back
                    self._tab[i] = {}
            else:
                d[k] = c._next
        else:
            while head._next is not c:
                head = head._next  # type: ignore[assignment]
            head._next = c._next
        c._next = None
        c.flags = _canon(f & ~F_HASHED)
        return True

    def _hash(self, c: Conn) -> bool:
        f = c.flags
        if f & F_HASHED:
            self._error("double_hash", "request for already hashed %r", c)
            return False
        k = c._key
        d = self._tab[((k >> 24) ^ (k & 0xFFFF)) & self._mask]
        c._next = d.get(k)
        d[k] = c
        c.flags = _canon(f | F_HASHED)
        return True

    def _error(self, what: str, msg: str, *args: object) -> None:
        n = self.errors.get(what, 0) + 1
        self.errors[what] = n
        if n & (n - 1) == 0:  # rate limit: 1st, 2nd, 4th, 8th... occurrence
            log.error("conn table: " + msg + " (%s #%d)", *args, what, n)

    # ---- templates -------------------------------------------------------------------------

    def control_add(self, conn: Conn, template: Conn) -> None:
        """conn.control = template; template.n_control += 1 (re-links if already controlled).
        Linking a removed entry, or to a removed template, is reported and ignored."""
        if not (self.alive(conn) and self.alive(template)) or conn is template:
            self._error("control_add_removed", "control ADD with removed/self entry %r", conn)
            return
        self._control_add(conn, template)
        self._emit(_UPDATE, conn)

    def _control_add(self, c: Conn, ct: Conn) -> None:
        if c.control is not None:
            self._error("control_add_twice", "control ADD for already controlled %r", c)
            self._control_del(c)
        c.control = ct
        ct.n_control += 1

    def control_del(self, conn: Conn) -> None:
        """Detach an entry from its template (sync: the master re-linked or unlinked it); emits UPDATE."""
        if conn.control is not None:
            self._control_del(conn)
            self._emit(_UPDATE, conn)

    def _control_del(self, c: Conn) -> None:
        ct = c.control
        if ct is None:
            self._error("control_del_uncontrolled", "control DEL for uncontrolled %r", c)
            return
        c.control = None
        if ct.n_control == 0:
            self._error("control_del_underflow", "BUG control DEL with n=0 %r", c)
            return
        ct.n_control -= 1

    def check_template(self, ct: Conn, expire_quiescent_template: bool) -> bool:
        """True if the template's dest is usable; otherwise invalidate it and return False."""
        dest = ct.dest
        if (dest is not None and _int_and(dest.flags, D_AVAILABLE)
                and not (expire_quiescent_template and dest.weight == 0)):
            return True
        if ct.vport != INVALID_PORT and self._unhash(ct):
            old = ct.key
            self._ev_conn = None  # its key changes: the event key cache must not serve it
            ct.dport = INVALID_PORT
            ct.vport = INVALID_PORT
            ct._key = (ct._key & ~0xFFFF) | self._free_invalid_cport(ct.key)
            self._hash(ct)
            self._emit(_UPDATE, ct, old)
        return False

    def _free_invalid_cport(self, key: ConnKey) -> int:
        """cport for an invalidated template: 0 (the seed), or the first port no other entry with
        the same key uses - every entry keeps a distinct key, which is how sync names it."""
        cport = 0
        while self.get(key) is not None and cport < 0xFFFF:
            cport += 1
            key = (*key[:2], cport, *key[3:])
        return cport

    def rekey(self, conn: Conn, key: ConnKey) -> bool:
        """Give an entry the cport/vport/dport of ``key`` (sync: the master re-keyed it with
        ``fill_cport`` or ``check_template``); NO_CPORT is cleared when it gets a port. The other
        key fields must already match. Emits UPDATE with the old key; False if it does not apply."""
        p, caddr, cport, vaddr, vport, daddr, dport, fwmark, tpl = key
        k = conn._key
        same = (k >> 24, (k >> 16) & 0xFF, conn.vaddr, conn.daddr, conn.fwmark, bool(conn.flags & F_TEMPLATE))
        if same != (caddr, p, vaddr, daddr, fwmark, tpl) or not self._unhash(conn):
            return False
        old = conn.key
        self._ev_conn = None  # its key changes: the event key cache must not serve it
        if conn.flags & F_NO_CPORT and cport:
            self.no_cport_count -= 1
            conn.flags = _canon(conn.flags & ~F_NO_CPORT)
        conn._key = (k & ~0xFFFF) | cport
        conn.vport = vport
        conn.dport = dport
        self._hash(conn)
        self._emit(_UPDATE, conn, old)
        return True

    def fill_cport(self, conn: Conn, cport: int) -> None:
        """Give a NO_CPORT entry its client port (``ip_vs_conn_fill_cport``)."""
        if not self._unhash(conn):
            return
        old = None
        if conn.flags & F_NO_CPORT:
            old = conn.key
            self._ev_conn = None  # its key changes: the event key cache must not serve it
            self.no_cport_count -= 1
            conn.flags = _canon(conn.flags & ~F_NO_CPORT)
            conn._key = (conn._key & ~0xFFFF) | cport
        self._hash(conn)
        if old is not None:
            self._emit(_UPDATE, conn, old)

    # ---- bulk operations -------------------------------------------------------------------

    def flush(self) -> None:
        """Expire everything (and each entry's template) until the table is empty."""
        while self.count:
            before = self.count
            for c in list(self):
                self.expire_now(c)
                if c.control is not None:
                    self.expire_now(c.control)
            self._tick(False)  # held synced entries go too
            if self.count >= before:
                self._error("flush_stuck", "flush made no progress, %d entries left", self.count)
                return

    def random_drop(self, rng: random.Random) -> int:
        """Defense: visit 1/32 of the buckets at random and expire_now droppable entries (and
        their templates). Returns the number of entries marked; they go at the next tick."""
        return defense.random_drop(self._tab, self.bits, self._clock(), self._todrop_counter, self.expire_now,
                                   rng)

    def todrop_entry(self, c: Conn, now: float) -> bool:
        """Seed ``todrop_entry`` (see ``director.table.defense``)."""
        return defense.todrop_entry(c, now, self._todrop_counter)

    # ---- iteration, events -----------------------------------------------------------------

    def _emit(self, kind: EventKind, c: Conn, old_key: ConnKey | None = None) -> None:
        if self.events.enabled:
            self._event(kind, c, old_key)

    def _event(self, kind: EventKind, c: Conn, old_key: ConnKey | None = None) -> None:
        """Push the RawEvent of ``c`` now (the caller checked ``events.enabled``)."""
        f, d, ct = c.flags, c.dest, c.control
        if c is self._ev_conn and old_key is None:
            key = self._ev_key
        else:
            k = c._key
            key = ((k >> 16) & 0xFF, k >> 24, k & 0xFFFF, c.vaddr, c.vport, c.daddr, c.dport, c.fwmark,
                   bool(f & F_TEMPLATE))
            self._ev_conn = c
            self._ev_key = key
        if d is not None:
            dk = DEST_KEYS.get(d)
            if dk is None:
                dk = dest_key(d)
        else:
            dk = None
        ev: RawEvent = (key, f, c.state, c.timeout, c.expires, dk, ct.key if ct is not None else None,
                        c.in_pkts, kind, old_key)
        self.events.push_raw(ev)

    def __iter__(self) -> Iterator[Conn]:
        """All hashed entries; safe against table changes between buckets (sync snapshots)."""
        for d in self._tab:
            if d:
                yield from (c for c in chain(d) if c.flags & F_HASHED)

    def bucket(self, i: int) -> list[Conn]:
        """The entries of bucket ``i`` (admin paging walks the buckets in order)."""
        return chain(self._tab[i])

    def __len__(self) -> int:
        return self.count

    def bucket_of(self, conn: Conn) -> int:
        k = conn._key
        return ((k >> 24) ^ (k & 0xFFFF)) & self._mask

    @property
    def timer_swept(self) -> int:
        """Timer items examined by all ticks so far (cost accounting for tests/benchmarks)."""
        return self._wheel.swept

    def timer_items(self) -> int:
        """Items held by the timer wheel (stale included): for memory checks."""
        return len(self._wheel)


__all__ = [
    "Conn", "ConnEvent", "ConnKey", "ConnSnapshot", "ConnTable", "EventFeed", "EventKind",
    "dest_key", "make_key", "snapshot",
]
