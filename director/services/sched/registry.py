"""Scheduler registry: a scheduler by name, with its options checked.

Theory of operation
-------------------
``create(name, **opts)`` returns a new, empty scheduler instance (one per virtual service);
the service then calls ``update(dests)``. ``NAMES`` lists the names, ``OPTIONS`` the options
each accepts with their types (the config model validates against it). Options mirror
``ipvsadm -b``: ``port`` (sh-port / mh-port: hash the client port too), ``fallback``
(sh-fallback / mh-fallback: pick another dest when the hashed one is unusable), plus the table
sizes that Linux fixes at build time (``tab_bits`` for sh/dh, ``table_size`` for mh, a prime).
Bad names or options raise ``ValueError`` naming the option.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from director.services.sched.base import Scheduler
from director.services.sched.dh import DestinationHashing
from director.services.sched.lc import LeastConnection
from director.services.sched.mh import MaglevHashing
from director.services.sched.nq import NeverQueue
from director.services.sched.rr import RoundRobin
from director.services.sched.sed import ShortestExpectedDelay
from director.services.sched.sh import SourceHashing
from director.services.sched.wlc import WeightedLeastConnection
from director.services.sched.wrr import WeightedRoundRobin

_FACTORIES: dict[str, Callable[..., Scheduler]] = {
    "rr": RoundRobin,
    "wrr": WeightedRoundRobin,
    "lc": LeastConnection,
    "wlc": WeightedLeastConnection,
    "sh": SourceHashing,
    "dh": DestinationHashing,
    "sed": ShortestExpectedDelay,
    "nq": NeverQueue,
    "mh": MaglevHashing,
}

NAMES: tuple[str, ...] = tuple(_FACTORIES)
"""Scheduler names, in the order ipvsadm documents them."""

OPTIONS: Mapping[str, Mapping[str, type]] = {
    "rr": {}, "wrr": {}, "lc": {}, "wlc": {}, "sed": {}, "nq": {},
    "sh": {"port": bool, "fallback": bool, "tab_bits": int},
    "dh": {"tab_bits": int},
    "mh": {"port": bool, "fallback": bool, "table_size": int},
}
"""Options each scheduler accepts, with the Python type of their value."""


def _check_types(name: str, opts: Mapping[str, object]) -> list[str]:
    if name not in _FACTORIES:
        return [f"unknown scheduler {name!r} (one of {', '.join(NAMES)})"]
    known = OPTIONS[name]
    errors = []
    for key, value in opts.items():
        typ = known.get(key)
        if typ is None:
            allowed = ", ".join(sorted(known)) or "none"
            errors.append(f"{key}: unknown option for scheduler {name} (allowed: {allowed})")
        elif not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            errors.append(f"{key}: must be {'a boolean' if typ is bool else 'an integer'}, got {value!r}")
    return errors


def check_options(name: str, opts: Mapping[str, object]) -> list[str]:
    """Problems with ``opts`` for scheduler ``name``, as "option: message" lines (empty = fine)."""
    try:
        create(name, **opts)
    except ValueError as e:
        return str(e).split("; ")
    return []


def create(name: str, **opts: object) -> Scheduler:
    """A new scheduler instance; ``ValueError`` for an unknown name or bad options."""
    errors = _check_types(name, opts)
    if errors:
        raise ValueError("; ".join(errors))
    return _FACTORIES[name](**opts)
