"""Request ids, metrics, JSON logs and the access log, through the API in this process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, Histogram

from srm import logs, metrics
from srm.api.app import create_app
from srm.api.observability import runner_options
from srm.api.protocol import SrmAppRunner
from srm.store import SessionStore
from tests.helpers import OPERATOR, OPERATOR_KEY, SECRET, SETUP, auth, token


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def captured(settings: Any) -> Iterator[io.StringIO]:
    """Every log line of the test, formatted as in production, at DEBUG level."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter(logs.secrets_of(settings)))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


@contextlib.asynccontextmanager
async def served(settings: Any, store: SessionStore) -> AsyncIterator[TestClient[Any, Any]]:
    """The API with the access-log options `srm serve` uses for *settings*."""
    server = TestServer(create_app(settings, store))
    await server.start_server(**runner_options(settings))  # TestClient then reuses it
    async with TestClient(server) as c:
        yield c


@pytest.fixture
async def logged_client(settings: Any, store: SessionStore) -> AsyncIterator[TestClient[Any, Any]]:
    """The API with the access log on."""
    async with served(settings.replace("server", access_log=True), store) as c:
        yield c


# -- request ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/srm/sessions", 200), ("/srm/sessions", 401), ("/nowhere", 404), ("/health", 200)],
)
async def test_a_safe_request_id_is_echoed_on_every_answer(
    client: Any, path: str, status: int
) -> None:
    headers = {"X-Request-ID": "trace-4bf92f3577b34da6.a3ce929d:0e0e4736"}
    if status == 200 and path != "/health":
        headers.update(auth())
    resp = await client.get(path, headers=headers)
    assert resp.status == status
    assert resp.headers["X-Request-ID"] == headers["X-Request-ID"]


@pytest.mark.parametrize(
    "given", [None, "", "has space", "x" * 129, "new\\nline", 'quote"d', "ünïcode", "a;b"]
)
async def test_an_unsafe_or_missing_request_id_is_replaced(client: Any, given: str | None) -> None:
    headers = auth() if given is None else {**auth(), "X-Request-ID": given}
    resp = await client.put(f"/srm/sessions/{uuid.uuid4()}", headers=headers)
    assert resp.status == 404
    rid = resp.headers["X-Request-ID"]
    assert rid != given and len(rid) == 32 and int(rid, 16) >= 0


async def test_request_ids_differ_between_requests(client: Any) -> None:
    ids = {(await client.get("/health")).headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


async def test_a_protocol_error_carries_a_request_id_and_is_logged(
    settings: Any, store: SessionStore, captured: io.StringIO
) -> None:
    settings = settings.replace("server", access_log=True)
    runner = SrmAppRunner(create_app(settings, store), **runner_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
    finally:
        await runner.cleanup()
    head = answer.partition(b"\r\n\r\n")[0].decode().lower()
    assert head.split(" ", 2)[1] == "431"
    rid = head.partition("\r\nx-request-id: ")[2].partition("\r\n")[0]
    assert len(rid) == 32
    access = [x for x in lines(captured) if x["logger"] == "srm.access"]
    assert [(x["route"], x["status"], x["error_code"], x["request_id"]) for x in access] == [
        ("unparsed", 431, "SRM-0009", rid)
    ]


async def test_log_lines_written_during_a_request_carry_its_id(
    client: Any, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*_args: Any) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(SessionStore, "keep_alive", boom)
    resp = await client.put(
        f"/srm/sessions/{uuid.uuid4()}", headers={**auth(), "X-Request-ID": "req-42"}
    )
    assert resp.status == 500
    errors = [x for x in lines(captured) if x["level"] == "ERROR"]
    assert errors and all(x["request_id"] == "req-42" for x in errors)
    assert "RuntimeError" in errors[0]["exc"]


# -- metrics -------------------------------------------------------------------------------


async def test_requests_are_counted_by_route_template_and_outcome(client: Any) -> None:
    route = "/srm/v1/sessions/{sessionId}"
    ok = {"route": route, "method": "PUT", "status": "200", "error_code": ""}
    missing = {**ok, "status": "404", "error_code": "SRM-0004"}
    before = (sample("srm_http_requests_total", **ok), sample("srm_http_requests_total", **missing))
    before_seconds = sample("srm_http_request_duration_seconds_count", **missing)
    before_errors = sample("srm_errors_total", error_code="SRM-0004")
    sid = (await (await client.post("/srm/sessions", json=SETUP, headers=auth())).json())[
        "successResponse"
    ]["sessionId"]
    assert (await client.put(f"/srm/v1/sessions/{sid}", headers=auth())).status == 200
    for _ in range(2):
        resp = await client.put(f"/srm/v1/sessions/{uuid.uuid4()}", headers=auth())
        assert resp.status == 404
    assert sample("srm_http_requests_total", **ok) == before[0] + 1
    assert sample("srm_http_requests_total", **missing) == before[1] + 2
    assert sample("srm_http_request_duration_seconds_count", **missing) == before_seconds + 2
    assert sample("srm_errors_total", error_code="SRM-0004") == before_errors + 2
    text = await (await client.get("/metrics")).text()
    assert sid not in text  # raw paths never become label values


async def test_unknown_paths_and_methods_stay_bounded(client: Any) -> None:
    labels = {"route": "unmatched", "method": "OTHER", "status": "405", "error_code": "SRM-0007"}
    before = sample("srm_http_requests_total", **labels)
    for method in ("PROPFIND", "MKCOL", "PURGE"):
        resp = await client.request(method, "/srm/sessions")
        assert resp.status == 405
    assert sample("srm_http_requests_total", **labels) == before + 3
    text = await (await client.get("/metrics")).text()
    assert "PROPFIND" not in text


async def test_denials_are_counted(client: Any) -> None:
    before = sample("srm_denials_total")
    answers = [await client.post("/srm/sessions", json=SETUP, headers=auth()) for _ in range(5)]
    bodies = [await a.json() for a in answers]
    assert sum("errorResponse" in b for b in bodies) == 2
    assert sample("srm_denials_total") == before + 2


async def test_store_calls_are_timed_and_failures_counted(client: Any) -> None:
    before = sample("srm_store_call_duration_seconds_count", operation="keepalive")
    await client.put(f"/srm/sessions/{uuid.uuid4()}", headers=auth())
    assert sample("srm_store_call_duration_seconds_count", operation="keepalive") == before + 1


async def test_store_errors_are_counted_by_operation(
    settings: Any, store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def timing_out(*_args: Any, **_kwargs: Any) -> None:
        raise TimeoutError

    monkeypatch.setattr(store.redis, "ping", timing_out)
    labels = {"operation": "ping", "error_code": "SRM-0008"}
    before = sample("srm_store_errors_total", **labels)
    async with TestClient(TestServer(create_app(settings, store))) as c:
        resp = await c.get("/ready")
    assert resp.status == 503
    assert sample("srm_store_errors_total", **labels) == before + 1


async def test_in_flight_requests_are_a_gauge(
    client: Any, store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def stuck_ping() -> None:
        entered.set()
        await release.wait()

    monkeypatch.setattr(store, "ping", stuck_ping)
    idle = sample("srm_http_requests_in_flight")
    pending = asyncio.ensure_future(client.get("/ready"))
    await asyncio.wait_for(entered.wait(), 10)
    assert sample("srm_http_requests_in_flight") == idle + 1
    release.set()
    assert (await asyncio.wait_for(pending, 10)).status == 200
    assert sample("srm_http_requests_in_flight") == idle


async def test_metrics_endpoint_speaks_the_text_format(client: Any) -> None:
    await client.get("/health")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    for name in (
        "srm_http_requests_total",
        "srm_http_request_duration_seconds_bucket",
        "srm_http_requests_in_flight",
        "srm_denials_total",
    ):
        assert f"\n{name}" in text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"srm_http_requests", "srm_http_request_duration_seconds"} <= families


# -- logs ----------------------------------------------------------------------------------


async def test_access_log_is_one_json_line_per_request(
    logged_client: Any, captured: io.StringIO
) -> None:
    await logged_client.get("/health", headers={"X-Request-ID": "access-1"})
    await logged_client.put(f"/srm/v1/sessions/{uuid.uuid4()}?q=1", headers=auth())
    access = [x for x in lines(captured) if x["logger"] == "srm.access"]
    assert len(access) == 2
    first, second = access
    assert (first["request_id"], first["path"], first["status"]) == ("access-1", "/health", 200)
    assert second["route"] == "/srm/v1/sessions/{sessionId}"
    assert (second["status"], second["error_code"]) == (404, "SRM-0004")
    assert "q=1" not in str(second) and second["duration_ms"] >= 0


async def test_access_log_is_off_by_default(
    settings: Any, store: SessionStore, captured: io.StringIO
) -> None:
    assert settings.server.access_log is False
    async with served(settings, store) as client:
        for _ in range(3):
            assert (await client.get("/health")).status == 200
    logging.getLogger("srm.probe").info("probe")
    assert [x["logger"] for x in lines(captured)] == ["srm.probe"]  # only the probe


async def test_no_token_key_or_secret_is_ever_logged(
    logged_client: Any, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = logged_client
    tokens = [token("acct-log", f"dev-{i}") for i in range(3)]
    wrong_key = "not-the-operator-key-but-close-0123"
    for t in tokens:
        await client.post("/srm/sessions", json=SETUP, headers={"Client-Token": t})
        await client.get("/srm/sessions", headers={"Authorization": f"Bearer {t}"})
    await client.get("/srm/sessions", headers={"Client-Token": tokens[0][:-3] + "xyz"})
    await client.get("/srm/v1/accounts/acct-log/sessions", headers=OPERATOR)
    await client.put("/srm/v1/accounts/acct-log/limit", json={"maxSessions": 5}, headers=OPERATOR)
    await client.get(
        "/srm/v1/accounts/a/sessions", headers={"Authorization": f"Bearer {wrong_key}"}
    )
    await client.get(
        "/srm/v1/accounts/a/sessions", headers={"Authorization": f"Bearer {tokens[1]}"}
    )

    async def failing(*_args: Any) -> None:
        raise RuntimeError("store exploded")

    monkeypatch.setattr(SessionStore, "account_sessions", failing)
    await client.get("/srm/sessions", headers={"Client-Token": tokens[2]})
    await client.get("/srm/v1/accounts/acct-log/sessions", headers=OPERATOR)

    text = captured.getvalue()
    assert len(lines(captured)) >= 14  # the access log and the errors were captured
    for secret in [*tokens, OPERATOR_KEY, SECRET, wrong_key]:
        assert secret not in text
        for part in secret.split(".") if secret.count(".") == 2 else []:
            assert part not in text  # not even a JWT's signature or payload alone


def test_formatter_masks_configured_secrets_and_anything_shaped_like_a_jwt() -> None:
    formatter = logs.JsonFormatter(["s3cret-value-0123456789", 'with"quote-0123456789'])
    t = token()
    record = logging.makeLogRecord(
        {"msg": "a %s b %s c %s", "args": ("s3cret-value-0123456789", t, 'with"quote-0123456789')}
    )
    line = formatter.format(record)
    assert "s3cret" not in line and t not in line and "quote" not in line
    assert orjson.loads(line)["msg"] == "a *** b *** c ***"


def test_pending_observations_fold_into_the_histogram_as_observe_would() -> None:
    """metrics.store_call keeps observations in plain counters; once folded, every bucket,
    the sum and the count equal what Histogram.observe gives for the same values."""
    reference = Histogram("reference_seconds", "", buckets=metrics._LATENCY_BUCKETS, registry=None)
    values = [0.0, 0.0005, 0.0007, 0.003, 0.01, 0.2, 4.0, 7.5]
    operation = "fold-check"
    for value in values:
        metrics.store_call(operation, value)
        reference.observe(value)
    metrics.flush()
    ours = {
        (s.name.removeprefix("srm_store_call_duration_seconds"), s.labels.get("le")): s.value
        for family in REGISTRY.collect()
        if family.name == "srm_store_call_duration_seconds"
        for s in family.samples
        if s.labels.get("operation") == operation
    }
    expected = {
        (s.name.removeprefix("reference_seconds"), s.labels.get("le")): s.value
        for family in reference.collect()
        for s in family.samples
    }
    assert ours == expected
