"""Every Prometheus metric of the service, defined once at import on the default registry.

Metrics are module-level: the default registry refuses a second registration of a name, and tests build many
apps in one process, so nothing here is created per app. Values that live in an object (queue depth, requests
in flight, running mailouts, database pool use) are read at scrape time through `watch`, so they are exact
and never need inc/dec bookkeeping on every path; each app registers its sources while it runs and removes
them when it stops. Several sources of one value (several apps in a test process) are summed.

Label values are bounded sets (statuses, outcomes, route templates, HTTP statuses); never an id.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import cast

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from mailer.domain.breaker import BreakerState
from mailer.domain.statuses import MessageStatus, Outcome

NAMESPACE = "mailer"

# A `_created` series per counter and histogram child doubles the scrape for a timestamp nobody graphs
# (Prometheus works from resets, not creation times). A process-wide switch, read at scrape time.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

# Provider answers range from a few milliseconds (sandbox) to the 10 s default timeout and beyond.
PROVIDER_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# API requests are short; the import of a large file is the long tail.
HTTP_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
SMTP_LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)

MESSAGE_TRANSITIONS = Counter(
    "message_transitions",
    "Messages that entered a status (pending, sending, sent, failed, expired, cancelled).",
    ["status"],
    namespace=NAMESPACE,
)
PROVIDER_REQUESTS = Counter(
    "provider_requests",
    "Requests to the provider's send API, by outcome (sent, transient, timeout, connection, rejected, "
    "unauthorized, cut).",
    ["outcome"],
    namespace=NAMESPACE,
)
PROVIDER_LATENCY = Histogram(
    "provider_request_duration_seconds",
    "Time from sending a request to the provider to having its answer (or giving up on it).",
    namespace=NAMESPACE,
    buckets=PROVIDER_LATENCY_BUCKETS_S,
)
RETRIES = Counter(
    "send_retries",
    "Messages put back to pending for another attempt after a failed request.",
    namespace=NAMESPACE,
)
GC_SECONDS = Counter(
    "gc_seconds",
    "CPU time of the event loop's thread spent in Python's cyclic garbage collector.",
    namespace=NAMESPACE,
)
BREAKER_STATE = Gauge(
    "provider_breaker_state",
    "The provider circuit breaker: 1 for the current state (closed, open, half_open), 0 for the others.",
    ["state"],
    namespace=NAMESPACE,
)
HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests served, by method, route template and status.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to serve an HTTP request, by method and route template.",
    ["method", "route"],
    namespace=NAMESPACE,
    buckets=HTTP_LATENCY_BUCKETS_S,
)
PROVIDER_SANDBOX = Gauge(
    "provider_sandbox",
    "1 while the built-in sandbox is the provider: messages are accepted and reach no phone.",
    namespace=NAMESPACE,
)
REPORT_RUNS = Counter(
    "report_sends",
    "Attempts of this process to send the daily report e-mail, by result (sent, failed).",
    ["result"],
    namespace=NAMESPACE,
)
REPORT_LAST_SENT = Gauge(
    "report_last_sent_timestamp_seconds",
    "Unix time at which this process last sent the daily report e-mail (0: never).",
    namespace=NAMESPACE,
)
SMTP_LATENCY = Histogram(
    "report_smtp_duration_seconds",
    "Time to hand the daily report to the SMTP server, failures included.",
    namespace=NAMESPACE,
    buckets=SMTP_LATENCY_BUCKETS_S,
)


class ReportResult(StrEnum):
    SENT = "sent"
    FAILED = "failed"


# Every label value known in advance gets its series at 0 now: `rate()` and alerts see a series from the
# first scrape instead of nothing until the first event.
for _status in MessageStatus:
    MESSAGE_TRANSITIONS.labels(status=_status.value)
for _outcome in Outcome:
    PROVIDER_REQUESTS.labels(outcome=_outcome.value)
for _result in ReportResult:
    REPORT_RUNS.labels(result=_result.value)


def set_breaker_state(state: BreakerState | str) -> None:
    """Mark `state` as the breaker's current state (1) and every other state 0."""
    current = BreakerState(state)
    for candidate in BreakerState:
        BREAKER_STATE.labels(state=candidate.value).set(1 if candidate is current else 0)


set_breaker_state(BreakerState.CLOSED)


def labelled[M: MetricWrapperBase](metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once per label set: `labels()` (a lock and label checks per call)
    on every request and message was a few microseconds of each one's CPU. Every label set here is bounded
    (statuses, outcomes, methods, route templates)."""
    key = (metric, values)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = metric.labels(*values)
    return cast(M, child)


_CHILDREN: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def message_transition(status: MessageStatus | str, count: int = 1) -> None:
    """Count `count` messages entering `status`."""
    if count > 0:
        labelled(MESSAGE_TRANSITIONS, MessageStatus(status).value).inc(count)


def provider_request(outcome: Outcome | str, duration_s: float | None) -> None:
    """Count one provider request by outcome and, when it was made, observe its latency."""
    labelled(PROVIDER_REQUESTS, Outcome(outcome).value).inc()
    if duration_s is not None:
        PROVIDER_LATENCY.observe(duration_s)


def http_request(method: str, route: str, status: int, duration_s: float) -> None:
    """Count one HTTP request served and observe how long it took."""
    labelled(HTTP_REQUESTS, method, route, str(status)).inc()
    labelled(HTTP_LATENCY, method, route).observe(duration_s)


Sample = Callable[[], float]
Unwatch = Callable[[], None]


class ScrapeTimeGauges(Collector):
    """Gauges whose values are read from live objects when Prometheus scrapes.

    `watch(name, sample)` adds a source and returns the function that removes it; a source that raises is
    skipped (logged nowhere: a scrape must never fail because one object is shutting down).
    """

    def __init__(self, gauges: dict[str, str]) -> None:
        self._help = dict(gauges)
        self._sources: dict[str, dict[int, Sample]] = {name: {} for name in gauges}
        self._ids = itertools.count()
        # Scrapes may run in another thread (prometheus_client's own HTTP server); registration happens in the
        # event loop.
        self._lock = threading.Lock()

    def watch(self, name: str, sample: Sample) -> Unwatch:
        if name not in self._help:
            raise KeyError(f"no scrape-time gauge named {name!r}; known: {sorted(self._help)}")
        key = next(self._ids)
        with self._lock:
            self._sources[name][key] = sample

        def unwatch() -> None:
            with self._lock:
                self._sources[name].pop(key, None)

        return unwatch

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, text) for name, text in self._help.items()]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sources = {name: list(samples.values()) for name, samples in self._sources.items()}
        for name, samples in sources.items():
            total = 0.0
            for sample in samples:
                try:
                    total += float(sample())
                except Exception:  # see the class docstring
                    continue
            yield GaugeMetricFamily(name, self._help[name], value=total)


SENDER_QUEUE_DEPTH = f"{NAMESPACE}_sender_queue_depth"
SENDER_IN_FLIGHT = f"{NAMESPACE}_sender_in_flight_requests"
RUNNING_MAILOUTS = f"{NAMESPACE}_running_mailouts"
DB_POOL_SIZE = f"{NAMESPACE}_db_pool_max_connections"
DB_POOL_IN_USE = f"{NAMESPACE}_db_pool_connections_in_use"
DB_POOL_IDLE = f"{NAMESPACE}_db_pool_connections_idle"

SAMPLED = ScrapeTimeGauges(
    {
        SENDER_QUEUE_DEPTH: "Send jobs claimed and waiting for a free sender.",
        SENDER_IN_FLIGHT: "Requests to the provider in flight now.",
        RUNNING_MAILOUTS: "Mailouts this process is sending now (status running).",
        DB_POOL_SIZE: "Connections the database pool may open at most (pool size plus overflow).",
        DB_POOL_IN_USE: "Database connections checked out of the pool now.",
        DB_POOL_IDLE: "Open database connections idle in the pool now.",
    }
)
REGISTRY.register(SAMPLED)


def watch(name: str, sample: Sample) -> Unwatch:
    """Read `sample()` into the scrape-time gauge `name` (one of the constants above) until unwatched."""
    return SAMPLED.watch(name, sample)
