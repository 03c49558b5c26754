"""Data written by SRM 0.x keeps working: each account is moved into its account hash by the
first script that touches it, and by the reaper for the others (tests/data/README.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from srm import keys as k
from srm.errors import LimitReached, SessionNotFound
from srm.model import USAGE_REASONS, EndReason, NewSession, Policy, State
from srm.rules import parse
from srm.store import SessionStore
from tests import invariants
from tests.helpers import Clock, open_backend, reaper_for

DUMP = json.loads((Path(__file__).parent / "data" / "legacy-0.x.json").read_text())
IDS: dict[str, str] = DUMP["ids"]


@pytest.fixture(params=["standalone", "cluster", "fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with open_backend(request, request.param) as client:
        for key, item in DUMP["keys"].items():
            kind, value = item["type"], item["value"]
            if kind == "string":
                await client.set(key, value)
            elif kind == "hash":
                await client.hset(key, mapping=value)
            elif kind == "zset":
                await client.zadd(key, dict(value))
            if item["pttl"] > 0:
                await client.pexpire(key, item["pttl"])
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock(DUMP["now"] + 1000)


@pytest.fixture
def store(redis_client: Any, clock: Clock) -> SessionStore:
    rules = parse(DUMP["rules"], qualities=("SD", "HD", "UHD"), content_types=(), policy="deny")
    policy = Policy(120_000, 3, 60_000, evict=False, rules=rules)
    return SessionStore(redis_client, k.Keys(DUMP["shards"]), policy, clock=clock)


def new(account: str, **kw: Any) -> NewSession:
    return NewSession(str(uuid.uuid4()), account, kw.pop("device", "dev"), "c", "COD", **kw)


async def legacy_keys(redis: Any) -> list[str]:
    return [
        key
        async for key in redis.scan_iter(match="srm:*", count=1000)
        if ":sess:" in key
        or key.endswith(":deadlines")
        or (  # an account's 0.x key (not the shard's count of ACTIVE sessions, srm:{sK}:active)
            ":acct:" in key
            and key.rpartition(":")[2] in ("active", "count", "ended", "rules", "usage")
        )
    ]


async def test_sessions_of_0x_are_listed_as_they_were(store: SessionStore) -> None:
    alpha = await store.account_sessions("alpha")
    assert alpha.active_count == 3
    by_id = {s.session_id: s for s in alpha.sessions}
    tv = by_id[IDS["alpha-tv"]]
    assert (tv.state, tv.device_id, tv.device_type, tv.quality) == (
        State.ACTIVE,
        "tv-1",
        "tv",
        "UHD",
    )
    assert (tv.content_id, tv.content_type) == ("movie-1", "COD")
    assert tv.created_at == tv.last_keep_alive_at and tv.expires_at == tv.created_at + 120_000
    assert by_id[IDS["alpha-phone-1"]].content_type == "LIVE"
    beta = {s.session_id: s for s in (await store.account_sessions("beta")).sessions}
    assert beta[IDS["beta-tv"]].state is State.ACTIVE
    assert beta[IDS["beta-tv"]].last_keep_alive_at == beta[IDS["beta-tv"]].created_at + 5000
    assert beta[IDS["beta-down"]].end_reason is EndReason.TEARDOWN
    assert beta[IDS["beta-old"]].end_reason is EndReason.EVICTED
    with pytest.raises(SessionNotFound) as gone:
        await store.keep_alive("beta", IDS["beta-old"])
    assert gone.value.ended is not None and gone.value.ended.by_device_id == "tv-9"


async def test_counting_goes_on_from_0x_counters(store: SessionStore, clock: Clock) -> None:
    with pytest.raises(LimitReached) as full:
        await store.setup(new("alpha"))
    assert (full.value.rule, full.value.active) == ("account", 3)
    await store.end("alpha", IDS["alpha-phone-1"], EndReason.TEARDOWN)
    with pytest.raises(LimitReached) as uhd:  # the 0.x session still holds the uhd rule
        await store.setup(new("alpha", quality="UHD"))
    assert [s.session_id for s in uhd.value.sessions] == [IDS["alpha-tv"]]
    await store.setup(new("alpha", device="phone-3", device_type="phone", quality="HD"))
    await store.end("alpha", IDS["alpha-tv"], EndReason.TEARDOWN)
    with pytest.raises(LimitReached) as mobile:  # two phones again: the rule counter moved over
        await store.setup(new("alpha", device="phone-4", device_type="phone"))
    assert mobile.value.rule == "mobile"
    await store.keep_alive("beta", IDS["beta-tv"])
    gamma = await store.get_limit("gamma")  # overrides are where they were
    assert gamma.max_sessions == 5 and gamma.rules is not None and gamma.rules["mobile"].max == 3
    clock.advance(121)  # epsilon's session lapses: a setup ends it first
    assert (await store.setup(new("epsilon"))).active == 1
    got = await store.get("epsilon", IDS["epsilon-lapsing"])
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.TIMEOUT)


async def test_usage_of_0x_is_kept(store: SessionStore) -> None:
    key = next(key for key in DUMP["keys"] if key.endswith(":acct:delta:usage"))
    ((day, packed),) = DUMP["keys"][key]["value"].items()
    v = [int(n) for n in packed.split(",")]
    usage = (await store.usage("delta"))[int(day)]
    assert (usage.started, usage.denied, usage.ended) == (v[0], v[1], tuple(v[2:7]))
    assert (usage.watched_ms, usage.peak_active) == (v[7], v[8])
    assert len(USAGE_REASONS) == 5


async def test_the_reaper_moves_every_account_and_leaves_no_0x_key(
    store: SessionStore, clock: Clock
) -> None:
    reaper = reaper_for(store)
    clock.advance(121)  # everything lapses, and every retention passes
    await reaper.reap_pass()
    clock.advance(61)
    await reaper.reap_pass()
    await reaper.audit()  # the walk finds the accounts no index names (delta: usage only)
    # all but the record of a setup denied in 0.x, which expires by itself within a minute
    left = await legacy_keys(store.redis)
    assert left == [f"srm:{{s1}}:sess:{IDS['gamma-denied']}"]
    assert 0 < await store.redis.pttl(left[0]) <= 60_000
    await store.redis.delete(left[0])
    await invariants.check(store.redis, store.keys)
    for account in ("alpha", "beta", "gamma", "epsilon"):
        listing = await store.account_sessions(account)
        assert listing.active_count == 0 and listing.sessions == []
    assert sum(u.ended[1] for u in (await store.usage("alpha")).values()) == 3  # TIMEOUT x3
    assert (await store.usage("delta")) != {}
    ttl = await store.redis.pttl(store.keys.account("delta").state)
    assert 0 < ttl <= 35 * 86_400_000  # usage only: it expires


async def test_a_script_moves_its_account_first_and_only_once(store: SessionStore) -> None:
    await store.keep_alive("alpha", IDS["alpha-tv"])
    ak = store.keys.account("alpha")
    assert not await store.redis.exists(ak.legacy + "active", ak.legacy + "usage")
    assert await store.migrate(["alpha"]) == 0  # nothing left to move
    assert await store.migrate(["delta"]) == 1
    assert await store.migrate(["delta"]) == 0
    state = await store.redis.hgetall(ak.state)
    assert state["n"] == "3" and state["=uhd:"] == "1" and state["=mobile:"] == "2"
    assert state["=one-per-tv:tv-1"] == "1"


async def test_stray_0x_counters_are_removed_by_the_audit(store: SessionStore) -> None:
    ak = store.keys.account("zeta")  # 0.x counters left without any session (drift)
    await store.redis.set(ak.legacy + "count", 2)
    await store.redis.hset(ak.legacy + "rules", "uhd:", 1)
    await reaper_for(store).audit()
    assert not await store.redis.exists(ak.legacy + "count", ak.legacy + "rules")
    assert not await store.redis.exists(ak.state)  # nothing to keep
