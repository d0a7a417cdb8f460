"""etcd history compaction, run by the master.

etcd keeps every revision of every key until someone compacts. The master writes its leader key a
few times a second (touches, director.cluster.election), config writes and member records add more;
left alone the history grows by ~100 MB a day and etcd eventually refuses writes (NOSPACE). Like
Kubernetes' API server, the master compacts: every `every` seconds it compacts to the revision it
read at the previous tick, so at least `every` seconds of history stay for watchers that fell behind
(director's own watches re-read after a compaction). Only the master does it, so a cluster compacts
once. Operators whose etcd already runs ``--auto-compaction-retention`` can turn it off
(``compact_every`` 0 on the `Elector`); compacting to an already compacted revision is harmless.
"""

from __future__ import annotations

import asyncio
import logging

from director.cluster.store import EtcdError, EtcdStore

log = logging.getLogger(__name__)

COMPACT_EVERY = 300.0


async def compact_history(store: EtcdStore, every: float = COMPACT_EVERY) -> None:
    """Forever: sleep `every`, compact to the revision seen one tick earlier, remember the current one."""
    previous = 0
    while True:
        await asyncio.sleep(every)
        try:
            _, current = await store.get(store.leader_key, timeout=max(1.0, every / 10))
            if previous:
                await store.compact(previous, timeout=max(5.0, every / 2))
                log.info("etcd history compacted to revision %d", previous)
            previous = current
        except EtcdError as err:
            log.info("etcd compaction skipped: %s", err)
