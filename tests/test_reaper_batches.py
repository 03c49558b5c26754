"""The reaper's batches: an account's sessions ended together, a retention of 0 that removes
them at once, batches repeated (a reaper killed after its script ran) or raced (two reapers),
and on a Redis Cluster the shards of every master reaped at once. On every store backend
(conftest.redis_client) unless a test names one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from srm import keys as k
from srm.errors import SessionNotFound
from srm.model import EndReason, Policy, State
from srm.records import COUNT_FIELD
from srm.rules import Rule
from srm.store import SessionStore
from srm.store.reaper import SweepResult
from tests import invariants
from tests.helpers import Clock, new, open_backend, reaper_for, sample

TIMEOUT = 1  # the index of TIMEOUT in DayUsage.ended (model.USAGE_REASONS)


@pytest.fixture
def policy() -> Policy:
    """Rules that every session counts in, so that ending one moves several counters."""
    rules = (
        Rule("all", 10),
        Rule("per-device", 2, per="device"),
        Rule("devices", 5, count="devices"),
    )
    return Policy(timeout_ms=120_000, max_sessions=5, retention_ms=60_000, evict=False, rules=rules)


async def ended_events(store: SessionStore) -> Counter[str]:
    """sessionId -> session.ended events in every shard's stream."""
    out: Counter[str] = Counter()
    for shard in range(store.keys.shards):
        for _id, fields in await store.redis.xrange(store.keys.events(shard)):
            if fields["t"] == "E":
                out[fields["s"]] += 1
    return out


async def sweep_all(store: SessionStore, batch: int = 50) -> SweepResult:
    """Every shard swept until a batch comes back short; the sums."""
    ended = removed = 0
    for shard in range(store.keys.shards):
        while True:
            r = await store.sweep(shard, batch)
            ended, removed = ended + r.ended, removed + r.removed
            if r.accounts < batch:
                break
    return SweepResult(ended, 0, removed=removed)


async def lapsing(store: SessionStore, clock: Clock) -> tuple[list[Any], list[Any]]:
    """Accounts whose sessions all lapse, one whose sessions lapse but one, and one kept
    alive: (the sessions that lapse, those that do not)."""
    gone = []
    for i in range(6):
        for d in range(2):
            s = new(account=f"all-{i}", device=f"d{d}")
            await store.setup(s)
            gone.append(s)
    some = [new(account="some", device=f"d{d}") for d in range(3)]
    for s in some:
        await store.setup(s)
    alive = new(account="alive")
    await store.setup(alive)
    clock.advance(100)
    await store.keep_alive("some", some[2].session_id)
    await store.keep_alive("alive", alive.session_id)
    clock.advance(21)  # the first two of "some" and every "all-*" session have lapsed
    return gone + some[:2], [some[2], alive]


async def test_a_sweep_ends_each_lapsed_session_once_with_its_event_and_usage(
    store: SessionStore, clock: Clock
) -> None:
    gone, kept = await lapsing(store, clock)
    swept = await sweep_all(store)
    assert (swept.ended, swept.removed) == (len(gone), 0)  # retention 60 s: all kept ENDED
    assert await ended_events(store) == Counter(s.session_id for s in gone)
    for s in gone:
        got = await store.get(s.account_id, s.session_id)
        assert (got.state, got.end_reason) == (State.ENDED, EndReason.TIMEOUT)
    for s in kept:
        assert (await store.get(s.account_id, s.session_id)).state is State.ACTIVE
    for account, n in [("all-0", 2), ("some", 2)]:
        (day,) = (await store.usage(account)).values()
        assert day.ended[TIMEOUT] == n
    ak = store.keys.account("all-0")
    assert await store.redis.hget(ak.state, COUNT_FIELD) is None
    assert await store.redis.zscore(ak.due, "all-0") is None
    some = store.keys.account("some")
    assert await store.redis.zscore(some.due, "some") == clock.now - 21_000 + 120_000


async def test_a_batch_run_again_ends_nothing_twice(store: SessionStore, clock: Clock) -> None:
    """A reaper killed after its script ran (the reply lost) and the next reaper, or a retry,
    sending the same batch: nothing is ended, counted or removed twice."""
    gone, _ = await lapsing(store, clock)
    accounts = sorted({s.account_id for s in gone} | {"alive"})
    by_shard: dict[int, list[str]] = {}
    for account in accounts:
        by_shard.setdefault(store.keys.shard_of(account), []).append(account)
    first = again = 0
    for shard, batch in by_shard.items():
        keys = store.keys.shard_keys(shard)
        for account in batch:
            keys += store.keys.account(account).own()
        args = [store._clock_override(), store.policy.retention_ms, store._events, *batch]
        first += int((await store._run("sweep", keys, args))[0])
        again += int((await store._run("sweep", keys, args))[0])  # the same batch again
    assert (first, again) == (len(gone), 0)
    assert await ended_events(store) == Counter(s.session_id for s in gone)
    (day,) = (await store.usage("all-0")).values()
    assert day.ended[TIMEOUT] == 2
    clock.advance(61)
    removed = 0
    for shard in range(store.keys.shards):
        members = await store.redis.zrange(store.keys.reap(shard), 0, -1)
        if not members:
            continue
        keys = store.keys.shard_keys(shard)
        for mbr in members:
            keys += store.keys.account(k.parse_member(mbr)[0]).own()
        for _ in range(2):  # the purge's batch twice
            removed += int(
                (await store._run("purge", keys, [store._clock_override(), *members]))[0]
            )
    assert removed == len(gone)


async def test_two_reapers_racing_end_and_remove_each_session_once(
    store: SessionStore, clock: Clock
) -> None:
    gone, kept = await lapsing(store, clock)
    one, two = await asyncio.gather(sweep_all(store, 3), sweep_all(store, 3))
    assert one.ended + two.ended == len(gone)
    assert await ended_events(store) == Counter(s.session_id for s in gone)
    clock.advance(61)
    removed = await asyncio.gather(
        *(store.purge(shard, 2) for shard in range(store.keys.shards) for _ in range(2))
    )
    while more := sum([await store.purge(shard, 2) for shard in range(store.keys.shards)]):
        removed.append(more)
    assert sum(removed) == len(gone)
    for s in gone:
        with pytest.raises(SessionNotFound):
            await store.get(s.account_id, s.session_id)
    for s in kept:
        assert (await store.get(s.account_id, s.session_id)).state is State.ACTIVE


# -- retention 0 ---------------------------------------------------------------------------


@pytest.fixture
async def instant(
    redis_client: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> AsyncIterator[SessionStore]:
    """A store whose ENDED sessions have no retention."""
    s = SessionStore(
        redis_client,
        keyspace,
        dataclasses.replace(policy, retention_ms=0),
        clock=clock,
        max_in_flight=64,
    )
    yield s
    await invariants.check(redis_client, keyspace)


async def test_with_no_retention_the_sweep_removes_what_it_ends(
    instant: SessionStore, clock: Clock
) -> None:
    store = instant
    gone, kept = await lapsing(store, clock)
    registry = CollectorRegistry()
    await reaper_for(store, registry).reap_pass()
    assert sample(registry, "srm_reaper_sessions_expired_total") == len(gone)
    # the accounts whose sessions all lapsed, removed by the sweep; the two of "some" by
    # the purge of the same pass
    assert sample(registry, "srm_reaper_sessions_purged_total") == len(gone)
    for s in gone:
        with pytest.raises(SessionNotFound):
            await store.get(s.account_id, s.session_id)
    for s in kept:
        assert (await store.get(s.account_id, s.session_id)).state is State.ACTIVE
    assert await ended_events(store) == Counter(s.session_id for s in gone)
    ak = store.keys.account("all-0")
    (day,) = (await store.usage("all-0")).values()
    assert (day.started, day.ended[TIMEOUT]) == (2, 2)
    assert await store.redis.pttl(ak.state) > 0  # its usage only: it expires
    assert await store.redis.exists(ak.ended) == 0
    assert await store.redis.pttl(store.keys.account("some").state) == -1  # holds a session
    for shard in range(store.keys.shards):
        assert await store.redis.zcard(store.keys.reap(shard)) == 0
    # a setup brings an expiring account back for good
    await store.setup(new(account="all-0"))
    assert await store.redis.pttl(ak.state) == -1


async def test_with_no_retention_a_repeated_or_raced_sweep_removes_once(
    instant: SessionStore, clock: Clock
) -> None:
    store = instant
    gone, _ = await lapsing(store, clock)
    one, two = await asyncio.gather(sweep_all(store, 2), sweep_all(store, 2))
    assert one.ended + two.ended == len(gone)
    assert one.removed + two.removed == len(gone) - 2  # all but the two of "some"
    assert (await sweep_all(store)).ended == 0
    assert await ended_events(store) == Counter(s.session_id for s in gone)
    (day,) = (await store.usage("all-1")).values()
    assert day.ended[TIMEOUT] == 2


# -- a Cluster: every master at once -------------------------------------------------------


async def test_each_master_gets_its_own_bound_of_shards_in_flight(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even when the first shards of a pass all live on one master, the other masters'
    shards start beside them: the bound of shards in flight is per master."""
    from srm.reaper import core

    reaper = reaper_for(store, interval=0.0)
    order = [(reaper.first_shard + i) % store.keys.shards for i in range(store.keys.shards)]
    node = {shard: "a" if i < 8 else ("b" if i % 2 else "c") for i, shard in enumerate(order)}
    monkeypatch.setattr(store, "shard_node", node.get)
    in_flight: Counter[str] = Counter()
    most: Counter[str] = Counter()
    others = asyncio.Event()

    async def step(shard: int) -> None:
        in_flight[node[shard]] += 1
        most[node[shard]] = max(most[node[shard]], in_flight[node[shard]])
        if in_flight["b"] and in_flight["c"]:
            others.set()
        if node[shard] == "a":  # a's shards hold on until b's and c's run beside them
            await asyncio.wait_for(others.wait(), 5)
        else:
            await asyncio.sleep(0)
        in_flight[node[shard]] -= 1

    assert await reaper._paced(0.0, step)
    assert most == {"a": core.PARALLEL_SHARDS, "b": core.PARALLEL_SHARDS, "c": core.PARALLEL_SHARDS}


@pytest.fixture
async def cluster_store(
    request: pytest.FixtureRequest, keyspace: k.Keys, policy: Policy, clock: Clock
) -> AsyncIterator[SessionStore]:
    async with open_backend(request, "cluster") as client:
        s = SessionStore(client, keyspace, policy, clock=clock, max_in_flight=64)
        yield s
        await invariants.check(client, keyspace)


async def test_on_a_cluster_the_reaper_works_every_master_at_once(
    cluster_store: SessionStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cluster_store
    masters = {store.shard_node(shard) for shard in range(store.keys.shards)}
    assert len(masters) == 3 and None not in masters
    sessions = [new(account=f"acct-{i}") for i in range(48)]
    for s in sessions:
        await store.setup(s)
    clock.advance(121)
    assert {store.shard_node(store.keys.shard_of(s.account_id)) for s in sessions} == masters
    sweep = store.sweep
    in_flight: Counter[str | None] = Counter()
    together = 0  # the most masters with a sweep in flight at one time
    batches: Counter[str | None] = Counter()

    async def counted(shard: int, batch: int) -> SweepResult:
        nonlocal together
        node = store.shard_node(shard)
        batches[node] += 1
        in_flight[node] += 1
        together = max(together, sum(1 for n in in_flight.values() if n))
        try:
            return await sweep(shard, batch)
        finally:
            in_flight[node] -= 1

    monkeypatch.setattr(store, "sweep", counted)
    registry = CollectorRegistry()
    await reaper_for(store, registry, interval=0.0).reap_pass()
    assert sample(registry, "srm_reaper_sessions_expired_total") == len(sessions)
    assert set(batches) == masters
    assert together > 1
    for s in sessions:
        got = await store.get(s.account_id, s.session_id)
        assert (got.state, got.end_reason) == (State.ENDED, EndReason.TIMEOUT)
