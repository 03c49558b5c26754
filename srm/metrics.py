"""Prometheus metrics of the API, all named ``srm_...``, and their exposition.

With several workers, ``srm serve`` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before it spawns them (prometheus-client picks its value store when it is first imported),
so each worker writes its samples to files there and a scrape of any worker sums them all.
With one process the default in-memory registry is served as is.

Recording is on the hot path: label children are looked up once and cached, and label
values are bounded (route templates, known methods, statuses, SRM codes) so the number of
series stays fixed whatever clients send.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format: what every Prometheus version and scraper parses.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
UNPARSED = "unparsed"  # the route label of requests too malformed to reach routing
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

# One Redis round trip is ~0.1-1 ms; the request deadline is 2 s: buckets span both.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# *_created series double the output for nothing here (multiprocess mode has none anyway).
disable_created_metrics()  # type: ignore[no-untyped-call]

_HTTP_LABELS = ("route", "method", "status", "error_code")

HTTP_REQUESTS = Counter(
    "srm_http_requests_total",
    "HTTP requests answered, by route template, method, status and SRM error code",
    _HTTP_LABELS,
)
HTTP_SECONDS = Histogram(
    "srm_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method, status and SRM error code",
    _HTTP_LABELS,
    buckets=_LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "srm_http_requests_in_flight",
    "HTTP requests being handled now",
    multiprocess_mode="livesum",
)
ERRORS = Counter(
    "srm_errors_total",
    "Error answers by SRM error code (SRM-0005 denials included)",
    ["error_code"],
)
DENIALS = Counter(
    "srm_denials_total",
    "Session setups denied because the account is at its limit (SRM-0005)",
)
STORE_SECONDS = Histogram(
    "srm_store_call_duration_seconds",
    "Time of one store call (one Lua script or pipeline, retries included), by operation",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)
STORE_ERRORS = Counter(
    "srm_store_errors_total",
    "Store calls that failed, by operation and the SRM error code they raised",
    ["operation", "error_code"],
)

SETUP_ABORTS = Counter(
    "srm_setup_aborts_total",
    "Background aborts of setups whose outcome is unknown, by outcome: queued, done, "
    "gave_up (every attempt failed), dropped (the queue was full)",
    ["outcome"],
)


def _cached(metric: Any) -> Callable[..., Any]:
    """``metric.labels(*values)``, memoised: the lookup takes a lock and builds a key."""
    children: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        found = children.get(values)
        if found is None:
            found = children[values] = metric.labels(*values)
        return found

    return child


_http_requests = _cached(HTTP_REQUESTS)
_http_seconds = _cached(HTTP_SECONDS)
_errors = _cached(ERRORS)
_store_seconds = _cached(STORE_SECONDS)
_store_errors = _cached(STORE_ERRORS)
_setup_aborts = _cached(SETUP_ABORTS)


def http_request(route: str, method: str, status: int, error_code: str, seconds: float) -> None:
    """Count one answered request; *error_code* is "" for a success."""
    labels = (route, method if method in METHODS else "OTHER", str(status), error_code)
    _http_requests(*labels).inc()
    _http_seconds(*labels).observe(seconds)
    if error_code:
        _errors(error_code).inc()
        if error_code == "SRM-0005":
            DENIALS.inc()


def protocol_error(status: int, error_code: str) -> None:
    """Count a request that aiohttp could not parse (it never reached a route)."""
    _http_requests(UNPARSED, "OTHER", str(status), error_code).inc()
    _errors(error_code).inc()


def store_call(operation: str, seconds: float) -> None:
    _store_seconds(operation).observe(seconds)


def store_error(operation: str, error_code: str) -> None:
    _store_errors(operation, error_code).inc()


def setup_abort(outcome: str) -> None:
    _setup_aborts(outcome).inc()


def exposition() -> bytes:
    """The text format of every metric: of all workers when they share a directory."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class SharedMetricsDir:
    """The directory workers share their samples in, owned by the `srm serve` supervisor.

    It must exist, empty, before the workers start, and go away when they all have; a worker
    that exits has its live gauges (in-flight requests) dropped, its counters kept.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="srm-metrics-")
        self._previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.path  # inherited by every process spawned from here

    def process_exited(self, pid: int) -> None:
        multiprocess.mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def remove(self) -> None:
        if self._previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = self._previous
        shutil.rmtree(self.path, ignore_errors=True)
