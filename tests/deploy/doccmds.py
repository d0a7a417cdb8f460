"""The `directorctl` examples of README.md and docs/ADMIN.md: extracted, run, and compared by shape.

Theory of operation
-------------------
``examples(text)`` reads the fenced code blocks of a Markdown file. A line ``$ directorctl ...`` is a
command; the lines after it, up to the next ``$`` line or the end of the block, are its documented
output. A last output line ``(exit N)`` is the documented exit code (default 0); a line ``...``
stands for lines left out. A block whose first line is ``# file: NAME`` is an input file the
commands use (written to the working directory before they run).

``same_shape(cmd, doc, live)`` compares what the doc shows with what the command printed: lines
are normalized (every run of digits becomes ``#``, runs of blanks one blank), so counters,
revisions, epochs and uptimes may differ but headers, columns, keys, addresses' shapes and words
may not. Connection listings (``list -c``) and ``status`` depend on traffic and timing: for them
the header lines must be equal and every other line must have one of the row shapes of that table.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

FENCE = re.compile(r"^```")
DIGITS = re.compile(r"\d+")
BLANKS = re.compile(r"[ \t]+")
EXIT_LINE = re.compile(r"^\(exit (\d+)\)$")
CONN_ROW = re.compile(r"^(TCP|UDP) \d\d:\d\d +[A-Z_]+ +\S+:\d+ +\S+:\d+ +\S+:\d+$"
                      r"|^\(more entries: raise --limit, or page with the API's page_token [\d.]+\)$")
STATUS_KEYS = ("node", "role", "master", "conns", "services", "config", "uptime", "defense", "sync")


@dataclass
class Example:
    source: str
    line: int
    argv: list[str]
    output: list[str] = field(default_factory=list)
    exit_code: int = 0

    @property
    def text(self) -> str:
        return " ".join(["directorctl", *self.argv])


@dataclass
class Doc:
    examples: list[Example] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            if current is None:
                current, start = [], n + 1
            else:
                blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def examples(text: str, source: str) -> Doc:
    doc = Doc()
    for start, lines in _blocks(text):
        if lines and lines[0].startswith("# file: "):
            doc.files[lines[0][len("# file: "):].strip()] = "\n".join(lines[1:]) + "\n"
            continue
        current: Example | None = None
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                current = None
                if line.startswith("$ directorctl"):
                    argv = shlex.split(line[2:], comments=True)[1:]
                    current = Example(source, start + i, argv)
                    doc.examples.append(current)
            elif current is not None:
                current.output.append(line)
    for ex in doc.examples:
        while ex.output and not ex.output[-1].strip():
            ex.output.pop()
        if ex.output and (m := EXIT_LINE.match(ex.output[-1].strip())):
            ex.exit_code = int(m.group(1))
            ex.output.pop()
    return doc


def norm(line: str) -> str:
    return BLANKS.sub(" ", DIGITS.sub("#", line)).rstrip()


def _match_elided(doc: list[str], live: list[str]) -> str | None:
    """Doc lines (with `...` gaps) against live lines, normalized; None when they agree."""
    parts: list[list[str]] = [[]]
    for line in doc:
        if line.strip() == "...":
            parts.append([])
        else:
            parts[-1].append(norm(line))
    got = [norm(x) for x in live]
    if len(parts) == 1:
        return None if parts[0] == got else _diff(parts[0], got)
    head, *middle, tail = parts
    if got[:len(head)] != head:
        return _diff(head, got[:len(head)])
    if tail and got[len(got) - len(tail):] != tail:
        return _diff(tail, got[len(got) - len(tail):])
    pos = len(head)
    for chunk in middle:  # each middle chunk somewhere after the previous one, in order
        while pos <= len(got) - len(chunk) and got[pos:pos + len(chunk)] != chunk:
            pos += 1
        if pos > len(got) - len(chunk):
            return f"not found in order: {chunk}"
        pos += len(chunk)
    return None


def _diff(want: list[str], got: list[str]) -> str:
    return "doc:\n  " + "\n  ".join(want) + "\nlive:\n  " + "\n  ".join(got)


def _rows(doc: list[str], live: list[str], header: int, row: re.Pattern[str]) -> str | None:
    if [norm(x) for x in doc[:header]] != [norm(x) for x in live[:header]]:
        return _diff(doc[:header], live[:header])
    bad = [x for x in doc[header:] + live[header:] if x.strip() != "..." and not row.match(norm_row(x))]
    return f"rows of no known shape: {bad}" if bad else None


def norm_row(line: str) -> str:
    return BLANKS.sub(" ", line.split("<-")[0]).rstrip()


def _status(doc: list[str], live: list[str]) -> str | None:
    def keys(lines: list[str]) -> list[str]:
        return [x.split()[0] for x in lines if x and not x[0].isspace() and x.split()[0] in STATUS_KEYS]
    if keys(doc) != keys(live):
        return _diff(keys(doc), keys(live))
    for line in doc:
        if line.startswith("node") and norm(line) != norm(next(x for x in live if x.startswith("node"))):
            return _diff([line], live)
    return None


def same_shape(ex: Example, live: list[str]) -> str | None:
    """None when the documented output has the live output's shape, else what differs."""
    cmd = ex.argv[0] if ex.argv else ""
    flags = set(ex.argv[1:])
    if cmd in ("list", "ls") and flags & {"-c", "--connection"}:
        return _rows(ex.output, live, 2, CONN_ROW)
    if cmd == "status" and "--json" not in flags:
        return _status(ex.output, live)
    return _match_elided(ex.output, live)
