"""Field ranges of decoded sync entries: what a backup accepts from a master (pure).

Theory of operation
-------------------
convert.py decodes an entry and runs ``entry_ok`` on its plain values (one boolean expression, the
hot path). Only when that fails is ``entry_fault`` asked which field is wrong, to raise a
``FieldRangeError`` naming it; the caller refuses the whole message, so a buggy or hostile master
can never get a value into the table that the packed conn key or the state machines cannot hold.
The ranges (docs/CONTRACTS.md, "Sync"):

=================  ==========================================================================
field              accepted
=================  ==========================================================================
kind               NEW, UPDATE, EXPIRE, REFRESH
protocol           a known protocol (ICMP, TCP, UDP)
caddr, vaddr,      4 bytes (IPv4) or 16 (IPv6); caddr and vaddr of one family
daddr
cport/vport/dport  0..65535
fwmark             0..2**32-1 (uint32 on the wire)
flags              known ConnFlags bits only (HASHED and SYNC are cleared, not refused);
                   NO_CPORT only with cport 0
state              0..10 (TcpState) for TCP, 0 for UDP and ICMP
timeout_ms,        0..2**31-1
remaining_ms
in_pkts            0..2**63-1
dest               protocol known, addresses 4/16 bytes, ports 0..65535
control            a well-formed key of a *template* of the same protocol, not the entry itself
old_key            a well-formed key differing from the entry's only in cport/vport/dport
=================  ==========================================================================
"""

from __future__ import annotations

from director.table.entry import (
    ADDR_LENGTHS,
    F_NO_CPORT,
    KNOWN_CONN_FLAGS,
    KNOWN_PROTOCOLS,
    MAX_PORT,
    MAX_STATE,
    MAX_TIMEOUT_MS,
    addr_fits,
)
from syncd.model import ConnKey, FieldRangeError

MAX_IN_PKTS = 2**63 - 1
_UNKNOWN_FLAGS = ~KNOWN_CONN_FLAGS


def entry_ok(proto: int, la: int, lv: int, ld: int, cport: int, vport: int, dport: int, flags: int,
             state: int, timeout_ms: int, remaining_ms: int) -> bool:
    """The fast check of one entry's own fields (`la`/`lv`/`ld`: address lengths; kind, refs and
    in_pkts are checked by the caller)."""
    return (proto in KNOWN_PROTOCOLS and la in ADDR_LENGTHS and lv == la and ld in ADDR_LENGTHS
            and cport <= MAX_PORT and vport <= MAX_PORT and dport <= MAX_PORT and not flags & _UNKNOWN_FLAGS
            and not (flags & F_NO_CPORT and cport) and state <= MAX_STATE[proto]
            and timeout_ms <= MAX_TIMEOUT_MS and remaining_ms <= MAX_TIMEOUT_MS)


def entry_fault(proto: int, la: int, lv: int, ld: int, cport: int, vport: int, dport: int, flags: int,
                state: int, timeout_ms: int, remaining_ms: int) -> FieldRangeError:
    """The error naming the first bad field of an entry ``entry_ok`` refused."""
    if proto not in KNOWN_PROTOCOLS:
        return FieldRangeError("protocol", f"unknown protocol {proto}")
    for name, n in (("caddr", la), ("vaddr", lv), ("daddr", ld)):
        if n not in ADDR_LENGTHS:
            return FieldRangeError(name, f"address of {n} bytes")
    if la != lv:
        return FieldRangeError("vaddr", f"{lv}-byte VIP for a {la}-byte client")
    for name, port in (("cport", cport), ("vport", vport), ("dport", dport)):
        if port > MAX_PORT:
            return FieldRangeError(name, f"port {port} > {MAX_PORT}")
    if flags & _UNKNOWN_FLAGS:
        return FieldRangeError("flags", f"unknown bits {flags & _UNKNOWN_FLAGS:#x}")
    if flags & F_NO_CPORT and cport:
        return FieldRangeError("flags", f"NO_CPORT with cport {cport}")
    if state > MAX_STATE[proto]:
        return FieldRangeError("state", f"state {state} for protocol {proto}")
    if timeout_ms > MAX_TIMEOUT_MS:
        return FieldRangeError("timeout_ms", f"{timeout_ms} > {MAX_TIMEOUT_MS}")
    return FieldRangeError("remaining_ms", f"{remaining_ms} > {MAX_TIMEOUT_MS}")


def check_in_pkts(in_pkts: int) -> None:
    if in_pkts > MAX_IN_PKTS:
        raise FieldRangeError("in_pkts", f"{in_pkts} > {MAX_IN_PKTS}")


def address(field: str, raw: bytes) -> int:
    """The address ``raw`` holds: 4 bytes (IPv4) or 16 (IPv6, never in ``::/96``, which would stand
    for an IPv4 address in the table's one address space: director.table.entry)."""
    n = len(raw)
    if n not in ADDR_LENGTHS:
        raise FieldRangeError(field, f"address of {n} bytes")
    addr = int.from_bytes(raw, "big")
    if not addr_fits(addr, n):
        raise FieldRangeError(field, f"IPv6 address {addr:#x} inside ::/96 (the table's IPv4 range)")
    return addr


def check_families(ca: bytes, va: bytes, da: bytes, caddr: int, vaddr: int, daddr: int) -> None:
    """An entry's decoded addresses are of the family their lengths say (``address``)."""
    for field, raw, addr in (("caddr", ca, caddr), ("vaddr", va, vaddr), ("daddr", da, daddr)):
        if not addr_fits(addr, len(raw)):
            raise FieldRangeError(field, f"IPv6 address {addr:#x} inside ::/96 (the table's IPv4 range)")


def check_ref(field: str, proto: int, ports: tuple[int, ...]) -> None:
    """A DestRef / ConnRef: known protocol, ports in range (addresses: ``address``)."""
    if proto not in KNOWN_PROTOCOLS:
        raise FieldRangeError(field, f"unknown protocol {proto}")
    for port in ports:
        if port > MAX_PORT:
            raise FieldRangeError(field, f"port {port} > {MAX_PORT}")


def check_control(key: ConnKey, control: ConnKey) -> None:
    if not control[8]:
        raise FieldRangeError("control", "controlling entry is not a template")
    if control[0] != key[0]:
        raise FieldRangeError("control", f"template of protocol {control[0]} for protocol {key[0]}")
    if control == key:
        raise FieldRangeError("control", "entry controls itself")


def check_old_key(key: ConnKey, old: ConnKey) -> None:
    """A re-key changes cport, vport or dport only (fill_cport, template invalidation)."""
    if (old[0], old[1], old[3], old[5], old[7], old[8]) != (key[0], key[1], key[3], key[5], key[7], key[8]):
        raise FieldRangeError("old_key", "re-key changes more than cport/vport/dport")


__all__ = ["MAX_IN_PKTS", "address", "check_control", "check_families", "check_in_pkts", "check_old_key",
           "check_ref", "entry_fault", "entry_ok"]
