"""DNS check (keepalived's DNS_CHECK): one query over UDP; healthy if the answer has the expected
rcode and, when `expect_answer` is set, every expected value appears among the answer records.

Wire format (RFC 1035 4.1), built and parsed here with no dependency::

    header   id(16) flags(16: QR opcode AA TC RD RA z rcode(4)) qdcount ancount nscount arcount
    question name (length-prefixed labels, 0) qtype(16) qclass(16)=IN
    answer   name (labels or a 0xC0 compression pointer) type class ttl(32) rdlength rdata

The query asks for recursion (RD) and carries a random id; datagrams with another id (or not a
response) are ignored until the deadline. Answer records are turned into text for matching: A and
AAAA as addresses (compared as addresses, so `fd00::1` equals `fd00:0::1`), CNAME/NS/PTR as names,
MX and SRV as their target name, SOA as its primary server, TXT as its strings joined; names
compare case-insensitively without the final dot. A refused port (ICMP port unreachable) or a
timeout is a failed probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import struct

from director.health.spec import QTYPES, RCODES, CheckResult

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_TYPES = {code: name for name, code in QTYPES.items()}
MAX_POINTERS = 32


async def check_dns(host: str, port: int, timeout: float, *, query: str, qtype: str = "A",
                    expect_rcode: str = "NOERROR", expect_answer: tuple[str, ...] = ()) -> CheckResult:
    """Ask host:port for `query`/`qtype`; never raises."""
    qid = secrets.randbelow(1 << 16)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _Exchange(qid), remote_addr=(host, port))
            try:
                transport.sendto(encode_query(qid, query, QTYPES[qtype]))
                reply = await proto.reply
            finally:
                transport.close()
    except TimeoutError:
        return CheckResult(False, f"no answer within {timeout:g}s")
    except OSError as exc:
        return CheckResult(False, f"dns error: {exc.strerror or exc}")
    try:
        rcode, answers = decode_reply(reply)
    except (ValueError, struct.error, IndexError) as exc:
        return CheckResult(False, f"bad dns reply: {exc}")
    return judge(rcode, answers, expect_rcode, expect_answer)


def judge(rcode: str, answers: list[str], expect_rcode: str, expect_answer: tuple[str, ...]) -> CheckResult:
    if rcode != expect_rcode:
        return CheckResult(False, f"rcode {rcode}, want {expect_rcode}")
    have = {_norm(a) for a in answers}
    missing = [a for a in expect_answer if _norm(a) not in have]
    if missing:
        return CheckResult(False, f"rcode {rcode}, answer lacks {', '.join(missing)[:200]} "
                                  f"(got {', '.join(answers)[:200] or 'none'})")
    return CheckResult(True, f"rcode {rcode}, {len(answers)} answers")


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) >= _HEADER.size and not self.reply.done():
            qid, flags = struct.unpack_from("!HH", data)
            if qid == self.qid and flags & 0x8000:
                self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """A standard query with RD set, one question of class IN."""
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def decode_name(msg: bytes, off: int) -> tuple[str, int]:
    """(name, offset after it in the record), following compression pointers (bounded)."""
    labels: list[str] = []
    end = -1
    for _ in range(MAX_POINTERS):
        while (n := msg[off]) and n < 0xC0:
            labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
            off += 1 + n
        if n == 0:
            return ".".join(labels), (off + 1 if end < 0 else end)
        if end < 0:
            end = off + 2
        off = ((n & 0x3F) << 8) | msg[off + 1]
    raise ValueError("compression pointer loop")


def decode_reply(msg: bytes) -> tuple[str, list[str]]:
    """(rcode name, answer records as text)."""
    _qid, flags, qd, an, _ns, _ar = _HEADER.unpack_from(msg)
    rcode = flags & 0xF
    off = _HEADER.size
    for _ in range(qd):
        off = decode_name(msg, off)[1] + 4
    answers = []
    for _ in range(an):
        off = decode_name(msg, off)[1]
        rtype, _cls, _ttl, rdlen = _RR.unpack_from(msg, off)
        off += _RR.size
        if off + rdlen > len(msg):
            raise ValueError("truncated record")
        text = _rdata(msg, off, rtype, rdlen)
        if text is not None:
            answers.append(text)
        off += rdlen
    return (RCODES[rcode] if rcode < len(RCODES) else f"RCODE{rcode}"), answers


def _rdata(msg: bytes, off: int, rtype: int, rdlen: int) -> str | None:
    data = msg[off:off + rdlen]
    kind = _TYPES.get(rtype)
    if kind == "A" and rdlen == 4:
        return str(ipaddress.IPv4Address(data))
    if kind == "AAAA" and rdlen == 16:
        return str(ipaddress.IPv6Address(data))
    if kind in ("CNAME", "NS", "PTR", "SOA"):
        return decode_name(msg, off)[0]
    if kind == "MX":
        return decode_name(msg, off + 2)[0]
    if kind == "SRV":
        return decode_name(msg, off + 6)[0]
    if kind == "TXT":
        parts, i = [], 0
        while i < rdlen:
            parts.append(data[i + 1:i + 1 + data[i]].decode("utf-8", "replace"))
            i += 1 + data[i]
        return "".join(parts)
    return None


def _norm(text: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(text))
    return text.rstrip(".").lower()
