"""The seed's lookups over the conn hash table, a base class of ``ConnTable`` (split off by job).

Theory of operation
-------------------
One table hashed by the client triple serves both directions: ``in_get`` hashes the packet source
(client -> VIP, with the NO_CPORT rule and the port-0 retry), ``ct_in_get`` the same for templates
only, ``out_get`` the packet destination (real server -> client), ``get`` an exact cluster-wide
key (sync). Buckets are dicts from the packed client triple to the head of a chain of entries.
"""

from __future__ import annotations

from director.table.entry import F_NO_CPORT, F_TEMPLATE, Conn
from director.table.events import ConnKey


class Lookups:
    """``in_get`` / ``ct_in_get`` / ``out_get`` / ``get`` over ``_tab`` (owned by ConnTable)."""

    _tab: list[dict[int, Conn]]
    _mask: int
    no_cport_count: int

    def in_get(self, protocol: int, s_addr: int, s_port: int, d_addr: int, d_port: int) -> Conn | None:
        """Entry for a client -> VIP packet (``ip_vs_conn_in_get``), with the port-0 retry."""
        c = self._tab[(s_addr ^ s_port) & self._mask].get((s_addr << 24) | (protocol << 16) | s_port)
        if s_port:  # a real port matches entries without NO_CPORT...
            while c is not None:
                if c.vport == d_port and c.vaddr == d_addr and not c.flags & F_NO_CPORT:
                    return c
                c = c._next
            if not self.no_cport_count:
                return None
            # ...then retry with port 0
            c = self._tab[s_addr & self._mask].get((s_addr << 24) | (protocol << 16))
        while c is not None:  # port 0 matches NO_CPORT entries only
            if c.vport == d_port and c.vaddr == d_addr and c.flags & F_NO_CPORT:
                return c
            c = c._next
        return None

    def ct_in_get(self, protocol: int, s_addr: int, s_port: int, d_addr: int, d_port: int) -> Conn | None:
        """Template for (client, VIP) (``ip_vs_ct_in_get``): templates only, no retry."""
        c = self._tab[(s_addr ^ s_port) & self._mask].get((s_addr << 24) | (protocol << 16) | s_port)
        while c is not None:
            if c.vport == d_port and c.vaddr == d_addr and c.flags & F_TEMPLATE:
                return c
            c = c._next
        return None

    def out_get(self, protocol: int, s_addr: int, s_port: int, d_addr: int, d_port: int) -> Conn | None:
        """Entry for a real server -> client packet (``ip_vs_conn_out_get``)."""
        c = self._tab[(d_addr ^ d_port) & self._mask].get((d_addr << 24) | (protocol << 16) | d_port)
        while c is not None:
            if c.dport == s_port and c.daddr == s_addr:
                return c
            c = c._next
        return None

    def get(self, key: ConnKey) -> Conn | None:
        """The entry with exactly this cluster-wide key (sync)."""
        protocol, caddr, cport, vaddr, vport, daddr, dport, fwmark, tmpl = key
        c = self._tab[(caddr ^ cport) & self._mask].get((caddr << 24) | (protocol << 16) | cport)
        while c is not None:
            if (c.vport == vport and c.vaddr == vaddr and c.dport == dport and c.daddr == daddr
                    and c.fwmark == fwmark and bool(c.flags & F_TEMPLATE) == tmpl):
                return c
            c = c._next
        return None


__all__ = ["Lookups"]
