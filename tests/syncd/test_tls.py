"""The sync channel over mutual TLS: only holders of a cluster-CA certificate can follow."""

from __future__ import annotations

import subprocess
from pathlib import Path

from syncd.tls import SyncTls
from tests.syncd.helpers import CLIENT_NET, VIP, Cluster, FakeClock, run, table_view, wait_until

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    _openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={name}")
    return crt, key


def _node(d: Path, name: str, ca: tuple[Path, Path]) -> SyncTls:
    key, csr, crt, ext = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", *EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(crt), "-days", "1", "-extfile", str(ext))
    return SyncTls(str(ca[0]), str(crt), str(key))


def test_mutual_tls_sync_and_refusal_of_strangers(tmp_path: Path) -> None:
    ca = _ca(tmp_path, "cluster-ca")
    master_tls, backup_tls = _node(tmp_path, "d1", ca), _node(tmp_path, "d2", ca)
    rogue = _node(tmp_path, "rogue", _ca(tmp_path, "rogue-ca"))
    # a stranger that trusts the cluster CA but holds a certificate of another CA
    stranger = SyncTls(master_tls.ca, rogue.cert, rogue.key)

    async def body() -> None:
        cluster = Cluster(FakeClock(), tls=master_tls)
        await cluster.start(0)
        good = cluster.add_backup("d2", tls=backup_tls)
        bad = cluster.add_backup("rogue", tls=stranger)
        plain = cluster.add_backup("plain", tls=None)
        try:
            d = next(iter(cluster.services)).dests[0]
            for i in range(10):
                cluster.table.new(6, CLIENT_NET + i, 1000 + i, VIP, 80, d.addr, d.port, 0, d)
            await wait_until(lambda: good.in_sync and len(cluster.backup_tables[0]) == 10, 20, "mTLS sync")
            assert table_view(cluster.backup_tables[0]) == table_view(cluster.table)
            await wait_until(lambda: bad.stats["stream_errors"] >= 2 and plain.stats["stream_errors"] >= 2,
                             20, "strangers refused twice")
            assert len(cluster.backup_tables[1]) == 0 and len(cluster.backup_tables[2]) == 0
            assert not bad.in_sync and not plain.in_sync
            assert [f.node_id for f in cluster.server.backups()] == ["d2"]
        finally:
            await cluster.close()
    run(body())
