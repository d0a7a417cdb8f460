"""Edits of the stored service documents, for read-modify-write through the admin API.

``documents`` turns the texts of one etcd snapshot (``config/services/<name>``) into canonical
service documents (``service_dict``) that an edit may change freely; ``plan`` validates the
edited set as a whole (every field and the cross-service checks, exactly like a file) and returns
the canonical texts to put and the names to delete to get there from the snapshot. Both are pure,
so an edit can be re-applied to a fresh snapshot when a compare-and-swap loses its race
(``director.cluster.store.update_config``)::

    def edit(snap):
        docs = documents(snap.services)
        docs["web"]["dests"].append({"address": "198.18.2.12", "port": 80})
        put, delete = plan(snap.services, docs)
        return ConfigEdit(put, delete)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from director.config.dump import dump_service, service_dict
from director.config.services import config_from_dict, parse_service


def documents(texts: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """name -> canonical document of each stored service; ``ConfigError`` if one is invalid."""
    return {name: service_dict(parse_service(name, text)) for name, text in texts.items()}


def plan(texts: Mapping[str, str],
         docs: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(texts to put, names to delete) turning ``texts`` into ``docs``; ``ConfigError`` names every
    problem of the resulting config (paths ``services[i]...`` in the order of ``docs``).

    A document's own ``name`` decides its key: renaming one deletes the old key."""
    cfg = config_from_dict({"services": [dict(d) for d in docs.values()]})
    new = {svc.name: dump_service(svc) for svc in cfg.services}
    put = {name: text for name, text in new.items() if texts.get(name) != text}
    return put, tuple(sorted(set(texts) - set(new)))
