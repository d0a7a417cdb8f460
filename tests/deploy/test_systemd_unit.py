"""deploy/systemd/directord@.service: notify + watchdog, a dedicated user with two capabilities, the exit
hook kept, and `systemd-analyze security` (offline, on the file) at or under 3.0 where it can run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "directord@.service"
SYSUSERS = UNIT.parent / "lbd.sysusers.conf"


def service_section() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_notify_watchdog_user_capabilities_exit_hook() -> None:
    s = service_section()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert int(s["WatchdogSec"][0]) >= 2  # supervise() pings every half period, at least every 0.2 s
    assert s["User"] == ["lbd"] and s["Group"] == ["lbd"]
    assert re.search(r"^u lbd\b", SYSUSERS.read_text(), re.MULTILINE)
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        assert set(s[key][0].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}, key
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_PACKET",
                                                           "AF_NETLINK"}
    assert s["ExecStopPost"] == ["/opt/lbd/.venv/bin/python -m director.cluster.release /run/lbd/%i.lease"]
    assert "--lease-file /run/lbd/%i.lease" in s["ExecStart"][0]
    assert s["SystemCallFilter"][0] == "@system-service"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "RestrictNamespaces", "MemoryDenyWriteExecute", "LockPersonality"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert "ProcSubset" not in s  # the defense sizing reads /proc/meminfo


def test_systemd_analyze_security_at_most_3(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: `make setup` installs systemd"
    unit = tmp_path / "directord@t.service"
    shutil.copy(UNIT, unit)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                          text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m is not None, f"systemd-analyze did not score the unit: {proc.stderr.strip()[:200]}"
    assert float(m.group(1)) <= 3.0, proc.stdout
