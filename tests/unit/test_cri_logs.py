"""CRI log format: framing, the writer, the reader (node.runtime.logs)."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.runtime import logs
from node.runtime.logs import LogRecord, LogWriter


def fake_clock(start: int = 1_795_888_800_123_456_789) -> logs.Clock:
    ticks = iter(range(start, start + 10**9))
    return lambda: next(ticks)


@pytest.mark.parametrize("ns, text", [
    (0, "1970-01-01T00:00:00.000000000Z"),
    (1_795_888_800_123_456_789, "2026-11-28T18:00:00.123456789Z"),
    (1_795_888_800_000_000_001, "2026-11-28T18:00:00.000000001Z"),
])
def test_timestamp_has_nine_digits_and_round_trips(ns: int, text: str) -> None:
    assert logs.format_timestamp(ns) == text
    assert logs.parse_timestamp(text) == ns


def test_parse_timestamp_accepts_short_fractions_and_offsets() -> None:
    assert logs.parse_timestamp("2026-11-28T18:00:00.5Z") == 1_795_888_800_500_000_000
    assert logs.parse_timestamp("2026-11-28T19:00:00+01:00") == 1_795_888_800_000_000_000


@pytest.mark.parametrize("buffer, at_eof, records, rest", [
    (b"a\nb\n", False, [(False, b"a"), (False, b"b")], b""),
    (b"a\nbc", False, [(False, b"a")], b"bc"),
    (b"a\nbc", True, [(False, b"a"), (False, b"bc")], b""),
    (b"abcd", False, [(True, b"abcd")], b""),                 # exactly max_line, no newline yet
    (b"abcd\n", False, [(False, b"abcd")], b""),              # exactly max_line, then newline
    (b"abcdefghij\n", False, [(True, b"abcd"), (True, b"efgh"), (False, b"ij")], b""),
    (b"\n\n", False, [(False, b""), (False, b"")], b""),
    (b"", True, [], b""),
])
def test_split_records(buffer: bytes, at_eof: bool, records: list[tuple[bool, bytes]],
                       rest: bytes) -> None:
    assert logs.split_records(buffer, 4, at_eof) == (records, rest)


def test_writer_frames_chunks_into_records(tmp_path: Path) -> None:
    path = tmp_path / "c" / "0.log"
    writer = LogWriter(path, clock=fake_clock(), max_line=8)
    writer.write(logs.STDOUT, b"hel")
    writer.write(logs.STDOUT, b"lo\nwor")
    writer.write(logs.STDERR, b"oops\n")
    writer.write(logs.STDOUT, b"ld and a long tail\n")
    writer.write(logs.STDOUT, b"no newline")
    writer.close()
    assert path.read_text().splitlines() == [
        "2026-11-28T18:00:00.123456789Z stdout F hello",
        "2026-11-28T18:00:00.123456790Z stderr F oops",
        "2026-11-28T18:00:00.123456791Z stdout P world an",
        "2026-11-28T18:00:00.123456792Z stdout P d a long",
        "2026-11-28T18:00:00.123456793Z stdout F  tail",
        "2026-11-28T18:00:00.123456794Z stdout P no newli",
        "2026-11-28T18:00:00.123456795Z stdout F ne",
    ]


def test_default_max_line_is_16_KiB(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path / "l.log", clock=fake_clock())
    writer.write(logs.STDOUT, b"x" * (16 * 1024 + 10) + b"\n")
    writer.close()
    records = list(logs.read_records(tmp_path / "l.log"))
    assert [(r.partial, len(r.content)) for r in records] == [(True, 16384), (False, 10)]
    assert b"".join(logs.render(iter(records))) == b"x" * 16394 + b"\n"


def test_parse_record_and_errors() -> None:
    record = logs.parse_record(b"2026-11-28T18:00:00.123456789Z stderr P a b  c\n")
    assert record == LogRecord(1_795_888_800_123_456_789, "stderr", True, b"a b  c")
    assert logs.parse_record(b"2026-11-28T18:00:00.1Z stdout F").content == b""
    for bad in (b"garbage", b"2026-11-28T18:00:00Z stdin F x", b"2026-11-28T18:00:00Z stdout X y"):
        with pytest.raises(ValueError):
            logs.parse_record(bad)


def _write(path: Path, lines: list[tuple[str, bytes]], max_line: int = 1024) -> None:
    writer = LogWriter(path, clock=fake_clock(), max_line=max_line)
    for stream, data in lines:
        writer.write(stream, data)
    writer.close()


def test_reader_tail_counts_lines_not_records(tmp_path: Path) -> None:
    path = tmp_path / "l.log"
    _write(path, [(logs.STDOUT, b"one\n"), (logs.STDOUT, b"twotwotwo\n"), (logs.STDOUT, b"three\n")],
           max_line=4)
    out = b"".join(logs.render(logs.read_records(path, tail=2)))
    assert out == b"twotwotwo\nthree\n"
    assert list(logs.read_records(path, tail=0)) == []
    assert b"".join(logs.render(logs.read_records(path, tail=10))).startswith(b"one\n")


def test_reader_since_and_skips_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "l.log"
    _write(path, [(logs.STDOUT, b"a\nb\nc\n")])
    with open(path, "ab") as f:
        f.write(b"this is not a record\n")
    since = 1_795_888_800_123_456_790
    assert [r.content for r in logs.read_records(path, since_ns=since)] == [b"b", b"c"]


def test_reader_follow_sees_new_records_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "l.log"
    writer = LogWriter(path, clock=fake_clock())
    writer.write(logs.STDOUT, b"first\n")
    done = threading.Event()
    seen: list[bytes] = []

    def follow() -> None:
        for record in logs.read_records(path, follow=True, stop=done.is_set, poll_interval=0.01):
            seen.append(record.content)

    reader = threading.Thread(target=follow)
    reader.start()
    writer.write(logs.STDOUT, b"second\nthi")
    writer.write(logs.STDOUT, b"rd\n")
    writer.close()
    done.set()
    reader.join(10)
    assert not reader.is_alive()
    assert seen == [b"first", b"second", b"third"]


def test_pump_copies_pipes_until_eof(tmp_path: Path) -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    writer = LogWriter(tmp_path / "p.log", clock=fake_clock())
    pump = threading.Thread(target=logs.pump, args=({out_r: logs.STDOUT, err_r: logs.STDERR}, writer))
    pump.start()
    os.write(out_w, b"to stdout\npartial")
    os.write(err_w, b"to stderr\n")
    os.close(out_w)
    os.close(err_w)
    pump.join(10)
    writer.close()
    records = list(logs.read_records(tmp_path / "p.log"))
    assert sorted((r.stream, r.content) for r in records) == [
        ("stderr", b"to stderr"), ("stdout", b"partial"), ("stdout", b"to stdout")]


def _records(lines: list[LogRecord]) -> Iterator[LogRecord]:
    return iter(lines)


def test_render_joins_partials() -> None:
    records = [LogRecord(1, "stdout", True, b"ab"), LogRecord(2, "stdout", False, b"c"),
               LogRecord(3, "stderr", False, b"d")]
    assert b"".join(logs.render(_records(records))) == b"abc\nd\n"
