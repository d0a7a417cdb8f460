"""YAML for operator documents, parsed with limits: size, depth, aliases, tags, duplicate keys.

Theory of operation
-------------------
``yaml.safe_load`` is safe against code execution, not against cost: a few hundred bytes of
nested aliases ("billion laughs") describe a tree of billions of nodes that any walk over the
data (a validator, a ``repr``) expands; deep nesting overflows the composer's recursion; a bad
``!!timestamp`` or ``!!int`` escapes as a bare ``ValueError``; and a duplicated key silently wins.

``load_yaml`` refuses all of that *before* building Python objects, while the document is
composed: the loader below subclasses the safe loader and keeps, for every composed node, its
expanded size (nodes once every alias is replaced by what it names) and its height. Each new node
adds 1 to a running total and each alias adds the expanded size of its target, so the total is
the size of the expanded tree and composing stops as soon as it passes ``max_nodes`` — the work
done is proportional to the *text*, never to the expansion. Depth counts through aliases the same
way; an alias to a node still being composed (a recursive structure) is refused; so are more than
``max_aliases`` aliases. Only the plain data tags are constructed (null, bool, int, float, str,
seq, map; ``<<`` merge keys work): timestamps are read as strings, ``!!binary``, ``!!set``,
``!!python/...`` and unknown tags are refused by name. A key repeated in one mapping is refused.

Events come from libyaml when it is available (several times faster than the pure-Python
scanner); composing, the limits and construction are the Python code here either way. Text may be
``bytes`` (decoded as strict UTF-8) or ``str`` (lone surrogates, e.g. from ``surrogateescape``,
are refused as non-UTF-8 input). Every failure is one ``YamlError`` with a bounded message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node
from yaml.resolver import Resolver

from director.config.validate import excerpt

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 200_000
MAX_ALIASES = 1_000
_MESSAGE = 240


class YamlError(ValueError):
    """The text is not a YAML document we accept; the message is one bounded line."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_DOCUMENT_BYTES
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES
    max_aliases: int = MAX_ALIASES


DEFAULT_LIMITS = Limits()

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"
_ALLOWED_TAGS = ("null", "bool", "int", "float", "str", "seq", "map")


class _LimitError(yaml.YAMLError):
    pass


class _Resolver(Resolver):
    """The YAML 1.1 implicit types minus timestamps (a date-like scalar stays a string)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in rules if tag != _TIMESTAMP]
        for first, rules in Resolver.yaml_implicit_resolvers.items()
    }


class _Constructor(SafeConstructor):
    yaml_constructors: ClassVar[dict[Any, Any]] = {
        **{f"tag:yaml.org,2002:{t}": SafeConstructor.yaml_constructors[f"tag:yaml.org,2002:{t}"]
           for t in _ALLOWED_TAGS},
        None: SafeConstructor.construct_undefined,
    }
    yaml_multi_constructors: ClassVar[dict[Any, Any]] = {}

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """SafeConstructor's, refusing a key given twice (keys merged in with ``<<`` may be overridden)."""
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping node, but found {node.id}",
                                   node.start_mark)
        own = sum(1 for k, _v in node.value if k.tag != _MERGE)
        self.flatten_mapping(node)
        first_own = len(node.value) - own  # flatten_mapping puts the merged pairs first
        mapping: dict[Any, Any] = {}
        own_keys: set[Any] = set()
        for i, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       "found unhashable key", key_node.start_mark) from None
            if i >= first_own:
                if key in own_keys:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f"found duplicate key {excerpt(key, 40)}", key_node.start_mark)
                own_keys.add(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


class _LimitedComposer(Composer):
    """Composer that counts expanded nodes, depth and aliases (see the module docstring).

    ``_stats`` maps each anchor to (expanded size, height) of its node once composed, None while
    it is being composed; ``_peak`` is the deepest level reached inside the current anchored node.
    """

    limits: Limits = DEFAULT_LIMITS
    # from the parser this class is mixed with (Python or libyaml)
    peek_event: Any
    check_event: Any

    def _init_limits(self, limits: Limits) -> None:
        self.limits = limits
        self._depth = 0
        self._peak = 0
        self._total = 0
        self._aliases = 0
        self._stats: dict[str, tuple[int, int] | None] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        lim = self.limits
        self._depth = depth = self._depth + 1
        if depth > lim.max_depth:
            raise _LimitError(f"nested deeper than {lim.max_depth} levels")
        anchor = self.peek_event().anchor
        if self.check_event(AliasEvent):
            if anchor in self._stats:
                self._alias(anchor, depth)
        elif anchor is not None and anchor not in self._stats:
            anchored = self._compose_anchored(parent, index, anchor, depth)
            self._depth -= 1
            return anchored
        else:
            self._count(1)
            if depth > self._peak:
                self._peak = depth
        node: Node = super().compose_node(parent, index)  # type: ignore[assignment]
        self._depth -= 1
        return node

    def _alias(self, anchor: str, depth: int) -> None:
        stats = self._stats[anchor]
        if stats is None:
            raise _LimitError(f"recursive alias *{excerpt(anchor, 40)}")
        size, height = stats
        self._aliases += 1
        if self._aliases > self.limits.max_aliases:
            raise _LimitError(f"more than {self.limits.max_aliases} aliases")
        self._count(size)
        reach = depth + height - 1
        if reach > self.limits.max_depth:
            raise _LimitError(f"nested deeper than {self.limits.max_depth} levels (through an alias)")
        self._peak = max(self._peak, reach)

    def _compose_anchored(self, parent: Node | None, index: Any, anchor: str, depth: int) -> Node:
        self._count(1)
        before, outer_peak = self._total - 1, self._peak
        self._peak = depth
        self._stats[anchor] = None
        node: Node = super().compose_node(parent, index)  # type: ignore[assignment]
        self._stats[anchor] = (self._total - before, self._peak - depth + 1)
        self._peak = max(outer_peak, self._peak)
        return node

    def _count(self, n: int) -> None:
        self._total += n
        if self._total > self.limits.max_nodes:
            raise _LimitError(f"more than {self.limits.max_nodes} nodes once aliases are expanded")


class _PyLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, _LimitedComposer,
                _Constructor, _Resolver):
    def __init__(self, stream: str, limits: Limits) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self._init_limits(limits)


_Loader: Any = _PyLoader
if getattr(yaml, "__with_libyaml__", False):
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _CLoader(_LimitedComposer, CParser, _Constructor, _Resolver):
        """libyaml's event parser under the Python composer (whose limits the C one lacks)."""

        def __init__(self, stream: str, limits: Limits) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)
            self._init_limits(limits)

    _Loader = _CLoader


def _message(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= _MESSAGE else text[: _MESSAGE - 3] + "..."


def decode(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """The document as str: size-checked, strict UTF-8 (``YamlError`` otherwise)."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if len(raw) > limits.max_bytes:
            raise YamlError(f"document too large: {len(raw)} bytes (at most {limits.max_bytes})")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise YamlError(f"not valid UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}") from None
    if len(text) > limits.max_bytes or (4 * len(text) > limits.max_bytes
                                        and len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes):
        raise YamlError(f"document too large: more than {limits.max_bytes} bytes")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise YamlError(f"not valid UTF-8: undecodable character at offset {e.start}") from None
    return text


def load_yaml(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """One YAML document as plain data (dict, list, str, int, float, bool, None), within ``limits``."""
    doc = decode(text, limits)
    loader = _Loader(doc, limits)
    try:
        return loader.get_single_data()
    except _LimitError as e:
        raise YamlError(f"refused: {_message(e)}") from None
    except yaml.YAMLError as e:
        raise YamlError(f"not valid YAML: {_message(e)}") from None
    except (ValueError, ArithmeticError, TypeError, RecursionError) as e:
        # what a constructor raises for a value its tag cannot hold (e.g. "!!int x", "!!float y")
        raise YamlError(f"not valid YAML: bad value: {_message(e)}") from None
    finally:
        loader.dispose()
