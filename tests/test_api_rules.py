"""Limit rules over HTTP: denial detail, replaces, eviction, token claims, operator endpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from srm import process
from srm.api.bodies import DENIED_SESSION_FIELDS
from srm.config import Settings, load
from srm.model import Policy
from tests.helpers import OPERATOR, OPERATOR_KEY, SECRET, expect_error, token

RULES_TOML = """
[sessions]
max_sessions = 4

[[sessions.rules]]
name = "uhd"
max = 1
qualities = ["UHD"]

[[sessions.rules]]
name = "mobile"
max = 2
device_types = ["phone", "tablet"]

[[sessions.rules]]
name = "one-per-tv"
max = 1
device_types = ["tv"]
per = "device"
policy = "evict"
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "rules.toml"
    path.write_text(RULES_TOML)
    return load(
        env={
            "SRM_AUTH_SECRET": SECRET,
            "SRM_OPERATOR_KEYS": OPERATOR_KEY,
            "SRM_REDIS_SHARDS": "16",
            "SRM_AUTH_LIMIT_CLAIMS": "true",
        },
        extra_file=path,
    )


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return process.policy(settings)


def headers(device: str = "dev-1", account: str = "acct-1", **claims: Any) -> dict[str, str]:
    return {"Client-Token": token(account, device, **claims)}


def body(content: str = "100001V3D", **extra: Any) -> dict[str, Any]:
    return {"content": {"contentID": content, "contentType": "COD"}, **extra}


async def start(client: Any, device: str = "dev-1", **extra: Any) -> dict[str, Any]:
    claims = extra.pop("claims", {})
    resp = await client.post("/srm/sessions", json=body(**extra), headers=headers(device, **claims))
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    return answer


async def listing(client: Any) -> dict[str, Any]:
    resp = await client.get("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_denial_names_the_rule_and_lists_what_it_counts_then_replaces(client: Any) -> None:
    first = await start(client, "tv-1", quality="UHD", claims={"deviceType": "tv"})
    first_sid = first["successResponse"]["sessionId"]
    denied = await start(client, "phone-1", quality="UHD", claims={"deviceType": "phone"})
    assert denied["errorResponse"]["errorCode"] == "SRM-0005"
    assert denied["errorResponse"]["status"] == "DENIED"
    denial = denied["denial"]
    assert (denial["rule"], denial["max"]) == ("uhd", 1)
    [counted] = denial["sessions"]
    assert set(counted) == set(DENIED_SESSION_FIELDS)
    assert counted["sessionId"] == first_sid
    assert (counted["deviceId"], counted["deviceType"], counted["quality"]) == ("tv-1", "tv", "UHD")
    assert (counted["network"], counted["location"]) == ("127.0.0.0/24", None)
    # the viewer chooses to stop it
    replaced = await start(
        client, "phone-1", quality="UHD", replaces=first_sid, claims={"deviceType": "phone"}
    )
    assert "successResponse" in replaced
    resp = await client.put(f"/srm/sessions/{first_sid}", headers=headers("tv-1"))
    await expect_error(resp, 404, "SRM-0004")
    ended = (await resp.json())["ended"]
    assert (ended["endReason"], ended["byDeviceId"]) == ("REPLACED", "phone-1")
    sessions = (await listing(client))["sessions"]
    by_id = {s["sessionId"]: s for s in sessions}
    assert by_id[first_sid]["endReason"] == "REPLACED"
    new = by_id[replaced["successResponse"]["sessionId"]]
    assert (new["deviceType"], new["quality"], new["state"]) == ("phone", "UHD", "ACTIVE")


async def test_zapping_on_one_tv_evicts_the_previous_stream(client: Any) -> None:
    tv = {"deviceType": "tv"}
    first = (await start(client, "tv-1", content="ch1", claims=tv))["successResponse"]
    second = await start(client, "tv-1", content="ch2", claims=tv)
    assert "successResponse" in second
    resp = await client.put(f"/srm/sessions/{first['sessionId']}", headers=headers("tv-1"))
    await expect_error(resp, 404, "SRM-0004")
    assert (await resp.json())["ended"]["endReason"] == "EVICTED"
    assert (await listing(client))["activeCount"] == 1


async def test_account_denial_is_named_account(client: Any) -> None:
    for i in range(4):
        await start(client, f"d{i}")
    denied = await start(client, "d9")
    assert denied["denial"]["rule"] == "account" and denied["denial"]["max"] == 4
    assert len(denied["denial"]["sessions"]) == 4


@pytest.mark.parametrize(
    "extra",
    [
        {"quality": "8K"},
        {"quality": 4},
        {"replaces": "not-a-uuid"},
        {"replaces": 12},
    ],
)
async def test_bad_setup_extensions_are_srm_0002_and_store_nothing(
    client: Any, extra: dict[str, Any]
) -> None:
    resp = await client.post("/srm/sessions", json=body(**extra), headers=headers())
    await expect_error(resp, 400, "SRM-0002")
    assert (await listing(client))["sessions"] == []


@pytest.mark.parametrize(
    "claims",
    [
        {"deviceType": 7},
        {"deviceType": ""},
        {"deviceType": "x" * 65},
        {"deviceType": "\ud800"},
        {"maxSessions": -1},
        {"maxSessions": 1_000_001},
        {"maxSessions": "2"},
        {"maxSessions": 1.5},
        {"maxSessions": True},
    ],
)
async def test_bad_claims_are_srm_0003_and_store_nothing(
    client: Any, claims: dict[str, Any]
) -> None:
    resp = await client.post("/srm/sessions", json=body(), headers=headers(**claims))
    await expect_error(resp, 401, "SRM-0003")
    assert (await listing(client))["sessions"] == []


async def test_max_sessions_claim_below_an_operator_override(client: Any) -> None:
    one = {"maxSessions": 1}
    assert "successResponse" in await start(client, "a", claims=one)
    denied = await start(client, "b", claims=one)
    assert (denied["denial"]["rule"], denied["denial"]["max"]) == ("account", 1)
    own = await client.get("/srm/sessions", headers=headers("a", maxSessions=1))
    assert (await own.json())["maxSessions"] == 1
    resp = await client.put(
        "/srm/v1/accounts/acct-1/limit", json={"maxSessions": 2}, headers=OPERATOR
    )
    assert resp.status == 200
    assert "successResponse" in await start(client, "b", claims=one)
    own = await client.get("/srm/sessions", headers=headers("a", maxSessions=1))
    assert (await own.json())["maxSessions"] == 2


async def test_rule_overrides_through_the_limit_endpoint(client: Any) -> None:
    path = "/srm/v1/accounts/acct-1/limit"
    got = await (await client.get(path, headers=OPERATOR)).json()
    assert got == {
        "maxSessions": 4,
        "override": False,
        "rules": {
            "uhd": {"max": 1, "override": False},
            "mobile": {"max": 2, "override": False},
            "one-per-tv": {"max": 1, "override": False},
        },
    }
    resp = await client.put(path, json={"rules": {"uhd": 2}}, headers=OPERATOR)
    got = await resp.json()
    assert got["rules"]["uhd"] == {"max": 2, "override": True} and got["override"] is False
    await start(client, "a", quality="UHD")
    assert "successResponse" in await start(client, "b", quality="UHD")
    # an unknown rule changes nothing, not even the valid part of the body
    resp = await client.put(
        path, json={"maxSessions": 9, "rules": {"uhd": 5, "nope": 1}}, headers=OPERATOR
    )
    await expect_error(resp, 400, "SRM-0002")
    for bad in ({}, {"rules": {"uhd": -1}}, {"rules": [1]}, {"rules": {"uhd": "2"}}):
        await expect_error(await client.put(path, json=bad, headers=OPERATOR), 400, "SRM-0002")
    got = await (await client.get(path, headers=OPERATOR)).json()
    assert (got["maxSessions"], got["rules"]["uhd"]["max"]) == (4, 2)
    resp = await client.put(path, json={"rules": {"uhd": None}}, headers=OPERATOR)
    assert (await resp.json())["rules"]["uhd"] == {"max": 1, "override": False}
    await client.put(path, json={"maxSessions": 1, "rules": {"mobile": 0}}, headers=OPERATOR)
    got = await (await client.delete(path, headers=OPERATOR)).json()
    assert got["override"] is False
    assert not any(r["override"] for r in got["rules"].values())


async def test_operator_ends_one_devices_sessions(client: Any) -> None:
    await start(client, "d1")
    await start(client, "d1", content="other")
    kept = (await start(client, "d2"))["successResponse"]["sessionId"]
    path = "/srm/v1/accounts/acct-1/devices/d1/sessions"
    resp = await client.delete(path, headers=OPERATOR)
    assert resp.status == 200 and await resp.json() == {"ended": 2}
    assert await (await client.delete(path, headers=OPERATOR)).json() == {"ended": 0}
    await expect_error(await client.delete(path), 403, "SRM-0006")
    sessions = (await listing(client))["sessions"]
    assert {s["sessionId"] for s in sessions if s["state"] == "ACTIVE"} == {kept}
    assert sorted(s["endReason"] for s in sessions if s["state"] == "ENDED") == [
        "OPERATOR",
        "OPERATOR",
    ]


async def test_sixty_concurrent_uhd_setups_over_http_yield_one(client: Any) -> None:
    answers = await asyncio.gather(
        *(
            client.post("/srm/sessions", json=body(quality="UHD"), headers=headers(f"d{i}"))
            for i in range(60)
        )
    )
    replies = [await a.json() for a in answers]
    assert sum("successResponse" in r for r in replies) == 1
    assert [r["denial"]["rule"] for r in replies if "denial" in r] == ["uhd"] * 59


async def test_sixty_concurrent_zaps_on_one_tv_leave_one_stream(client: Any) -> None:
    tv = headers("tv-1", deviceType="tv")
    answers = await asyncio.gather(
        *(client.post("/srm/sessions", json=body(content=f"ch{i}"), headers=tv) for i in range(60))
    )
    replies = [await a.json() for a in answers]
    assert all("successResponse" in r for r in replies)  # each zap evicts the previous one
    listed = await listing(client)
    assert listed["activeCount"] == 1
    assert sum(s["endReason"] == "EVICTED" for s in listed["sessions"]) == 59
