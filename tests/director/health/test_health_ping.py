"""PING checks in a throw-away network namespace (``unshare --net``, gone when the process ends): the
unprivileged ICMP datagram socket when ``ping_group_range`` admits us, the raw socket otherwise; an
answering address (loopback, IPv4 and IPv6) is up, a silent one
(a lab address on a veth link nobody answers on) is down at the timeout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from director.health.ping import checksum, echo_request

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import asyncio, json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from director.health.ping import check_ping
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "link", "add", "q0", "type", "veth", "peer", "name", "q1"], check=True)
subprocess.run(["ip", "addr", "add", "198.18.99.1/24", "dev", "q0"], check=True)
subprocess.run(["ip", "link", "set", "q0", "up"], check=True)
subprocess.run(["ip", "link", "set", "q1", "up"], check=True)
with open("/proc/sys/net/ipv4/ping_group_range", "w") as fh:
    fh.write(sys.argv[2])
out = {}
for host in ("127.0.0.1", "::1", "198.18.99.2"):
    res = asyncio.run(check_ping(host, 0.5))
    out[host] = [res.ok, res.detail]
print(json.dumps(out))
"""


def ping_in_netns(group_range: str) -> dict[str, list[object]]:
    proc = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", PROBE, str(ROOT), group_range],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[object]] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize(("group_range", "kind"), [("0 2147483647", "dgram"), ("1 0", "raw")])
def test_echo_up_and_silence_down(group_range: str, kind: str) -> None:
    out = ping_in_netns(group_range)
    assert out["127.0.0.1"] == [True, f"echo reply ({kind} icmp socket)"]
    assert out["::1"] == [True, f"echo reply ({kind} icmp socket)"]
    assert out["198.18.99.2"] == [False, f"no echo reply within 0.5s ({kind} icmp socket)"]


def test_echo_request_checksum() -> None:
    pkt = echo_request(4, 0x1234, 7, b"abc")
    assert pkt[:2] == b"\x08\x00" and checksum(pkt) == 0  # a correct checksum sums to zero
    assert echo_request(6, 1, 2, b"x")[:4] == b"\x80\x00\x00\x00"  # the kernel fills ICMPv6 sums
