"""Container logs in the CRI log format, written by a container's shim and read by ``skiff logs``.

Format (one record per line, as the kubelet and containerd write and read them)::

    2026-11-28T18:00:00.123456789Z stdout F a full line
    2026-11-28T18:00:00.123456790Z stderr P the first 16 KiB of a longer line...

- the timestamp is UTC with exactly nine fractional digits (containerd's layout, which
  RFC 3339 parsers with nanoseconds accept);
- the stream is ``stdout`` or ``stderr``; the tag is ``F`` for a record that ends a line and
  ``P`` for a partial record: a line longer than ``max_line`` bytes is cut into ``P`` records
  followed by one ``F`` record, so no single record exceeds ``max_line`` bytes of content;
- the content is the container's bytes without the newline; a line left unterminated when the
  stream closes is written as ``F`` (containerd does the same).

Invariants: the writer appends only whole records (each ends in ``\\n`` and is written with one
``write`` call to a file opened with ``O_APPEND``), so a reader never sees half a record except
while that one ``write`` is in flight; the reader therefore holds back an unterminated last line
until it is completed. Time is passed in (``clock`` returns nanoseconds since the epoch).
"""
from __future__ import annotations

import datetime as dt
import os
import selectors
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDOUT = "stdout"
STDERR = "stderr"
TAG_PARTIAL = "P"
TAG_FULL = "F"
MAX_LINE = 16 * 1024  # containerd's max_container_log_line_size default

Clock = Callable[[], int]


def format_timestamp(ns: int) -> str:
    """``ns`` since the epoch as ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC, nine digits)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def parse_timestamp(text: str) -> int:
    """The inverse of ``format_timestamp``; accepts 0-9 fractional digits and a ``Z`` or offset."""
    if text.endswith("Z"):
        text, offset = text[:-1], dt.timedelta(0)
    else:
        sign = 1 if text[-6] == "+" else -1
        hours, minutes = int(text[-5:-3]), int(text[-2:])
        text, offset = text[:-6], sign * dt.timedelta(hours=hours, minutes=minutes)
    whole, _, frac = text.partition(".")
    base = dt.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    seconds = int((base - offset).timestamp())
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])


@dataclass(frozen=True)
class LogRecord:
    """One parsed record; ``partial`` is True for a ``P`` record (no newline after content)."""

    timestamp_ns: int
    stream: str
    partial: bool
    content: bytes


def format_record(ns: int, stream: str, partial: bool, content: bytes) -> bytes:
    tag = TAG_PARTIAL if partial else TAG_FULL
    return f"{format_timestamp(ns)} {stream} {tag} ".encode() + content + b"\n"


def parse_record(line: bytes) -> LogRecord:
    """Parse one record (with or without its trailing newline); ValueError names what is wrong."""
    line = line[:-1] if line.endswith(b"\n") else line
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        raise ValueError(f"not a CRI log record (want '<time> <stream> <P|F> <content>'): {line[:80]!r}")
    stamp, stream, tag = (p.decode("ascii", "replace") for p in parts[:3])
    if stream not in (STDOUT, STDERR) or tag not in (TAG_PARTIAL, TAG_FULL):
        raise ValueError(f"bad stream or tag in CRI log record: {line[:80]!r}")
    content = parts[3] if len(parts) == 4 else b""
    return LogRecord(parse_timestamp(stamp), stream, tag == TAG_PARTIAL, content)


def split_records(buffer: bytes, max_line: int, at_eof: bool) -> tuple[list[tuple[bool, bytes]], bytes]:
    """Pure framing: cut ``buffer`` into ``(partial, content)`` records and the unframed rest.

    Complete lines become full records; a run of ``max_line`` bytes without a newline becomes
    a partial record; at EOF whatever remains becomes a full record.
    """
    records: list[tuple[bool, bytes]] = []
    while buffer:
        newline = buffer.find(b"\n", 0, max_line + 1)
        if newline != -1 and newline <= max_line:
            records.append((False, buffer[:newline]))
            buffer = buffer[newline + 1:]
        elif len(buffer) >= max_line:
            records.append((True, buffer[:max_line]))
            buffer = buffer[max_line:]
        elif at_eof:
            records.append((False, buffer))
            buffer = b""
        else:
            break
    return records, buffer


class LogWriter:
    """Appends a container's output to one CRI log file; one writer per container.

    ``write(stream, data)`` accepts arbitrary chunks (as read from a pipe); ``close_stream``
    flushes what is left of a stream when it reaches EOF. ``reopen()`` starts writing to a
    fresh file at the same path (after the file was rotated away), as CRI's ReopenContainerLog.
    """

    def __init__(self, path: Path, clock: Clock = time.time_ns, max_line: int = MAX_LINE) -> None:
        self.path = path
        self._clock = clock
        self._max_line = max_line
        self._pending: dict[str, bytes] = {STDOUT: b"", STDERR: b""}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, stream: str, data: bytes) -> None:
        self._emit(stream, self._pending[stream] + data, at_eof=False)

    def close_stream(self, stream: str) -> None:
        self._emit(stream, self._pending[stream], at_eof=True)

    def _emit(self, stream: str, buffer: bytes, at_eof: bool) -> None:
        records, self._pending[stream] = split_records(buffer, self._max_line, at_eof)
        for partial, content in records:
            os.write(self._fd, format_record(self._clock(), stream, partial, content))

    def reopen(self) -> None:
        os.close(self._fd)
        self._fd = self._open()

    def close(self) -> None:
        for stream in (STDOUT, STDERR):
            self.close_stream(stream)
        os.close(self._fd)


def pump(fds: dict[int, str], writer: LogWriter, read_size: int = 65536) -> None:
    """Copy from pipe read ends (fd -> stream name) into ``writer`` until every pipe is at EOF.

    Blocks; the shim runs it on its own thread. The fds are closed at EOF.
    """
    selector = selectors.DefaultSelector()
    for fd, stream in fds.items():
        selector.register(fd, selectors.EVENT_READ, stream)
    try:
        while selector.get_map():
            for key, _ in selector.select():
                fd = key.fd
                data = os.read(fd, read_size)
                if data:
                    writer.write(key.data, data)
                    continue
                writer.close_stream(key.data)
                selector.unregister(fd)
                os.close(fd)
    finally:
        selector.close()


def read_records(path: Path, tail: int | None = None, since_ns: int | None = None,
                 follow: bool = False, stop: Callable[[], bool] | None = None,
                 poll_interval: float = 0.1) -> Iterator[LogRecord]:
    """Yield the records of a CRI log file, oldest first.

    ``tail``: start at the last ``tail`` lines (a line = a run of P records ending in an F
    record). ``since_ns``: skip records older than that. ``follow``: after the end, keep waiting
    for new records until ``stop()`` returns True (checked after each idle poll; None = forever)
    and the file has been read to its end. Malformed lines are skipped, not fatal: a log is
    evidence, and one bad line must not hide the rest.
    """
    with open(path, "rb") as f:
        records, rest = parse_complete(f.read())
        if tail is not None:
            records = last_lines(records, tail)
        for record in records:
            if since_ns is None or record.timestamp_ns >= since_ns:
                yield record
        if not follow:
            return
        yield from _follow(f, rest, since_ns, stop, poll_interval)


def _follow(reader: BinaryIO, rest: bytes, since_ns: int | None,
            stop: Callable[[], bool] | None, poll_interval: float) -> Iterator[LogRecord]:
    """Continue after the end of ``reader``; ``rest`` is an unterminated line already read."""
    while True:
        chunk = reader.read()
        if chunk:
            records, rest = parse_complete(rest + chunk)
            for record in records:
                if since_ns is None or record.timestamp_ns >= since_ns:
                    yield record
            continue
        if stop is not None and stop():
            # One more read: what the container wrote just before stopping must not be lost.
            if not reader.read(1):
                return
            reader.seek(-1, os.SEEK_CUR)
            continue
        time.sleep(poll_interval)


def parse_complete(data: bytes) -> tuple[list[LogRecord], bytes]:
    """The records of the complete lines in ``data`` (malformed lines skipped) and the
    unterminated rest."""
    complete, newline, rest = data.rpartition(b"\n")
    records = []
    for line in complete.split(b"\n") if newline else []:
        try:
            records.append(parse_record(line))
        except ValueError:
            continue
    return records, rest


def last_lines(records: list[LogRecord], count: int) -> list[LogRecord]:
    """The records of the last ``count`` lines (a line: partial records ending in a full one)."""
    if count <= 0:
        return []
    seen = 0
    for index in range(len(records) - 1, -1, -1):
        if not records[index].partial:
            seen += 1
            if seen > count:
                return records[index + 1:]
    return records


def render(records: Iterator[LogRecord]) -> Iterator[bytes]:
    """What ``skiff logs`` prints: contents, with a newline after each full record."""
    for record in records:
        yield record.content if record.partial else record.content + b"\n"
