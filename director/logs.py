"""directord's log output: journald-native under systemd, readable on a terminal, JSON when asked.

Theory of operation
-------------------
`setup_logging` picks one of three formats (``--log-format``, default ``auto``):

* ``journal``: under systemd (``$JOURNAL_STREAM`` names our stderr) every line starts with the
  sd-daemon priority prefix ``<N>`` (syslog levels: ERROR = 3, WARNING = 4, INFO = 6, DEBUG = 7), so
  journald files each record at its own priority and ``journalctl -p warning`` works; no timestamp
  (journald adds its own);
* ``text``: one human-readable line per record with a local timestamp (a terminal, a file);
* ``json``: one JSON object per line (``t``, ``level``, ``logger``, ``msg``, ``exc``) for log shippers,
  when the node YAML says ``log_json: true`` or ``--log-format json``.

Floods are rate-limited per message template (`FloodFilter`): at most ``burst`` records of one
template per ``window`` seconds pass; the rest are counted, and the next record of that template that
passes says how many were suppressed. Nothing per packet is logged at INFO anyway; this guards the
error paths that a hostile peer can trigger.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

SD_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
FORMATS = ("auto", "journal", "text", "json")


def sd_priority(levelno: int) -> int:
    for level in sorted(SD_PRIORITY, reverse=True):
        if levelno >= level:
            return SD_PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` (journald reads the prefix; it stamps the time itself)."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"{node_id} %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = sd_priority(record.levelno)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"t": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class FloodFilter(logging.Filter):
    """At most `burst` records of one (logger, template) per `window` seconds; counts the rest."""

    def __init__(self, burst: int = 20, window: float = 10.0, clock: object = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window = burst, window
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [window start, passed, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()  # type: ignore[operator]
        key = (record.name, str(record.msg))
        st = self._seen.get(key)
        if st is None or now - st[0] >= self.window:
            suppressed = int(st[2]) if st is not None else 0
            self._seen[key] = [now, 1.0, 0.0]
            if suppressed:
                record.msg = f"{record.msg} [{suppressed} similar records suppressed]"
            if len(self._seen) > 4096:  # bounded: forget the oldest windows
                for k in sorted(self._seen, key=lambda k: self._seen[k][0])[:1024]:
                    del self._seen[k]
            return True
        if st[1] < self.burst:
            st[1] += 1
            return True
        st[2] += 1
        return False


def under_journald(stream: TextIO) -> bool:
    """True when systemd connected this stream to the journal ($JOURNAL_STREAM = "dev:inode")."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def choose_format(requested: str, log_json: bool, stream: TextIO) -> str:
    if requested != "auto":
        return requested
    if under_journald(stream):
        return "journal"
    return "json" if log_json else "text"


def setup_logging(node_id: str, *, fmt: str = "auto", log_json: bool = False, level: str = "info",
                  stream: TextIO | None = None) -> str:
    """Configure the root logger; returns the format chosen."""
    out = stream or sys.stderr
    chosen = choose_format(fmt, log_json, out)
    handler = logging.StreamHandler(out)
    if chosen == "journal":
        handler.setFormatter(JournalFormatter(node_id))
    elif chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(FloodFilter())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    return chosen
