"""Notify hooks and a MISC health check through real `directord` nodes in the lab (real etcd, real
election): the role hooks run on each node; the misc check's dynamic weight reaches both nodes' tables
(read over their admin sockets); the dest hooks run on the master when its misc check flips a dest;
the old master reports ``fault`` when it stops. Conditions are polled with generous deadlines;
nothing asserts a duration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.cluster import LabCluster, wait_for
from deploy.lab import VIP_NAT, Lab, new_name, real_addr
from lbd_pb import admin_pb2 as pb
from lbd_pb.admin_pb2_grpc import AdminStub

pytestmark = [pytest.mark.lab, pytest.mark.etcd]


def setup_files(lab: Lab) -> tuple[Path, Path, Path, Path]:
    """(hook script, its log, misc check script, the flag that makes the check fail). The check exits
    2 + the number in `<flag>.weight` when that file exists (misc_dynamic: that weight)."""
    wd = lab.workdir
    log, flag = wd / "hooks.log", wd / "real1.down"
    hook, check = wd / "hook.sh", wd / "check.sh"
    hook.write_text('#!/bin/sh\nread -r json\necho "$LBD_EVENT $LBD_NODE $LBD_DEST $LBD_REASON|$json" '
                    f">> {log}\n")
    check.write_text(f'#!/bin/sh\n[ "$LBD_DEST" = "{real_addr(1)}:80" ] || exit 1\n[ -e {flag} ] && exit 1\n'
                     f'[ -e {flag}.weight ] && exit $((2 + $(cat {flag}.weight)))\nexit 0\n')
    for p in (hook, check):
        p.chmod(0o755)
    return hook, log, check, flag


def services(check: Path) -> str:
    health = (f"health: {{type: misc, command: [{check}], dynamic: true, interval: 0.2, timeout: 5, "
              "rise: 1, fall: 1}")
    return (f"services:\n  - name: web\n    protocol: tcp\n    vip: {VIP_NAT}\n    port: 80\n"
            f"    scheduler: rr\n    forward: nat\n    dests:\n"
            f"      - {{address: {real_addr(1)}, port: 80, weight: 1, {health}}}\n"
            f"      - {{address: {real_addr(2)}, port: 80, weight: 1}}\n")


def weight_of(stub: Any) -> int:
    """real1's running weight in a node's tables (its admin API)."""
    svc = stub.ListServices(pb.ListServicesRequest(), timeout=10).services[0]
    return int(next(d for d in svc.dests if d.address == real_addr(1)).weight)


def hook_lines(log: Path, node: str) -> list[str]:
    """The hooks `node` ran, in order (the event names)."""
    if not log.exists():
        return []
    rows = [x.split("|")[0].split(" ") for x in log.read_text().splitlines()]
    return [r[0] for r in rows if len(r) > 1 and r[1] == node]


@pytest.fixture
def env() -> Iterator[tuple[LabCluster, Path, Path, Path]]:
    lab = Lab(new_name(), n_directors=2, n_reals=2)
    lab.up()  # (a fresh lab starts from an empty workdir: the scripts go in after)
    hook, log, check, flag = setup_files(lab)
    hooks = ", ".join(f"{h}: [{hook}]" for h in ("master", "backup", "fault", "dest_up", "dest_down"))
    cluster = LabCluster(lab, n_nodes=2, node_extra=f"notify: {{{hooks}, timeout: 10}}")
    try:
        yield cluster, log, check, flag
    finally:
        cluster.close()
        lab.down()


def test_role_and_dest_hooks_on_real_nodes(env: tuple[LabCluster, Path, Path, Path]) -> None:
    cluster, log, check, flag = env
    master = cluster.bring_up(services(check))
    backup = next(n for n in cluster.nodes if n is not master)
    m, b = master.node_id, backup.node_id
    wait_for("the master and backup hooks", lambda: "master" in hook_lines(log, m)
             and "backup" in hook_lines(log, b), 60)
    stubs = [AdminStub(grpc.insecure_channel(f"unix:{cluster.admin_socket(n)}")) for n in cluster.nodes]
    Path(f"{flag}.weight").write_text("5\n")  # exit 7: up with weight 5, on every node
    wait_for("the dynamic weight on both nodes", lambda: all(weight_of(s) == 5 for s in stubs), 60)
    Path(f"{flag}.weight").unlink()  # exit 0: the configured weight again
    wait_for("the configured weight on both nodes", lambda: all(weight_of(s) == 1 for s in stubs), 60)
    flag.touch()  # the misc check of real1 now exits 1: down
    wait_for("the master's dest_down hook", lambda: hook_lines(log, m)[-1:] == ["dest_down"], 60)
    flag.unlink()
    wait_for("the master's dest_up hook", lambda: hook_lines(log, m)[-1:] == ["dest_up"], 60)
    cluster.stop_node(master)
    wait_for("the backup's master hook", lambda: "master" in hook_lines(log, b), 60)
    wait_for("the old master's fault hook", lambda: hook_lines(log, m)[-1:] == ["fault"], 60)
    ran = hook_lines(log, m)  # a stopping master resigns (fault), is a backup while it hands over,
    assert ran[ran.index("master"):][:4] == ["master", "dest_down", "dest_up", "fault"], ran
    assert set(ran[ran.index("master") + 4:]) <= {"backup", "fault"}, ran  # then stops (fault last)
    assert not {"dest_up", "dest_down"} & set(hook_lines(log, b))  # the master's probes decide
    rows = [x for x in log.read_text().splitlines() if x.startswith(f"dest_down {m} ")]
    dest, payload = rows[0].split(" ")[2], rows[0].split("|", 1)[1]
    assert dest == f"{real_addr(1)}:80" and f'"dest": "{real_addr(1)}:80"' in payload
    assert '"detail": "exit 1"' in payload and '"event": "dest_down"' in payload
