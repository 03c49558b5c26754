"""The client contract of API.md through aiohttp's test client, on every store backend
(standalone, Sentinel, Cluster, fakeredis: see conftest.redis_client)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import jwt
import pytest

from srm.api.bodies import SESSION_FIELDS
from tests.helpers import (
    OPERATOR,
    SECRET,
    SETUP,
    Clock,
    auth,
    expect_error,
    setup_session,
    token,
)

MALFORMED = "Malformed request or mandatory parameters missing from request"


@pytest.mark.parametrize("prefix", ["/srm", "/srm/v1"])
async def test_lifecycle_on_both_prefixes(client: Any, prefix: str) -> None:
    resp = await client.post(f"{prefix}/sessions", json=SETUP, headers=auth())
    assert resp.status == 200
    body = await resp.json()
    sid = body["successResponse"]["sessionId"]
    assert uuid.UUID(sid).version == 4
    assert body["successResponse"]["timeout"] == 120
    resp = await client.put(f"{prefix}/sessions/{sid}", headers=auth())
    assert resp.status == 200 and await resp.read() == b""
    resp = await client.get(f"{prefix}/sessions/{sid}", headers=auth())
    got = await resp.json()
    assert got["state"] == "ACTIVE" and got["contentID"] == "100001V3D"
    resp = await client.delete(f"{prefix}/sessions/{sid}", headers=auth())
    assert resp.status == 200 and await resp.read() == b""
    resp = await client.delete(f"{prefix}/sessions/{sid}", headers=auth())
    assert resp.status == 200  # idempotent until removed
    resp = await client.put(f"{prefix}/sessions/{sid}", headers=auth())
    await expect_error(resp, 404, "SRM-0004")
    ended = (await resp.json())["ended"]
    assert (ended["endReason"], ended["byDeviceId"]) == ("TEARDOWN", None)
    assert ended["endedAt"].endswith("Z")


async def test_bearer_alias_is_accepted(client: Any) -> None:
    resp = await client.post(
        "/srm/sessions", json=SETUP, headers={"Authorization": f"Bearer {token()}"}
    )
    assert resp.status == 200


async def test_concurrent_setups_over_http_give_exactly_the_limit(client: Any) -> None:
    resps = await asyncio.gather(
        *(client.post("/srm/sessions", json=SETUP, headers=auth()) for _ in range(60))
    )
    bodies = [await r.json() for r in resps]
    assert sum("successResponse" in b for b in bodies) == 3
    assert sum(b.get("errorResponse", {}).get("errorCode") == "SRM-0005" for b in bodies) == 57


async def test_listing(client: Any, clock: Clock) -> None:
    sid = await setup_session(client)
    other = await setup_session(client)
    await client.delete(f"/srm/sessions/{other}", headers=auth())
    await setup_session(client, account="someone-else")
    resp = await client.get("/srm/sessions", headers=auth())
    body = await resp.json()
    assert body["activeCount"] == 1 and body["maxSessions"] == 3
    by_id = {s["sessionId"]: s for s in body["sessions"]}
    assert set(by_id) == {sid, other}
    assert by_id[other]["state"] == "ENDED" and by_id[other]["endReason"] == "TEARDOWN"
    s = by_id[sid]
    assert set(s) == set(SESSION_FIELDS)
    assert s["accountId"] == "acct-1" and s["deviceId"] == "dev-1"
    assert (s["deviceType"], s["quality"]) == ("unknown", None)
    # the test client's peer, cut to 24 bits; no home networks, so no location
    assert (s["network"], s["location"]) == ("127.0.0.0/24", None)
    assert s["createdAt"].endswith("Z") and s["endedAt"] is None and s["endReason"] is None
    clock.advance(121)
    body = await (await client.get("/srm/sessions", headers=auth())).json()
    assert body["activeCount"] == 0
    lapsed = {x["sessionId"]: x for x in body["sessions"]}[sid]
    assert (lapsed["state"], lapsed["endReason"]) == ("ENDED", "TIMEOUT")


async def test_other_accounts_session_is_404_and_untouched(client: Any) -> None:
    sid = await setup_session(client, account="owner")
    for method in ("put", "delete", "get"):
        resp = await getattr(client, method)(f"/srm/sessions/{sid}", headers=auth("thief"))
        await expect_error(resp, 404, "SRM-0004")
    got = await (await client.get(f"/srm/sessions/{sid}", headers=auth("owner"))).json()
    assert got["state"] == "ACTIVE"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"x"',
        b"{}",
        b'{"content": "x"}',
        b'{"content": {}}',
        b'{"content": {"contentID": ""}}',
        b'{"content": {"contentID": "   "}}',
        b'{"content": {"contentID": 7}}',
        b'{"content": {"contentID": "a"}}',
        b'{"content": {"contentID": "a", "contentType": "VOD"}}',
        b'{"content": {"contentID": "a", "contentType": null}}',
        b'{"content": {"contentID": "a", "contentType": 1}}',
        b"\xff\xfe{}",
        b"[" * 5000 + b"]" * 5000,
    ],
)
async def test_malformed_setup_is_400(client: Any, body: bytes) -> None:
    resp = await client.post("/srm/sessions", data=body, headers=auth())
    await expect_error(resp, 400, "SRM-0002")
    assert (await resp.json())["errorResponse"]["errorMessage"] == MALFORMED
    listing = await (await client.get("/srm/sessions", headers=auth())).json()
    assert listing["sessions"] == []


async def test_every_configured_content_type_is_accepted(client: Any) -> None:
    for content_type in ("COD", "LIVE", "TSTV", "NPVR"):
        body = {"content": {"contentID": "x", "contentType": content_type}}
        resp = await client.post("/srm/sessions", json=body, headers=auth(f"acct-{content_type}"))
        sid = (await resp.json())["successResponse"]["sessionId"]
        got = await (
            await client.get(f"/srm/sessions/{sid}", headers=auth(f"acct-{content_type}"))
        ).json()
        assert got["contentType"] == content_type


@pytest.mark.parametrize(
    "sid", ["not-a-uuid", "12345", "a%2Fb", "00000000-0000-0000-0000-00000000000g", "é"]
)
async def test_bad_session_id_is_400(client: Any, sid: str) -> None:
    for method in ("put", "delete", "get"):
        resp = await getattr(client, method)(f"/srm/sessions/{sid}", headers=auth())
        await expect_error(resp, 400, "SRM-0002")


def _expired() -> str:
    return jwt.encode({"accountId": "a", "deviceId": "d", "exp": 1}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Client-Token": ""},
        {"Client-Token": "garbage"},
        {"Authorization": "Basic abc"},
        {"Client-Token": token().replace(token().split(".")[2], "x" * 43)},
        {
            "Client-Token": jwt.encode(
                {"accountId": "a", "deviceId": "d", "exp": 9e9}, "wrong-secret-0123456789abcdef0123"
            )
        },
        {"Client-Token": jwt.encode({"accountId": "a", "deviceId": "d"}, SECRET)},
        {"Client-Token": jwt.encode({"deviceId": "d", "exp": 9e9}, SECRET)},
        {"Client-Token": jwt.encode({"accountId": "a", "exp": 9e9}, SECRET)},
        {"Client-Token": jwt.encode({"accountId": 5, "deviceId": "d", "exp": 9e9}, SECRET)},
        {"Client-Token": jwt.encode({"accountId": "", "deviceId": "d", "exp": 9e9}, SECRET)},
        {
            "Client-Token": jwt.encode(
                {"accountId": "a", "deviceId": "d", "exp": 9e9, "nbf": 9e9}, SECRET
            )
        },
        {
            "Client-Token": jwt.encode(
                {"accountId": "a", "deviceId": "d", "exp": 9e9}, SECRET, algorithm="HS512"
            )
        },
        {
            "Client-Token": jwt.encode(
                {"accountId": "a", "deviceId": "d", "exp": 9e9}, None, algorithm="none"
            )
        },
    ],
    ids=lambda h: str(h)[:40],
)
async def test_bad_token_is_401(client: Any, headers: dict[str, str]) -> None:
    resp = await client.post("/srm/sessions", json=SETUP, headers=headers)
    await expect_error(resp, 401, "SRM-0003")


async def test_expired_token_is_401(client: Any) -> None:
    resp = await client.put(f"/srm/sessions/{uuid.uuid4()}", headers={"Client-Token": _expired()})
    await expect_error(resp, 401, "SRM-0003")


async def test_a_tenant_claim_is_ignored(client: Any) -> None:
    """SRM reads accountId, deviceId, exp and nbf; tenantId, of any type, changes nothing:
    sessions of one account count against one limit whatever tenant the token names."""
    for tenant in ("tenant-a", "tenant-b", 7):
        headers = {"Client-Token": token("acct-tenant", "dev-1", tenantId=tenant)}
        resp = await client.post("/srm/sessions", json=SETUP, headers=headers)
        assert "successResponse" in await resp.json()
    headers = {"Client-Token": token("acct-tenant", "dev-1", tenantId={"id": "c"})}
    resp = await client.post("/srm/sessions", json=SETUP, headers=headers)
    await expect_error(resp, 200, "SRM-0005", "DENIED")


async def test_unknown_path_and_method(client: Any) -> None:
    await expect_error(await client.get("/nope"), 404, "SRM-0010")
    await expect_error(await client.get("/srm/v2/sessions"), 404, "SRM-0010")
    await expect_error(await client.patch("/srm/sessions", headers=auth()), 405, "SRM-0007")
    resp = await client.post(f"/srm/sessions/{uuid.uuid4()}", headers=auth())
    await expect_error(resp, 405, "SRM-0007")


async def test_oversized_body_is_413(client: Any) -> None:
    body = b'{"content": {"contentID": "' + b"x" * 70_000 + b'"}}'
    resp = await client.post("/srm/sessions", data=body, headers=auth())
    await expect_error(resp, 413, "SRM-0009")


async def test_oversized_header_block_is_431(client: Any) -> None:
    headers = {**auth(), **{f"X-Pad-{i}": "y" * 1000 for i in range(9)}}
    resp = await client.post("/srm/sessions", json=SETUP, headers=headers)
    await expect_error(resp, 431, "SRM-0009")


async def test_operator_paths_need_an_operator_key(client: Any) -> None:
    for headers in (
        {},
        auth(),
        {"Authorization": f"Bearer {token()}"},
        {"Authorization": "Bearer nope"},
    ):
        resp = await client.get("/srm/v1/accounts/acct-1/sessions", headers=headers)
        await expect_error(resp, 403, "SRM-0006")
    resp = await client.get("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
    assert resp.status == 200


async def test_operator_endpoints(client: Any) -> None:
    first = await setup_session(client)
    await setup_session(client)
    resp = await client.delete(f"/srm/v1/accounts/acct-1/sessions/{first}", headers=OPERATOR)
    assert resp.status == 200
    got = await (await client.get(f"/srm/sessions/{first}", headers=auth())).json()
    assert got["endReason"] == "OPERATOR"
    resp = await client.delete("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
    assert await resp.json() == {"ended": 1}
    resp = await client.put(
        "/srm/v1/accounts/acct-1/limit", json={"maxSessions": 1}, headers=OPERATOR
    )
    assert await resp.json() == {"maxSessions": 1, "override": True, "rules": {}}
    await setup_session(client)
    resp = await client.post("/srm/sessions", json=SETUP, headers=auth())
    await expect_error(resp, 200, "SRM-0005", "DENIED")
    for bad in ({"maxSessions": -1}, {"maxSessions": "2"}, {"maxSessions": True}, {}):
        resp = await client.put("/srm/v1/accounts/acct-1/limit", json=bad, headers=OPERATOR)
        await expect_error(resp, 400, "SRM-0002")
    resp = await client.delete("/srm/v1/accounts/acct-1/limit", headers=OPERATOR)
    assert await resp.json() == {"maxSessions": 3, "override": False, "rules": {}}
    resp = await client.get("/srm/v1/accounts/acct-1/limit", headers=OPERATOR)
    assert await resp.json() == {"maxSessions": 3, "override": False, "rules": {}}


async def test_health_and_ready(client: Any) -> None:
    assert (await client.get("/health")).status == 200
    assert (await client.get("/ready")).status == 200


async def test_short_operator_keys_work_with_a_warning(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from srm.api.app import create_app
    from srm.config import load

    settings = load(env={"SRM_AUTH_SECRET": SECRET, "SRM_OPERATOR_KEYS": "op-1,op-2"})
    assert "shorter than 16" in caplog.text
    async with TestClient(TestServer(create_app(settings, store))) as c:
        ok = await c.get("/srm/v1/accounts/a/limit", headers={"Authorization": "Bearer op-2"})
        assert ok.status == 200
        bad = await c.get("/srm/v1/accounts/a/limit", headers={"Authorization": "Bearer op-3"})
        await expect_error(bad, 403, "SRM-0006")


async def test_keep_alive_disabled_omits_the_timeout(redis_client: Any, clock: Clock) -> None:
    """SRM_SESSION_TIMEOUT=0: no `timeout` in the setup answer, no expiry, keep-alive still 200."""
    from aiohttp.test_utils import TestClient, TestServer

    from srm.api.app import create_app
    from srm.config import load
    from srm.keys import Keys
    from srm.process import policy
    from srm.store import SessionStore

    settings = load(env={"SRM_AUTH_SECRET": SECRET, "SRM_SESSION_TIMEOUT": "0"})
    store = SessionStore(redis_client, Keys(16), policy(settings), clock=clock)
    async with TestClient(TestServer(create_app(settings, store))) as c:
        answer = await (await c.post("/srm/sessions", json=SETUP, headers=auth())).json()
        assert set(answer["successResponse"]) == {"sessionId"}
        sid = answer["successResponse"]["sessionId"]
        clock.advance(10 * 86400)
        assert (await c.put(f"/srm/sessions/{sid}", headers=auth())).status == 200
        got = await (await c.get(f"/srm/sessions/{sid}", headers=auth())).json()
        assert got["state"] == "ACTIVE"
        assert got["expiresAt"] is None


async def test_oversized_body_is_413_before_authentication(client: Any) -> None:
    body = b'{"content": {"contentID": "' + b"x" * 70_000 + b'"}}'
    await expect_error(await client.post("/srm/sessions", data=body), 413, "SRM-0009")


async def test_operator_paths_reach_account_ids_with_braces(client: Any) -> None:
    for account in ("{x}", "a}b{c", "x:y"):
        sid = await setup_session(client, account=account)
        encoded = account.replace("{", "%7B").replace("}", "%7D")
        resp = await client.get(f"/srm/v1/accounts/{encoded}/sessions", headers=OPERATOR)
        assert resp.status == 200, await resp.text()
        assert [s["sessionId"] for s in (await resp.json())["sessions"]] == [sid]
        resp = await client.delete(f"/srm/v1/accounts/{encoded}/sessions/{sid}", headers=OPERATOR)
        assert resp.status == 200
