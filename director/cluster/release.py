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

The hook uses a few standard modules only (etcd's JSON gateway, ``POST /v3/lease/revoke``, over a
plain socket): no gRPC, protobuf, http.client or argparse import, so ``python -S -m
director.cluster.release`` starts and finishes in about 20 ms.

Safety: `release()` refuses while the recorded pid is still alive (``--force`` overrides, for a
pid that was reused), and revoking a lease that already expired or was revoked is a no-op. A lease
id names one grant of one etcd cluster, so releasing a stale file can never revoke someone else's
mastership. The file is removed after a successful release.

``python -m director.cluster.release LEASE_FILE`` (also ``directorctl release-lease``).
"""

from __future__ import annotations

import binascii
import json
import os
import socket
import sys

FIELDS = ("endpoints", "prefix", "cluster", "node_id", "lease_id", "pid", "epoch")


class LeaseRecord:
    """What the lease file holds (a plain class: dataclasses would cost the hook 7 ms of import)."""

    __slots__ = FIELDS

    def __init__(self, endpoints: tuple[str, ...], prefix: str, cluster: str, node_id: str, lease_id: int,
                 pid: int, epoch: int = 0) -> None:
        self.endpoints, self.prefix, self.cluster, self.node_id = endpoints, prefix, cluster, node_id
        self.lease_id, self.pid, self.epoch = lease_id, pid, epoch

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in FIELDS}


def write_lease_file(path: str | os.PathLike[str], rec: LeaseRecord) -> None:
    """Atomically (rename) record the lease we hold; called on the election thread."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(rec.as_dict()))
    os.replace(tmp, path)


def read_lease_file(path: str | os.PathLike[str]) -> LeaseRecord:
    with open(path) as f:
        obj = json.loads(f.read())
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
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _post(endpoint: str, path: str, body: dict[str, str], timeout: float) -> tuple[int, str]:
    """One HTTP/1.1 POST with ``Connection: close``; returns (status, body)."""
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
        s.sendall(head + data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise OSError(f"etcd {hostport}: not an HTTP answer: {status_line[:80]!r}") from None
    return status, rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


def _b64(text: str) -> str:
    return binascii.b2a_base64(text.encode(), newline=False).decode()


def revoke(endpoint: str, lease_id: int, timeout: float) -> None:
    """Revoke one lease through etcd's JSON gateway; a lease already gone is not an error."""
    status, body = _post(endpoint, "/v3/lease/revoke", {"ID": str(lease_id)}, timeout)
    if status != 200 and "not found" not in body:
        raise OSError(f"etcd {endpoint} answered {status}: {body[:200]}")


def announce_released(endpoint: str, rec: LeaseRecord, timeout: float) -> None:
    """Write ``leader-released`` = the dead master's epoch (see director.cluster.members): backups
    drop their promise to it at once instead of waiting for it to lapse."""
    # members.released_key, spelled out here: the hook must not import the gRPC store
    key = f"/{rec.prefix.strip('/')}/{rec.cluster}/leader-released"
    value = json.dumps({"epoch": rec.epoch})
    status, body = _post(endpoint, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, timeout)
    if status != 200:
        raise OSError(f"etcd {endpoint} answered {status}: {body[:200]}")


def release(path: str | os.PathLike[str], *, force: bool = False, timeout: float = 2.0) -> str:
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
    os.unlink(path)
    return f"released lease {rec.lease_id:x} of {rec.node_id}"


USAGE = """usage: python -m director.cluster.release [--force] LEASE_FILE

Revoke a dead directord's etcd lease (the process-exit hook). --force: even if the recorded pid lives."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    files = [a for a in args if a != "--force"]
    if len(files) != 1 or any(a.startswith("-") for a in files):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        print(release(files[0], force=force))
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"release-lease: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
