"""directord's log formats: journald priority prefixes, text, JSON; flood limiting."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile

from director.logs import FloodFilter, choose_format, sd_priority, setup_logging


def _emit(fmt: str, **kw: object) -> list[str]:
    buf = io.StringIO()
    setup_logging("d1", fmt=fmt, stream=buf, level="debug", **kw)  # type: ignore[arg-type]
    log = logging.getLogger("director.test")
    log.warning("link %s down", "ext")
    log.info("elected master, epoch %d", 7)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("apply failed")
    logging.getLogger().handlers.clear()
    return buf.getvalue().splitlines()


def test_journal_lines_carry_the_syslog_priority_of_each_record() -> None:
    lines = _emit("journal")
    assert lines[0] == "<4>d1 director.test: link ext down"
    assert lines[1] == "<6>d1 director.test: elected master, epoch 7"
    assert lines[2] == "<3>d1 director.test: apply failed"
    assert all(line.startswith("<3>") for line in lines[3:])  # the traceback stays at its record's level
    assert any("ValueError: boom" in line for line in lines[3:])
    assert (sd_priority(logging.DEBUG), sd_priority(logging.CRITICAL)) == (7, 2)


def test_text_is_for_people_and_json_for_shippers() -> None:
    text = _emit("text")
    assert " d1 WARNING director.test: link ext down" in text[0] and not text[0].startswith("<")
    records = [json.loads(line) for line in _emit("json")]
    assert [r["level"] for r in records] == ["WARNING", "INFO", "ERROR"]
    assert records[2]["msg"] == "apply failed" and "ValueError: boom" in records[2]["exc"]


def test_auto_picks_journal_only_when_systemd_connected_our_stream(monkeypatch: object) -> None:
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        mp = monkeypatch  # pytest's fixture
        mp.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")  # type: ignore[attr-defined]
        assert choose_format("auto", False, f) == "journal"  # type: ignore[arg-type]
        mp.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # type: ignore[attr-defined]
        assert choose_format("auto", False, f) == "text"  # type: ignore[arg-type]
        assert choose_format("auto", True, f) == "json"  # type: ignore[arg-type]
        assert choose_format("text", True, f) == "text"  # type: ignore[arg-type]


def test_a_flood_of_one_message_is_cut_and_counted() -> None:
    now = [0.0]
    flt = FloodFilter(burst=3, window=10.0, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("syncd.server", logging.WARNING, __file__, 1, msg, ("x",), None)

    passed = [flt.filter(rec("refused %s")) for _ in range(100)]
    assert passed.count(True) == 3
    assert flt.filter(rec("another %s"))  # other templates are not affected
    now[0] = 10.0
    r = rec("refused %s")
    assert flt.filter(r) and "[97 similar records suppressed]" in str(r.msg)
