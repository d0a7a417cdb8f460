"""ARP frames against scapy, and the neighbour cache."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether

from director.dataplane.arp import (
    ARP_REPLY,
    ARP_REQUEST,
    arp_reply,
    arp_request,
    gratuitous_arp,
    parse_arp,
    usable_mac,
    vrrp_mac,
)
from director.dataplane.neigh import NeighCache, NeighEvent
from director.dataplane.packet import mac_bytes

VMAC = "00:00:5e:00:01:07"


def _i(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def test_vrrp_mac() -> None:
    assert vrrp_mac(7) == mac_bytes(VMAC)
    for bad in (0, 256):
        with pytest.raises(ValueError):
            vrrp_mac(bad)


def test_parse_request_from_scapy() -> None:
    req = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") /
                ARP(op=1, hwsrc="02:00:00:00:00:01", psrc="198.18.1.10", pdst="198.18.0.100"))
    a = parse_arp(req + b"\0" * 18)  # padded to 60 bytes like on the wire
    assert a == (ARP_REQUEST, mac_bytes("02:00:00:00:00:01"), _i("198.18.1.10"), b"\0" * 6,
                 _i("198.18.0.100"))
    assert parse_arp(req[:41]) is None
    assert parse_arp(bytes(Ether() / IP())) is None
    bad = bytearray(req)
    bad[19] = 16  # hlen
    assert parse_arp(bad) is None


def test_reply_equals_scapy() -> None:
    out = arp_reply(vrrp_mac(7), _i("198.18.0.100"), mac_bytes("02:00:00:00:00:01"), _i("198.18.1.10"))
    expected = (Ether(dst="02:00:00:00:00:01", src=VMAC) /
                ARP(op=2, hwsrc=VMAC, psrc="198.18.0.100", hwdst="02:00:00:00:00:01", pdst="198.18.1.10"))
    assert bytes(out) == bytes(expected)


def test_request_and_gratuitous_equal_scapy() -> None:
    req = arp_request(vrrp_mac(7), _i("198.18.3.1"), _i("198.18.3.20"))
    assert bytes(req) == bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=VMAC) /
                               ARP(op=1, hwsrc=VMAC, psrc="198.18.3.1", hwdst="00:00:00:00:00:00",
                                   pdst="198.18.3.20"))
    garp = gratuitous_arp(vrrp_mac(7), _i("198.18.0.100"))
    assert bytes(garp) == bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=VMAC) /
                                ARP(op=1, hwsrc=VMAC, psrc="198.18.0.100", hwdst="00:00:00:00:00:00",
                                    pdst="198.18.0.100"))
    grep = gratuitous_arp(vrrp_mac(7), _i("198.18.0.100"), op=ARP_REPLY)
    p = Ether(bytes(grep))
    assert (p[ARP].op, p[ARP].psrc, p[ARP].pdst, p.dst) == (2, "198.18.0.100", "198.18.0.100",
                                                            "ff:ff:ff:ff:ff:ff")


def test_neigh_cache_learn_prefix_and_change() -> None:
    own = vrrp_mac(1)
    n = NeighCache(own)
    m1, m2 = mac_bytes("02:00:00:00:00:01"), mac_bytes("02:00:00:00:00:02")
    ip = _i("198.18.2.1")
    assert n.learn(ip, m1, 1.0)
    assert not n.learn(ip, m1, 2.0)  # same: no change
    assert n.hdr[ip] == m1 + own and n.get(ip) == m1 and ip in n and len(n) == 1
    assert n.learn(ip, m2, 3.0)
    assert n.hdr[ip] == m2 + own
    # broadcast, multicast, zero MACs and address 0 are never learned
    assert not n.learn(_i("198.18.2.2"), b"\xff" * 6, 1.0)
    assert not n.learn(_i("198.18.2.2"), mac_bytes("01:00:5e:00:00:01"), 1.0)
    assert not n.learn(_i("198.18.2.2"), b"\0" * 6, 1.0)
    assert not n.learn(0, m1, 1.0)
    assert not usable_mac(b"\xff" * 6) and usable_mac(m1)
    new_own = vrrp_mac(9)
    n.set_own_mac(new_own)
    assert n.hdr[ip] == m2 + new_own


def test_neigh_cache_probe_rate_limit_and_expiry() -> None:
    n = NeighCache(vrrp_mac(1), probe_interval=1.0)
    ip = _i("198.18.2.9")
    assert n.should_probe(ip, 10.0)
    assert not n.should_probe(ip, 10.5)
    assert n.should_probe(ip, 11.0)
    n.learn(ip, mac_bytes("02:00:00:00:00:09"), 11.2)
    n.learn(_i("198.18.2.10"), mac_bytes("02:00:00:00:00:0a"), 20.0)
    assert n.expire(now=30.0, max_age=15.0) == 1
    assert ip not in n and _i("198.18.2.10") in n
    assert ip not in n.hdr


def test_neigh_cache_is_bounded_lru_by_confirmation_and_counts_evictions() -> None:
    n = NeighCache(vrrp_mac(1), max_entries=3, max_age=100.0)
    macs = [mac_bytes(f"02:00:00:00:00:{k:02x}") for k in range(1, 6)]
    for k in range(3):
        n.learn(_i(f"198.18.2.{k + 1}"), macs[k], float(k))
    n.learn(_i("198.18.2.1"), macs[0], 10.0)  # confirmed: now the most recent
    n.learn(_i("198.18.2.4"), macs[3], 11.0)  # full: evicts .2, the least recently confirmed
    assert _i("198.18.2.2") not in n and len(n) == 3 and _i("198.18.2.2") not in n.hdr
    assert n.stats[NeighEvent.NEIGH_EVICTED] == 1
    # age: walked from the oldest confirmation, by the cache's own max_age
    assert n.expire(now=110.5) == 2  # .3 (t=2) and .1 (t=10); .4 (t=11) stays
    assert list(n.macs) == [_i("198.18.2.4")] and n.stats[NeighEvent.NEIGH_EXPIRED] == 2
    # the probe bookkeeping is bounded too
    for k in range(10):
        assert n.should_probe(_i(f"198.18.3.{k}"), 200.0)
    assert len(n._probed) <= 3
