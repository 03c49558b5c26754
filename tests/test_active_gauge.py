"""The shard counts of ACTIVE sessions (srm:{sK}:active) and the reaper's srm_active_sessions
gauge: every way a session starts or ends keeps the count exact, and the gauge shows it.

tests/invariants.py checks the counts after every store test; here each change is checked as
it happens, on the standalone server and fakeredis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from srm import keys as k
from srm.model import EndReason, Policy
from srm.store import SessionStore
from tests import invariants
from tests.helpers import Clock, drift_counter, new, open_backend, reaper_for, sample


@pytest.fixture(params=["standalone", "fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with open_backend(request, request.param) as client:
        yield client


@pytest.fixture
def policy() -> Policy:  # evicts the oldest session of an account past 3
    return Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=True)


async def counts(store: SessionStore) -> list[int]:
    keys = store.keys
    return [
        int(await store.redis.hget(keys.active(shard), "n") or 0) for shard in range(keys.shards)
    ]


async def total(store: SessionStore) -> int:
    await invariants.check(store.redis, store.keys)  # each count is its shard's sum
    return sum(await counts(store))


async def test_every_start_and_end_moves_the_count(store: SessionStore, clock: Clock) -> None:
    a = [new("acct-a", f"dev-{i}") for i in range(3)]
    for s in a:
        await store.setup(s)
        clock.advance(1)  # a[0] is the oldest
    await store.setup(a[0])  # a retry creates nothing
    assert await total(store) == 3
    await store.setup(new("acct-a", "dev-9"))  # evicts the oldest: still 3
    assert await total(store) == 3
    await store.end("acct-a", a[1].session_id, EndReason.TEARDOWN)
    await store.end("acct-a", a[1].session_id, EndReason.TEARDOWN)  # retried: once
    assert await total(store) == 2
    b = [new("acct-b", f"dev-{i}") for i in range(3)]
    for s in b:
        await store.setup(s)
    assert await total(store) == 5
    assert await store.end_all("acct-b", EndReason.OPERATOR) == 3
    assert await total(store) == 2
    for s in b:
        await store.setup(new("acct-b", s.device_id))
    c = new("acct-c")
    await store.setup(c)
    clock.advance(57)
    await store.keep_alive("acct-c", c.session_id)  # c is kept, the rest lapse
    assert await total(store) == 6
    clock.advance(65)  # past the deadlines of a and b, not c's
    reaper = reaper_for(store)
    await reaper.reap_pass()  # every lapsed session of a and b at once, by the sweep
    assert await total(store) == 1
    clock.advance(300)
    await store.setup(new("acct-c", "dev-2"))  # a setup ends the lapsed one first
    assert await total(store) == 1


async def test_the_audit_repair_moves_the_count_with_the_counter(store: SessionStore) -> None:
    for i in range(2):
        await store.setup(new("acct-a", f"dev-{i}"))
    await store.setup(new("acct-b"))
    await drift_counter(store, "acct-a", 7)  # a counter that drifted, and the count with it
    await drift_counter(store, "acct-b", None)
    ak, bk = store.keys.account("acct-a"), store.keys.account("acct-b")
    assert (await store.audit(ak.shard, ["acct-a"]))[0].truth == 2
    assert (await store.audit(bk.shard, ["acct-b"]))[0].truth == 1
    assert await total(store) == 3


async def test_the_reaper_recounts_a_shard_once_and_exports_the_total(
    store: SessionStore, keyspace: k.Keys
) -> None:
    accounts = [f"acct-{i}" for i in range(40)]
    for account in accounts:
        await store.setup(new(account))
        await store.setup(new(account, "dev-2"))
    assert await total(store) == 80
    # as a version before the count left it: no count at all
    for shard in range(keyspace.shards):
        await store.redis.delete(keyspace.active(shard))
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry)
    await store.setup(new("acct-0", "dev-3"))  # a count moved before the recount: replaced
    assert sample(registry, "srm_active_sessions") == 0  # no pass yet
    await reaper.reap_pass()
    assert sample(registry, "srm_active_sessions") == 81
    assert sample(registry, "srm_reaper_batches_total", op="recount") > 0
    recounts = sample(registry, "srm_reaper_batches_total", op="recount")
    assert await total(store) == 81
    await store.end_all("acct-1", EndReason.OPERATOR)
    await reaper.reap_pass()  # counted once: the next passes read the count
    assert sample(registry, "srm_reaper_batches_total", op="recount") == recounts
    assert sample(registry, "srm_active_sessions") == 79
    # drift no script made (an evicted account hash) stays until a forced recount
    await store.redis.delete(store.keys.account("acct-2").state)
    shard = store.keys.shard_of("acct-2")
    assert await store.recount_active(shard) == (await counts(store))[shard]  # counted: kept
    before = (await counts(store))[shard]
    assert await store.recount_active(shard, force=True) == before - 2
    await reaper.reap_pass()
    assert sample(registry, "srm_active_sessions") == 77
    # the sessions of acct-2 lapse into a due entry with no account (test_eviction)
    await store.redis.zrem(store.keys.due(shard), "acct-2")


async def test_a_repair_of_an_account_the_recount_could_not_see_keeps_the_count(
    store: SessionStore, keyspace: k.Keys
) -> None:
    """A drifted counter on an account with no ACTIVE session (so not in the due index, which
    recount.lua counts from): the audit's repair must not take its error off a count that
    never held it."""
    await store.setup(new("acct-live"))
    ghost = "acct-ghost"
    shard = keyspace.shard_of(ghost)
    await store.redis.hset(keyspace.account(ghost).state, "n", 2)  # drift no script made
    await store.recount_active(shard, force=True)  # sums the due index: the ghost is not in it
    reaper = reaper_for(store)
    assert await reaper.audit() >= 1  # the walk finds the ghost and repairs its counter
    assert await total(store) == 1  # invariants: every count is its shard's sum
