"""Wall-clock time as the API writes it: RFC 3339 strings in UTC, and a clock that tests step.

Object timestamps (creationTimestamp, deletionTimestamp, lastTransitionTime) have Kubernetes'
second precision (`2026-11-28T18:00:00Z`); Lease renewTime and Event eventTime are MicroTime
(`2026-11-28T18:00:00.123456Z`).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Protocol


class WallClock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeWallClock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def format_time(t: float) -> str:
    """Seconds since the epoch -> '2026-11-28T18:00:00Z' (whole seconds, as Kubernetes' Time)."""
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(t: float) -> str:
    """Seconds since the epoch -> '2026-11-28T18:00:00.123456Z' (Kubernetes' MicroTime)."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp -> seconds since the epoch; ValueError when malformed."""
    value = text.strip()
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
