"""Auto-pipelining: concurrent script calls share one pipeline, yet each keeps its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from srm import keys as k
from srm.errors import InternalError, SessionNotFound, StoreUnavailable
from srm.model import EndReason, NewSession, Policy
from srm.store import EndOutcome, SessionStore
from tests.helpers import Clock
from tests.redis_servers import RedisProcess, free_port


def new(account: str) -> NewSession:
    return NewSession(str(uuid.uuid4()), account, "dev-1", "100001V3D", "COD")


def count_roundtrips(monkeypatch: pytest.MonkeyPatch, store: SessionStore) -> list[int]:
    """Record the number of commands of every write the store's pipeline makes."""
    sizes: list[int] = []
    pipeline = store._pipeline
    roundtrip = pipeline._roundtrip

    async def counted(commands: list[list[Any]], batch: Any) -> list[Any]:
        sizes.append(len(commands))
        return await roundtrip(commands, batch)

    monkeypatch.setattr(pipeline, "_roundtrip", counted)
    return sizes


async def test_calls_of_one_loop_turn_share_one_pipeline(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = [new(f"acct-{i}") for i in range(40)]
    sizes = count_roundtrips(monkeypatch, store)
    assert [r.active for r in await asyncio.gather(*(store.setup(s) for s in sessions))] == [1] * 40
    # a fresh server answers "Function not found" to the first batch, then resent once
    assert sizes in ([40], [40, 40])
    sizes.clear()
    outcomes = await asyncio.gather(
        *(store.end(s.account_id, s.session_id, EndReason.TEARDOWN) for s in sessions),
        *(store.setup(new(f"other-{i}")) for i in range(10)),
    )
    assert outcomes[:40] == [EndOutcome.ENDED] * 40
    assert [getattr(o, "active", o) for o in outcomes[40:]] == [1] * 10
    assert sizes == [50]  # the library, loaded once, holds every function


async def test_one_failing_call_does_not_fail_its_batch(
    store: SessionStore, keyspace: k.Keys
) -> None:
    good = [new(f"acct-{i}") for i in range(5)]
    bad = new("broken")
    await store.redis.set(keyspace.account("broken").state, "not a hash")
    results = await asyncio.gather(
        *(store.setup(s) for s in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )
    assert [getattr(r, "active", r) for i, r in enumerate(results) if i != 2] == [1] * 5
    assert isinstance(results[2], InternalError)
    await store.redis.delete(keyspace.account("broken").state)
    with pytest.raises(SessionNotFound):
        await store.keep_alive("acct-0", str(uuid.uuid4()))


async def test_the_library_is_loaded_again_after_a_function_flush(store: SessionStore) -> None:
    first = new("acct-1")
    await store.setup(first)
    await store.redis.function_flush()  # what a restarted or failed-over Redis looks like
    second, third = new("acct-2"), new("acct-3")
    assert [r.active for r in await asyncio.gather(store.setup(second), store.setup(third))] == [
        1,
        1,
    ]
    await store.keep_alive(first.account_id, first.session_id)
    assert await store.end("acct-2", second.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED


async def test_a_cancelled_caller_leaves_the_others_answered(store: SessionStore) -> None:
    sessions = [new(f"acct-{i}") for i in range(6)]
    tasks = [asyncio.ensure_future(store.setup(s)) for s in sessions]
    await asyncio.sleep(0)  # every call queued, the batch not yet answered
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [getattr(r, "active", r) for i, r in enumerate(results) if i != 2] == [1] * 5


async def test_a_silent_redis_fails_the_batch_within_the_deadline(
    real_redis: RedisProcess, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    # no socket timeout of its own (redis-py's default is 5 s): only the deadline can answer
    client = aioredis.Redis.from_url(
        real_redis.url,
        decode_responses=True,
        encoding_errors="surrogateescape",
        socket_timeout=None,
    )
    store = SessionStore(client, keyspace, policy, clock=clock, deadline=0.3)
    await store.setup(new("warm"))
    with real_redis.client() as admin:
        # paused until the answers are in: any answer before UNPAUSE is the deadline's
        admin.execute_command("CLIENT", "PAUSE", "600000", "WRITE")
        try:
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(store.setup(new(f"a{i}")) for i in range(5)), return_exceptions=True
                ),
                timeout=60,  # generous: only proves nothing hangs
            )
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    await client.aclose()


async def test_an_unreachable_redis_is_unavailable(
    keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    store = SessionStore(client, keyspace, policy, clock=clock, deadline=2.0)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(store.keep_alive("a", str(uuid.uuid4())) for _ in range(3)), return_exceptions=True
        ),
        timeout=10,
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    await client.aclose()


async def test_a_client_without_one_pool_uses_its_own_pipeline(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path a Redis Cluster client takes: same outcomes, a missing library handled the
    same way."""
    pipeline = store._pipeline
    monkeypatch.setattr(pipeline, "_roundtrip", pipeline._client_roundtrip)
    await store.redis.function_flush()
    sessions = [new(f"acct-{i}") for i in range(8)]
    assert [r.active for r in await asyncio.gather(*(store.setup(s) for s in sessions))] == [1] * 8
    with pytest.raises(SessionNotFound):
        await store.keep_alive("acct-0", str(uuid.uuid4()))
    first = sessions[0]
    assert await store.end(first.account_id, first.session_id, EndReason.TEARDOWN) is (
        EndOutcome.ENDED
    )
