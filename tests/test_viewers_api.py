"""Viewers and roll-out over HTTP (API.md, "Viewers and roll-out"): a setup naming the
playbackId of an ACTIVE session joins it, 30 at once included; monitor rules flag instead of
refusing (listing, events, usage, the flagged ranking); the setup rate's 429 SRM-0011 with
Retry-After, in one process and across the two workers of a real `srm serve`; the metrics of
all three."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from srm import process
from srm.config import Settings, load
from srm.metrics import MmapedDict
from srm.model import DAY_MS, Policy
from srm.store import SessionStore
from tests.helpers import (
    OPERATOR,
    OPERATOR_KEY,
    SECRET,
    SETUP,
    Clock,
    api,
    expect_error,
    open_backend,
    token,
)
from tests.processes import metrics_dir_of, srm_serve, wait_until, workers_of
from tests.redis_servers import RedisProcess
from tests.test_events import events_of

MONITOR_TOML = """
[[sessions.rules]]
name = "uhd"
max = 1
qualities = ["UHD"]
mode = "monitor"
"""


@pytest.fixture(params=["standalone", "cluster"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A real standalone and a real Cluster: the races need a real server."""
    async with open_backend(request, request.param) as client:
        yield client


def configured(tmp_path: Path | None = None, toml: str = "", **env: str) -> Settings:
    extra = None
    if tmp_path is not None and toml:
        extra = tmp_path / "srm.toml"
        extra.write_text(toml)
    base = {
        "SRM_AUTH_SECRET": SECRET,
        "SRM_OPERATOR_KEYS": OPERATOR_KEY,
        "SRM_REDIS_SHARDS": "16",
        "SRM_MAX_SESSIONS": "10",
        "SRM_SETUPS_PER_MINUTE": "0",
    }
    return load(env={**base, **env}, extra_file=extra)


@pytest.fixture
def settings() -> Settings:
    return configured()


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return process.policy(settings)


def client_headers(account: str = "acct-1", device: str = "tv-1") -> dict[str, str]:
    return {"Client-Token": token(account, device)}


def setup_body(playback: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**SETUP, **extra}
    if playback is not None:
        body["playbackId"] = playback
    return body


async def setup(
    client: Any,
    playback: Any = None,
    account: str = "acct-1",
    device: str = "tv-1",
    prefix: str = "/srm",
    **extra: Any,
) -> Any:
    return await client.post(
        f"{prefix}/sessions",
        json=setup_body(playback, **extra),
        headers=client_headers(account, device),
    )


async def started(client: Any, playback: Any = None, **kw: Any) -> str:
    resp = await setup(client, playback, **kw)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"successResponse"}, body
    return str(body["successResponse"]["sessionId"])


async def listing(client: Any, account: str = "acct-1") -> dict[str, Any]:
    resp = await client.get(f"/srm/v1/accounts/{account}/sessions", headers=OPERATOR)
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    return answer


async def sample(client: Any, name: str, **labels: str) -> float:
    """The value of one series of the app's /metrics (0 when absent)."""
    resp = await client.get("/metrics")
    return scraped(await resp.text(), name, **labels)


def scraped(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -- one playback, one slot ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/srm", "/srm/v1"])
async def test_a_retried_setup_with_its_playback_id_is_answered_with_the_same_session(
    client: Any, clock: Clock, prefix: str
) -> None:
    joins = await sample(client, "srm_setup_joins_total")
    first = await started(client, "pb-1", prefix=prefix)
    before = (await listing(client))["sessions"][0]["expiresAt"]
    clock.advance(60)
    resp = await setup(client, "pb-1", prefix=prefix)  # the first answer was lost: a retry
    assert resp.status == 200
    assert await resp.json() == {"successResponse": {"sessionId": first, "timeout": 120}}
    page = await listing(client)
    assert page["activeCount"] == 1
    (session,) = page["sessions"]
    assert session["sessionId"] == first and session["expiresAt"] > before  # moved
    assert await sample(client, "srm_setup_joins_total") == joins + 1
    # another device, or a fresh playbackId, is another session
    assert await started(client, "pb-1", device="tv-2", prefix=prefix) != first
    assert await started(client, "pb-2", prefix=prefix) != first
    assert (await listing(client))["activeCount"] == 3


async def test_thirty_concurrent_setups_of_one_playback_make_one_session(client: Any) -> None:
    joins = await sample(client, "srm_setup_joins_total")
    answers = await asyncio.gather(*(setup(client, "pb-race") for _ in range(30)))
    assert [a.status for a in answers] == [200] * 30
    sids = {(await a.json())["successResponse"]["sessionId"] for a in answers}
    assert len(sids) == 1
    page = await listing(client)
    assert page["activeCount"] == 1 and [s["sessionId"] for s in page["sessions"]] == list(sids)
    assert await sample(client, "srm_setup_joins_total") == joins + 29


async def test_a_join_at_the_limit_plays_on(store: SessionStore) -> None:
    async with api(configured(SRM_MAX_SESSIONS="1"), store) as client:
        first = await started(client, "pb-1")
        assert await started(client, "pb-1") == first  # no slot counted: not denied
        denied = await (await setup(client, "pb-2")).json()
        assert denied["errorResponse"]["errorCode"] == "SRM-0005"


@pytest.mark.parametrize(
    "playback",
    [12, "", "p" * 129, ["pb-1"], {"id": "pb-1"}, True],
    ids=["number", "empty", "129-chars", "list", "object", "bool"],
)
async def test_a_bad_playback_id_is_400_with_a_detail(client: Any, playback: Any) -> None:
    resp = await setup(client, playback)
    await expect_error(resp, 400, "SRM-0002")
    assert (await resp.json())["detail"] == "playbackId must be a string of 1 to 128 characters"
    assert (await listing(client))["activeCount"] == 0


async def test_a_playback_id_of_128_characters_or_null_is_accepted(client: Any) -> None:
    longest = "é" * 128  # characters, not bytes
    first = await started(client, longest)
    assert await started(client, longest) == first
    resp = await client.post(
        "/srm/sessions", json={**SETUP, "playbackId": None}, headers=client_headers()
    )
    assert resp.status == 200  # null: as if absent, a new session
    assert (await resp.json())["successResponse"]["sessionId"] != first


# -- monitor mode --------------------------------------------------------------------------


async def test_a_monitor_rule_that_would_deny_flags_and_lets_through(
    store: SessionStore, tmp_path: Path
) -> None:
    settings = configured(tmp_path, MONITOR_TOML)
    async with api(settings, store) as client:
        flagged_before = await sample(client, "srm_setups_flagged_total", rule="uhd")
        plain = await started(client, quality="UHD")
        second = await setup(client, device="tv-2", quality="UHD")  # uhd max 1: would deny
        assert second.status == 200
        flagged = (await second.json())["successResponse"]["sessionId"]
        by_id = {s["sessionId"]: s for s in (await listing(client))["sessions"]}
        assert (by_id[plain]["flagged"], by_id[flagged]["flagged"]) == ([], ["uhd"])
        assert by_id[flagged]["state"] == "ACTIVE"
        # the client's own view says so too
        own = await client.get(f"/srm/sessions/{flagged}", headers=client_headers(device="tv-2"))
        assert (await own.json())["flagged"] == ["uhd"]

        resp = await client.get("/srm/v1/accounts/acct-1/usage?days=1", headers=OPERATOR)
        (today,) = (await resp.json())["days"]
        assert (today["started"], today["flagged"], today["denied"]) == (2, 1, 0)

        resp = await client.get("/srm/v1/reports/denials?flagged=true", headers=OPERATOR)
        assert resp.status == 200
        report = await resp.json()
        assert report["accounts"] == [{"accountId": "acct-1", "flagged": 1}]
        day = await store.now() // DAY_MS
        assert report["date"] == time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
        resp = await client.get(
            f"/srm/v1/reports/denials?flagged=false&date={report['date']}", headers=OPERATOR
        )
        assert (await resp.json())["accounts"] == []  # nobody was denied
        resp = await client.get("/srm/v1/reports/denials?flagged=maybe", headers=OPERATOR)
        await expect_error(resp, 400, "SRM-0002")
        assert (await resp.json())["detail"] == "flagged must be true or false"

        assert await sample(client, "srm_setups_flagged_total", rule="uhd") == flagged_before + 1

    started_events = [e for e in await events_of(store) if e["type"] == "session.started"]
    assert [(e["sessionId"], e["flagged"]) for e in started_events] == [
        (plain, []),
        (flagged, ["uhd"]),
    ]


async def test_flipping_the_rule_to_enforce_denies_by_configuration_alone(
    store: SessionStore, tmp_path: Path
) -> None:
    async with api(configured(tmp_path, MONITOR_TOML), store) as client:
        await started(client, quality="UHD")
    enforce = MONITOR_TOML.replace('mode = "monitor"', 'mode = "enforce"')
    async with api(configured(tmp_path, enforce), store) as client:
        denied = await (await setup(client, device="tv-2", quality="UHD")).json()
    assert denied["errorResponse"]["errorCode"] == "SRM-0005"
    assert denied["denial"]["rule"] == "uhd"


# -- the setup rate --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/srm", "/srm/v1"])
async def test_setups_over_the_rate_are_429_with_retry_after(
    store: SessionStore, clock: Clock, prefix: str
) -> None:
    clock.now = clock.now // 60_000 * 60_000  # the start of a minute
    async with api(configured(SRM_SETUPS_PER_MINUTE="3"), store) as client:
        limited = await sample(client, "srm_setups_rate_limited_total")
        sid = await started(client, "pb-1", prefix=prefix)
        assert await started(client, "pb-1", prefix=prefix) == sid  # a join counts
        await started(client, "pb-2", prefix=prefix)
        resp = await setup(client, "pb-3", prefix=prefix)
        await expect_error(resp, 429, "SRM-0011")
        # 3 this minute: they weigh fully until it ends, then fall below 2 after 20 s more
        assert resp.headers["Retry-After"] == "80"
        assert "setups_per_minute" in (await resp.json())["detail"]
        assert await sample(client, "srm_setups_rate_limited_total") == limited + 1
        # the refusal created nothing and counted no denial
        assert (await listing(client))["activeCount"] == 2
        usage = await client.get("/srm/v1/accounts/acct-1/usage?days=1", headers=OPERATOR)
        (today,) = (await usage.json())["days"]
        assert (today["started"], today["denied"]) == (2, 0)
        # keep-alives and teardowns are not setups
        headers = client_headers()
        assert (await client.put(f"{prefix}/sessions/{sid}", headers=headers)).status == 200
        assert (await client.delete(f"{prefix}/sessions/{sid}", headers=headers)).status == 200
        # per account
        await started(client, "pb-1", account="acct-2", prefix=prefix)
        clock.advance(80)  # as Retry-After said
        await started(client, "pb-4", prefix=prefix)


async def test_zero_setups_per_minute_is_no_limit(store: SessionStore) -> None:
    async with api(configured(SRM_SETUPS_PER_MINUTE="0", SRM_MAX_SESSIONS="1000"), store) as c:
        for i in range(150):
            await started(c, f"pb-{i}")


# -- the rate across two API workers ----------------------------------------------------------


def setups_by_worker(directory: Path, pid: int) -> float:
    """The setups answered by worker *pid*, from its own multiprocess counter file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    total = 0.0
    for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
        _metric, name, labels, _help = json.loads(key)
        if name == "srm_http_requests_total" and labels.get("route") == "/srm/sessions":
            total += value
    return total


def requests_by_worker(directory: Path, pid: int) -> float:
    """Every request answered by worker *pid*, from its own multiprocess counter file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    return sum(
        value
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path))
        if json.loads(key)[1] == "srm_http_requests_total"
    )


async def both_answering(base: str, directory: Path, workers: list[int]) -> None:
    """Until every worker has answered a request: /ready answers once one worker listens,
    and on a loaded machine the other may start seconds later, when a burst would all go to
    the first (SO_REUSEPORT spreads connections over the sockets that exist)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(connector=connector) as http:
        while not all(requests_by_worker(directory, pid) > 0 for pid in workers):
            assert time.monotonic() < deadline, "a worker never answered a request"
            for _ in range(10):
                async with http.get(base + "/health") as resp:
                    assert resp.status == 200
            await asyncio.sleep(0.5)  # each worker folds its counts every second


async def burst(base: str, count: int) -> list[tuple[int, dict[str, Any], str | None]]:
    """*count* setups of one account at once, each on a new connection (so the kernel spreads
    them over the workers' SO_REUSEPORT sockets): (status, body, Retry-After) of each."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> tuple[int, dict[str, Any], str | None]:
            async with http.post(
                base + "/srm/sessions",
                json=setup_body(f"pb-{i}"),
                headers=client_headers("acct-rate", f"dev-{i}"),
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp:
                return resp.status, await resp.json(), resp.headers.get("Retry-After")

        return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.slow
async def test_the_rate_holds_across_two_api_workers(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    allowed, extra = 40, 10
    env = {
        "SRM_REDIS_URL": real_redis.url,
        "SRM_OPERATOR_KEYS": OPERATOR_KEY,
        "SRM_WORKERS": "2",
        "SRM_SETUPS_PER_MINUTE": str(allowed),
        "SRM_MAX_SESSIONS": "1000",
    }
    with srm_serve(tmp_path, **env) as srm:
        workers = workers_of(srm.proc.pid)
        assert len(workers) == 2
        shared = metrics_dir_of(workers[0])
        await both_answering(srm.base, shared, workers)
        # the window slides: a burst astride a minute's end may let one more through (the
        # last minute's weight has just begun to fall), so it starts early in a minute
        if time.time() % 60 > 40:
            await asyncio.sleep(60.5 - time.time() % 60)
        answers = await burst(srm.base, allowed + extra)
        statuses = [status for status, _body, _retry in answers]
        assert (statuses.count(200), statuses.count(429)) == (allowed, extra), statuses
        for status, body, retry_after in answers:
            if status == 429:
                assert body["errorResponse"]["errorCode"] == "SRM-0011"
                assert retry_after is not None and int(retry_after) >= 1
            else:
                assert "successResponse" in body
        (status, body, retry_after), *_ = await burst(srm.base, 1)
        assert status == 429 and retry_after is not None and int(retry_after) >= 1

        # both workers answered setups (else this proves nothing about sharing the count)
        wait_until(
            lambda: all(setups_by_worker(shared, pid) > 0 for pid in workers),
            what="setups answered by both workers",
        )
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{srm.base}/srm/v1/accounts/acct-rate/sessions?limit=1", headers=OPERATOR
            ) as resp,
        ):
            assert (await resp.json())["activeCount"] == allowed

        def rate_limited() -> float:
            import urllib.request

            with urllib.request.urlopen(srm.base + "/metrics", timeout=10) as answer:  # noqa: S310
                return scraped(answer.read().decode(), "srm_setups_rate_limited_total")

        wait_until(lambda: rate_limited() == extra + 1, what="the refusals counted")
