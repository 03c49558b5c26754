"""Events of the limit rules over HTTP: replaced, evicted by a rule, denied by a rule, rule
overrides; with deviceType and quality carried into the events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from srm.store import SessionStore
from tests.helpers import OPERATOR, open_backend
from tests.test_api_rules import policy, settings, start  # noqa: F401 - the rules fixtures
from tests.test_events import ended, events_of, types


@pytest.fixture(params=["standalone", "cluster"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with open_backend(request, request.param) as client:
        yield client


async def test_rule_lifecycles_are_one_event_per_change(client: Any, store: SessionStore) -> None:
    tv = (await start(client, "tv-1", claims={"deviceType": "tv"}))["successResponse"]["sessionId"]
    zapped = await start(client, "tv-1", claims={"deviceType": "tv"})  # one-per-tv evicts
    second = zapped["successResponse"]["sessionId"]
    uhd = await start(client, "tab", quality="UHD", claims={"deviceType": "tablet"})
    uhd_id = uhd["successResponse"]["sessionId"]
    refused = await start(client, "pc", quality="UHD")
    assert refused["denial"]["rule"] == "uhd"
    swapped = await start(client, "pc", quality="UHD", replaces=uhd_id)
    swapped_id = swapped["successResponse"]["sessionId"]
    resp = await client.put(
        "/srm/v1/accounts/acct-1/limit",
        json={"maxSessions": 6, "rules": {"uhd": 2, "mobile": None}},
        headers=OPERATOR,
    )
    assert resp.status == 200
    await client.delete("/srm/v1/accounts/acct-1/limit", headers=OPERATOR)

    events = await events_of(store)
    assert types(events) == [
        "session.started",
        "session.ended",
        "session.started",
        "session.started",
        "session.denied",
        "session.ended",
        "session.started",
        "limit.changed",
        "limit.changed",
        "limit.changed",
        "limit.changed",
    ]
    assert ended(events) == [(tv, "EVICTED"), (uhd_id, "REPLACED")]
    assert events[2]["sessionId"] == second and events[2]["deviceType"] == "tv"
    assert events[3]["quality"] == "UHD" and events[3]["deviceType"] == "tablet"
    assert events[4]["rule"] == "uhd" and events[4]["quality"] == "UHD"
    assert events[6]["sessionId"] == swapped_id
    changes = [(e["rule"], e["maxSessions"]) for e in events[7:]]
    # "mobile": None removes an override that is not there: no change, no event
    assert changes == [("account", 6), ("uhd", 2), ("account", None), ("uhd", None)]
    (day,) = (await store.usage("acct-1")).values()
    assert (day.started, day.denied, day.ended[3], day.ended[4]) == (4, 1, 1, 1)
