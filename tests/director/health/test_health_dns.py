"""DNS checks against a tiny DNS responder written here (real UDP on 127.0.0.1): rcode, answers of
several types, compression pointers, stray replies, silence and refused ports."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest

from director.health.dns import check_dns, decode_reply, encode_query
from director.health.manager import Probe, run_probe
from director.health.spec import QTYPES, HealthSpec
from tests.director.health.servers import DnsZone, UdpServer, dns_name, free_port

A, AAAA, MX, TXT, CNAME = (QTYPES[t] for t in ("A", "AAAA", "MX", "TXT", "CNAME"))
ZONE = {
    ("www.lbd.test", A): [ipaddress.IPv4Address(a).packed for a in ("198.18.2.10", "198.18.2.11")],
    ("www.lbd.test", AAAA): [ipaddress.IPv6Address("fd00::10").packed],
    ("lbd.test", MX): [struct.pack("!H", 10) + dns_name("mail.lbd.test")],
    ("lbd.test", TXT): [b"\x05hello\x06 world"],
    ("alias.lbd.test", CNAME): [dns_name("www.lbd.test")],
}


def ask(zone: DnsZone | None, query: str, qtype: str = "A", **kw: object) -> tuple[bool, str, DnsZone | None]:
    async def main() -> tuple[bool, str]:
        srv = await UdpServer(zone if zone is not None else (lambda _q: None)).start()
        try:
            res = await check_dns("127.0.0.1", srv.port, 0.5, query=query, qtype=qtype, **kw)  # type: ignore[arg-type]
        finally:
            srv.stop()
        return res.ok, res.detail
    ok, detail = asyncio.run(main())
    return ok, detail, zone


def test_answer_and_rcode() -> None:
    ok, detail, zone = ask(DnsZone(ZONE), "www.lbd.test", expect_answer=("198.18.2.11",))
    assert ok and "rcode NOERROR, 2 answers" in detail
    assert zone is not None and zone.questions == [("www.lbd.test", A)]
    ok, detail, _ = ask(DnsZone(ZONE), "www.lbd.test", expect_answer=("198.18.2.12",))
    assert not ok and "answer lacks 198.18.2.12" in detail and "198.18.2.10" in detail
    ok, detail, _ = ask(DnsZone(ZONE), "nope.lbd.test")
    assert not ok and detail == "rcode NXDOMAIN, want NOERROR"
    ok, _, _ = ask(DnsZone(ZONE), "nope.lbd.test", expect_rcode="NXDOMAIN")
    assert ok
    ok, detail, _ = ask(DnsZone(ZONE, rcode=2), "www.lbd.test")
    assert not ok and "rcode SERVFAIL" in detail


@pytest.mark.parametrize(("name", "qtype", "want"), [
    ("www.lbd.test", "AAAA", "fd00:0:0::10"),  # compared as an address
    ("lbd.test", "MX", "MAIL.lbd.test."),  # names: any case, final dot or not
    ("lbd.test", "TXT", "hello world"),
    ("alias.lbd.test", "CNAME", "www.lbd.test"),
])
def test_record_types(name: str, qtype: str, want: str) -> None:
    ok, detail, _ = ask(DnsZone(ZONE), name, qtype, expect_answer=(want,))
    assert ok, detail
    ok, _, _ = ask(DnsZone(ZONE), name, qtype, expect_answer=("something.else",))
    assert not ok


def test_stray_reply_ignored_silence_and_refused() -> None:
    ok, detail, _ = ask(DnsZone(ZONE, wrong_id_first=True), "www.lbd.test", expect_answer=("198.18.2.10",))
    assert ok, detail
    ok, detail, _ = ask(None, "www.lbd.test")
    assert not ok and detail == "no answer within 0.5s"
    res = asyncio.run(check_dns("127.0.0.1", free_port(), 0.5, query="www.lbd.test"))
    assert not res.ok and "dns error" in res.detail and "refused" in res.detail.lower()


def test_codec_refuses_loops_and_truncation() -> None:
    query = encode_query(7, "x.test", A)
    loop = struct.pack("!HHHHHH", 7, 0x8180, 0, 1, 0, 0) + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4)
    with pytest.raises(ValueError, match="compression pointer loop"):
        decode_reply(loop + b"\x01\x02\x03\x04")
    trunc = struct.pack("!HHHHHH", 7, 0x8180, 0, 1, 0, 0) + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 40)
    with pytest.raises(ValueError, match="truncated"):
        decode_reply(trunc)
    assert query[2:4] == b"\x01\x00" and query.endswith(b"\x01x\x04test\x00\x00\x01\x00\x01")


def test_spec_dispatch_defaults_to_port_53_unless_given() -> None:
    spec = HealthSpec.from_dict({"type": "dns", "query": "www.lbd.test", "expect_answer": ["198.18.2.10"]})
    assert spec.port_for(8080) == 53 and HealthSpec.from_dict({"type": "dns", "query": "a", "port": 5353}
                                                               ).port_for(8080) == 5353

    async def main() -> bool:
        srv = await UdpServer(DnsZone(ZONE)).start()
        try:
            res = await run_probe(Probe((17, 1, 53, 0, 0x7F000001, 53), "127.0.0.1", srv.port, spec))
        finally:
            srv.stop()
        return res.ok
    assert asyncio.run(main())
