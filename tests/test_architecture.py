"""The layer contract: the folder tree is the architecture diagram, and imports point one way.

Theory of operation
-------------------
Every module of the product (``director``, ``syncd``) and of the harness (``deploy``) is parsed with
``ast``; every import is collected, wherever it stands (module level, inside a function, under
``if TYPE_CHECKING:``), plus ``importlib.import_module("...")`` calls with a literal name. From that
graph the tests check:

* no import cycle among project modules, runtime or type-only;
* each layer imports only the layers below it (``ALLOWED``), so for instance the data plane never
  sees the admin API or the cluster control plane, syncd sees only table/service types and the
  generated code, and nothing in the product imports the lab harness;
* the pure election machine imports nothing from its etcd driver or the store;
* every module stays under ``MAX_LINES`` lines.

Layers, bottom to top (README's tour says the same in words)::

    types            IPVS nouns: protocols, flags, forwarding methods
    services         virtual services, dests, schedulers, rate estimators
    table            conn table, timer wheel, event feed, protocol state machines
    config           operator documents (service YAML, node YAML) and their validation
    dataplane        packet codec, transmitters, ARP, the packet path, packet I/O
    health           health checkers and their manager
    cluster          etcd store and key layout, election machine and its etcd driver
    syncd            the sync daemon (master and backup sides)
    workers          directord's packet worker processes (workers: N) and their pool in the parent
    admin            API protocol, views, gRPC servicer, directorctl, metrics
    daemon / node    directord: wires the layers (and sets up its log output); nothing imports it
    deploy           lab, drill, etcd launcher: the harness, never imported by the product
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("director", "syncd", "deploy")
PROJECT = ("director", "syncd", "deploy", "lbd_pb")
MAX_LINES = 600
HARNESS_ENTRIES = {("director.admin.cli", "deploy.drill")}
"""The only product -> harness edges: `directorctl drill` imports the drill lazily, by name, when run."""

LAYERS = ["types", "services", "table", "config", "dataplane", "health", "cluster", "syncd", "workers",
          "admin", "daemon", "deploy"]
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "services": {"types"},
    "table": {"types", "services"},
    "config": {"types", "services", "health.spec"},
    "dataplane": {"types", "services", "table", "config"},
    "health": {"types", "services", "config"},
    "cluster": {"types", "config"},
    "syncd": {"types", "services", "table", "lbd_pb"},
    "workers": {"types", "services", "table", "config", "dataplane", "syncd"},
    "admin": {"types", "services", "table", "config", "dataplane", "health", "cluster", "syncd", "lbd_pb",
              "version"},
    "daemon": {"types", "services", "table", "config", "dataplane", "health", "cluster", "syncd", "admin",
               "workers", "version"},
    "deploy": set(LAYERS) | {"lbd_pb", "version"},
}


def modules() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """Project modules imported by the module `name` (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return {m for m in found if m.split(".")[0] in PROJECT}


def graph() -> dict[str, set[str]]:
    mods = dict(modules())
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imp in imports_of(name, path):
            # `from pkg import mod` names a module when pkg.mod exists; otherwise it names an attribute
            while imp not in mods and "." in imp:
                imp = imp.rsplit(".", 1)[0]
            if imp in mods and imp != name:
                targets.add(imp)
        edges[name] = targets
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("syncd", "deploy", "lbd_pb"):
        return parts[0]
    if parts == ["director"]:
        return "version"
    if parts[1] in ("daemon", "node", "logs"):  # logs: the daemon's log output, imported by it alone
        return "daemon"
    if module == "director.health.spec":
        return "health.spec"
    return parts[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_every_layer() -> None:
    edges = graph()
    assert {layer_of(m) for m in edges} >= set(LAYERS) - {"types"} | {"version"}
    assert "director.table.conn" in edges["director.dataplane.core"]  # the parser sees real imports


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_layer_imports_only_layers_below_it() -> None:
    bad = []
    for src, targets in graph().items():
        src_layer = layer_of(src)
        allowed = ALLOWED.get(src_layer, set()) | {src_layer}
        if src_layer == "health.spec":
            allowed = {"health.spec", "config"}
        for dst in targets:
            dst_layer = layer_of(dst)
            if (src, dst) in HARNESS_ENTRIES:
                continue
            if dst_layer == "health.spec" and "health" in allowed:
                continue
            if dst_layer not in allowed:
                bad.append(f"{src} ({src_layer}) imports {dst} ({dst_layer})")
    assert bad == []


def test_nothing_imports_the_daemon_and_the_product_never_imports_the_harness() -> None:
    edges = graph()
    importers = {src for src, targets in edges.items()
                 if ("director.daemon" in targets and not src.startswith("deploy"))}
    assert importers == set()
    product = {src: t for src, t in edges.items() if not src.startswith("deploy")}
    harness = {(s, d) for s, t in product.items() for d in t if d.startswith("deploy")}
    assert harness <= HARNESS_ENTRIES


def test_the_election_machine_is_pure() -> None:
    targets = graph()["director.cluster.election"]
    assert targets <= {"director.types", "director.config.node", "director.cluster.promises",
                       "director.cluster.leader"}, targets
    assert graph()["director.cluster.promises"] == set()
    assert graph()["director.cluster.leader"] == set()


def test_modules_stay_small() -> None:
    big = {name: n for name, path in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert big == {}
