"""Every `$ directorctl ...` example of README.md and docs/ADMIN.md runs against a live lab node and
prints output of the documented shape (headers, columns, keys, messages; numbers may differ).

The lab is the drill's (two `directord` nodes, real etcd, three real servers, the drill's services)
with the traffic tool running, so the tables have rows. Examples run in document order (README,
then ADMIN), through `DIRECTORCTL_ADDR` = the first node's admin socket (an `--addr` in an example is
replaced by it), in a directory holding the docs' `# file:` blocks. The few examples the lab cannot
run are listed in `NOT_RUN` with the reason. `python -m tests.deploy.test_docs_commands` prints the
transcript of a lab run (what ADMIN.md's outputs were captured from).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from deploy.cluster import wait_for
from director.admin.cli_parser import build_parser
from tests.deploy.doccmds import Doc, Example, examples, same_shape
from tests.lab.clusterenv import ClusterEnv, cluster_env

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", ROOT / "docs" / "ADMIN.md")
NOT_RUN = {
    "drill": "builds its own lab and runs minutes of traffic and faults (`make demo`; tests/lab/test_ha.py)",
    "release-lease": "needs the lease file of a node killed without its exit hook "
                     "(tests/lab/test_failover.py)",
}
"""Commands the docs show that this test does not run, and why."""


def load() -> list[Doc]:
    return [examples(p.read_text(), p.name) for p in DOCS]


def test_docs_examples_are_concrete_commands() -> None:
    parser = build_parser()
    docs = load()
    seen = {ex.argv[0] for d in docs for ex in d.examples if ex.argv and not ex.argv[0].startswith("-")}
    assert {"list", "status", "apply", "add-service", "add-dest", "edit-service", "edit-dest",
            "delete-dest", "delete-service", "save", "restore", "import-keepalived", "check", "drain",
            "timeouts", "failover", "flush", "zero", "watch", "get"} <= seen
    for d in docs:
        for ex in d.examples:
            if ex.argv and ex.argv[0] in NOT_RUN:
                continue
            where = f"{ex.source}:{ex.line} {ex.text}"
            assert not any(t.startswith("[") or t == "..." for t in ex.argv), where
            if ex.argv != ["--version"]:
                parser.parse_known_args(ex.argv)  # SystemExit (usage error) fails the test


def argv_for(ex: Example, addr: str) -> list[str]:
    argv = list(ex.argv)
    if "--addr" in argv:
        argv[argv.index("--addr") + 1] = addr
    return argv


def run(argv: list[str], cwd: Path, addr: str, timeout: float = 120.0) -> tuple[int, list[str]]:
    env = {**os.environ, "DIRECTORCTL_ADDR": addr, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "director.admin.cli", *argv], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    return res.returncode, (res.stdout + res.stderr).splitlines()


def run_watch(argv: list[str], cwd: Path, addr: str) -> tuple[int, list[str]]:
    """`watch --count N` ends after N events: write config until it has seen them."""
    result: dict[str, tuple[int, list[str]]] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run(argv, cwd, addr)), daemon=True)
    t.start()

    udp = iter(range(301, 10_000))

    def done() -> bool:
        run(["timeouts", "--udp", str(next(udp))], cwd, addr)  # a real change: a config event
        t.join(0.5)
        return not t.is_alive()

    wait_for("watch to see its events", done, 60, 0.1)
    run(["timeouts", "--udp", "300"], cwd, addr)
    return result["r"]


def transcript(env: ClusterEnv, cwd: Path, out: list[str] | None = None) -> list[str]:
    """Run every example; the list of mismatches (and, given `out`, the transcript)."""
    node = env.cluster.nodes[0]
    addr = f"unix:{env.cluster.admin_socket(node)}"
    problems: list[str] = []
    for doc in load():
        for name, text in doc.files.items():
            (cwd / name).write_text(text)
        for ex in doc.examples:
            if ex.argv and ex.argv[0] in NOT_RUN:
                continue
            argv = argv_for(ex, addr)
            code, live = run_watch(argv, cwd, addr) if ex.argv[0] == "watch" else run(argv, cwd, addr)
            if out is not None:
                out.extend([f"$ {ex.text}", *live, f"(exit {code})", ""])
            if code != ex.exit_code:
                problems.append(f"{ex.source}:{ex.line} {ex.text}: exit {code}, documented {ex.exit_code}\n"
                                + "\n".join(live[-10:]))
            elif (why := same_shape(ex, live)) is not None:
                problems.append(f"{ex.source}:{ex.line} {ex.text}:\n{why}")
    return problems


@pytest.mark.lab
@pytest.mark.etcd
def test_docs_commands_run_on_a_lab_node(tmp_path: Path) -> None:
    with cluster_env(conns=12) as env:
        env.start_traffic()
        problems = transcript(env, tmp_path)
    assert problems == [], "\n\n".join(problems)


def main() -> None:  # pragma: no cover - the capture tool for the docs
    import tempfile

    lines: list[str] = []
    with tempfile.TemporaryDirectory() as d, cluster_env(conns=12) as env:
        env.start_traffic()
        problems = transcript(env, Path(d), lines)
    print("\n".join(lines))
    print("\n".join(["--- mismatches ---", *problems]), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    main()


def test_shape_comparison_tells_stale_docs_from_new_numbers() -> None:
    doc = examples("```\n$ directorctl list --stats    # a comment\n"
                   "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
                   "TCP  198.18.0.10:80                     3     3600        0  4500000        0\n"
                   "...\n"
                   "(exit 0)\n```\n"
                   "```\n# file: x.yaml\nservices: []\n```\n", "t.md")
    (ex,) = doc.examples
    assert ex.argv == ["list", "--stats"] and ex.exit_code == 0 and doc.files == {"x.yaml": "services: []\n"}
    live = ["Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
            "TCP  198.18.0.10:80                    12       99        1       77        5", "  -> more"]
    assert same_shape(ex, live) is None  # other numbers, more lines where the doc elides
    assert same_shape(ex, ["Prot LocalAddress:Port Conns InPkts OutPkts", *live[1:]]) is not None
    conns = Example("t", 1, ["list", "-c"], ["IPVS connection entries", "pro expire state x",
                                             "TCP 04:58  NONE        198.18.0.100:0        198.18.0.10:80"
                                             "        198.18.1.10:80"])
    assert same_shape(conns, conns.output[:2]) is None
    assert same_shape(conns, [*conns.output[:2], "TCP 4:58 NONE 198.18.0.100:0"]) is not None
