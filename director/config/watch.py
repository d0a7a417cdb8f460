"""Validated config updates from a stream of etcd snapshots: a bad document never stops the stream.

Theory of operation
-------------------
``director.cluster.store.EtcdStore.watch_config`` yields the raw config text after every change.
``config_updates`` turns each snapshot into a ``ConfigUpdate``: the validated ``Config``, or the
``ConfigError`` that refused it (logged, with the revision). Whatever a document in etcd holds —
garbage, an alias bomb, a thousand-deep nesting, bytes that are not UTF-8 — the result is an
update with an error and the loop goes on to the next revision; the running config is the
consumer's to keep. Validation is the one place a hostile document can cost CPU, so it runs in a
worker thread by default (``offload``) and the event loop keeps serving keepalives meanwhile.

``validate_snapshot`` is the synchronous core. It also turns an unexpected exception from a
validator (a bug: the property tests say there is none) into a refusal, logged with its
traceback, so even a validator bug cannot end the watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from director.config.model import Config
from director.config.services import config_from_texts
from director.config.validate import ConfigError

log = logging.getLogger(__name__)


class Snapshot(Protocol):
    """What the store yields (``director.cluster.store.ConfigSnapshot``)."""

    @property
    def revision(self) -> int: ...
    @property
    def services(self) -> Mapping[str, str]: ...
    @property
    def timeouts(self) -> str | None: ...


S = TypeVar("S", bound=Snapshot)


@dataclass(frozen=True)
class ConfigUpdate(Generic[S]):
    """One snapshot, validated: exactly one of ``config`` and ``error`` is set."""

    snapshot: S
    config: Config | None = None
    error: ConfigError | None = None

    @property
    def revision(self) -> int:
        return self.snapshot.revision

    @property
    def ok(self) -> bool:
        return self.config is not None


def validate_snapshot(snap: S) -> ConfigUpdate[S]:
    """Validate one snapshot; never raises."""
    try:
        return ConfigUpdate(snap, config=config_from_texts(snap.services, snap.timeouts))
    except ConfigError as err:
        log.error("config at revision %d refused, running config kept: %s", snap.revision, err)
        return ConfigUpdate(snap, error=err)
    except Exception as exc:  # a validator bug must not end the config watch
        log.exception("config at revision %d: validator failed; refused", snap.revision)
        return ConfigUpdate(snap, error=ConfigError([f"(internal): validator failed: {type(exc).__name__}"]))


async def config_updates(snapshots: AsyncIterable[S], *,
                         offload: bool = True) -> AsyncIterator[ConfigUpdate[S]]:
    """One ``ConfigUpdate`` per snapshot, in order; ends only when ``snapshots`` ends."""
    async for snap in snapshots:
        if offload:
            yield await asyncio.to_thread(validate_snapshot, snap)
        else:
            yield validate_snapshot(snap)
