"""Paged listings: bounded pages and round trips, and walks that miss no ACTIVE session."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from srm.errors import MalformedRequest
from srm.listing import Cursor
from srm.model import EndReason, NewSession, Session, State
from srm.store import SessionStore
from tests.helpers import OPERATOR, SETUP, Clock, auth, in_batches, open_backend, token

ROUND_TRIPS_PER_PAGE = 1  # the account hash, whole


@pytest.fixture(params=["standalone", "cluster", "fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with open_backend(request, request.param) as client:
        yield client


def new(account: str = "acct-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, "dev-1", "100001V3D", "COD")


async def create(store: SessionStore, count: int, account: str = "acct-1") -> list[str]:
    made = [new(account) for _ in range(count)]
    await in_batches(made, store.setup)
    return [s.session_id for s in made]


async def end(store: SessionStore, ids: list[str], account: str = "acct-1") -> None:
    await in_batches(ids, lambda sid: store.end(account, sid, EndReason.TEARDOWN))


def count_round_trips(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every store round trip (one pipeline, command or script call each) is counted in
    calls[0]."""
    calls = [0]
    guard, run = store._guard, store._run

    async def counted(operation: str, call: Awaitable[Any]) -> Any:
        calls[0] += 1
        return await guard(operation, call)

    async def counted_run(name: str, keys: Any, args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return await run(name, keys, args, **kw)

    monkeypatch.setattr(store, "_guard", counted)
    monkeypatch.setattr(store, "_run", counted_run)
    return calls


async def walk(
    store: SessionStore, account: str, limit: int, calls: list[int] | None = None
) -> list[list[Session]]:
    pages: list[list[Session]] = []
    cursor: str | None = None
    while True:
        before = calls[0] if calls else 0
        page = await store.account_sessions(account, limit, cursor)
        if calls:
            assert calls[0] - before <= ROUND_TRIPS_PER_PAGE + 1  # + the time estimate
        assert len(page.sessions) <= limit
        pages.append(page.sessions)
        if page.next is None:
            return pages
        cursor = page.next
        assert len(pages) < 10_000, "the walk does not end"


async def test_thousands_of_ended_sessions_come_in_bounded_pages(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_limit("acct-1", 10_000)
    ids = await create(store, 3000)
    await end(store, ids[10:])
    calls = count_round_trips(store, monkeypatch)
    pages = await walk(store, "acct-1", 100, calls)
    listed = [s for page in pages for s in page]
    assert {s.session_id for s in listed} == set(ids)
    assert len(pages) <= 3000 // 100 + 3
    states = [s.state for s in listed]
    assert states[:10] == [State.ACTIVE] * 10  # ACTIVE ones first
    assert State.ACTIVE not in states[10:]
    first = await store.account_sessions("acct-1", 100)
    assert (first.active_count, first.max_sessions) == (10, 10_000)


async def test_active_then_lapsed_then_ended(store: SessionStore, clock: Clock) -> None:
    await store.set_limit("acct-1", 10)
    lapsed = await create(store, 2)
    clock.advance(100)
    active = await create(store, 2)
    ended = await create(store, 2)
    await end(store, ended)
    clock.advance(30)  # the first two lapse; no sweep has run
    pages = await walk(store, "acct-1", 1)
    listed = [s for page in pages for s in page]
    assert [s.session_id for s in listed[:2]] == sorted(active)  # same deadline: by id
    assert all(s.state is State.ACTIVE for s in listed[:2])
    rest = {s.session_id: s for s in listed[2:]}
    assert set(rest) == set(lapsed + ended)
    assert all(rest[sid].end_reason is EndReason.TIMEOUT for sid in lapsed)
    assert all(rest[sid].end_reason is EndReason.TEARDOWN for sid in ended)


async def test_a_small_account_is_listed_in_one_round_trip(
    store: SessionStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_limit("acct-1", 10)
    await create(store, 2)
    clock.advance(130)  # those two lapse
    await end(store, (await create(store, 4))[:2])
    calls = count_round_trips(store, monkeypatch)
    page = await store.account_sessions("acct-1")
    assert calls[0] == 1  # the account hash and its limit, in one script call
    assert len(page.sessions) == 6 and page.next is None and page.active_count == 2


async def test_a_walk_misses_no_session_active_throughout(
    store: SessionStore, clock: Clock
) -> None:
    await store.set_limit("acct-1", 10_000)
    steady = await create(store, 40)
    await end(store, await create(store, 1000))
    stop = asyncio.Event()

    async def churn() -> None:
        while not stop.is_set():
            fresh = await create(store, 5)
            clock.advance(0.05)
            for sid in steady[::3]:  # keep-alives move deadlines later during the walk
                await store.keep_alive("acct-1", sid)
            await end(store, fresh[:4])
            await asyncio.sleep(0)

    churning = asyncio.create_task(churn())
    try:
        seen: set[str] = set()
        for limit in (7, 1000):
            seen.clear()
            for page in await walk(store, "acct-1", limit):
                seen |= {s.session_id for s in page}
            assert set(steady) <= seen
    finally:
        stop.set()
        await churning


async def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    for cursor in (
        Cursor(),
        Cursor("a", score=1_800_000_120_000, sid=str(uuid.uuid4())),
        Cursor("l"),
        Cursor("e"),
        Cursor("e", sid=str(uuid.uuid4())),
    ):
        assert Cursor.decode(cursor.encode()) == cursor
    old = str(uuid.uuid4())  # a phase-e cursor of SRM 0.x, given before an upgrade
    assert Cursor.decode(base64.urlsafe_b64encode(f"e:12345:100:{old}".encode()).decode()) == (
        Cursor("e", sid=old)
    )
    for bad in ("!!!", "é", "YQ", "eDox", "ZTotMTowOg", "YToxOg", "ZTowOjA6eA", "ZToxOjIwMDA6eA"):
        with pytest.raises(MalformedRequest):
            Cursor.decode(bad)


async def test_listings_over_http_page_on_both_endpoints(client: Any, clock: Clock) -> None:
    resp = await client.put(
        "/srm/v1/accounts/acct-1/limit", json={"maxSessions": 10}, headers=OPERATOR
    )
    assert resp.status == 200
    created = []
    for _ in range(5):
        body = await (await client.post("/srm/sessions", json=SETUP, headers=auth())).json()
        created.append(body["successResponse"]["sessionId"])
    for path, headers in (
        ("/srm/sessions", auth()),
        ("/srm/v1/sessions", auth()),
        ("/srm/v1/accounts/acct-1/sessions", OPERATOR),
    ):
        seen: list[str] = []
        query: dict[str, str] = {"limit": "2"}
        pages = 0
        while True:
            resp = await client.get(path, params=query, headers=headers)
            assert resp.status == 200
            body = await resp.json()
            assert set(body) == {"sessions", "activeCount", "maxSessions", "next"}
            assert (body["activeCount"], body["maxSessions"]) == (5, 10)
            assert len(body["sessions"]) <= 2
            seen += [s["sessionId"] for s in body["sessions"]]
            pages += 1
            if body["next"] is None:
                break
            query = {"limit": "2", "cursor": body["next"]}
        assert sorted(seen) == sorted(created) and pages == 3
    body = await (await client.get("/srm/sessions", headers=auth())).json()
    assert len(body["sessions"]) == 5 and body["next"] is None  # default limit 100


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": ""},
        {"limit": "1e3"},
        {"limit": "9" * 5000},
        {"cursor": ""},
        {"cursor": "not a cursor"},
        {"cursor": base64.urlsafe_b64encode(b"x:1:2").decode()},
    ],
)
async def test_bad_limit_or_cursor_is_400(client: Any, query: dict[str, str]) -> None:
    for path, headers in (
        ("/srm/sessions", {"Client-Token": token()}),
        ("/srm/v1/accounts/acct-1/sessions", OPERATOR),
    ):
        resp = await client.get(path, params=query, headers=headers)
        assert resp.status == 400, query
        assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0002"
