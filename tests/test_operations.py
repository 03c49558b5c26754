"""Operator-facing behaviour over HTTP: keys, limit overrides, the evict policy, deny status."""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from srm import keys as k
from srm.api.app import create_app
from srm.auth import OperatorKeys
from srm.errors import NotOperator
from srm.model import Policy
from srm.store import SessionStore
from tests.conftest import OPERATOR, OPERATOR_KEY, Clock, auth
from tests.test_api import SETUP, expect_error, setup_session


async def _client(settings: Any, store: SessionStore) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings, store))) as c:
        yield c


@pytest.fixture
async def evict_client(
    settings: Any, redis_client: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> AsyncIterator[TestClient[Any, Any]]:
    store = SessionStore(
        redis_client, keyspace, dataclasses.replace(policy, evict=True), clock=clock
    )
    async for c in _client(settings.replace("sessions", limit_policy="evict"), store):
        yield c


async def test_evict_policy_over_http(evict_client: Any, clock: Clock) -> None:
    sids = []
    for _ in range(3):
        sids.append(await setup_session(evict_client))
        clock.advance(1)
    assert (await evict_client.put(f"/srm/sessions/{sids[0]}", headers=auth())).status == 200
    newest = await setup_session(evict_client)  # at the limit: the oldest keep-alive goes
    # the evicted client learns it on its next keep-alive
    await expect_error(
        await evict_client.put(f"/srm/sessions/{sids[1]}", headers=auth()), 404, "SRM-0004"
    )
    listing = await (await evict_client.get("/srm/sessions", headers=auth())).json()
    states = {s["sessionId"]: (s["state"], s["endReason"]) for s in listing["sessions"]}
    assert states[sids[1]] == ("ENDED", "EVICTED")
    assert {sid for sid, st in states.items() if st[0] == "ACTIVE"} == {sids[0], sids[2], newest}
    assert listing["activeCount"] == 3


async def test_evict_policy_with_a_zero_limit_still_denies(evict_client: Any) -> None:
    resp = await evict_client.put(
        "/srm/v1/accounts/acct-1/limit", json={"maxSessions": 0}, headers=OPERATOR
    )
    assert resp.status == 200
    resp = await evict_client.post("/srm/sessions", json=SETUP, headers=auth())
    await expect_error(resp, 200, "SRM-0005", "DENIED")


@pytest.mark.parametrize("status", [200, 409])
async def test_denial_answers_the_configured_status(
    settings: Any, store: SessionStore, status: int
) -> None:
    """200 by default, as the SRM does; sessions.deny_status changes it (e.g. 409)."""
    if status != 200:
        settings = settings.replace("sessions", deny_status=status)
    async for client in _client(settings, store):
        for _ in range(3):
            await setup_session(client)
        resp = await client.post("/srm/sessions", json=SETUP, headers=auth())
        await expect_error(resp, status, "SRM-0005", "DENIED")


async def test_a_zero_limit_allows_no_session(client: Any) -> None:
    resp = await client.put(
        "/srm/v1/accounts/acct-1/limit", json={"maxSessions": 0}, headers=OPERATOR
    )
    assert await resp.json() == {"maxSessions": 0, "override": True, "rules": {}}
    await expect_error(
        await client.post("/srm/sessions", json=SETUP, headers=auth()), 200, "SRM-0005", "DENIED"
    )
    listing = await (await client.get("/srm/sessions", headers=auth())).json()
    assert (listing["activeCount"], listing["maxSessions"]) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"nope",
        b"[]",
        b'{"maxSessions": 1000001}',
        b'{"maxSessions": 1.5}',
        b'{"maxSessions": null}',
    ],
)
async def test_bad_limit_bodies_are_400_and_change_nothing(client: Any, body: bytes) -> None:
    resp = await client.put("/srm/v1/accounts/acct-1/limit", data=body, headers=OPERATOR)
    await expect_error(resp, 400, "SRM-0002")
    resp = await client.get("/srm/v1/accounts/acct-1/limit", headers=OPERATOR)
    assert await resp.json() == {"maxSessions": 3, "override": False, "rules": {}}


async def test_an_overlong_account_id_is_400(client: Any) -> None:
    resp = await client.get(f"/srm/v1/accounts/{'a' * 257}/sessions", headers=OPERATOR)
    await expect_error(resp, 400, "SRM-0002")


async def test_without_configured_keys_every_operator_call_is_403(
    settings: Any, store: SessionStore
) -> None:
    async for client in _client(settings.replace("operator", keys=()), store):
        for headers in ({}, OPERATOR, {"Authorization": "Bearer "}):
            resp = await client.get("/srm/v1/accounts/acct-1/limit", headers=headers)
            await expect_error(resp, 403, "SRM-0006")


async def test_any_configured_key_works_and_near_misses_do_not(
    settings: Any, store: SessionStore
) -> None:
    second = "second-operator-key-abcdefghijkl"
    async for client in _client(settings.replace("operator", keys=(OPERATOR_KEY, second)), store):
        for key in (OPERATOR_KEY, second):
            resp = await client.get(
                "/srm/v1/accounts/acct-1/limit", headers={"Authorization": f"Bearer {key}"}
            )
            assert resp.status == 200
        for key in (
            OPERATOR_KEY[:-1],
            OPERATOR_KEY + "x",
            second.upper(),
            "ключ-оператора-0123456789",
        ):
            resp = await client.get(
                "/srm/v1/accounts/acct-1/limit",
                headers={"Authorization": f"Bearer {key}".encode().decode("latin-1")},
            )
            await expect_error(resp, 403, "SRM-0006")


def test_operator_keys_compare_every_key_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the time taken does not tell which key (if any) matched."""
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = OperatorKeys(("k" * 16 + "1", "k" * 16 + "2", "k" * 16 + "3"))
    for presented in ("k" * 16 + "1", "k" * 16 + "3"):
        calls.clear()
        keys.check(presented)
        assert len(calls) == 3
    calls.clear()
    with pytest.raises(NotOperator):
        keys.check("wrong-key-0123456789")
    assert len(calls) == 3
