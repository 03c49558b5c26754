"""Contract points found in a black-box review of `srm serve` against API.md, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from srm import process
from srm.api.app import create_app
from srm.store import SessionStore
from tests import invariants
from tests.helpers import OPERATOR, SETUP, Clock, api_on, auth, expect_error
from tests.redis_servers import free_port


@pytest.fixture
async def down(settings: Any) -> AsyncIterator[Any]:
    """The API on a Redis that is not there (nothing listens on its port)."""
    async with api_on(settings, f"redis://127.0.0.1:{free_port()}") as client:
        yield client


@pytest.mark.parametrize(
    "query",
    ["top=0", "top=1001", "top=abc", "date=2026-02-30", "date=abc", "date=", "date=2026-2-1"],
)
async def test_a_malformed_report_query_is_400_whether_or_not_the_store_answers(
    down: Any, query: str
) -> None:
    """Malformed input is SRM-0002 before the store is asked, as on every other endpoint."""
    for prefix in ("/srm", "/srm/v1"):
        resp = await down.get(f"{prefix}/reports/denials?{query}", headers=OPERATOR)
        await expect_error(resp, 400, "SRM-0002")


async def test_a_well_formed_report_query_on_a_store_that_is_down_is_503(
    down: Any,
) -> None:
    resp = await down.get("/srm/v1/reports/denials?top=5", headers=OPERATOR)
    await expect_error(resp, 503, "SRM-0008")


class Ticking(Clock):
    """A clock one millisecond later at every store call, as Redis's own is."""

    def __call__(self) -> int:
        self.now += 1
        return self.now


async def test_last_keep_alive_is_the_setup_time_until_a_keep_alive_with_keep_alive_disabled(
    settings: Any, redis_client: Any, keyspace: Any
) -> None:
    """With timeout 0, the setup's own confirmation of its deadline is not a keep-alive."""
    settings = settings.replace("sessions", timeout=0)
    clock = Ticking()
    store = SessionStore(redis_client, keyspace, process.policy(settings), clock=clock)
    async with TestClient(TestServer(create_app(settings, store))) as client:
        resp = await client.post("/srm/sessions", json=SETUP, headers=auth())
        body = await resp.json()
        assert body == {"successResponse": {"sessionId": body["successResponse"]["sessionId"]}}
        sid = body["successResponse"]["sessionId"]
        session = await (await client.get(f"/srm/sessions/{sid}", headers=auth())).json()
        assert session["lastKeepAliveAt"] == session["createdAt"]
        assert session["expiresAt"] is None
        clock.advance(5)
        assert (await client.put(f"/srm/sessions/{sid}", headers=auth())).status == 200
        session = await (await client.get(f"/srm/sessions/{sid}", headers=auth())).json()
        assert session["lastKeepAliveAt"] > session["createdAt"]
    await invariants.check(redis_client, keyspace)


async def pages_of(client: Any, limit: int) -> list[list[str]]:
    """The walk of acct-1's own listing, page by page (the sessionIds of each)."""
    pages: list[list[str]] = []
    query = {"limit": str(limit)}
    while True:
        body = await (await client.get("/srm/sessions", params=query, headers=auth())).json()
        pages.append([s["sessionId"] for s in body["sessions"]])
        if body["next"] is None:
            return pages
        assert len(pages) < 20
        query = {"limit": str(limit), "cursor": body["next"]}


@pytest.mark.parametrize(("sessions", "limit"), [(3, 3), (4, 2), (3, 1)])
async def test_the_page_that_lists_the_last_session_says_none_remain(
    client: Any, clock: Clock, sessions: int, limit: int
) -> None:
    """API.md: `next` is a cursor "when more remain"; "on the last page it is null"."""
    await client.put("/srm/v1/accounts/acct-1/limit", json={"maxSessions": 10}, headers=OPERATOR)
    for _ in range(sessions):
        assert (await client.post("/srm/sessions", json=SETUP, headers=auth())).status == 200
    pages = await pages_of(client, limit)
    assert [len(p) for p in pages] == [limit] * (sessions // limit) + (
        [sessions % limit] if sessions % limit else []
    )
    clock.advance(200)  # every one lapses: listed ENDED (TIMEOUT), no sweep has run
    assert [len(p) for p in await pages_of(client, limit)] == [len(p) for p in pages]


async def test_a_full_page_of_active_sessions_points_on_to_lapsed_and_ended_ones(
    client: Any, clock: Clock
) -> None:
    await client.put("/srm/v1/accounts/acct-1/limit", json={"maxSessions": 10}, headers=OPERATOR)
    sids = []
    for _ in range(4):
        body = await (await client.post("/srm/sessions", json=SETUP, headers=auth())).json()
        sids.append(body["successResponse"]["sessionId"])
    assert (await client.delete(f"/srm/sessions/{sids[0]}", headers=auth())).status == 200
    clock.advance(100)
    assert (await client.put(f"/srm/sessions/{sids[1]}", headers=auth())).status == 200
    assert (await client.put(f"/srm/sessions/{sids[2]}", headers=auth())).status == 200
    clock.advance(30)  # sids[3] lapses
    assert [len(p) for p in await pages_of(client, 2)] == [2, 2]
    assert [len(p) for p in await pages_of(client, 3)] == [3, 1]
    assert (await client.delete(f"/srm/sessions/{sids[3]}", headers=auth())).status == 200
    assert [len(p) for p in await pages_of(client, 2)] == [2, 2]
