"""CDN tokens and the revocation feed (API.md, "Enforcement beyond the player").

A token must be the very string the reference implementation (the ``akamai-edgeauth``
package) makes from the same fields; a revocation is written by the script that ends the
session, once, and only when someone else than its player ended it."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import uuid
from typing import Any

import pytest
from akamai.edgeauth import EdgeAuth
from prometheus_client import CollectorRegistry

from srm import process
from srm.cdn import CdnTokens, encode, expiry
from srm.config import Settings, load
from srm.model import EndReason, EventPolicy, NewSession, Policy, RevocationFeed
from srm.store import SessionStore
from tests.helpers import (
    OPERATOR,
    OPERATOR_KEY,
    SECRET,
    SETUP,
    Clock,
    api,
    expect_error,
    reaper_for,
    sample,
    token,
)

KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
OLD_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SLACK = 30


def cdn_settings(**env: str) -> Settings:
    return load(
        env={
            "SRM_AUTH_SECRET": SECRET,
            "SRM_OPERATOR_KEYS": OPERATOR_KEY,
            "SRM_REDIS_SHARDS": "16",
            "SRM_CDN_KEY": KEY,
            "SRM_CDN_ACL": "/vod/{contentID}/*",
            **env,
        }
    )


def fields(cdn_token: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in cdn_token.split("~"))


def reference(key: str, algorithm: str, st: int, exp: int, acl: str, session_id: str) -> str:
    """The token the reference implementation makes of these fields."""
    maker = EdgeAuth(
        key=key, algorithm=algorithm, start_time=st, end_time=exp, session_id=session_id
    )
    return str(maker.generate_acl_token(acl))


# -- the token --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
@pytest.mark.parametrize(
    "content", ["100001V3D", "a/b c", "~tilde!bang*star", "?x#y%2F", "é€😀", "x" * 256]
)
def test_a_token_is_the_reference_implementations_string(algorithm: str, content: str) -> None:
    settings = cdn_settings(SRM_CDN_ALGORITHM=algorithm).cdn
    tokens = CdnTokens(settings)
    sid = str(uuid.uuid4())
    at, deadline = 1_780_000_000_123, 1_780_000_120_123
    made = tokens.token(sid, content, at, deadline)
    acl = f"/vod/{encode(content)}/*"
    assert made == reference(KEY, algorithm, at // 1000, 1_780_000_121 + SLACK, acl, sid)
    got = fields(made)
    assert list(got) == ["st", "exp", "acl", "id", "hmac"]
    assert (got["id"], got["exp"], got["acl"]) == (sid, str(expiry(deadline, SLACK)), acl)
    # the value filled in is RFC 3986 percent-encoded, the token's delimiters included
    assert all(c not in got["acl"][5:-2] for c in "~!*/?#") and "%" not in got["acl"][:5]


def test_the_acl_fills_in_both_fields_encoded() -> None:
    tokens = CdnTokens(cdn_settings(SRM_CDN_ACL="/s/{sessionId}/c/{contentID}/*").cdn)
    assert tokens.acl("6f1c", "a b~c") == "/s/6f1c/c/a%20b%7Ec/*"
    assert tokens.names_content and not CdnTokens(cdn_settings(SRM_CDN_ACL="/*").cdn).names_content


def test_expiry_rounds_the_deadline_up_to_a_second() -> None:
    assert expiry(1_000, 30) == 31 and expiry(1_001, 30) == 32 and expiry(999, 0) == 1


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return cdn_settings()


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return process.policy(settings)


def headers(account: str = "acct-1", device: str = "dev-1") -> dict[str, str]:
    return {"Client-Token": token(account, device)}


async def start(client: Any, account: str = "acct-1", device: str = "dev-1", **body: Any) -> Any:
    resp = await client.post(
        "/srm/sessions", json={**SETUP, **body}, headers=headers(account, device)
    )
    assert resp.status == 200, await resp.text()
    return (await resp.json())["successResponse"]


async def test_setup_and_keep_alive_answer_a_token_of_the_session(
    settings: Settings, store: SessionStore, clock: Clock
) -> None:
    async with api(settings, store) as client:
        started = await start(client)
        sid = started["sessionId"]
        first = fields(started["cdnToken"])
        timeout_ms = settings.sessions.timeout * 1000
        assert first["id"] == sid and first["acl"] == "/vod/100001V3D/*"
        assert int(first["st"]) == clock.now // 1000
        assert int(first["exp"]) == expiry(clock.now + timeout_ms, SLACK)
        assert started["cdnToken"] == reference(
            KEY, "sha256", int(first["st"]), int(first["exp"]), first["acl"], sid
        )
        clock.advance(50)
        resp = await client.put(f"/srm/sessions/{sid}", headers=headers())
        assert resp.status == 200 and resp.content_type == "application/json"
        kept = fields((await resp.json())["cdnToken"])
        assert int(kept["exp"]) == expiry(clock.now + timeout_ms, SLACK) > int(first["exp"])
        assert (kept["id"], kept["acl"]) == (sid, first["acl"])
        # an ended session gets no token: the keep-alive answers SRM-0004
        await client.delete(f"/srm/sessions/{sid}", headers=headers())
        resp = await client.put(f"/srm/sessions/{sid}", headers=headers())
        await expect_error(resp, 404, "SRM-0004")


async def test_a_joined_setup_gets_the_token_of_the_session_it_joined(
    settings: Settings, store: SessionStore
) -> None:
    async with api(settings, store) as client:
        first = await start(client, playbackId="pb-1")
        other = {"contentID": "other-content", "contentType": "COD"}
        joined = await start(client, playbackId="pb-1", content=other)
        assert joined["sessionId"] == first["sessionId"]
        assert fields(joined["cdnToken"])["acl"] == "/vod/100001V3D/*"


async def test_without_cdn_a_keep_alive_answers_an_empty_body_and_there_is_no_feed(
    store: SessionStore,
) -> None:
    plain = load(
        env={"SRM_AUTH_SECRET": SECRET, "SRM_OPERATOR_KEYS": OPERATOR_KEY, "SRM_REDIS_SHARDS": "16"}
    )
    async with api(plain, store) as client:
        started = await start(client)
        assert "cdnToken" not in started
        resp = await client.put(f"/srm/sessions/{started['sessionId']}", headers=headers())
        assert resp.status == 200 and await resp.read() == b""
        for prefix in ("/srm", "/srm/v1"):
            resp = await client.get(f"{prefix}/revocations", headers=OPERATOR)
            assert resp.status == 404


# -- the revocation feed over HTTP --------------------------------------------------------------


async def feed(client: Any, cursor: str | None = None) -> dict[str, Any]:
    params = {} if cursor is None else {"cursor": cursor}
    resp = await client.get("/srm/v1/revocations", params=params, headers=OPERATOR)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


def revoked_ids(body: dict[str, Any]) -> list[str]:
    return [r["sessionId"] for r in body["revoked"]]


async def test_ends_by_others_are_revoked_until_the_token_expires_and_a_players_own_are_not(
    settings: Settings, store: SessionStore, clock: Clock
) -> None:
    async with api(settings, store) as client:
        own = (await start(client))["sessionId"]
        by_operator = await start(client, device="dev-2")
        await client.delete(f"/srm/sessions/{own}", headers=headers())  # TEARDOWN: its own
        resp = await client.delete(
            f"/srm/v1/accounts/acct-1/sessions/{by_operator['sessionId']}", headers=OPERATOR
        )
        assert resp.status == 200
        body = await feed(client)
        (entry,) = body["revoked"]
        assert entry["sessionId"] == by_operator["sessionId"]
        assert entry["endReason"] == "OPERATOR" and entry["endedAt"].startswith("20")
        # until is the exp of the last token issued to it
        assert entry["until"] == int(fields(by_operator["cdnToken"])["exp"])
        # a lapsed session (TIMEOUT) is no revocation; an expired revocation is listed no more
        lapsing = (await start(client, device="dev-3"))["sessionId"]
        clock.advance(settings.sessions.timeout + 1)
        await store.sweep(store.keys.shard_of("acct-1"), 100)
        assert lapsing not in revoked_ids(await feed(client))
        clock.advance(SLACK)
        assert revoked_ids(await feed(client)) == []


async def test_the_cursor_gives_what_came_since_and_a_forged_one_is_refused(
    settings: Settings, store: SessionStore
) -> None:
    async with api(settings, store) as client:
        first = (await start(client, account="acct-a"))["sessionId"]
        await client.delete(f"/srm/v1/accounts/acct-a/sessions/{first}", headers=OPERATOR)
        body = await feed(client)
        assert revoked_ids(body) == [first]
        second = (await start(client, account="acct-b"))["sessionId"]
        await client.delete(f"/srm/v1/accounts/acct-b/sessions/{second}", headers=OPERATOR)
        later = await feed(client, body["next"])
        assert second in revoked_ids(later)  # (the first may come again: the poll's overlap)
        position, _, tag = body["next"].rpartition(".")
        for forged in ("a::", "0", "123.abc", f"{int(position) - 1}.{tag}", body["next"] + "x"):
            resp = await client.get(
                "/srm/v1/revocations", params={"cursor": forged}, headers=OPERATOR
            )
            await expect_error(resp, 400, "SRM-0002")
        resp = await client.get("/srm/v1/revocations", headers=headers())
        assert resp.status in (401, 403)


async def test_an_eviction_a_replacement_and_a_device_removal_are_revoked(
    store: SessionStore,
) -> None:
    settings = cdn_settings(SRM_MAX_SESSIONS="1", SRM_SESSIONS_LIMIT_POLICY="evict")
    async with api(settings, store) as client:
        evicted = (await start(client, device="tv-1"))["sessionId"]
        replaced = (await start(client, device="tv-2"))["sessionId"]
        replacing = (await start(client, device="tv-2", replaces=replaced))["sessionId"]
        resp = await client.delete(
            "/srm/v1/accounts/acct-1/devices/tv-2/sessions", headers=OPERATOR
        )
        assert resp.status == 200
        reasons = {r["sessionId"]: r["endReason"] for r in (await feed(client))["revoked"]}
        assert reasons == {evicted: "EVICTED", replaced: "REPLACED", replacing: "OPERATOR"}


# -- the store: one revocation per end, written by the ending script -------------------------


def feed_store(store: SessionStore, maxlen: int = 1000) -> SessionStore:
    return SessionStore(
        store.redis,
        store.keys,
        dataclasses.replace(store.policy, setups_per_minute=0),
        clock=store.clock,
        events=EventPolicy(revocations=RevocationFeed(SLACK, maxlen)),
    )


def new(device: str = "tv-1", account: str = "acct-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, device, "c", "COD")


async def test_thirty_racing_operator_ends_write_one_revocation(store: SessionStore) -> None:
    fed = feed_store(store)
    started = await fed.setup(new())
    ends = [fed.end("acct-1", started.session_id, EndReason.OPERATOR) for _ in range(30)]
    await asyncio.gather(*ends)
    await fed.end("acct-1", started.session_id, EndReason.OPERATOR)  # a retry, later
    polled = await fed.revocations(None, 100)
    assert [r.session_id for r in polled.revoked] == [started.session_id]
    assert polled.revoked[0].until_s == expiry(started.deadline_ms, SLACK)


async def test_no_revocation_without_the_feed_or_for_a_teardown(store: SessionStore) -> None:
    fed = feed_store(store)
    quiet = await store.setup(new(device="a"))  # a store without [cdn] writes no feed
    await store.end("acct-1", quiet.session_id, EndReason.OPERATOR)
    torn = await fed.setup(new(device="b"))
    await fed.end("acct-1", torn.session_id, EndReason.TEARDOWN)
    assert (await fed.revocations(None, 100)).revoked == []


async def test_the_feed_is_bounded_and_pages_per_shard(store: SessionStore) -> None:
    fed = feed_store(store, maxlen=10)
    for _ in range(300):
        s = await fed.setup(new(account="acct-many"))
        await fed.end("acct-many", s.session_id, EndReason.OPERATOR)
    stream = fed.keys.revoked(fed.keys.shard_of("acct-many"))
    # MAXLEN ~ drops whole nodes: at most maxlen plus one node (stream-node-max-entries 100)
    assert 10 <= await store.redis.xlen(stream) <= 110
    page = await fed.revocations(None, 5)
    assert len(page.revoked) == 5
    rest = await fed.revocations(page.next_ms, 1000)
    assert {r.session_id for r in page.revoked} <= {r.session_id for r in rest.revoked} | {
        r.session_id for r in page.revoked
    }
    assert rest.next_ms >= page.next_ms


async def test_the_reaper_trims_what_expired(store: SessionStore) -> None:
    fed = feed_store(store)
    s = await fed.setup(new())
    await fed.end("acct-1", s.session_id, EndReason.OPERATOR)
    shard = fed.keys.shard_of("acct-1")
    lifetime = fed.revocation_lifetime_ms
    assert lifetime == fed.policy.period_ms + (SLACK + 1) * 1000
    assert await fed.trim_revocations(shard, lifetime) == 0  # written just now: kept
    await asyncio.sleep(0.01)
    assert await fed.trim_revocations(shard, 1) == 1  # older than a 1 ms lifetime: gone
    assert await store.redis.xlen(fed.keys.revoked(shard)) == 0
    assert store.revocation_lifetime_ms is None  # no feed without [cdn]


def test_a_token_verifies_with_the_key_the_edge_holds() -> None:
    """What an edge does (deploy/edge/): recompute the hmac over the fields before it."""
    made = CdnTokens(cdn_settings().cdn).token(str(uuid.uuid4()), "c", 1_000, 121_000)
    signed, _, mac = made.rpartition("~hmac=")
    expected = hmac.new(bytes.fromhex(KEY), signed.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)
    wrong = hmac.new(bytes.fromhex(OLD_KEY), signed.encode(), hashlib.sha256).hexdigest()
    assert mac != wrong


async def test_the_reaper_trims_each_shards_feed_as_it_passes(store: SessionStore) -> None:
    """The reaper's pass over a shard trims its feed (every TRIM_EVERY seconds), counted in
    srm_reaper_revocations_trimmed; a reaper without the feed trims nothing."""
    short = dataclasses.replace(store.policy, timeout_ms=1, setups_per_minute=0)
    fed = SessionStore(
        store.redis,
        store.keys,
        short,
        clock=store.clock,
        events=EventPolicy(revocations=RevocationFeed(0, 1000)),
    )
    s = await fed.setup(new())
    await fed.end("acct-1", s.session_id, EndReason.OPERATOR)
    shard = fed.keys.shard_of("acct-1")
    assert await store.redis.xlen(fed.keys.revoked(shard)) == 1
    await asyncio.sleep(1.1)  # past the lifetime: 1 ms of keep-alive, 0 s slack, 1 s margin
    await reaper_for(store).reap_shard(shard)  # no feed: nothing trimmed
    assert await store.redis.xlen(fed.keys.revoked(shard)) == 1
    registry = CollectorRegistry()
    await reaper_for(fed, registry).reap_shard(shard)
    assert await store.redis.xlen(fed.keys.revoked(shard)) == 0
    assert sample(registry, "srm_reaper_revocations_trimmed_total") == 1
