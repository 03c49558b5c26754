"""What the service answers to input it refuses: the ``detail`` beside
errorResponse, the 401 challenge, ids no URL can carry, one contentID rule for the server and
the OpenAPI document, and the document's account of nullable and configured fields."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import re
import shutil
import subprocess
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from srm.api import bodies, openapi
from srm.api.app import PREFIXES, create_app
from srm.api.cursors import CursorSigner, key_material
from srm.api.errors import CHALLENGE, DETAIL_HEADER, error_body
from srm.api.protocol import SrmAppRunner
from srm.auth import mint
from srm.errors import InternalError
from srm.model import Policy
from srm.rules import Rule
from tests.helpers import OPERATOR, SETUP, auth, expect_error, open_backend, setup_session, token


@pytest.fixture(params=["standalone"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """These answers are the HTTP layer's: one real backend is enough."""
    async with open_backend(request, request.param) as client:
        yield client


# -- detail ---------------------------------------------------------------------------------


async def test_a_malformed_setup_says_what_was_wrong_in_the_body(client: Any) -> None:
    body = {"content": {"contentID": "a", "contentType": "VOD"}}
    resp = await client.post("/srm/sessions", json=body, headers=auth())
    await expect_error(resp, 400, "SRM-0002")
    detail = (await resp.json())["detail"]
    assert detail == "content.contentType must be one of COD, LIVE, TSTV, NPVR"
    assert resp.headers[DETAIL_HEADER] == detail


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("POST", "/srm/sessions", {}, 401, "SRM-0003"),
        ("PUT", "/srm/sessions/not-a-uuid", auth(), 400, "SRM-0002"),
        ("GET", "/srm/sessions?limit=0", auth(), 400, "SRM-0002"),
        ("GET", "/srm/v1/accounts/a/limit", {}, 403, "SRM-0006"),
        ("GET", "/srm/v1/accounts/a/usage?days=99", OPERATOR, 400, "SRM-0002"),
    ],
)
async def test_every_error_with_a_detail_carries_it_in_the_body(
    client: Any, method: str, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    resp = await client.request(method, path, headers=headers)
    await expect_error(resp, status, code)
    body = await resp.json()
    if DETAIL_HEADER in resp.headers:
        assert body["detail"].encode("ascii", "replace").decode() == resp.headers[DETAIL_HEADER]
    else:
        assert "detail" not in body
    if code in ("SRM-0002", "SRM-0003"):
        assert body["detail"]


async def test_a_denial_says_which_limit_refused(client: Any) -> None:
    for device in ("d1", "d2", "d3"):
        await setup_session(client, device=device)
    resp = await client.post("/srm/sessions", json=SETUP, headers=auth(device="d4"))
    await expect_error(resp, 200, "SRM-0005", "DENIED")
    body = await resp.json()
    assert body["detail"] == "the account allows at most 3 active sessions"
    assert body["denial"]["rule"] == "account"


def test_an_internal_error_has_no_detail() -> None:
    body = error_body(InternalError("ERR from redis: secret-ish text"), 500)
    assert b"detail" not in body and b"redis" not in body


# -- 401 ------------------------------------------------------------------------------------


async def test_a_401_carries_a_challenge_and_other_errors_none(client: Any) -> None:
    unauthenticated = await client.get("/srm/sessions", headers={"Client-Token": "x.y.z"})
    await expect_error(unauthenticated, 401, "SRM-0003")
    assert unauthenticated.headers["WWW-Authenticate"] == CHALLENGE == 'Bearer realm="srm"'
    for resp in (
        await client.get("/srm/v1/accounts/a/limit"),  # 403
        await client.get("/srm/nowhere"),  # 404
        await client.put("/srm/sessions/x", headers=auth()),  # 400
    ):
        assert resp.status != 401 and "WWW-Authenticate" not in resp.headers


# -- ids no URL path can carry -----------------------------------------------------------------


@pytest.mark.parametrize("claim", ["accountId", "deviceId"])
@pytest.mark.parametrize("value", [".", ".."])
async def test_dot_ids_in_a_token_are_refused_with_a_detail(
    client: Any, redis_client: Any, claim: str, value: str
) -> None:
    ids = {"account": "acct-1", "device": "dev-1"}
    ids["account" if claim == "accountId" else "device"] = value
    headers = {"Client-Token": token(ids["account"], ids["device"])}
    resp = await client.post("/srm/sessions", json=SETUP, headers=headers)
    await expect_error(resp, 401, "SRM-0003")
    assert (await resp.json())["detail"] == (
        f"Client-Token {claim} may not be . or .. (no URL path holds it)"
    )
    assert await redis_client.dbsize() == 0


@pytest.mark.parametrize("value", ["...", ".a", "a.", ". ", "%2E"])
async def test_ids_with_dots_that_are_not_dot_segments_are_fine(client: Any, value: str) -> None:
    await setup_session(client, account=value, device=value)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/srm/v1/accounts/%2E/sessions"),
        ("GET", "/srm/v1/accounts/%2E%2E/limit"),
        ("DELETE", "/srm/v1/accounts/acct/devices/%2e%2E/sessions"),
        ("DELETE", "/srm/v1/accounts/acct/devices/%2E/sessions"),
    ],
)
async def test_dot_ids_in_operator_paths_are_refused(
    client: Any, redis_client: Any, method: str, path: str
) -> None:
    """Sent raw: an HTTP client library collapses such segments before sending."""
    await setup_session(client, account="acct")
    status, _headers, body = await raw_request(client.port, method, path, OPERATOR)
    assert status == 400, body
    assert body["errorResponse"]["errorCode"] == "SRM-0002"
    assert "may not be . or .." in body["detail"]
    listing = await client.get("/srm/v1/accounts/acct/sessions", headers=OPERATOR)
    assert (await listing.json())["activeCount"] == 1


async def raw_request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """One request written byte for byte on a socket: (status, headers, JSON body or None)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        async with asyncio.timeout(30):
            response = await reader.read()
    finally:
        writer.close()
    head, _, content = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = dict(line.split(": ", 1) for line in header_lines)
    return (
        int(status_line.split(" ")[1]),
        answer_headers,
        orjson.loads(content) if content else None,
    )


# -- one contentID rule ----------------------------------------------------------------------

BLANKS = ["\u001c", "\u001f", "\u0085", "\ufeff", "\u00a0", "\u3000", " \t\r\n", "\u2028"]


def _setup_schema(settings: Any) -> OAS30Validator:
    doc = openapi.document(settings, PREFIXES)
    schema = {**doc["components"]["schemas"]["SetupRequest"], "components": doc["components"]}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


@pytest.mark.parametrize("content_id", [*BLANKS, "\ufeffa", "a\u0085", "\u001cx\u001c", "é"])
async def test_the_server_and_the_document_agree_on_a_content_id(
    client: Any, settings: Any, content_id: str
) -> None:
    body = {"content": {"contentID": content_id, "contentType": "COD"}}
    documented = _setup_schema(settings).is_valid(body)
    resp = await client.post("/srm/sessions", json=body, headers=auth())
    assert (resp.status == 200) == documented, (content_id, resp.status, documented)
    assert documented == (content_id not in BLANKS)


# -- what the document says of request bodies ----------------------------------------------


async def test_null_quality_and_replaces_are_absent_for_the_server_and_the_document(
    client: Any, settings: Any
) -> None:
    body = {**SETUP, "quality": None, "replaces": None}
    assert _setup_schema(settings).is_valid(body)
    resp = await client.post("/srm/sessions", json=body, headers=auth())
    assert "successResponse" in await resp.json()


def _limit_schema(settings: Any) -> OAS30Validator:
    doc = openapi.document(settings, PREFIXES)
    schema = {**doc["components"]["schemas"]["LimitRequest"], "components": doc["components"]}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


UHD = Rule(name="uhd", max=1, qualities=("UHD",))


@pytest.fixture
def policy() -> Policy:
    """The store of this module knows the rule uhd (which no test here sets up against)."""
    return Policy(
        timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False, rules=(UHD,)
    )


@pytest.fixture
def rule_settings(settings: Any) -> Any:
    return settings.replace("sessions", rules=(UHD,))


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ({"unknownKey": 1}, False),
        ({}, False),
        ({"rules": {"nope": 1}}, False),
        ({"rules": {"uhd": 2}}, True),
        ({"rules": {"uhd": None}}, True),
        ({"maxSessions": 2}, True),
        ({"maxSessions": 2, "rules": {"uhd": 0}}, True),
    ],
)
async def test_the_document_names_the_configured_rules(
    rule_settings: Any, store: Any, body: dict[str, Any], accepted: bool
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    assert _limit_schema(rule_settings).is_valid(body) == accepted
    async with TestClient(TestServer(create_app(rule_settings, store))) as http:
        resp = await http.put("/srm/v1/accounts/acct/limit", json=body, headers=OPERATOR)
        assert (resp.status == 200) == accepted, await resp.text()


def test_the_pattern_means_the_same_in_ecmascript() -> None:
    """JSON Schema patterns are ECMA-262 regexes: a validator in a browser or in node must
    read the document's pattern as the server does."""
    if shutil.which("node") is None:
        pytest.fail("node is needed to run ECMAScript regexes (Debian: nodejs)", pytrace=False)
    samples = [*BLANKS, "\ufeffa", "a\u0085", "\u000b", "\u180e", "x", "é", "\u200b"]
    script = (
        "const [p, s] = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify(s.map(x => new RegExp(p, 'u').test(x))));"
    )
    argument = json.dumps([bodies.CONTENT_ID_PATTERN, samples])
    out = subprocess.run(
        ["node", "-e", script, argument], capture_output=True, check=True, text=True
    ).stdout
    assert json.loads(out) == [bool(re.search(bodies.CONTENT_ID_PATTERN, x)) for x in samples]


# -- bodies that do not decode (item 4) -------------------------------------------------------


@pytest.fixture
async def live(settings: Any, store: Any) -> AsyncIterator[int]:
    """The API on a real TCP port, with protocol error handling as `srm serve` has it;
    its port."""
    settings = settings.replace("server", body_timeout=0.5)
    runner = SrmAppRunner(create_app(settings, store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


NOT_COMPRESSED = orjson.dumps(SETUP)


def _routes() -> list[tuple[str, str, dict[str, str]]]:
    return [
        ("POST", "/srm/sessions", auth()),
        ("POST", "/srm/v1/sessions", {}),
        ("PUT", "/srm/v1/accounts/acct/limit", OPERATOR),
        ("GET", "/health", {}),
        ("GET", "/srm/sessions", auth()),
        ("GET", "/nowhere", {}),
    ]


def _noise(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What was logged at INFO or above, or with a traceback."""
    return [r for r in caplog.records if r.levelno >= logging.INFO or r.exc_info]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(("method", "path", "headers"), _routes())
async def test_a_body_that_does_not_decode_is_400_on_every_path(
    live: int,
    redis_client: Any,
    caplog: pytest.LogCaptureFixture,
    encoding: str,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {**headers, "Content-Encoding": encoding, "Content-Type": "application/json"}
    status, answer_headers, body = await raw_request(live, method, path, headers, NOT_COMPRESSED)
    assert status == 400, body
    assert body["errorResponse"]["errorCode"] == "SRM-0002"
    assert body["detail"] == "request body does not decode as its Content-Encoding says"
    assert answer_headers[DETAIL_HEADER] == body["detail"]
    assert _noise(caplog) == []
    assert await redis_client.dbsize() == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_body_is_read_as_usual(
    live: int, caplog: pytest.LogCaptureFixture, encoding: str
) -> None:
    compress = gzip.compress if encoding == "gzip" else zlib.compress
    headers = {**auth(), "Content-Encoding": encoding}
    status, _, body = await raw_request(
        live, "POST", "/srm/sessions", headers, compress(NOT_COMPRESSED)
    )
    assert status == 200 and "successResponse" in body
    status, _, body = await raw_request(
        live,
        "PUT",
        "/srm/v1/accounts/acct/limit",
        {**OPERATOR, "Content-Encoding": encoding},
        compress(b'{"maxSessions": 5}'),
    )
    assert (status, body["maxSessions"]) == (200, 5)
    assert _noise(caplog) == []


async def test_a_bad_body_that_arrives_after_the_answer_logs_no_traceback(
    live: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The body comes after the body timeout answered 400: aiohttp discards it and finds it
    does not decode, with no handler left to answer."""
    caplog.set_level(logging.DEBUG)
    head = (
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(NOT_COMPRESSED)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", live)
    try:
        writer.write(head.encode())
        async with asyncio.timeout(30):
            answer = await reader.readuntil(b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400"), answer
            writer.write(NOT_COMPRESSED)
            await writer.drain()
            await reader.read()  # the server closes once it has discarded the body
    finally:
        writer.close()
    assert _noise(caplog) == []
    assert len(caplog.records) <= 2  # DEBUG lines at most: the timeout, the discarded body


# -- cursors (item 5) ---------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def _first_next(http: Any, path: str, headers: dict[str, str]) -> str:
    page = await (await http.get(path, params={"limit": "1"}, headers=headers)).json()
    assert page["next"], page
    return str(page["next"])


async def _status(http: Any, path: str, cursor: str, headers: dict[str, str]) -> int:
    resp = await http.get(path, params={"limit": "1", "cursor": cursor}, headers=headers)
    if resp.status != 200:
        await expect_error(resp, 400, "SRM-0002")
        assert (await resp.json())["detail"] == "cursor is not one this listing gave out"
    return int(resp.status)


async def test_only_cursors_the_service_made_for_the_account_are_accepted(client: Any) -> None:
    for account in ("acct-a", "acct-b"):
        for device in ("d1", "d2", "d3"):
            await setup_session(client, account=account, device=device)
    a, b = auth("acct-a"), auth("acct-b")
    genuine = await _first_next(client, "/srm/sessions", a)
    inner, _, tag = genuine.rpartition(".")
    assert await _status(client, "/srm/sessions", genuine, a) == 200
    # the operator's listing of the same account takes it; the store's own cursor does not pass
    assert await _status(client, "/srm/v1/accounts/acct-a/sessions", genuine, OPERATOR) == 200
    forged = [
        _b64("a::"),
        inner,
        f"{_b64('a::')}.{tag}",
        f"{inner}x.{tag}",
        f"{inner}.{tag[:-1]}A" if tag[-1] != "A" else f"{inner}.{tag[:-1]}B",
        f"{inner}.",
        f".{tag}",
        genuine + ".",
    ]
    for cursor in forged:
        assert await _status(client, "/srm/sessions", cursor, a) == 400, cursor
    # another account's cursor, on the client's and the operator's path
    assert await _status(client, "/srm/sessions", genuine, b) == 400
    assert await _status(client, "/srm/v1/accounts/acct-b/sessions", genuine, OPERATOR) == 400


async def test_a_walk_goes_on_in_another_worker_and_survives_rotation(
    settings: Any, store: Any, client: Any
) -> None:
    """Workers of one deployment derive the same key; a rotation that keeps the old secret
    among auth.secrets keeps cursors valid; a deployment with other secrets refuses them."""
    from aiohttp.test_utils import TestClient, TestServer

    for device in ("d1", "d2", "d3"):
        await setup_session(client, device=device)
    cursor = await _first_next(client, "/srm/sessions", auth())
    new_secret = "rotated-secret-" + "fedcba9876543210" * 4
    rotated = settings.replace("auth", secret=new_secret, secrets=(settings.auth.secret,))
    other = settings.replace("auth", secret=new_secret, secrets=()).replace(
        "operator", keys=("another-operator-key-0123456789",)
    )
    for changed, accepted in ((settings, 200), (rotated, 200), (other, 400)):
        async with TestClient(TestServer(create_app(changed, store))) as worker:
            headers = {"Client-Token": mint(changed.auth.secret, "acct-1", "dev-1")}
            assert await _status(worker, "/srm/sessions", cursor, headers) == accepted


def test_a_configured_cursor_key_wins_and_no_key_is_random(settings: Any) -> None:
    assert key_material(settings) == (settings.auth.secret, *settings.operator.keys)
    assert key_material(settings.replace("server", cursor_key="k" * 32)) == ("k" * 32,)
    alone = CursorSigner(())
    assert CursorSigner(()).sign("a", "c") != alone.sign("a", "c")
    assert alone.open("a", alone.sign("a", "c")) == "c"


async def test_a_method_not_allowed_names_the_ones_that_are(client: Any) -> None:
    resp = await client.patch("/srm/sessions", headers=auth())
    await expect_error(resp, 405, "SRM-0007")
    allowed = resp.headers["Allow"]
    assert set(allowed.split(",")) == {"GET", "POST"}
    assert (await resp.json())["detail"] == f"this path allows {allowed}"
