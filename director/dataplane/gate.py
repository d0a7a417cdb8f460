"""The defense's say on a packet that would open a conn (``director.table.defense_policy`` sets its knobs).

Theory of operation
-------------------
:meth:`NewConnGate.refuse` runs on the miss path only, after the packet proved it may open a conn and
before a dest is scheduled: at ``max_conns`` entries the table is full (``TABLE_FULL``, a hard bound
kept between the policy's once-a-second updates), and while drop_packet acts ``todrop`` drops one such
packet in ``todrop.rate`` (``DEFENSE_DROP``, IPVS's ``ip_vs_todrop``). Established flows never get here.
"""

from __future__ import annotations

from director.dataplane.packet import Drop
from director.table.conn import ConnTable
from director.table.defense_policy import DropCounter

_FULL, _DROP = int(Drop.TABLE_FULL), int(Drop.DEFENSE_DROP)


class NewConnGate:
    __slots__ = ("_table", "_drops", "max_conns", "todrop")

    def __init__(self, table: ConnTable, drops: list[int]) -> None:
        self._table = table
        self._drops = drops
        self.max_conns = 0
        """Hard bound on the conn table (0: none)."""
        self.todrop = DropCounter()

    def refuse(self) -> bool:
        """True (and counted) when this new-conn packet must be dropped."""
        if self.max_conns and self._table.count >= self.max_conns:
            self._drops[_FULL] += 1
            return True
        if self.todrop.rate and self.todrop.todrop():
            self._drops[_DROP] += 1
            return True
        return False


__all__ = ["NewConnGate"]
