"""Prometheus metrics of the API, all named ``srm_...``, and their exposition.

With several workers, ``srm serve`` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before it spawns them (prometheus-client picks its value store when it is first imported),
so each worker writes its samples to files there and a scrape of any worker sums them all.
When a worker exits, its counts are added to the ``<kind>_exited.db`` files and its own
files are removed, so restarts do not pile up files that every scrape reads.
With one process the default in-memory registry is served as is.

Recording is on the hot path: label values are bounded (route templates, known methods,
statuses, SRM codes) so the number of series stays fixed whatever clients send, and the
per-request metrics (request count and duration, store call duration, requests in flight) are
kept in plain Python counters that are folded into the prometheus-client metrics by
:func:`flush`: prometheus-client takes a lock (and, with several workers, writes a shared file)
per increment and per observation. The fold runs before every collection in the process that
recorded (a scrape, ``REGISTRY.get_sample_value``) and every ``FLUSH_INTERVAL`` seconds in each
worker, so a scrape of one worker sees the other workers' requests at most that late; a
worker killed with SIGKILL loses at most that interval of its counts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

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
from prometheus_client.mmap_dict import MmapedDict as _MmapedDict
from prometheus_client.registry import Collector

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
# prometheus_client annotates these in some releases and not in others: they are called
# through Any, so the type check passes on every release the range allows
MmapedDict: Any = _MmapedDict
FLUSH_INTERVAL = 1.0  # seconds between two folds of the pending counts in each worker
# *_created series double the output for nothing here (multiprocess mode has none anyway).
cast(Any, disable_created_metrics)()


class _FlushFirst(Collector):
    """Registered before SRM's metrics: every collection of the registry folds the pending
    counts first (in the thread that records them; a scrape in a worker thread relies on the
    handler's own flush just before it)."""

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        if threading.current_thread() is threading.main_thread():
            flush()
        return []


REGISTRY.register(_FlushFirst())

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
SETUP_JOINS = Counter(
    "srm_setup_joins_total",
    "Setups that joined the ACTIVE session of the same device and playbackId (no slot counted)",
)
SETUP_FLAGGED = Counter(
    "srm_setups_flagged_total",
    "Setups flagged by a monitor rule that would have denied or evicted for them, by rule",
    ["rule"],
)
SETUP_RATE_LIMITED = Counter(
    "srm_setups_rate_limited_total",
    "Setups refused because the account was over limits.setups_per_minute (SRM-0011)",
)
JWKS_FETCHES = Counter(
    "srm_jwks_fetches_total",
    "JWKS document fetches by result: ok, or why the document was refused and the cached "
    "keys kept (unreachable, http_status, too_large, not_json, no_usable_keys, error)",
    ["result"],
)
JWKS_KEYS = Gauge(
    "srm_jwks_keys",
    "Signing keys usable from the last good JWKS document (the lowest of the workers)",
    multiprocess_mode="livemin",
)
JWKS_LAST_SUCCESS = Gauge(
    "srm_jwks_last_success_timestamp_seconds",
    "When the last good JWKS document was fetched (the oldest of the workers)",
    multiprocess_mode="livemin",
)
JWKS_UNKNOWN_KID = Counter(
    "srm_jwks_unknown_kid_total",
    "Client tokens whose kid the cached JWKS lacked, by whether this one could refetch",
    ["refetch"],
)

# A licence server answers within milliseconds to a second or so; drm.timeout is at most 60 s.
_LICENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LICENCES_FORWARDED = Counter(
    "srm_licences_forwarded_total",
    "Licence challenges forwarded to the licence server (the session's keep-alive succeeded)",
)
LICENCES_REFUSED = Counter(
    "srm_licences_refused_total",
    "Licence requests answered SRM-0004 and not forwarded: the session was ended, lapsed, "
    "unknown or another account's",
)
LICENCE_UPSTREAM_ANSWERS = Counter(
    "srm_licence_upstream_answers_total",
    "Answers of the licence server by status class (2xx, 3xx, 4xx, 5xx)",
    ["status_class"],
)
LICENCE_UPSTREAM_SECONDS = Histogram(
    "srm_licence_upstream_duration_seconds",
    "Time from forwarding a licence challenge to the licence server's whole answer (or to "
    "the failure)",
    buckets=_LICENCE_BUCKETS,
)
LICENCE_UPSTREAM_FAILURES = Counter(
    "srm_licence_upstream_failures_total",
    "Forwarded licence challenges answered SRM-0012, by reason: answer (5xx, a redirect or an "
    "oversized answer: 502), unreachable (502), timeout (504)",
    ["reason"],
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
_setups_flagged = _cached(SETUP_FLAGGED)
_jwks_fetches = _cached(JWKS_FETCHES)
_jwks_unknown_kid = _cached(JWKS_UNKNOWN_KID)
_licence_answers = _cached(LICENCE_UPSTREAM_ANSWERS)
_licence_failures = _cached(LICENCE_UPSTREAM_FAILURES)


class _Pending:
    """Counts and observations recorded since the last flush, by label values."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, ...], int] = {}
        # label values -> [sum, count in bucket 0, 1, ...] (non-cumulative, as observe adds)
        self.http: dict[tuple[str, ...], list[float]] = {}
        self.store: dict[str, list[float]] = {}
        self.in_flight = 0
        self.in_flight_shown = 0.0


_pending = _Pending()
_BOUNDS = (*_LATENCY_BUCKETS, float("inf"))


def _observe(into: dict[Any, list[float]], key: Any, seconds: float) -> None:
    found = into.get(key)
    if found is None:
        found = into[key] = [0.0] * (len(_BOUNDS) + 1)
    found[0] += seconds
    found[1 + bisect_left(_BOUNDS, seconds)] += 1


def _fold(child: Any, observed: list[float]) -> None:
    """Add pending observations to a Histogram child as its observe() would have."""
    child._sum.inc(observed[0])
    for bucket, n in zip(child._buckets, observed[1:], strict=True):
        if n:
            bucket.inc(n)


def flush() -> None:
    """Fold the pending per-request counts into the prometheus-client metrics."""
    global _pending
    p = _pending
    if not (p.requests or p.http or p.store or p.in_flight != p.in_flight_shown):
        return
    _pending = _Pending()
    _pending.in_flight = p.in_flight
    for labels, n in p.requests.items():
        _http_requests(*labels).inc(n)
    for labels, observed in p.http.items():
        _fold(_http_seconds(*labels), observed)
    for operation, observed in p.store.items():
        _fold(_store_seconds(operation), observed)
    HTTP_IN_FLIGHT.set(p.in_flight)
    _pending.in_flight_shown = p.in_flight


@asynccontextmanager
async def flushing() -> AsyncIterator[None]:
    """Fold the pending counts every FLUSH_INTERVAL while the block runs, and at its end."""
    stop = asyncio.Event()

    async def loop() -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL)
            except TimeoutError:
                flush()
            else:
                return

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task
        flush()


def request_started() -> None:
    _pending.in_flight += 1


def request_finished() -> None:
    _pending.in_flight -= 1


def http_request(route: str, method: str, status: int, error_code: str, seconds: float) -> None:
    """Count one answered request; *error_code* is "" for a success."""
    labels = (route, method if method in METHODS else "OTHER", str(status), error_code)
    requests = _pending.requests
    requests[labels] = requests.get(labels, 0) + 1
    _observe(_pending.http, labels, seconds)
    if error_code:
        _errors(error_code).inc()
        if error_code == "SRM-0005":
            DENIALS.inc()


def protocol_error(status: int, error_code: str) -> None:
    """Count a request that aiohttp could not parse (it never reached a route)."""
    _http_requests(UNPARSED, "OTHER", str(status), error_code).inc()
    _errors(error_code).inc()


def store_call(operation: str, seconds: float) -> None:
    _observe(_pending.store, operation, seconds)


def store_error(operation: str, error_code: str) -> None:
    _store_errors(operation, error_code).inc()


def setup_abort(outcome: str) -> None:
    _setup_aborts(outcome).inc()


def setup_started(joined: bool, flagged: tuple[str, ...]) -> None:
    """Count what a setup that succeeded did beyond creating a session."""
    if joined:
        SETUP_JOINS.inc()
    for rule in flagged:
        _setups_flagged(rule).inc()


def setup_rate_limited() -> None:
    SETUP_RATE_LIMITED.inc()


def jwks_fetch(result: str, keys: int | None = None, at: float | None = None) -> None:
    """Count one JWKS fetch by *result*; after a good one, its key count and wall time."""
    _jwks_fetches(result).inc()
    if keys is not None:
        JWKS_KEYS.set(keys)
    if at is not None:
        JWKS_LAST_SUCCESS.set(at)


def jwks_unknown_kid(refetch: str) -> None:
    """Count a token with an unknown kid: *refetch* is "fetched", "shared" or "rate_limited"."""
    _jwks_unknown_kid(refetch).inc()


def licence_refused() -> None:
    LICENCES_REFUSED.inc()


def licence_upstream(seconds: float, status: int | None, failure: str = "") -> None:
    """Count one forwarded licence challenge: the licence server's *status* (None: no
    answer), the time it took, and the *failure* reason when it was answered SRM-0012."""
    LICENCES_FORWARDED.inc()
    LICENCE_UPSTREAM_SECONDS.observe(seconds)
    if status is not None:
        _licence_answers(f"{status // 100}xx").inc()
    if failure:
        _licence_failures(failure).inc()


def exposition() -> bytes:
    """The text format of every metric: of all workers when they share a directory. Call
    flush() first in the thread that records (this may run in another)."""
    if not os.environ.get(MULTIPROC_ENV):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    cast(Any, multiprocess.MultiProcessCollector)(registry)
    for _ in range(2):
        try:
            return generate_latest(registry)
        except FileNotFoundError:
            pass  # an exited worker's file, folded and removed between listing and reading
    return generate_latest(registry)


# Metric kinds whose values add up across processes: kept when a process exits. Gauges
# describe a live process and go with it.
_SUMMED_KINDS = ("counter", "histogram", "summary")


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
        """Fold the counts of exited process *pid* into the ``_exited`` files, drop its files."""
        directory = Path(self.path)
        for kind in _SUMMED_KINDS:
            own = directory / f"{kind}_{pid}.db"
            if own.exists():
                _add_into(directory / f"{kind}_exited.db", own)
                own.unlink()
        for gauge in directory.glob(f"gauge_*_{pid}.db"):
            gauge.unlink(missing_ok=True)

    def remove(self) -> None:
        if self._previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = self._previous
        shutil.rmtree(self.path, ignore_errors=True)


def _add_into(total: Path, source: Path) -> None:
    """Add every sample of the multiprocess file *source* into the file *total*."""
    if not total.exists():
        # made complete under another name first: a scrape never reads it half-made
        partial = total.with_suffix(".tmp")
        MmapedDict(str(partial)).close()
        partial.replace(total)
    into = MmapedDict(str(total))
    try:
        for key, value, timestamp, _pos in MmapedDict.read_all_values_from_file(str(source)):
            current, _ = into.read_value(key)
            into.write_value(key, current + value, timestamp)
    finally:
        into.close()
