"""`directorctl import-keepalived keepalived.conf`: a keepalived user's config as the service YAML.

Theory of operation
-------------------
The translation is `director.config.keepalived.translate` (pure). This module reads the file, checks
the result with the real config parser, prints the service YAML on stdout (or `-o FILE`), the
node-config fragment (notify hooks, priority, preempt, with notes on the VRRP settings it replaces)
as comments after it or into `--node-config FILE`, and every statement it did not translate on
stderr as `FILE: line N: where: why` (and as JSON with `--report FILE`). With `--apply` the
services go through the admin API like `apply -f` (diff first; `--dry-run`, `--prune`).

Exit codes: 0 translated (even partly: the untranslated lines are listed), 2 with `--strict` when
anything was not translated, 7 when the result does not validate (the errors name the fields).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import yaml

from director.admin.cli_base import EXIT, Client, UsageError, warn, write_file
from director.admin.cli_ops import apply_document
from director.config.keepalived import Imported, summary, translate

MAX_CONF_BYTES = 1 << 20


def _read_conf(path: str) -> str:
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_CONF_BYTES + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_CONF_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONF_BYTES:
        raise UsageError(f"{path}: larger than {MAX_CONF_BYTES} bytes")
    return raw.decode("utf-8", errors="replace")


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def node_fragment_text(imp: Imported, source: str) -> str:
    """The node-config fragment as YAML, its notes as comments above it."""
    lines = [f"# node config fragment from {source}: merge into each director's node YAML"]
    lines += [f"# {note}" for note in imp.notes]
    frag = imp.node_fragment()
    return "\n".join(lines) + "\n" + (_dump(frag) if frag else "# (no notify hooks or priority)\n")


def services_text(imp: Imported, source: str) -> str:
    text = f"# services translated from {source} by directorctl import-keepalived\n" + _dump(imp.document())
    if imp.pending:
        text += ("# fwmark virtual servers: add each one's group: (the selectors your iptables rules mark),\n"
                 "# then move it under services:\n")
        text += "".join(f"# {line}\n" for line in _dump(imp.pending).splitlines())
    return text


def _validate(imp: Imported) -> list[str]:
    from director.config.services import config_from_dict
    from director.config.validate import ConfigError

    try:
        config_from_dict(imp.document())
    except ConfigError as exc:
        return list(exc.errors)
    return []


def _emit(args: argparse.Namespace, imp: Imported, out: TextIO) -> str:
    text = services_text(imp, args.conf)
    node = node_fragment_text(imp, args.conf)
    for u in imp.untranslated:
        warn(args, f"import-keepalived: {args.conf}: {u}")
    if args.report:
        report = {"source": args.conf, "untranslated": summary(imp.untranslated)}
        write_file(args.report, json.dumps(report, indent=2) + "\n")
    if args.node_config:
        write_file(args.node_config, node)
    if args.apply:
        return text
    if args.output:
        write_file(args.output, text)
    else:
        out.write(text)
    if not args.node_config:
        comments = "\n" + "".join(f"# {line}\n" if not line.startswith("#") else f"{line}\n"
                                  for line in node.splitlines())
        if args.output:
            write_file(args.output, comments, mode="a")
        else:
            out.write(comments)
    return text


def _finish(args: argparse.Namespace, imp: Imported) -> int | None:
    errors = _validate(imp)
    for line in errors:
        warn(args, f"import-keepalived: the result does not validate: {line}")
    if errors:
        return EXIT["invalid"]
    if args.strict and imp.untranslated:
        warn(args, f"import-keepalived: {len(imp.untranslated)} statement(s) not translated (--strict)")
        return EXIT["usage"]
    return None


def cmd_import_offline(args: argparse.Namespace, out: TextIO) -> int:
    imp = translate(_read_conf(args.conf))
    _emit(args, imp, out)
    code = _finish(args, imp)
    return EXIT["ok"] if code is None else code


def cmd_import_keepalived(c: Client, args: argparse.Namespace, out: TextIO) -> int:
    """`--apply`: translate, validate, then write through the admin API like `apply -f`."""
    imp = translate(_read_conf(args.conf))
    text = _emit(args, imp, out)
    code = _finish(args, imp)
    if code is not None:
        warn(args, "import-keepalived: nothing written")
        return code
    return apply_document(c, text, args, out, prune=args.prune)
