"""Prometheus metrics for `GET /metrics`, through prometheus_client.

Each `Metrics` owns its registry (a process may run several apps: tests, benchmarks), so nothing
is global. The names and labels are public contract (dashboards and alerts query them):

- `flops_webhook_deliveries_total{event,outcome}`, `flops_event_processing_seconds{event}`
- `flops_github_api_calls_total{method,status}`, `flops_github_rate_limit_remaining` (once seen)
- `flops_jobs_finished_total{kind,result}`, `flops_queue_depth`
- `flops_jobs_active{kind,state}`: the bot's unfinished Jobs the tracker sees, `queued` (suspended or
  not started) or `running`; `flops_run_duration_seconds{kind}`: start to end of each reported Job
- `flops_delivery_latency_seconds{event}`: from the webhook accepting a delivery to its end (queue wait
  included); `flops_regression_verdicts_total{verdict}`: the gate's `pass`, `fail` or `no_baseline`
- `flops_webhook_proxy_events_total{outcome}`: deliveries relayed through `WEBHOOK_PROXY_URL` (accepted,
  duplicate, unauthorized, malformed, unavailable), `flops_webhook_proxy_connected` (once a proxy runs)
- `flops_redeliveries_total{outcome}`: the redelivery loop's verdict on each failed delivery it found:
  `requested` (GitHub asked to redeliver), `failed` (GitHub refused that request: asked again next
  pass), `skipped` (its GUID was already processed here, or asked for 3 times already), `deferred`
  (over FLOPS_REDELIVER_MAX or a rate limit: the next pass takes it)
- `flops_leader`: 1 while this replica holds the Lease `flops-bot-leader` (it reports Jobs), else 0
- `flops_delivery_errors_total{event,stage}`: a delivery that failed while it was routed
  (`routing`), ordered (`ordering`) or processed (`processing`); it is logged with its delivery id

The `event` label takes only the events the App subscribes to (`EVENTS`; anything else is `other`)
and requests that failed the signature check are counted as `unknown`: a caller's header never
becomes a new series, so unsigned requests cannot grow `/metrics`. Requests the intake refuses
before reading their body are `unknown` too, by outcome: `unauthorized` (401), `length_required`
(411), `too_large` (413), `over_capacity` (503, FLOPS_UNVERIFIED_BYTES) and `timeout` (408).

`render(accept)` answers in the Prometheus text format, or OpenMetrics when the scraper asks for it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

# The App manifest's default_events (app.yml, bot/app.yml) and what GitHub sends every App regardless.
EVENTS = frozenset({"push", "pull_request", "pull_request_review", "issue_comment", "check_run", "check_suite",
                    "merge_group", "ping", "installation", "installation_repositories"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)  # Kaniko builds to day-long runs


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._deliveries = Counter("flops_webhook_deliveries", "Webhook deliveries by event and outcome.",
                                   ("event", "outcome"), registry=self.registry)
        self._delivery_children: dict[tuple[str, str], Any] = {}
        self._processing = Histogram("flops_event_processing_seconds", "Time to process one delivery, by event.",
                                     ("event",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self._github_calls = Counter("flops_github_api_calls", "GitHub API calls by method and HTTP status.",
                                     ("method", "status"), registry=self.registry)
        self._jobs = Counter("flops_jobs_finished", "Jobs reported, by kind and result.", ("kind", "result"),
                             registry=self.registry)
        self._errors = Counter("flops_delivery_errors", "Deliveries that failed, by event and stage.",
                               ("event", "stage"), registry=self.registry)
        self._queue_depth = Gauge("flops_queue_depth", "Deliveries waiting to be processed.", registry=self.registry)
        self._unverified = Gauge("flops_webhook_unverified_bytes", "Bytes reserved now by webhook requests whose "
                                 "signature is not checked yet (FLOPS_UNVERIFIED_BYTES caps it).", registry=self.registry)
        self._latency = Histogram("flops_delivery_latency_seconds", "From accepting a delivery to its end, by event.",
                                  ("event",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self._active = Gauge("flops_jobs_active", "Unfinished Jobs of the bot, by kind and state (queued, running).",
                             ("kind", "state"), registry=self.registry)
        self._durations = Histogram("flops_run_duration_seconds", "Start to end of each reported Job, by kind.",
                                    ("kind",), buckets=RUN_BUCKETS, registry=self.registry)
        self._verdicts = Counter("flops_regression_verdicts", "Regression gate verdicts (pass, fail, no_baseline).",
                                 ("verdict",), registry=self.registry)
        self._rate_limit: Gauge | None = None  # registered once a rate-limit header was seen
        self._proxy_events = Counter("flops_webhook_proxy_events", "Deliveries relayed by the webhook proxy, "
                                     "by outcome.", ("outcome",), registry=self.registry)
        self._proxy_up: Gauge | None = None  # registered once a webhook proxy runs
        self._redeliveries = Counter("flops_redeliveries", "Failed deliveries the redelivery loop handled, "
                                     "by outcome.", ("outcome",), registry=self.registry)
        self._leader = Gauge("flops_leader", "1 while this replica holds the Lease flops-bot-leader.",
                             registry=self.registry)

    def delivery(self, event: str, outcome: str) -> None:
        child = self._delivery_children.get((event, outcome))
        if child is None:  # once per (event, outcome): labels() validates and locks on every call
            child = self._deliveries.labels(event_label(event), outcome)
            if len(self._delivery_children) < 256:  # event names are the caller's: bound the cache
                self._delivery_children[(event, outcome)] = child
        child.inc()

    def delivery_error(self, event: str, stage: str) -> None:
        """`stage`: routing, ordering or processing."""
        self._errors.labels(event_label(event), stage).inc()

    def processed(self, event: str, seconds: float) -> None:
        self._processing.labels(event_label(event)).observe(seconds)

    def github_call(self, method: str, status: str, remaining: str | None) -> None:
        self._github_calls.labels(method, status).inc()
        if remaining is not None and remaining.isdigit():
            if self._rate_limit is None:
                self._rate_limit = Gauge("flops_github_rate_limit_remaining", "Last X-RateLimit-Remaining seen.",
                                         registry=self.registry)
            self._rate_limit.set(int(remaining))

    def proxy_event(self, outcome: str) -> None:
        self._proxy_events.labels(outcome).inc()

    def proxy_connected(self, up: bool) -> None:
        if self._proxy_up is None:
            self._proxy_up = Gauge("flops_webhook_proxy_connected", "1 while the webhook proxy's stream is open.",
                                   registry=self.registry)
        self._proxy_up.set(1 if up else 0)

    def redelivery(self, outcome: str) -> None:
        """`outcome`: requested, failed, skipped or deferred."""
        self._redeliveries.labels(outcome).inc()
    def set_leader(self, holding: bool) -> None:
        self._leader.set(1 if holding else 0)

    def job_finished(self, kind: str, result: str) -> None:
        self._jobs.labels(kind, result).inc()

    def count_unverified_bytes(self, held: Callable[[], int]) -> None:
        """`flops_webhook_unverified_bytes` read from `held` when scraped."""
        self._unverified.set_function(held)

    def count_queue_depth(self, depth: Callable[[], int]) -> None:
        """`flops_queue_depth` read from `depth` when scraped (nothing to update per delivery)."""
        self._queue_depth.set_function(depth)

    def delivered(self, event: str, seconds: float) -> None:
        """A delivery accepted `seconds` ago is done (processed or failed)."""
        self._latency.labels(event_label(event)).observe(seconds)

    def set_active_jobs(self, kind: str, state: str, count: int) -> None:
        """`kind`: a Job kind the tracker reports; `state`: queued or running."""
        self._active.labels(kind, state).set(count)

    def run_finished(self, kind: str, seconds: float) -> None:
        self._durations.labels(kind).observe(seconds)

    def regression_verdict(self, verdict: str) -> None:
        """`verdict`: pass, fail or no_baseline."""
        self._verdicts.labels(verdict).inc()

    def value(self, sample: str, **labels: str) -> float:
        """One sample's current value (0 when never observed), e.g.
        `value("flops_webhook_deliveries_total", event="push", outcome="failed")`."""
        return self.registry.get_sample_value(sample, labels) or 0.0

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for a scraper sending `accept`: (body, Content-Type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def event_label(event: str) -> str:
    """The `event` label of a delivery: a subscribed event's name, `unknown` or `other`."""
    return event if event in EVENTS or event == "unknown" else "other"
