"""TLS / mutual TLS credentials for the sync channel (cluster CA, node cert and key as PEM files).

Theory of operation
-------------------
Both ends load the same three files from the node config (``sync.tls: {ca, cert, key}``): the
master serves with its cert and *requires* a client certificate signed by the cluster CA; a
backup verifies the master against the same CA and presents its own cert. Anyone without the
cluster's credentials cannot follow (the handshake fails before any RPC runs). ``server_name``
overrides the name checked in the master's certificate (useful when masters are dialled by IP and
certs carry a cluster-wide DNS name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc


class TlsFilesLike(Protocol):
    @property
    def ca(self) -> str: ...
    @property
    def cert(self) -> str: ...
    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class SyncTls:
    ca: str
    cert: str
    key: str
    server_name: str | None = None


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(tls: TlsFilesLike) -> grpc.ServerCredentials:
    """Server credentials that require a client cert signed by the cluster CA (mutual TLS)."""
    return grpc.ssl_server_credentials([(_read(tls.key), _read(tls.cert))], root_certificates=_read(tls.ca),
                                       require_client_auth=True)


def channel_credentials(tls: TlsFilesLike) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=_read(tls.ca), private_key=_read(tls.key),
                                        certificate_chain=_read(tls.cert))


def channel_options(tls: TlsFilesLike | None) -> list[tuple[str, str]]:
    name = getattr(tls, "server_name", None) if tls is not None else None
    return [("grpc.ssl_target_name_override", name)] if name else []
