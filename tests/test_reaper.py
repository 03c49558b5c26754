"""The reaper's steps and loop against the store, with a hand-moved clock, on every store
backend (conftest.redis_client)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis import exceptions as rx

from srm.config import ConfigError, load
from srm.errors import LimitReached, SessionNotFound, StoreUnavailable
from srm.model import EndReason, State
from srm.reaper.health import reaper_id
from srm.reaper.sidecar import companion, serve_metrics
from srm.records import COUNT_FIELD
from srm.store import EndOutcome, SessionStore
from tests.helpers import Clock, drift_counter, new, reaper_for, reaper_settings, sample, until
from tests.keyspace import mentioned_ids


class AfterRead:
    """The store's Redis client, running *hook* right after the reaper's read of due members.

    The sweep and purge read their due members, then run their script: the hook lands a
    client call exactly in between, the window a real race would hit.
    """

    def __init__(self, redis: Any, hook: Callable[[], Awaitable[None]]) -> None:
        self._redis = redis
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def zrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
        due = await self._redis.zrangebyscore(*args, **kwargs)
        await self._hook()
        return due


async def test_a_keep_alive_of_the_session_due_first_leaves_the_score_early(
    store: SessionStore, clock: Clock
) -> None:
    """The session due first is kept alive: the due score stays its old deadline (early,
    never late) instead of the whole account being read; once it passes, a setup finds nothing
    lapsed and counts every session, and the score moves to the next deadline."""
    a, b, c = new(device="a"), new(device="b"), new(device="c")
    t0 = clock.now
    for s in (a, b, c):
        await store.setup(s)
        clock.advance(10)
    await store.keep_alive(a.account_id, a.session_id)  # at t0 + 30 s: a is due at t0 + 150 s
    ak = store.keys.account(a.account_id)
    assert await store.redis.zscore(ak.due, a.account_id) == t0 + 120_000  # a's old deadline
    clock.advance(95)  # t0 + 125 s: the score has passed, no session has lapsed
    with pytest.raises(LimitReached):  # the three sessions still count: max_sessions = 3
        await store.setup(new(device="d"))
    assert await store.redis.zscore(ak.due, a.account_id) == t0 + 130_000  # b's deadline


async def test_the_sweep_moves_a_score_left_early_and_ends_nothing(
    store: SessionStore, clock: Clock
) -> None:
    a, b = new(device="a"), new(device="b")
    t0 = clock.now
    await store.setup(a)
    clock.advance(10)
    await store.setup(b)
    await store.keep_alive(a.account_id, a.session_id)
    await store.end(b.account_id, b.session_id, EndReason.TEARDOWN)  # not the one due first
    ak = store.keys.account(a.account_id)
    assert await store.redis.zscore(ak.due, a.account_id) == t0 + 120_000
    clock.advance(115)  # t0 + 125 s
    result = await store.sweep(store.keys.shard_of(a.account_id), 10)
    assert (result.ended, result.moved) == (0, 1)
    assert await store.redis.zscore(ak.due, a.account_id) == t0 + 130_000  # a's new deadline
    assert (await store.get(a.account_id, a.session_id)).state is State.ACTIVE


async def test_keep_alive_landing_before_the_sweep_script_wins(
    store: SessionStore, clock: Clock
) -> None:
    s = new()
    await store.setup(s)
    clock.advance(121)  # lapsed by the reaper's clock...
    client = SessionStore(store.redis, store.keys, store.policy, clock=lambda: clock.now - 2000)

    async def keep_alive() -> None:  # ...but a keep-alive stamped before the lapse lands first
        await client.keep_alive(s.account_id, s.session_id)

    sweeper = SessionStore(store.redis, store.keys, store.policy, clock=clock)
    sweeper.redis = AfterRead(store.redis, keep_alive)
    result = await sweeper.sweep(store.keys.shard_of(s.account_id), 10)
    assert result.ended == 0  # the script re-read the deadline the keep-alive moved
    got = await store.get(s.account_id, s.session_id)
    assert got.state is State.ACTIVE
    ak = store.keys.account(s.account_id)  # the due score is the moved deadline
    assert await store.redis.zscore(ak.due, s.account_id) == got.expires_at
    clock.advance(100)  # the account is swept at its moved due score, not before
    assert (await store.sweep(store.keys.shard_of(s.account_id), 10)).ended == 0
    clock.advance(20)
    assert (await store.sweep(store.keys.shard_of(s.account_id), 10)).ended == 1


async def test_sweep_that_lands_first_wins_over_a_late_keep_alive(
    store: SessionStore, clock: Clock
) -> None:
    s = new()
    await store.setup(s)
    clock.advance(121)
    assert (await store.sweep(store.keys.shard_of(s.account_id), 10)).ended == 1
    with pytest.raises(SessionNotFound):
        await store.keep_alive(s.account_id, s.session_id)
    got = await store.get(s.account_id, s.session_id)
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.TIMEOUT)
    assert (await store.account_sessions(s.account_id)).active_count == 0


async def test_teardown_landing_inside_the_sweep_decrements_once(
    store: SessionStore, clock: Clock
) -> None:
    sessions = [new() for _ in range(3)]
    for s in sessions:
        await store.setup(s)
    clock.advance(121)
    outcomes: list[EndOutcome] = []

    async def teardown() -> None:
        if not outcomes:
            outcomes.append(await store.end("acct-1", sessions[0].session_id, EndReason.TEARDOWN))

    sweeper = SessionStore(store.redis, store.keys, store.policy, clock=clock)
    sweeper.redis = AfterRead(store.redis, teardown)
    result = await sweeper.sweep(store.keys.shard_of("acct-1"), 10)
    assert outcomes == [EndOutcome.ENDED]
    assert result.ended == 2  # the third was ended once, by the teardown
    assert (await store.account_sessions("acct-1")).active_count == 0
    assert await store.redis.hget(store.keys.account("acct-1").state, COUNT_FIELD) is None
    # a teardown after the sweep is a repeat: success, no second decrement
    again = await store.end("acct-1", sessions[1].session_id, EndReason.TEARDOWN)
    assert again is EndOutcome.ALREADY_ENDED


async def test_concurrent_sweeps_and_teardowns_end_each_session_once(
    store: SessionStore, clock: Clock
) -> None:
    sessions = [new(account=f"acct-{i % 5}") for i in range(15)]
    for s in sessions:
        await store.setup(s)
    clock.advance(121)
    shards = sorted({store.keys.shard_of(s.account_id) for s in sessions})
    calls: list[Awaitable[Any]] = [store.sweep(shard, 4) for shard in shards for _ in range(3)]
    calls += [store.end(s.account_id, s.session_id, EndReason.TEARDOWN) for s in sessions]
    calls += [store.end(s.account_id, s.session_id, EndReason.TEARDOWN) for s in sessions]
    results = await asyncio.gather(*calls)
    swept = sum(r.ended for r in results[: len(shards) * 3])
    torn = sum(1 for r in results[len(shards) * 3 :] if r is EndOutcome.ENDED)
    assert swept + torn == len(sessions)
    for i in range(5):
        assert (await store.account_sessions(f"acct-{i}")).active_count == 0
        ak = store.keys.account(f"acct-{i}")
        assert await store.redis.hget(ak.state, COUNT_FIELD) is None
        assert await store.redis.zscore(ak.due, f"acct-{i}") is None


async def test_a_pass_ends_and_purges_everything_and_leaves_no_trace(
    store: SessionStore, clock: Clock
) -> None:
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry)
    lapsing = [new(account=f"acct-{i}") for i in range(12)]
    torn = [new(account=f"acct-{i}") for i in range(12)]
    kept = new(account="acct-0")
    for s in lapsing + torn:
        await store.setup(s)
    for s in torn:
        await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    clock.advance(100)
    await store.setup(kept)
    clock.advance(21)  # the lapsing ones are past their deadline; kept is not
    await reaper.reap_pass()
    assert sample(registry, "srm_reaper_sessions_expired_total") == 12
    assert sample(registry, "srm_reaper_sessions_purged_total") == 12  # the torn-down ones
    listing = await store.account_sessions("acct-3")
    assert [(x.state, x.end_reason) for x in listing.sessions] == [(State.ENDED, EndReason.TIMEOUT)]
    clock.advance(60)  # the retention of the swept ones has passed
    await reaper.reap_pass()
    assert sample(registry, "srm_reaper_sessions_purged_total") == 24
    gone = {s.session_id for s in lapsing + torn}
    assert not gone & await mentioned_ids(store.redis)
    assert kept.session_id in await mentioned_ids(store.redis)
    for s in lapsing + torn:
        with pytest.raises(SessionNotFound):
            await store.get(s.account_id, s.session_id)
        with pytest.raises(SessionNotFound):
            await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    assert (await store.get("acct-0", kept.session_id)).state is State.ACTIVE


async def test_a_hot_shard_gets_a_bounded_share_of_a_pass(
    store: SessionStore, clock: Clock
) -> None:
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry, batch_size=2, max_batches=3)
    shard = store.keys.shard_of("acct-hot")
    # a batch is up to batch_size due accounts of the shard: 20 accounts of one shard, one
    # lapsing session each, take 10 batches
    hot = [a for a in (f"acct-hot-{i}" for i in range(2000)) if store.keys.shard_of(a) == shard]
    for account in hot[:20]:
        await store.setup(new(account=account))
    clock.advance(121)
    assert await reaper.reap_shard(shard) == pytest.approx(1.0)  # due for 1 s
    assert sample(registry, "srm_reaper_sessions_expired_total") == 6
    assert sample(registry, "srm_reaper_batches_total", op="sweep") == 3
    while sample(registry, "srm_reaper_sessions_expired_total") < 20:
        await reaper.reap_shard(shard)
    for account in hot[:20]:
        assert (await store.account_sessions(account)).active_count == 0
        assert await store.redis.zscore(store.keys.due(shard), account) is None


async def test_a_sweep_ends_every_lapsed_session_of_a_due_account(
    store: SessionStore, clock: Clock
) -> None:
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry, batch_size=2, max_batches=3)
    await store.set_limit("acct-hot", 20)
    for _ in range(20):
        await store.setup(new(account="acct-hot"))
    clock.advance(121)
    shard = store.keys.shard_of("acct-hot")
    assert await reaper.reap_shard(shard) == pytest.approx(1.0)
    # one account is one entry of the batch, whatever its sessions
    assert sample(registry, "srm_reaper_sessions_expired_total") == 20
    assert sample(registry, "srm_reaper_batches_total", op="sweep") == 1
    assert (await store.account_sessions("acct-hot")).active_count == 0
    assert await store.redis.zscore(store.keys.due(shard), "acct-hot") is None


async def test_audit_repairs_injected_drift_and_reports_it(
    store: SessionStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry, batch_size=2)  # several audit chunks per shard
    accounts = [f"acct-{i}" for i in range(40)]
    for a in accounts:
        await store.setup(new(account=a))
    await store.setup(new(account="acct-1"))
    r = store.redis
    await drift_counter(store, "acct-1", 5)  # too high
    await drift_counter(store, "acct-2", None)  # lost
    await drift_counter(store, "ghost", 1)  # no session at all
    caplog.set_level(logging.WARNING, logger="srm.reaper")
    assert await reaper.audit() == 3
    assert sample(registry, "srm_reaper_drift_repairs_total") == 3
    logged = [rec for rec in caplog.records if "audit repaired" in rec.getMessage()]
    assert sorted(rec.__dict__["account"] for rec in logged) == ["acct-1", "acct-2", "ghost"]
    assert int(await r.hget(store.keys.account("acct-1").state, COUNT_FIELD)) == 2
    assert int(await r.hget(store.keys.account("acct-2").state, COUNT_FIELD)) == 1
    assert await r.exists(store.keys.account("ghost").state) == 0
    assert await reaper.audit() == 0  # a second audit finds nothing
    assert sample(registry, "srm_reaper_batches_total", op="audit") >= 21  # 41 accounts, 2 per call
    # the repaired counters admit exactly the limit again
    await store.setup(new(account="acct-1"))
    with pytest.raises(LimitReached):
        await store.setup(new(account="acct-1"))


async def test_store_errors_are_counted_and_retried(store: SessionStore, clock: Clock) -> None:
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry, interval=0.02)
    for i in range(5):
        await store.setup(new(account=f"acct-{i}"))
    clock.advance(121)
    failures: list[BaseException] = [StoreUnavailable("down")] * 3 + [RuntimeError("bug")]
    real = store.shard_state

    async def flaky(shard: int) -> tuple[int | None, int | None]:
        if failures:
            raise failures.pop(0)
        return await real(shard)

    store.shard_state = flaky  # type: ignore[method-assign]
    running = asyncio.create_task(reaper.run())
    for _ in range(500):
        if sample(registry, "srm_reaper_sessions_expired_total") == 5:
            break
        await asyncio.sleep(0.01)
    assert not running.done()
    reaper.stop.set()
    await asyncio.wait_for(running, 10)
    assert sample(registry, "srm_reaper_sessions_expired_total") == 5
    assert sample(registry, "srm_reaper_errors_total", kind="unavailable") == 3
    assert sample(registry, "srm_reaper_errors_total", kind="internal") == 1


async def test_heartbeat_lives_while_running_and_is_cleared_on_stop(
    store: SessionStore,
) -> None:
    reaper = reaper_for(store, id="reaper-a", heartbeat_ttl=5)
    running = asyncio.create_task(reaper.run())
    for _ in range(500):
        if await store.read_heartbeat("reaper-a"):
            break
        await asyncio.sleep(0.01)
    assert await store.read_heartbeat("reaper-a")
    assert 0 < await store.redis.ttl(store.keys.heartbeat("reaper-a")) <= 5
    assert await store.read_heartbeat("reaper-b") is None
    reaper.stop.set()
    await asyncio.wait_for(running, 10)
    assert await store.read_heartbeat("reaper-a") is None


async def test_heartbeat_stays_fresh_through_a_long_wait(store: SessionStore) -> None:
    """Waiting out a start offset far longer than the heartbeat's TTL, the reaper writes the
    heartbeat again and again (every third of the TTL): counted, not timed."""
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry, id="slow", interval=3600, heartbeat_ttl=1)
    written: list[int] = []
    write = store.write_heartbeat

    async def counted(reaper_id: str, value: str, ttl: int) -> None:
        await write(reaper_id, value, ttl)
        written.append(ttl)

    store.write_heartbeat = counted  # type: ignore[method-assign]
    running = asyncio.create_task(reaper.run())
    await until(lambda: len(written) >= 4, what="four heartbeats")  # at least the TTL apart
    assert sample(registry, "srm_reaper_passes_total") == 0  # still in the start offset
    assert written[:4] == [1] * 4
    reaper.stop.set()
    await asyncio.wait_for(running, 10)
    assert await store.read_heartbeat("slow") is None  # cleared on stop


async def test_stop_during_the_start_offset_returns_at_once(store: SessionStore) -> None:
    reaper = reaper_for(store, interval=3600, audit_interval=3600)
    running = asyncio.create_task(reaper.run())
    await asyncio.sleep(0.05)
    reaper.stop.set()
    await asyncio.wait_for(running, 10)  # did not wait out the hour


def test_reaper_id_defaults_to_the_host_name_and_settings_are_checked() -> None:
    assert reaper_id(load(env={}).reaper) == socket.gethostname()
    settings = load(env={"SRM_REAPER_ID": "reaper-2", "SRM_REAPER_MAX_BATCHES": "3"})
    assert (reaper_id(settings.reaper), settings.reaper.max_batches) == ("reaper-2", 3)
    with pytest.raises(ConfigError, match=r"reaper\.max_batches"):
        load(env={"SRM_REAPER_MAX_BATCHES": "0"})
    with pytest.raises(ConfigError, match="SRM_REAPER_ID"):
        load(env={"SRM_REAPER_ID": "all*"})


async def test_the_companion_starts_twice_in_one_process(
    store: SessionStore, settings: Any
) -> None:
    settings = settings.replace("reaper", id="companion")
    for _ in range(2):  # e.g. two apps served one after the other in one process
        stop = asyncio.Event()
        running = asyncio.create_task(companion(settings, store, stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(running, 10)


def test_a_metrics_port_in_use_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_metrics(reaper_settings(metrics_port=port)) is None
    assert any("metrics not served" in r.getMessage() for r in caplog.records)
    assert serve_metrics(reaper_settings(metrics_port=0)) is None


class BrokenScan:
    """The store's Redis client, whose SCAN walk fails after its first key."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def scan_iter(self, *args: Any, **kwargs: Any) -> AsyncIterator[str]:
        async for key in self._redis.scan_iter(*args, **kwargs):
            yield key
            raise rx.ConnectionError("connection lost mid-walk")


async def test_a_walk_broken_by_redis_is_unavailable_and_the_next_one_repairs(
    store: SessionStore,
) -> None:
    registry = CollectorRegistry()
    for i in range(10):
        await store.setup(new(account=f"acct-{i}"))
    await drift_counter(store, "acct-4", 7)
    reaper = reaper_for(store, registry)
    reaper.store = SessionStore(BrokenScan(store.redis), store.keys, store.policy)
    with pytest.raises(StoreUnavailable):
        await reaper.audit()
    reaper.store = store
    assert await reaper.audit() == 1
    assert sample(registry, "srm_reaper_drift_repairs_total") == 1
