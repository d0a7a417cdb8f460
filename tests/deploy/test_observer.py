"""The fabric observer's pure parts: the incremental pcap reader and the interval arithmetic."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from deploy.observer import PcapTail, forwarding_intervals, longest_silence, overlaps, read_pcap_times

HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 64, 1)


def record(t: float, payload: bytes = b"x" * 60) -> bytes:
    sec = int(t)
    return struct.pack("<IIII", sec, round((t - sec) * 1e6), len(payload), len(payload)) + payload


def test_a_growing_capture_is_read_incrementally_and_a_torn_record_waits(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    tail = PcapTail(path)
    assert tail.times() == []  # tcpdump has not written the file yet
    path.write_bytes(HEADER[:10])
    assert tail.times() == []
    whole = HEADER + record(100.5) + record(101.25)
    path.write_bytes(whole + record(102.0)[:20])  # the last record is still being written
    assert tail.times() == pytest.approx([100.5, 101.25])
    path.write_bytes(whole + record(102.0) + record(103.75))
    assert tail.times() == pytest.approx([100.5, 101.25, 102.0, 103.75])
    assert read_pcap_times(path) == tail.times()


def test_nanosecond_and_big_endian_captures(tmp_path: Path) -> None:
    path = tmp_path / "n.pcap"
    head = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 64, 1)
    path.write_bytes(head + struct.pack(">IIII", 7, 250_000_000, 4, 4) + b"abcd")
    assert read_pcap_times(path) == pytest.approx([7.25])


def test_a_file_that_is_no_pcap_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match="not a pcap"):
        read_pcap_times(path)


def test_overlaps_count_a_lone_frame_inside_the_other_directors_interval() -> None:
    frames = {"d1": [1.0, 1.01, 1.02, 1.03], "d2": [1.015, 5.0]}
    assert forwarding_intervals(frames["d1"]) == [(1.0, 1.03)]
    assert overlaps(frames) == [("d1", "d2", 1.015, 0.0)]
    assert overlaps({"d1": [1.0, 1.02], "d2": [1.1, 1.2]}) == []


def test_longest_silence_spans_the_window_edges() -> None:
    assert longest_silence({"d1": [2.0, 2.1], "d2": [4.0]}, 1.0, 5.0) == pytest.approx((1.9, 2.1))
    assert longest_silence({}, 1.0, 3.0) == (2.0, 1.0)
