"""The scheduler's metrics in Prometheus' text format, served over HTTP by asyncio alone.

`SchedulerMetrics` holds what kube-scheduler exports under the same names (reduced):
- `scheduler_schedule_attempts_total{result="scheduled"|"unschedulable"|"error"}`: a counter
  per attempt outcome (scheduled = bound; error = the bind or the cycle failed);
- `scheduler_scheduling_attempt_duration_seconds{result=...}`: a histogram of each attempt
  from the start of its scheduling cycle to its outcome (binding included for "scheduled");
- `scheduler_pending_pods{queue="active"|"backoff"|"unschedulable"}`: a gauge read from the
  queue at scrape time (a callable, so the numbers are never stale);
- `scheduler_events_dropped_total`: events the recorder dropped because its queue was full.

`render()` is pure text; `MetricsServer` answers `GET /metrics` (text format 0.0.4),
`GET /healthz` (always ok while the loop runs) and `GET /readyz` (200 once the `ready` callable
says so: caches synced and, with leader election, leading; 503 before). Anything else is 404.
It speaks just enough HTTP/1.1 (one request per connection, `Connection: close`) for Prometheus,
curl and the benchmark; there is no new dependency.

Invariants: counters only grow; a histogram's buckets are cumulative and `+Inf` equals its count.
"""
from __future__ import annotations

import bisect
import logging
from typing import Callable, Mapping

log = logging.getLogger(__name__)

RESULTS = ("scheduled", "unschedulable", "error")
QUEUES = ("active", "backoff", "unschedulable")
# kube-scheduler's buckets for attempt durations: 1 ms doubling 15 times (~16 s).
DURATION_BUCKETS = tuple(0.001 * 2 ** i for i in range(15))


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative (cheap to observe)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        out, total = [], 0
        for c in self.counts:
            total += c
            out.append(total)
        return out


class SchedulerMetrics:
    def __init__(self, pending: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.attempts: dict[str, int] = {r: 0 for r in RESULTS}
        self.durations: dict[str, Histogram] = {r: Histogram() for r in RESULTS}
        self.pending = pending or (lambda: {})
        self.events_dropped = 0


    def count_dropped_event(self) -> None:
        """The event recorder's on_drop callback."""
        self.events_dropped += 1
    def observe_attempt(self, result: str, seconds: float) -> None:
        if result not in self.attempts:
            raise ValueError(f"unknown attempt result {result!r} (known: {', '.join(RESULTS)})")
        self.attempts[result] += 1
        self.durations[result].observe(seconds)

    def render(self) -> str:
        lines = [
            "# HELP scheduler_schedule_attempts_total Number of attempts to schedule pods, by the result.",
            "# TYPE scheduler_schedule_attempts_total counter",
        ]
        lines += [f'scheduler_schedule_attempts_total{{result="{r}"}} {n}' for r, n in self.attempts.items()]
        name = "scheduler_scheduling_attempt_duration_seconds"
        lines += [f"# HELP {name} Scheduling attempt latency in seconds (scheduling algorithm + binding).",
                  f"# TYPE {name} histogram"]
        for result, h in self.durations.items():
            for bound, count in zip(h.buckets, h.cumulative()):
                lines.append(f'{name}_bucket{{result="{result}",le="{_num(bound)}"}} {count}')
            lines.append(f'{name}_bucket{{result="{result}",le="+Inf"}} {h.count}')
            lines.append(f'{name}_sum{{result="{result}"}} {_num(h.sum)}')
            lines.append(f'{name}_count{{result="{result}"}} {h.count}')
        pending = self.pending()
        lines += ["# HELP scheduler_pending_pods Number of pending pods, by the queue type.",
                  "# TYPE scheduler_pending_pods gauge"]
        lines += [f'scheduler_pending_pods{{queue="{q}"}} {pending.get(q, 0)}' for q in QUEUES]
        lines += ["# HELP scheduler_events_dropped_total Events not written because the recorder's queue was full.",
                  "# TYPE scheduler_events_dropped_total counter",
                  f"scheduler_events_dropped_total {self.events_dropped}"]
        return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    return repr(float(x))


def parse_text(text: str) -> dict[str, float]:
    """Samples of a text-format page as {'name{labels}': value} (tests and the benchmark)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
