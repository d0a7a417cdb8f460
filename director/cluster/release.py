"""Release a dead master's lease at once: the process-exit hook (`ExecStopPost=`, the lab launcher).

Theory of operation
-------------------
When directord wins the election it records its lease in a small *lease file* (JSON: etcd
endpoints, cluster key prefix, lease id, node id, pid), written by the election thread before the
node forwards a single packet. When the directord *process* dies (crash, OOM kill, kill -9) its host
knows at once, while etcd would only notice after the lease TTL. Something that outlives the
process then calls `release()`: systemd's ``ExecStopPost=`` (it runs after the whole cgroup is
gone, so nothing of the old master can still forward), or the lab launcher after it reaped the
process group. Revoking the lease deletes the leader key; the backups' watches see it within a
round trip and the synced one takes over in milliseconds instead of a TTL.

The hook uses the standard library only (etcd's JSON gateway, ``POST /v3/lease/revoke``): no gRPC
or protobuf import, so the process that runs it starts and finishes in tens of milliseconds.

Safety: `release()` refuses while the recorded pid is still alive (``--force`` overrides, for a
pid that was reused), and revoking a lease that already expired or was revoked is a no-op. A lease
id names one grant of one etcd cluster, so releasing a stale file can never revoke someone else's
mastership. The file is removed after a successful release.

``python -m director.cluster.release LEASE_FILE`` (also ``directorctl release-lease``).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class LeaseRecord:
    endpoints: tuple[str, ...]
    prefix: str
    cluster: str
    node_id: str
    lease_id: int
    pid: int
    epoch: int = 0


def write_lease_file(path: str | Path, rec: LeaseRecord) -> None:
    """Atomically (rename) record the lease we hold; called on the election thread."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(asdict(rec)))
    os.replace(tmp, p)


def read_lease_file(path: str | Path) -> LeaseRecord:
    obj = json.loads(Path(path).read_text())
    return LeaseRecord(tuple(str(e) for e in obj["endpoints"]), str(obj["prefix"]), str(obj["cluster"]),
                       str(obj["node_id"]), int(obj["lease_id"]), int(obj["pid"]), int(obj.get("epoch", 0)))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _post(endpoint: str, path: str, body: dict[str, str], timeout: float) -> tuple[int, str]:
    host = endpoint.split("://", 1)[-1]
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(4096).decode(errors="replace")
    finally:
        conn.close()


def revoke(endpoint: str, lease_id: int, timeout: float) -> None:
    """Revoke one lease through etcd's JSON gateway; a lease already gone is not an error."""
    status, body = _post(endpoint, "/v3/lease/revoke", {"ID": str(lease_id)}, timeout)
    if status != 200 and "not found" not in body:
        raise OSError(f"etcd {endpoint} answered {status}: {body[:200]}")


def announce_released(endpoint: str, rec: LeaseRecord, timeout: float) -> None:
    """Write ``leader-released`` = the dead master's epoch (see director.cluster.members): backups
    drop their promise to it at once instead of waiting for it to lapse."""
    key = f"/{rec.prefix.strip('/')}/{rec.cluster}/leader-released"
    value = json.dumps({"epoch": rec.epoch})
    status, body = _post(endpoint, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                                 "value": base64.b64encode(value.encode()).decode()}, timeout)
    if status != 200:
        raise OSError(f"etcd {endpoint} answered {status}: {body[:200]}")


def release(path: str | Path, *, force: bool = False, timeout: float = 2.0) -> str:
    """Revoke the lease recorded in `path`; returns what was done (raises on refusal/failure)."""
    try:
        rec = read_lease_file(path)
    except FileNotFoundError:
        return "no lease file: nothing to release"
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a lease file ({exc})") from None
    if not force and pid_alive(rec.pid):
        raise RuntimeError(f"directord pid {rec.pid} is still running; refusing to release its lease")
    errors = []
    for endpoint in rec.endpoints:  # any member will do; try them in order
        try:
            if rec.epoch:
                announce_released(endpoint, rec, timeout)
            revoke(endpoint, rec.lease_id, timeout)
            break
        except OSError as exc:
            errors.append(f"{endpoint}: {exc}")
    else:
        raise OSError("; ".join(errors) or "no etcd endpoint")
    Path(path).unlink(missing_ok=True)
    return f"released lease {rec.lease_id:x} of {rec.node_id}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m director.cluster.release",
                                 description="revoke a dead directord's etcd lease (process-exit hook)")
    ap.add_argument("lease_file")
    ap.add_argument("--force", action="store_true", help="release even if the recorded pid is alive")
    args = ap.parse_args(argv)
    try:
        print(release(args.lease_file, force=args.force))
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"release-lease: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
