"""Prometheus metrics in the text exposition format (no extra dependency).

Counters and histograms keyed by label tuples; `render()` writes them for `GET /metrics`.
"""
from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self.deliveries: dict[tuple[str, str], int] = defaultdict(int)
        self.processing: dict[str, _Histogram] = defaultdict(_Histogram)
        self.github_calls: dict[tuple[str, str], int] = defaultdict(int)
        self.rate_limit_remaining: int | None = None
        self.jobs: dict[tuple[str, str], int] = defaultdict(int)
        self.queue_depth = 0

    def delivery(self, event: str, outcome: str) -> None:
        self.deliveries[(event, outcome)] += 1

    def processed(self, event: str, seconds: float) -> None:
        self.processing[event].observe(seconds)

    def github_call(self, method: str, status: str, remaining: str | None) -> None:
        self.github_calls[(method, status)] += 1
        if remaining is not None and remaining.isdigit():
            self.rate_limit_remaining = int(remaining)

    def job_finished(self, kind: str, result: str) -> None:
        self.jobs[(kind, result)] += 1

    def render(self) -> str:
        lines: list[str] = []
        _counter(lines, "flops_webhook_deliveries_total", "Webhook deliveries by event and outcome.",
                 ("event", "outcome"), self.deliveries)
        _histogram(lines, "flops_event_processing_seconds", "Time to process one delivery, by event.", self.processing)
        _counter(lines, "flops_github_api_calls_total", "GitHub API calls by method and HTTP status.",
                 ("method", "status"), self.github_calls)
        if self.rate_limit_remaining is not None:
            lines += ["# HELP flops_github_rate_limit_remaining Last X-RateLimit-Remaining seen.",
                      "# TYPE flops_github_rate_limit_remaining gauge",
                      f"flops_github_rate_limit_remaining {self.rate_limit_remaining}"]
        _counter(lines, "flops_jobs_finished_total", "Jobs reported, by kind and result.", ("kind", "result"), self.jobs)
        lines += ["# HELP flops_queue_depth Deliveries waiting to be processed.", "# TYPE flops_queue_depth gauge",
                  f"flops_queue_depth {self.queue_depth}"]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))


def _counter(lines: list[str], name: str, help_: str, names: tuple[str, ...], data: dict[tuple[str, str], int]) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
    lines += [f"{name}{{{_labels(names, key)}}} {value}" for key, value in sorted(data.items())]


def _histogram(lines: list[str], name: str, help_: str, data: dict[str, _Histogram]) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    for event, hist in sorted(data.items()):
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, hist.counts):
            running += count
            lines.append(f'{name}_bucket{{event="{_escape(event)}",le="{bound}"}} {running}')
        lines.append(f'{name}_bucket{{event="{_escape(event)}",le="+Inf"}} {hist.n}')
        lines.append(f'{name}_sum{{event="{_escape(event)}"}} {hist.total:.6f}')
        lines.append(f'{name}_count{{event="{_escape(event)}"}} {hist.n}')
