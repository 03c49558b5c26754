"""Branches of the Lua scripts that ordinary traffic rarely takes: a denial counting more than
100 sessions, more than 1,000 lapsed sessions in one account, variadic calls split past 1,000
items, a non-numeric counter, a damaged denial marker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from srm.errors import LimitReached
from srm.model import EndReason, NewSession, Policy, State
from srm.rules import Rule
from srm.store import SessionStore
from tests.helpers import Clock, drift_counter, in_batches, open_backend

PER_DEVICE = Rule("per-device", 1, per="device")
MANY = 1_500  # lapsed sessions, and rule counters, past the scripts' 1,000


@pytest.fixture(params=["standalone", "fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with open_backend(request, request.param) as client:
        yield client


@pytest.fixture
def policy() -> Policy:
    return Policy(
        timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False, rules=(PER_DEVICE,)
    )


def new(device: str = "dev-1", account: str = "acct-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, device, "100001V3D", "COD")


async def many(store: SessionStore, count: int, account: str = "acct-1") -> list[NewSession]:
    """*count* ACTIVE sessions of the account, each on a device of its own."""
    await store.set_limit(account, count)
    made = [new(f"dev-{i}", account) for i in range(count)]
    await in_batches(made, store.setup)
    return made


async def test_a_setup_ends_every_lapsed_session_however_many(
    store: SessionStore, clock: Clock
) -> None:
    """More than 1,000 lapsed sessions: a setup ends them all (one of the 500 past 1,000 left
    ACTIVE would count against the limit), and the all-ended path drops 1,500 rule counters
    and queues 1,500 removals in split calls."""
    made = await many(store, MANY)
    clock.advance(600)  # every one lapses; no sweep runs
    await store.set_limit("acct-1", 1)
    assert (await store.setup(new("dev-new"))).active == 1
    listing = await store.account_sessions("acct-1", limit=1)
    assert listing.active_count == 1
    got = await store.get("acct-1", made[-1].session_id)
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.TIMEOUT)


async def test_the_sweep_ends_more_than_1000_lapsed_sessions_of_one_account(
    store: SessionStore, clock: Clock, keyspace: Any
) -> None:
    """The sweep ends at most 1,000 sessions of an account a visit and comes back for the
    rest (the due score stays due)."""
    made = await many(store, MANY)
    clock.advance(600)
    shard = keyspace.shard_of("acct-1")
    first = await store.sweep(shard, 10)
    assert first.ended == 1000
    second = await store.sweep(shard, 10)
    assert second.ended == MANY - 1000
    assert (await store.sweep(shard, 10)).ended == 0
    assert (await store.account_sessions("acct-1", limit=1)).active_count == 0
    assert (await store.get("acct-1", made[0].session_id)).end_reason is EndReason.TIMEOUT


async def test_end_all_past_1000_sessions(store: SessionStore) -> None:
    """end-all in batches of 1,000 whose removals are queued in split ZADDs."""
    await many(store, MANY)
    assert await store.end_all("acct-1", EndReason.OPERATOR, batch=MANY) == MANY
    assert (await store.account_sessions("acct-1", limit=1)).active_count == 0


async def test_a_denial_lists_the_100_oldest_of_more_counted(
    store: SessionStore, clock: Clock
) -> None:
    await store.set_limit("acct-1", 150)
    made = []
    for i in range(150):
        s = new(f"dev-{i}")
        await store.setup(s)
        made.append(s)
        clock.advance(0.001)
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("dev-new"))
    assert (denied.value.rule, denied.value.limit, denied.value.active) == ("account", 150, 150)
    assert [s.session_id for s in denied.value.sessions] == [s.session_id for s in made[:100]]


async def test_the_audit_repairs_a_non_numeric_counter(store: SessionStore, keyspace: Any) -> None:
    for device in ("dev-1", "dev-2"):
        await store.setup(new(device))
    ak = keyspace.account("acct-1")
    await drift_counter(store, "acct-1", "two")
    await store.redis.hset(ak.state, "=per-device:dev-1", "x")
    repairs = await store.audit(ak.shard, ["acct-1"])
    assert [(r.counter, r.truth, r.rules) for r in repairs] == [(-1, 2, 1)]
    assert await store.redis.hget(ak.state, "n") == "2"
    assert await store.redis.hget(ak.state, "=per-device:dev-1") == "1"
    assert (await store.setup(new("dev-3"))).active == 3


async def test_a_damaged_limit_override_leaves_the_default_limit(
    store: SessionStore, keyspace: Any
) -> None:
    """An account limit override that is not a number (damaged) is not a limit: the setup is
    held to the default (3), not failed."""
    await many(store, 3)  # (an override of 3)
    await store.redis.set(keyspace.account("acct-1").limit, "lots")
    with pytest.raises(LimitReached) as refused:
        await store.setup(new("dev-4"))
    assert (refused.value.rule, refused.value.limit) == ("account", 3)


async def test_a_damaged_denial_marker_is_checked_again(store: SessionStore, keyspace: Any) -> None:
    s = new()
    await store.redis.set(keyspace.denied("acct-1", s.session_id), "not a marker", px=10_000)
    assert (await store.setup(s)).active == 1
    assert (await store.get("acct-1", s.session_id)).state is State.ACTIVE
