"""directord as systemd runs it (deploy/systemd/directord@.service): a non-root user whose only
capabilities are CAP_NET_RAW and CAP_NET_ADMIN (ambient), with no_new_privs, passes the kill and
switchback drill. `setpriv` drops to ``nobody`` between `ip netns exec` and python (one exec chain:
the launcher's pid is the node's); each start is checked in /proc before the drill goes on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.cluster import NodeProc, wait_for
from deploy.drill import Drill

pytestmark = [pytest.mark.lab, pytest.mark.etcd]

CAPS = "-all,+net_raw,+net_admin"
UNPRIVILEGED = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", f"--inh-caps={CAPS}",
                f"--ambient-caps={CAPS}", f"--bounding-set={CAPS}", "--no-new-privs")
NET_ADMIN_RAW = (1 << 12) | (1 << 13)


def credentials(pid: int) -> dict[str, int] | None:
    """uid and capability sets of a running directord (None until the exec chain reached python)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"director.daemon" not in argv or b"python" not in argv[0].rsplit(b"/", 1)[-1]:
            return None  # still `ip netns exec` or `setpriv`
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    except (FileNotFoundError, ProcessLookupError):
        return None
    out = {k: int(fields[k].split()[0], 16) for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")}
    out["uid"] = int(fields["Uid"].split()[0])
    out["no_new_privs"] = int(fields["NoNewPrivs"].strip())
    return out


def test_drill_as_a_non_root_user_with_two_capabilities() -> None:
    drill = Drill(conns=40, new_rate=20.0, phases=("kill", "switchback"))
    drill.cluster.node_prefix = UNPRIVILEGED
    seen: list[dict[str, int]] = []
    start = drill.cluster.start_node

    def start_and_check(node: NodeProc) -> None:
        start(node)
        proc = node.proc
        assert proc is not None
        seen.append(wait_for(f"{node.node_id} running python", lambda: credentials(proc.pid), 20))

    drill.cluster.start_node = start_and_check  # type: ignore[method-assign]
    report = drill.run()
    assert len(seen) >= 3  # both nodes, and d1 again after its kill
    for creds in seen:
        assert creds["uid"] == 65534 and creds["no_new_privs"] == 1, creds
        assert {creds[k] for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")} == {NET_ADMIN_RAW}, creds
    for phase in ("kill", "switchback"):
        p = report[phase]
        assert p["connections_survived"] == p["connections_total"] == 40, p
        assert p["resets_seen"] == 0 and p["bytes_verified"] > 0, p
        assert p["templates_kept"] == p["templates_total"] > 0, p
        assert p["split_brain_seen"] is False, p
