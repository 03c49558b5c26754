"""Session events, usage and the denial report, in-process on a real standalone and Cluster.

Changes are made over real HTTP (aiohttp's test server) or through the store, and read back
the way `srm events` reads them: a Consumer of a consumer group, here with a sink that
keeps what it was given.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from srm import keys as k
from srm import network
from srm.config import EventsSettings
from srm.errors import LimitReached
from srm.events.consumer import Consumer, EventsMetrics
from srm.events.sinks import WebhookSink, webhook_url
from srm.model import DAY_MS, EndReason, EventPolicy, Households, NewSession, Policy
from srm.network import Networks
from srm.store import SessionStore
from tests import invariants
from tests.helpers import (
    OPERATOR,
    SETUP,
    Clock,
    auth,
    events_settings,
    expect_error,
    open_backend,
    reaper_for,
    setup_session,
    until,
)

FAST = events_settings(claim_idle=0.2, batch_size=50, poll_interval=0.01, metrics_port=0)


@pytest.fixture(params=["standalone", "cluster"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Events need real streams and consumer groups: a real standalone and a Cluster."""
    async with open_backend(request, request.param) as client:
        yield client


class Keep:
    """A sink that keeps every event it is given; it can be told to fail."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.failing = False

    async def deliver(self, events: Sequence[dict[str, Any]]) -> None:
        if self.failing:
            raise ConnectionError("sink down")
        self.events.extend(events)

    async def close(self) -> None:
        return None


def consumer(
    store: SessionStore,
    sink: Any,
    *,
    group: str = "g",
    name: str | None = None,
    settings: EventsSettings = FAST,
) -> Consumer:
    return Consumer(
        store, settings, sink, EventsMetrics(CollectorRegistry()), group=group, name=name
    )


async def drain(c: Consumer) -> None:
    """Step until a pass delivers nothing."""
    while await c.step():
        pass


async def events_of(store: SessionStore) -> list[dict[str, Any]]:
    sink = Keep()
    await drain(consumer(store, sink, group=f"g-{uuid.uuid4().hex}"))
    return sink.events


def types(events: list[dict[str, Any]], account: str | None = None) -> list[str]:
    return [e["type"] for e in events if account is None or e["accountId"] == account]


def ended(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["sessionId"], e["endReason"]) for e in events if e["type"] == "session.ended"]


def new(account: str = "acct-1", device: str = "dev-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, device, "100001V3D", "COD")


def iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).date().isoformat()


# -- one event per change, over HTTP -------------------------------------------------------


async def test_every_lifecycle_over_http_is_one_event_per_change(
    client: Any, store: SessionStore, clock: Clock
) -> None:
    torn = await setup_session(client, device="tv")
    await client.put(f"/srm/sessions/{torn}", headers=auth(device="tv"))  # keep-alive: no event
    assert (await client.delete(f"/srm/sessions/{torn}", headers=auth())).status == 200
    assert (await client.delete(f"/srm/sessions/{torn}", headers=auth())).status == 200  # repeat
    by_operator = await setup_session(client, device="phone")
    resp = await client.delete(f"/srm/v1/accounts/acct-1/sessions/{by_operator}", headers=OPERATOR)
    assert resp.status == 200
    lapsing = await setup_session(client, device="stb")
    ids = [await setup_session(client, device=f"d{i}") for i in range(2)]
    resp = await client.post("/srm/sessions", json=SETUP, headers=auth(device="over"))
    assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0005"
    clock.advance(60)
    for sid in ids:  # kept alive; the stb session is not
        await client.put(f"/srm/sessions/{sid}", headers=auth())
    clock.advance(61)
    reaper = reaper_for(store)
    for shard in range(store.keys.shards):
        await reaper.reap_shard(shard)
    resp = await client.delete("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
    assert (await resp.json()) == {"ended": 2}
    for value in (5, 5):  # the second PUT changes nothing: no event
        await client.put(
            "/srm/v1/accounts/acct-1/limit", json={"maxSessions": value}, headers=OPERATOR
        )
    for _ in range(2):
        await client.delete("/srm/v1/accounts/acct-1/limit", headers=OPERATOR)

    events = await events_of(store)
    assert types(events) == [
        "session.started",
        "session.ended",
        "session.started",
        "session.ended",
        "session.started",
        "session.started",
        "session.started",
        "session.denied",
        "session.ended",
        "session.ended",
        "session.ended",
        "limit.changed",
        "limit.changed",
    ]
    assert ended(events)[:3] == [
        (torn, "TEARDOWN"),
        (by_operator, "OPERATOR"),
        (lapsing, "TIMEOUT"),
    ]
    assert sorted(ended(events)[3:]) == sorted((sid, "OPERATOR") for sid in ids)
    assert len({e["id"] for e in events}) == len(events)
    for e in events:
        assert e["accountId"] == "acct-1"
        assert set(e) >= {
            "id", "type", "at", "deviceId", "deviceType", "sessionId", "contentID",
            "contentType", "quality",
        }  # fmt: skip
    start = events[0]
    assert start["deviceId"] == "tv" and start["contentID"] == "100001V3D"
    assert start["contentType"] == "COD" and start["sessionId"] == torn
    assert start["deviceType"] == "unknown" and start["quality"] is None
    # the test client's peer, 127.0.0.1, cut to 24 bits; the account has no home network
    assert (start["network"], start["location"]) == ("127.0.0.0/24", None)
    timeout = next(e for e in events if e.get("endReason") == "TIMEOUT")
    assert timeout["deviceId"] == "stb" and timeout["durationSeconds"] == 120.0
    denied = events[7]
    assert denied["rule"] == "account" and denied["deviceId"] == "over"
    assert denied["sessionId"] is None
    assert (denied["network"], denied["location"]) == ("127.0.0.0/24", None)
    assert timeout["network"] == "127.0.0.0/24"
    for e in events:
        assert ("network" in e) == e["type"].startswith("session.")
    assert [e["maxSessions"] for e in events[-2:]] == [5, None]


async def test_a_retried_setup_adds_no_event(store: SessionStore) -> None:
    s = new()
    await store.setup(s)
    await store.setup(s)  # the same call again (redis-py retries after a lost reply)
    for i in range(2):
        await store.setup(new(device=f"d{i}"))
    refused = new(device="over")
    for _ in range(2):
        with pytest.raises(LimitReached):
            await store.setup(refused)
    assert types(await events_of(store)) == ["session.started"] * 3 + ["session.denied"]
    usage = await store.usage("acct-1")
    (day,) = usage.values()
    assert (day.started, day.denied) == (3, 1)


async def test_events_off_write_no_stream_but_usage_counts(
    redis_client: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    store = SessionStore(redis_client, keyspace, policy, clock=clock, events=EventPolicy(False))
    s = new()
    await store.setup(s)
    await store.end("acct-1", s.session_id, EndReason.TEARDOWN)
    await store.set_limit("acct-1", 1)
    for shard in range(keyspace.shards):
        assert await redis_client.exists(keyspace.events(shard)) == 0
    (day,) = (await store.usage("acct-1")).values()
    assert (day.started, day.ended[0]) == (1, 1)
    await invariants.check(redis_client, keyspace)


# -- usage and the denial report -------------------------------------------------------------


async def test_usage_of_a_scripted_day_and_a_session_across_midnight(
    client: Any, store: SessionStore, clock: Clock
) -> None:
    day = clock.now // DAY_MS + 1
    clock.now = day * DAY_MS - 60_000  # 23:59 UTC the day before
    night = await setup_session(client, account="fam", device="tv")
    clock.advance(90)
    assert (await client.put(f"/srm/sessions/{night}", headers=auth(account="fam"))).status == 200
    clock.advance(30)  # 00:01: it ends on `day`, after 120 s
    await client.delete(f"/srm/sessions/{night}", headers=auth(account="fam"))
    a, b, _c = [await setup_session(client, account="fam", device=f"d{i}") for i in range(3)]
    for _ in range(2):
        resp = await client.post("/srm/sessions", json=SETUP, headers=auth(account="fam"))
        assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0005"
    clock.advance(60)
    await client.delete(f"/srm/sessions/{a}", headers=auth(account="fam"))
    await client.delete(f"/srm/v1/accounts/fam/sessions/{b}", headers=OPERATOR)
    clock.advance(100)  # c lapsed 120 s after its setup
    resp = await client.post("/srm/sessions", json=SETUP, headers=auth(account="fam"))
    assert resp.status == 200  # c is ended as TIMEOUT, at its deadline, by this setup
    resp = await client.post("/srm/sessions", json=SETUP, headers=auth(account="other"))
    await client.put("/srm/v1/accounts/other/limit", json={"maxSessions": 0}, headers=OPERATOR)
    await client.post("/srm/sessions", json=SETUP, headers=auth(account="other"))

    resp = await client.get("/srm/v1/accounts/fam/usage?days=3", headers=OPERATOR)
    assert resp.status == 200
    body = await resp.json()
    assert body["accountId"] == "fam"
    assert [d["date"] for d in body["days"]] == [iso_day(day), iso_day(day - 1), iso_day(day - 2)]
    today, yesterday, before = body["days"]
    assert today == {
        "date": iso_day(day),
        "started": 4,
        "denied": 2,
        "ended": {"TEARDOWN": 2, "TIMEOUT": 1, "OPERATOR": 1, "EVICTED": 0, "REPLACED": 0},
        # the night session 120 s, a and b 60 s each, c 120 s (to its deadline)
        "watchedSeconds": 120 + 60 + 60 + 120,
        "peakActive": 3,
        "devicesRegistered": 0,  # no device registry (devices.max 0)
        "flagged": 0,  # no monitor rule
    }
    assert yesterday["started"] == 1 and yesterday["ended"]["TEARDOWN"] == 0
    assert yesterday["watchedSeconds"] == 0 and yesterday["peakActive"] == 1
    assert before["started"] == before["denied"] == before["peakActive"] == 0
    resp = await client.get("/srm/accounts/fam/usage", headers=OPERATOR)
    assert len((await resp.json())["days"]) == 7  # the default

    resp = await client.get("/srm/v1/reports/denials", headers=OPERATOR)
    assert await resp.json() == {
        "date": iso_day(day),
        "accounts": [{"accountId": "fam", "denied": 2}, {"accountId": "other", "denied": 1}],
    }
    resp = await client.get(f"/srm/v1/reports/denials?date={iso_day(day)}&top=1", headers=OPERATOR)
    assert (await resp.json())["accounts"] == [{"accountId": "fam", "denied": 2}]
    resp = await client.get(f"/srm/v1/reports/denials?date={iso_day(day - 1)}", headers=OPERATOR)
    assert (await resp.json())["accounts"] == []


@pytest.mark.parametrize(
    "query",
    [
        "/srm/v1/accounts/a/usage?days=0",
        "/srm/v1/accounts/a/usage?days=36",
        "/srm/v1/accounts/a/usage?days=seven",
        "/srm/v1/accounts/a/usage?days=-1",
        "/srm/v1/accounts/a/usage?days=",
        "/srm/v1/reports/denials?top=0",
        "/srm/v1/reports/denials?top=1001",
        "/srm/v1/reports/denials?top=1e3",
        "/srm/v1/reports/denials?date=2027-13-01",
        "/srm/v1/reports/denials?date=yesterday",
        "/srm/v1/reports/denials?date=2027-1-5",
        "/srm/v1/reports/denials?date=1999-01-01",
        "/srm/v1/reports/denials?date=2999-01-01",
        "/srm/v1/reports/denials?date=%D9%A2%D9%A0%D9%A2%D9%A6-01-01",  # Arabic-Indic digits
        "/srm/v1/accounts/a/usage?days=%D9%A3",
    ],
)
async def test_bad_report_parameters_are_srm_0002(client: Any, query: str) -> None:
    await expect_error(await client.get(query, headers=OPERATOR), 400, "SRM-0002")


async def test_report_endpoints_are_operator_only(client: Any) -> None:
    for path in ("/srm/v1/accounts/a/usage", "/srm/v1/reports/denials"):
        await expect_error(await client.get(path, headers=auth()), 403, "SRM-0006")


async def test_usage_keeps_35_days(store: SessionStore, clock: Clock) -> None:
    first = clock.now // DAY_MS
    old = new(device="old")
    await store.setup(old)
    await store.end("acct-1", old.session_id, EndReason.TEARDOWN)
    clock.now += 34 * DAY_MS
    await store.setup(new(device="d34"))
    assert sorted(await store.usage("acct-1")) == [first, first + 34]
    clock.now += DAY_MS  # day 35: the first day falls out as this one is written
    s = new(device="d35")
    await store.setup(s)
    assert sorted(await store.usage("acct-1")) == [first + 34, first + 35]
    ak = store.keys.account("acct-1")
    assert await store.redis.pttl(ak.state) == -1  # the account has sessions: no TTL
    # once its last session record is purged, the account hash (its usage) lives 35 days
    clock.advance(121)  # the day-35 setup ended the lapsed d34 session: d35 is left
    assert (await store.sweep(ak.shard, 100)).ended == 1
    clock.advance(61)
    assert await store.purge(ak.shard, 100) == 3
    assert [f for f in await store.redis.hkeys(ak.state) if not f.isdigit()] == []
    assert sorted(await store.usage("acct-1")) == [first + 34, first + 35]
    ttl = await store.redis.pttl(ak.state)
    assert 34 * DAY_MS < ttl <= 35 * DAY_MS
    # a new session keeps it again
    await store.setup(new(device="back"))
    assert await store.redis.pttl(ak.state) == -1


async def test_a_sweep_counts_the_usage_of_every_session_it_ends(
    store: SessionStore, clock: Clock
) -> None:
    """One sweep ends three sessions of one account and one of another: each account-day is
    read and written once, and counts every one of them."""
    await store.set_limit("acct-1", 5)
    for device in ("a", "b", "c"):
        await store.setup(new(device=device))
        clock.advance(10)
    await store.setup(new("acct-2", "z"))
    today = clock.now // DAY_MS
    clock.advance(200)  # all four lapse
    for account in ("acct-1", "acct-2"):
        while (await store.sweep(store.keys.account(account).shard, 100)).ended:
            pass
    one = (await store.usage("acct-1"))[today]
    assert (one.started, one.ended[1], one.peak_active) == (3, 3, 3)
    assert one.watched_ms == 120_000 * 3  # each ended at its own deadline
    two = (await store.usage("acct-2"))[today]
    assert (two.started, two.ended[1], two.watched_ms) == (1, 1, 120_000)


# -- the consumer group ----------------------------------------------------------------------


async def make_changes(
    store: SessionStore, accounts: int, per_account: int = 2, tag: str = "acct"
) -> int:
    """Setups and teardowns over many accounts (so over every shard); the number of events."""
    for i in range(accounts):
        sessions = [new(f"{tag}-{i}", f"d{j}") for j in range(per_account)]
        for s in sessions:
            await store.setup(s)
        await store.end(f"{tag}-{i}", sessions[0].session_id, EndReason.TEARDOWN)
    return accounts * (per_account + 1)


async def test_two_consumers_of_one_group_share_the_events(store: SessionStore) -> None:
    total = await make_changes(store, 60)
    one, two = Keep(), Keep()
    small = events_settings(batch_size=2, metrics_port=0)
    first = consumer(store, one, name="one", settings=small)
    second = consumer(store, two, name="two", settings=small)
    await first.step()  # creates the groups
    total += await make_changes(store, 30, tag="more")
    while await first.step() + await second.step():
        pass
    assert one.events and two.events
    ids = [e["id"] for e in one.events + two.events]
    assert len(ids) == total == len(set(ids))  # each delivered once when nothing fails
    assert first.metrics.delivered._value.get() + second.metrics.delivered._value.get() == total


async def test_a_dead_consumers_events_go_to_another_after_claim_idle(store: SessionStore) -> None:
    total = await make_changes(store, 40)
    dying = Keep()
    dying.failing = True
    dead = consumer(store, dying, name="dead")
    with pytest.raises(ConnectionError):
        await dead.step()  # read, never acknowledged
    patient = events_settings(claim_idle=60, batch_size=50, poll_interval=0.01, metrics_port=0)
    waiting = consumer(store, Keep(), name="waiting", settings=patient)
    assert await waiting.step() == 0  # the dead one's events are not idle long enough yet
    alive_sink = Keep()
    alive = consumer(store, alive_sink, name="alive")
    await asyncio.sleep(FAST.claim_idle * 1.5)  # at least claim_idle: idle enough now
    await drain(alive)
    assert len({e["id"] for e in alive_sink.events}) == total
    assert alive.metrics.claimed._value.get() == total
    await alive.update_gauges()
    assert alive.metrics.pending._value.get() == 0
    assert alive.metrics.lag._value.get() == 0


async def test_a_slow_pass_never_claims_back_what_it_read(store: SessionStore) -> None:
    """A pass that stalls for longer than claim_idle between its read and its claim finds its
    own fresh reads idle enough to claim: it must not deliver them a second time."""
    total = await make_changes(store, 40)
    read_events = store.read_events

    async def stalled_read(*args: Any) -> Any:
        got = await read_events(*args)
        await asyncio.sleep(FAST.claim_idle * 1.5)  # at least claim_idle
        return got

    store.read_events = stalled_read  # type: ignore[method-assign]
    sink = Keep()
    slow = consumer(store, sink, name="slow")
    assert await slow.step() == total
    assert sorted(e["id"] for e in sink.events) == sorted({e["id"] for e in sink.events})
    assert slow.metrics.claimed._value.get() == 0
    assert slow.metrics.delivered._value.get() == total
    store.read_events = read_events  # type: ignore[method-assign]
    assert await slow.step() == 0  # and nothing of it is left pending to come back later
    await slow.update_gauges()
    assert slow.metrics.pending._value.get() == 0


async def test_a_long_pending_list_of_live_consumers_hides_no_dead_ones_events(
    store: SessionStore,
) -> None:
    """XAUTOCLAIM looks at no more than 10 x COUNT pending entries a call (Redis 7): when live
    consumers hold more than that ahead of a dead consumer's events, claiming from 0-0 every
    time never reaches them. The claim goes on where its last call stopped."""
    ends = 90  # one account, so one shard: 180 events
    for _ in range(ends):
        s = new("one-account")
        await store.setup(s)
        await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    shard = store.keys.account("one-account").shard
    stream = store.keys.events(shard)
    batch = 10  # the claim looks at 100 pending entries a call
    lost, live = await store.read_events(shard, "g", "live", 150)
    assert (lost, len(live)) == (0, 150)
    _lost, held = await store.read_events(shard, "g", "dead", 30)
    held_ids = [entry_id for entry_id, _f in held]
    assert len(held_ids) == 30
    # the live consumer's 150 are fresh; the dead one's have been idle for an hour
    await store.redis.xclaim(stream, "g", "dead", 0, held_ids, idle=3_600_000)
    settings = events_settings(claim_idle=60, batch_size=batch, poll_interval=0.01, metrics_port=0)
    sink = Keep()
    rescuer = consumer(store, sink, name="rescuer", settings=settings)
    for _ in range(8):  # a few passes, the first of which claims nothing
        await rescuer.step()
    assert sorted(e["id"] for e in sink.events) == [f"s{shard}-{i}" for i in sorted(held_ids)]
    assert rescuer.metrics.claimed._value.get() == 30
    pending = await store.redis.xpending(stream, "g")
    assert {c["name"]: int(c["pending"]) for c in pending["consumers"]} == {"live": 150}


async def test_events_trimmed_before_the_group_read_them_are_counted_lost(
    redis_client: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    tight = EventPolicy(maxlen=10, max_age_ms=0)  # trims whole stream nodes of 100 entries
    # a generous deadline: a loaded machine once kept a Cluster connection from opening for
    # the default 2 s (the test counts lost events; deadlines are tested elsewhere)
    store = SessionStore(
        redis_client, keyspace, policy, clock=clock, events=tight, deadline=30, max_in_flight=64
    )
    group = consumer(store, Keep())
    await group.step()  # the group exists before the events are written
    total = await make_changes(store, 1200, per_account=1)  # ~150 per shard
    sink = Keep()
    reader = consumer(store, sink)
    await drain(reader)
    lost = reader.metrics.lost._value.get()
    assert lost > 0
    assert lost + len(sink.events) == total  # every event is delivered or counted lost
    await drain(reader)
    assert reader.metrics.lost._value.get() == lost  # counted once
    await reader.update_gauges()
    assert reader.metrics.lag._value.get() == 0


async def test_a_new_group_starts_at_the_oldest_event_kept_and_loses_nothing(
    store: SessionStore,
) -> None:
    total = await make_changes(store, 20)
    sink = Keep()
    late = consumer(store, sink, group="late")
    await drain(late)
    assert len(sink.events) == total
    assert late.metrics.lost._value.get() == 0


# -- webhook ---------------------------------------------------------------------------------


async def test_a_webhook_that_fails_then_recovers_gets_every_event(store: SessionStore) -> None:
    received: list[dict[str, Any]] = []
    answers = iter([500, 503])

    async def hook(request: web.Request) -> web.Response:
        status = next(answers, 200)
        if status == 200:
            received.extend(await request.json())
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    total = await make_changes(store, 30)
    async with TestServer(app) as server:
        metrics = EventsMetrics(CollectorRegistry())
        stop = asyncio.Event()
        sink = WebhookSink(
            webhook_url(str(server.make_url("/hook"))),
            chunk=25,
            timeout=5,
            retry_cap=0.05,
            stop=stop,
            on_retry=metrics.retried.inc,
        )
        try:
            c = Consumer(store, FAST, sink, metrics, group="hook", stop=stop)
            await drain(c)
        finally:
            await sink.close()
    assert len(received) == total == len({e["id"] for e in received})
    assert metrics.retried._value.get() == 2 * 25  # the first chunk, twice
    assert metrics.delivered._value.get() == total


@pytest.mark.parametrize(
    "url", ["", "ftp://host/x", "http://", "not a url", "localhost:8080/hook", "//host/x"]
)
def test_invalid_webhook_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        webhook_url(url)


@pytest.mark.parametrize(
    ("x", "flagged"), [("", []), ("uhd", ["uhd"]), ("uhd,mobile", ["uhd", "mobile"])]
)
def test_a_started_event_names_the_monitor_rules_that_flagged_it(
    x: str, flagged: list[str]
) -> None:
    from srm.events.schema import event

    e = event(0, "1-0", {"t": "S", "at": "1800000000000", "a": "acct-1", "s": "sid", "x": x})
    assert e["flagged"] == flagged
    denied = event(0, "1-1", {"t": "D", "at": "1800000000000", "a": "acct-1", "x": "uhd"})
    assert "flagged" not in denied and denied["rule"] == "uhd"


def test_event_ids_name_the_shard_and_the_entry() -> None:
    from srm.events.schema import event

    e = event(7, "1800000000000-3", {"t": "S", "at": "1800000000000", "a": "x", "s": "y"})
    assert e["id"] == "s7-1800000000000-3"
    assert e["at"] == "2027-01-15T08:00:00.000Z"
    assert e["deviceType"] == "unknown"  # the default, for a token without one
    # deviceId, contentID, contentType, quality; network and location (no w: not known)
    assert sum(v is None for v in e.values()) == 6


async def test_an_eviction_is_the_evicted_sessions_end_then_the_new_start(
    redis_client: Any, keyspace: k.Keys, clock: Clock
) -> None:
    evicting = Policy(timeout_ms=120_000, max_sessions=2, retention_ms=60_000, evict=True)
    store = SessionStore(redis_client, keyspace, evicting, clock=clock)
    first, second, third = new(device="a"), new(device="b"), new(device="c")
    await store.setup(first)
    clock.advance(1)
    await store.setup(second)
    clock.advance(1)
    await store.setup(third)  # the oldest keep-alive (first) makes room
    events = await events_of(store)
    assert types(events) == ["session.started"] * 2 + ["session.ended", "session.started"]
    assert ended(events) == [(first.session_id, "EVICTED")]
    assert events[-1]["sessionId"] == third.session_id
    (day,) = (await store.usage("acct-1")).values()
    assert day.ended[3] == 1 and day.peak_active == 2
    await invariants.check(redis_client, keyspace)


async def consumer_names(store: SessionStore, group: str) -> set[str]:
    names = set()
    for shard in range(store.keys.shards):
        for c in await store.redis.xinfo_consumers(store.keys.events(shard), group):
            names.add(c["name"])
    return names


async def test_consumers_that_hold_nothing_leave_the_group(store: SessionStore) -> None:
    await make_changes(store, 30)
    holding = Keep()
    holding.failing = True
    with pytest.raises(ConnectionError):
        await consumer(store, holding, name="holding").step()
    patient = events_settings(claim_idle=60, poll_interval=0.01, metrics_port=0)  # claims nothing
    await make_changes(store, 5, tag="more")
    idle = consumer(store, Keep(), name="idle", settings=patient)
    assert await idle.step() == 15  # delivered and acknowledged
    stop = asyncio.Event()
    leaving = Consumer(
        store,
        patient,
        Keep(),
        EventsMetrics(CollectorRegistry()),
        group="g",
        name="leaving",
        stop=stop,
    )
    task = asyncio.create_task(leaving.run())
    await make_changes(store, 5, tag="late")

    async def joined() -> bool:
        return "leaving" in await consumer_names(store, "g")

    await until(joined, what="the consumer to read")
    stop.set()
    await task  # a clean stop: it leaves the group
    assert await consumer_names(store, "g") == {"holding", "idle"}
    removed = sum([await store.prune_consumers(s, "g", 0) for s in range(store.keys.shards)])
    assert removed > 0
    # the one holding events stays, so that another consumer can claim them
    assert await consumer_names(store, "g") == {"holding"}


async def test_the_webhook_log_shows_no_credentials() -> None:
    url = webhook_url("https://user:secret@hooks.example.com/srm?token=abc#x")
    sink = WebhookSink(url, chunk=1, timeout=1, retry_cap=1, stop=asyncio.Event())
    try:
        assert sink.shown == "https://hooks.example.com/srm"
    finally:
        await sink.close()


def test_the_events_variables_of_the_contract() -> None:
    from srm.config import load
    from srm.process import event_policy

    s = load(env={"SRM_EVENTS_ENABLED": "false", "SRM_EVENTS_CLAIM_IDLE": "5"})
    assert (s.events.enabled, s.events.claim_idle) == (False, 5.0)
    assert event_policy(s).argument == ""  # the scripts write no event
    default = load(env={})
    assert event_policy(default).argument == "1000,86400000"
    assert default.events.claim_idle == 30.0


@pytest.mark.parametrize(
    "env",
    [
        {"SRM_EVENTS_CLAIM_IDLE": "0"},
        {"SRM_EVENTS_CLAIM_IDLE": "soon"},
        {"SRM_EVENTS_ENABLED": "maybe"},
        {"SRM_EVENTS_MAXLEN": "-1"},
        {"SRM_EVENTS_MAXLEN": "0", "SRM_EVENTS_MAX_AGE": "0"},
        {"SRM_EVENTS_BATCH_SIZE": "0"},
    ],
)
def test_bad_events_settings_are_refused(env: dict[str, str]) -> None:
    from srm.config import ConfigError, load

    with pytest.raises(ConfigError, match="events"):
        load(env=env)


# -- households ---------------------------------------------------------------------------------


def placed(
    device: str, address: str, account: str = "house", device_type: str = "tv"
) -> NewSession:
    """A setup of *device* from the client address *address*."""
    return NewSession(
        str(uuid.uuid4()),
        account,
        device,
        "100001V3D",
        "COD",
        device_type=device_type,
        address=network.pack_address(network.parse_address(address)),
    )


HOUSEHOLDS = Households(
    networks=Networks(ipv4_prefix=16, ipv6_prefix=48),  # not the defaults: the events use these
    learn_home=("stb",),
    devices_max=2,
    forget_after_ms=DAY_MS,
    swap_cooldown_ms=DAY_MS,
)


async def test_household_events_say_where_and_which_device(
    redis_client: Any, keyspace: k.Keys, clock: Clock
) -> None:
    """Session events carry network and location; the registry's and the home's changes are
    device.registered, device.removed (CLIENT, OPERATOR) and home.changed (OPERATOR)."""
    policy = Policy(120_000, 5, 60_000, evict=False, households=HOUSEHOLDS)
    store = SessionStore(redis_client, keyspace, policy, clock=clock)
    home = network.parse_home(["203.0.113.0/24", "2001:db8::/40"])
    await store.set_home("house", home)
    await store.set_home("house", home)  # no change, no event
    tv = placed("tv", "203.0.113.7")
    await store.setup(tv)
    tv6 = placed("tv", "2001:db8:5:7::1")
    await store.setup(tv6)
    phone = placed("phone", "198.51.100.9", device_type="")
    await store.setup(phone)
    with pytest.raises(LimitReached):
        await store.setup(placed("laptop", "198.51.100.10", device_type="web"))
    assert await store.remove_device("house", "phone", by_operator=False) == 1
    assert await store.remove_device("house", "tv", by_operator=True, force=True) == 2
    await store.set_home("house", [])

    events = await events_of(store)
    assert types(events) == [
        "home.changed",
        "device.registered",
        "session.started",
        "session.started",
        "device.registered",
        "session.started",
        "session.denied",
        "device.removed",
        "session.ended",
        "device.removed",
        "session.ended",
        "session.ended",
        "home.changed",
    ]
    set_home, cleared = events[0], events[-1]
    assert (set_home["networks"], set_home["reason"]) == (
        ["203.0.113.0/24", "2001:db8::/40"],
        "OPERATOR",
    )
    assert (cleared["networks"], cleared["reason"]) == ([], "OPERATOR")
    assert set_home["deviceId"] is set_home["deviceType"] is set_home["sessionId"] is None
    registered = [e for e in events if e["type"] == "device.registered"]
    assert [(e["deviceId"], e["deviceType"]) for e in registered] == [
        ("tv", "tv"),
        ("phone", "unknown"),
    ]
    assert registered[0]["sessionId"] is None and "network" not in registered[0]
    where = {
        (e["type"], e["sessionId"] or e["deviceId"]): (e["network"], e["location"])
        for e in events
        if e["type"].startswith("session.")
    }
    assert where == {
        ("session.started", tv.session_id): ("203.0.0.0/16", "home"),
        ("session.started", tv6.session_id): ("2001:db8:5::/48", "home"),
        ("session.started", phone.session_id): ("198.51.0.0/16", "away"),
        ("session.denied", "laptop"): ("198.51.0.0/16", "away"),
        ("session.ended", phone.session_id): ("198.51.0.0/16", "away"),
        ("session.ended", tv.session_id): ("203.0.0.0/16", "home"),
        ("session.ended", tv6.session_id): ("2001:db8:5::/48", "home"),
    }
    removed = [e for e in events if e["type"] == "device.removed"]
    assert [(e["deviceId"], e["deviceType"], e["reason"]) for e in removed] == [
        ("phone", "unknown", "CLIENT"),
        ("tv", "tv", "OPERATOR"),
    ]
    assert {e["endReason"] for e in events if e["type"] == "session.ended"} == {"OPERATOR"}
    (day,) = (await store.usage("house")).values()
    assert day.registered == 2
    await invariants.check(redis_client, keyspace)


async def test_a_learned_home_and_forgotten_devices_are_events_too(
    redis_client: Any, keyspace: k.Keys, clock: Clock
) -> None:
    policy = Policy(120_000, 5, 60_000, evict=False, households=HOUSEHOLDS)
    store = SessionStore(redis_client, keyspace, policy, clock=clock)
    await store.setup(placed("phone", "198.51.100.9", device_type="phone"))  # learns nothing
    box = placed("box", "203.0.113.7", device_type="stb")
    await store.setup(box)
    clock.advance(86_401)  # both lapsed, and idle past forget_after
    newcomer = placed("newcomer", "", device_type="web")  # no client address
    await store.setup(newcomer)
    events = await events_of(store)
    assert types(events) == [
        "device.registered",
        "session.started",
        "home.changed",
        "device.registered",
        "session.started",
        "session.ended",
        "session.ended",
        "device.removed",
        "device.removed",
        "device.registered",
        "session.started",
    ]
    learned = events[2]
    assert (learned["networks"], learned["reason"]) == (["203.0.0.0/16"], "LEARNED")
    assert (events[4]["network"], events[4]["location"]) == ("203.0.0.0/16", "home")
    assert (events[1]["network"], events[1]["location"]) == ("198.51.0.0/16", None)
    forgotten = sorted((e["deviceId"], e["reason"]) for e in events[7:9])
    assert forgotten == [("box", "FORGOTTEN"), ("phone", "FORGOTTEN")]
    # an address that is not known lies in no home network: away, on no network
    assert (events[-1]["network"], events[-1]["location"]) == (None, "away")
    await invariants.check(redis_client, keyspace)


@pytest.mark.parametrize(
    ("w", "network_text", "location"),
    [
        ("", None, None),
        (
            "h" + bytes([203, 0, 113, 0]).decode("utf-8", "surrogateescape"),
            "203.0.113.0/24",
            "home",
        ),
        ("a" + bytes(8).decode("utf-8", "surrogateescape"), "::/56", "away"),
        ("-" + bytes([10, 1, 2, 0]).decode("utf-8", "surrogateescape"), "10.1.2.0/24", None),
        ("h", None, "home"),
        ("?" + "abc", None, None),  # damaged: never an error
    ],
)
def test_an_events_where_field_reads_as_network_and_location(
    w: str, network_text: str | None, location: str | None
) -> None:
    from srm.events.schema import event

    e = event(0, "1-0", {"t": "S", "at": "1800000000000", "w": w})
    assert (e["network"], e["location"]) == (network_text, location)


def test_a_damaged_home_change_reads_as_the_networks_before_the_damage() -> None:
    from srm.events.schema import event

    packed = network.pack_home(network.parse_home(["203.0.113.0/24"]))
    raw = (packed + b"\x10\x40\x20").decode("utf-8", "surrogateescape")
    e = event(0, "1-0", {"t": "H", "at": "1800000000000", "x": "OPERATOR", "w": raw})
    assert (e["type"], e["networks"], e["reason"]) == (
        "home.changed",
        ["203.0.113.0/24"],
        "OPERATOR",
    )
