"""The DRM licence proxy (API.md, "DRM licence proxy"): POST /srm/license/{sessionId} keeps
the session alive and forwards the CDM's challenge to a licence server with an upfront token
naming the session; the licence server's answer comes back byte for byte.

The licence server is a fake one (tests/licence_server.py) that checks the upfront token's
signature and claims and the extra headers, as a multi-DRM vendor's does. The API runs in
this process on a real Redis with the Redis server's own clock (the token's iat and exp come
from it), and once as a real `srm serve` with two workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from prometheus_client import REGISTRY

from srm import keys, logs, process
from srm.api.licence import MAX_LICENCE_BYTES, TOKEN_SECONDS
from srm.config import Settings, load, secret_values
from srm.errors import SessionNotFound
from srm.model import EndReason
from srm.store import SessionStore
from tests import invariants
from tests.helpers import (
    OPERATOR,
    OPERATOR_KEY,
    SECRET,
    SETUP,
    api,
    auth,
    expect_error,
    new,
    open_backend,
    setup_session,
)
from tests.licence_server import (
    BAD_CHALLENGE,
    HEADERS,
    LICENCE,
    LICENCE_TYPE,
    TOKEN_HEADER,
    TOKEN_KEY,
    LicenceServer,
)
from tests.processes import srm_serve
from tests.redis_servers import RedisProcess, free_port

PREFIXES = ("/srm", "/srm/v1")
# a challenge as a CDM makes it: binary, NULs, bytes that are no UTF-8
CHALLENGE = b"\x08\x01\x12\x00\xff\xfe\r\n" + os.urandom(2048) + b"\x00\x00"


def drm_env(upstream: str, **more: str) -> dict[str, str]:
    return {
        "SRM_DRM_UPSTREAM_URL": upstream,
        "SRM_DRM_TOKEN_KEY": TOKEN_KEY,
        "SRM_DRM_HEADERS": json.dumps(HEADERS),
        **more,
    }


def configured(upstream: str | None = None, **env: str) -> Settings:
    base = {
        "SRM_AUTH_SECRET": SECRET,
        "SRM_OPERATOR_KEYS": OPERATOR_KEY,
        "SRM_REDIS_SHARDS": "16",
        "SRM_MAX_SESSIONS": "10",
    }
    if upstream is not None:
        base |= drm_env(upstream)
    return load(env={**base, **env})


@pytest.fixture
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The real standalone Redis, emptied."""
    async with open_backend(request, "standalone") as client:
        yield client


@pytest.fixture
async def fake() -> AsyncIterator[LicenceServer]:
    async with LicenceServer() as server:
        yield server


@contextlib.asynccontextmanager
async def proxy(redis: Any, settings: Settings) -> AsyncIterator[Any]:
    """A test client of the API for *settings* on *redis*, on the Redis server's clock;
    the store's invariants are checked afterwards."""
    store = SessionStore(redis, keys.Keys(settings.redis.shards), process.policy(settings))
    async with api(settings, store) as client:
        yield client
    await invariants.check(redis, store.keys)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def licence(
    client: Any,
    sid: str,
    body: bytes = CHALLENGE,
    prefix: str = "/srm",
    headers: dict[str, str] | None = None,
) -> Any:
    headers = auth() if headers is None else headers
    return await client.post(
        f"{prefix}/license/{sid}",
        data=body,
        headers={"Content-Type": "application/octet-stream", **headers},
    )


async def own_session(client: Any, sid: str) -> dict[str, Any]:
    resp = await client.get(f"/srm/sessions/{sid}", headers=auth())
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


# -- forwarded ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_a_licence_is_forwarded_and_passed_back_byte_for_byte(
    redis: Any, fake: LicenceServer, prefix: str
) -> None:
    forwarded = metric("srm_licences_forwarded_total")
    ok = metric("srm_licence_upstream_answers_total", status_class="2xx")
    timed = metric("srm_licence_upstream_duration_seconds_count")
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client, prefix)
        resp = await licence(client, sid, prefix=prefix)
        assert resp.status == 200
        assert await resp.read() == LICENCE
        assert resp.headers["Content-Type"] == LICENCE_TYPE
    [seen] = fake.seen
    assert "refused" not in seen, seen.get("refused")
    assert seen["body"] == CHALLENGE
    assert seen["headers"]["Content-Type"] == "application/octet-stream"
    for name, value in HEADERS.items():
        assert seen["headers"][name] == value
    # the header's value is the bare JWT, and its claims name the session
    assert seen["headers"][TOKEN_HEADER].count(".") == 2
    assert not seen["headers"][TOKEN_HEADER].lower().startswith("bearer")
    claims = seen["claims"]
    assert {k: claims[k] for k in ("sessionId", "accountId", "deviceId", "contentID")} == {
        "sessionId": sid,
        "accountId": "acct-1",
        "deviceId": "dev-1",
        "contentID": SETUP["content"]["contentID"],
    }
    assert claims["exp"] == claims["iat"] + TOKEN_SECONDS
    # issued on the Redis server's clock, which is this host's: within a generous margin
    assert abs(claims["exp"] - (seen["received_at"] + 60)) < 30
    assert metric("srm_licences_forwarded_total") == forwarded + 1
    assert metric("srm_licence_upstream_answers_total", status_class="2xx") == ok + 1
    assert metric("srm_licence_upstream_duration_seconds_count") == timed + 1


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
async def test_the_upfront_token_is_signed_with_the_configured_algorithm(
    redis: Any, fake: LicenceServer, algorithm: str
) -> None:
    fake.algorithm = algorithm  # the licence server accepts this one only
    settings = configured(fake.url, SRM_DRM_TOKEN_ALGORITHM=algorithm)
    async with proxy(redis, settings) as client:
        sid = await setup_session(client)
        assert (await licence(client, sid)).status == 200
    header = jwt.get_unverified_header(fake.seen[0]["headers"][TOKEN_HEADER])
    assert header == {"alg": algorithm, "typ": "JWT"}
    assert fake.seen[0]["claims"]["sessionId"] == sid


async def test_a_refusal_by_the_licence_server_is_passed_back(
    redis: Any, fake: LicenceServer
) -> None:
    refusals = metric("srm_licence_upstream_answers_total", status_class="4xx")
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        resp = await licence(client, sid, BAD_CHALLENGE)
        assert resp.status == 403
        assert resp.headers["Content-Type"] == "application/json"
        body = await resp.read()
    assert body == b'{"error":"the challenge is not a Widevine licence request"}'
    assert fake.seen[0]["refused"] == "the challenge is not a Widevine licence request"
    assert metric("srm_licence_upstream_answers_total", status_class="4xx") == refusals + 1


async def test_the_licence_server_refuses_a_token_of_another_key(
    redis: Any, fake: LicenceServer
) -> None:
    """The fake licence server's check can fail: a token signed with another key is refused
    there, and that refusal is what the player gets."""
    settings = configured(fake.url, SRM_DRM_TOKEN_KEY="another-key-" + "0" * 32)
    async with proxy(redis, settings) as client:
        sid = await setup_session(client)
        resp = await licence(client, sid)
        assert resp.status == 403
    assert fake.seen[0]["refused"].startswith("upfront token refused: Signature")


async def test_a_licence_request_is_the_sessions_keep_alive(
    redis: Any, fake: LicenceServer
) -> None:
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        before = await own_session(client, sid)
        assert before["lastKeepAliveAt"] == before["createdAt"]
        await asyncio.sleep(0.05)  # the Redis clock's milliseconds move on
        assert (await licence(client, sid)).status == 200
        after = await own_session(client, sid)
        listing = await client.get("/srm/accounts/acct-1/sessions", headers=OPERATOR)
        [listed] = (await listing.json())["sessions"]
    assert after["lastKeepAliveAt"] > before["lastKeepAliveAt"]
    assert after["expiresAt"] > before["expiresAt"]
    assert listed["lastKeepAliveAt"] == after["lastKeepAliveAt"]
    assert after["state"] == "ACTIVE"


# -- refused: nothing forwarded ----------------------------------------------------------


@pytest.mark.parametrize("case", ["ended", "evicted", "lapsed", "unknown", "foreign"])
async def test_a_session_that_cannot_be_kept_alive_forwards_nothing(
    redis: Any, fake: LicenceServer, case: str
) -> None:
    refused = metric("srm_licences_refused_total")
    forwarded = metric("srm_licences_forwarded_total")
    limit = {"SRM_MAX_SESSIONS": "1", "SRM_SESSIONS_LIMIT_POLICY": "evict"}
    timeout = {"SRM_SESSION_TIMEOUT": "1"} if case == "lapsed" else {}
    async with proxy(redis, configured(fake.url, **limit, **timeout)) as client:
        sid = await setup_session(client)
        if case == "ended":
            assert (await client.delete(f"/srm/sessions/{sid}", headers=auth())).status == 200
        elif case == "evicted":
            await setup_session(client, device="dev-2")
        elif case == "lapsed":
            await asyncio.sleep(1.2)  # past the 1 s deadline; no reaper runs here
        elif case == "unknown":
            sid = str(uuid.uuid4())
        resp = await licence(client, sid, headers=auth("acct-2") if case == "foreign" else auth())
        await expect_error(resp, 404, "SRM-0004")
        body = await resp.json()
    ended = {"ended": "TEARDOWN", "evicted": "EVICTED", "lapsed": "TIMEOUT"}
    if case in ended:
        assert body["ended"]["endReason"] == ended[case]
    else:
        assert "ended" not in body
    assert fake.requests == 0
    assert metric("srm_licences_refused_total") == refused + 1
    assert metric("srm_licences_forwarded_total") == forwarded


# -- the licence server fails -------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 302])
async def test_a_failing_licence_server_answers_502(
    redis: Any, fake: LicenceServer, status: int
) -> None:
    """5xx (and a redirect, which is no licence) is 502 SRM-0012; the session was kept
    alive all the same (the keep-alive comes first)."""
    fake.status = status
    failures = metric("srm_licence_upstream_failures_total", reason="answer")
    answers = metric("srm_licence_upstream_answers_total", status_class=f"{status // 100}xx")
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        before = await own_session(client, sid)
        await asyncio.sleep(0.05)
        resp = await licence(client, sid)
        await expect_error(resp, 502, "SRM-0012")
        assert (await resp.json())["detail"] == f"the licence server answered {status}"
        assert (await own_session(client, sid))["lastKeepAliveAt"] > before["lastKeepAliveAt"]
    assert fake.requests == 1
    assert metric("srm_licence_upstream_failures_total", reason="answer") == failures + 1
    assert (
        metric("srm_licence_upstream_answers_total", status_class=f"{status // 100}xx")
        == answers + 1
    )


async def test_an_unreachable_licence_server_answers_502(redis: Any) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/license"  # nothing listens there
    failures = metric("srm_licence_upstream_failures_total", reason="unreachable")
    async with proxy(redis, configured(nobody)) as client:
        sid = await setup_session(client)
        resp = await licence(client, sid)
        await expect_error(resp, 502, "SRM-0012")
        assert (await resp.json())["detail"] == "the licence server is unreachable"
    assert metric("srm_licence_upstream_failures_total", reason="unreachable") == failures + 1


async def test_a_licence_server_that_does_not_answer_in_time_answers_504(
    redis: Any, fake: LicenceServer
) -> None:
    fake.delay = 3.0  # ten times drm.timeout
    failures = metric("srm_licence_upstream_failures_total", reason="timeout")
    async with proxy(redis, configured(fake.url, SRM_DRM_TIMEOUT="0.3")) as client:
        sid = await setup_session(client)
        resp = await licence(client, sid)
        await expect_error(resp, 504, "SRM-0012")
        assert (await resp.json())["detail"] == "the licence server did not answer within 0.3 s"
    assert metric("srm_licence_upstream_failures_total", reason="timeout") == failures + 1


async def test_an_answer_over_the_bound_is_no_licence(redis: Any, fake: LicenceServer) -> None:
    """A licence is a few kilobytes: an answer over MAX_LICENCE_BYTES is 502, not held."""
    fake.licence = b"x" * (MAX_LICENCE_BYTES + 1)
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        resp = await licence(client, sid)
        await expect_error(resp, 502, "SRM-0012")
        assert (await resp.json())["detail"] == "the licence server's answer is over 1 MiB"
        fake.chunked = True  # no Content-Length: the bound holds while reading
        await expect_error(await licence(client, sid), 502, "SRM-0012")
    assert fake.requests == 2


# -- bad requests: nothing forwarded, nothing changed -------------------------------------


async def test_a_body_over_the_limit_is_413(redis: Any, fake: LicenceServer) -> None:
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        before = await own_session(client, sid)
        await expect_error(await licence(client, sid, b"\x00" * 70_000), 413, "SRM-0009")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read until too much
            for _ in range(10):
                yield b"\x00" * 8192

        resp = await client.post(f"/srm/license/{sid}", data=chunks(), headers=auth())
        await expect_error(resp, 413, "SRM-0009")
        assert await own_session(client, sid) == before
    assert fake.requests == 0


async def test_an_empty_challenge_is_400(redis: Any, fake: LicenceServer) -> None:
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        before = await own_session(client, sid)
        resp = await licence(client, sid, b"")
        await expect_error(resp, 400, "SRM-0002")
        assert (await resp.json())["detail"] == "the licence challenge (the request body) is empty"
        await expect_error(await licence(client, "not-a-uuid"), 400, "SRM-0002")
        assert await own_session(client, sid) == before
    assert fake.requests == 0


async def test_a_request_without_a_client_token_is_401(redis: Any, fake: LicenceServer) -> None:
    async with proxy(redis, configured(fake.url)) as client:
        sid = await setup_session(client)
        resp = await licence(client, sid, headers={})
        await expect_error(resp, 401, "SRM-0003")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        forged = {"Client-Token": "eyJhbGciOiJIUzI1NiJ9.e30.forged"}
        await expect_error(await licence(client, sid, headers=forged), 401, "SRM-0003")
    assert fake.requests == 0


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_without_drm_the_path_does_not_exist(redis: Any, prefix: str) -> None:
    settings = configured()
    assert not settings.drm.enabled
    async with proxy(redis, settings) as client:
        sid = await setup_session(client)
        await expect_error(await licence(client, sid, prefix=prefix), 404, "SRM-0010")


# -- one pool per process ------------------------------------------------------------------


async def test_connections_to_the_licence_server_are_pooled(
    redis: Any, fake: LicenceServer
) -> None:
    """drm.pool_size bounds the connections a process opens; they are reused."""
    fake.delay = 0.1
    # by name: aiohttp's default cookie jar ignores cookies of IP addresses
    by_name = fake.url.replace("127.0.0.1", "localhost")
    async with proxy(redis, configured(by_name, SRM_DRM_POOL_SIZE="2")) as client:
        sid = await setup_session(client)
        answers = await asyncio.gather(*(licence(client, sid) for _ in range(8)))
        assert [a.status for a in answers] == [200] * 8
        for _ in range(4):
            assert (await licence(client, sid)).status == 200
    ports = {seen["peer"] for seen in fake.seen}
    assert len(fake.seen) == 12 and 1 <= len(ports) <= 2
    assert fake.most_at_once <= 2
    # the licence server set a cookie on every answer: none went back (one client serves
    # every player)
    assert all("Cookie" not in seen["headers"] for seen in fake.seen)


# -- secrets ---------------------------------------------------------------------------------


async def test_no_secret_and_no_upfront_token_is_logged(
    redis: Any, fake: LicenceServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    upstream = fake.url.replace("127.0.0.1", "user:url-password-123@127.0.0.1")
    settings = configured(upstream)
    async with proxy(redis, settings) as client:
        sid = await setup_session(client)
        assert (await licence(client, sid)).status == 200
        fake.status = 503
        assert (await licence(client, sid)).status == 502
    token = fake.seen[0]["headers"][TOKEN_HEADER]
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in (TOKEN_KEY, token, "url-password-123", *HEADERS.values()):
        assert secret not in text
    # and the scrubber, the second line of defence, knows every [drm] secret
    known = secret_values(settings)
    assert {TOKEN_KEY, "url-password-123", *HEADERS.values()} <= set(known)
    formatter = logs.JsonFormatter(known)
    line = f"{TOKEN_KEY} {HEADERS['X-Vendor-Api-Key']} {upstream} {token}"
    masked = formatter.format(logging.makeLogRecord({"msg": line}))
    for secret in (TOKEN_KEY, token, "url-password-123", HEADERS["X-Vendor-Api-Key"]):
        assert secret not in masked


# -- the store -------------------------------------------------------------------------------


async def test_the_store_keep_alive_tells_the_content_when_asked(store: SessionStore) -> None:
    made = new()
    await store.setup(made)
    assert await store.keep_alive(made.account_id, made.session_id) is None
    kept = await store.keep_alive_for_token(made.account_id, made.session_id)
    assert kept.content_id == made.content_id
    assert kept.deadline_ms == kept.at_ms + store.policy.period_ms
    session = await store.get(made.account_id, made.session_id)
    assert (session.last_keep_alive_at, session.expires_at) == (kept.at_ms, kept.deadline_ms)
    odd = dataclasses.replace(new(device="dev-2"), content_id="día|1:2;\u00e9\u2028x")
    await store.setup(odd)
    assert (await store.keep_alive_for_token(odd.account_id, odd.session_id)).content_id == (
        odd.content_id
    )
    await store.end(made.account_id, made.session_id, EndReason.TEARDOWN)
    with pytest.raises(SessionNotFound) as ended:
        await store.keep_alive_for_token(made.account_id, made.session_id)
    assert ended.value.ended is not None and ended.value.ended.reason == EndReason.TEARDOWN
    with pytest.raises(SessionNotFound):
        await store.keep_alive_for_token("acct-2", odd.session_id)


# -- a real `srm serve` --------------------------------------------------------------------


async def test_srm_serve_proxies_licences_in_every_worker(
    real_redis: RedisProcess, fake: LicenceServer, tmp_path: Path
) -> None:
    """Two workers, each with its own pool: licences through both, then SIGTERM exits 0 and
    the log holds none of the [drm] secrets."""
    env = drm_env(fake.url, SRM_WORKERS="2", SRM_DRM_POOL_SIZE="4")
    with srm_serve(
        tmp_path, SRM_REDIS_URL=real_redis.url, SRM_OPERATOR_KEYS=OPERATOR_KEY, **env
    ) as srm:
        async with aiohttp.ClientSession(srm.base) as http:
            async with http.post("/srm/sessions", json=SETUP, headers=auth()) as resp:
                sid = (await resp.json())["successResponse"]["sessionId"]
            for _ in range(20):
                async with http.post(f"/srm/license/{sid}", data=CHALLENGE, headers=auth()) as resp:
                    assert resp.status == 200
                    assert await resp.read() == LICENCE
                    assert resp.headers["Content-Type"] == LICENCE_TYPE
            async with http.delete(f"/srm/sessions/{sid}", headers=auth()) as resp:
                assert resp.status == 200
            async with http.post(f"/srm/license/{sid}", data=CHALLENGE, headers=auth()) as resp:
                assert resp.status == 404
                assert (await resp.json())["ended"]["endReason"] == "TEARDOWN"
            async with http.get("/metrics") as resp:
                text = await resp.text()
        assert srm.stop() == 0
    assert fake.requests == 20
    assert all(seen["claims"]["sessionId"] == sid for seen in fake.seen)
    assert "srm_licences_forwarded_total 20.0" in text
    assert "srm_licences_refused_total 1.0" in text
    output = srm.output()
    assert "Traceback" not in output
    for secret in (TOKEN_KEY, *HEADERS.values(), fake.seen[0]["headers"][TOKEN_HEADER]):
        assert secret not in output
