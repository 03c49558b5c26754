"""Eviction ends as few sessions as the limits need: victims are chosen jointly for the account
limit and every evict rule, and a session a later choice made unnecessary is kept."""

from __future__ import annotations

import uuid

import pytest

from srm.errors import SessionNotFound
from srm.model import EndReason, NewSession, Policy, State
from srm.rules import Rule
from srm.store import SessionStore
from tests.helpers import Clock

ONE_PER_TV = Rule("one-per-tv", 1, device_types=("tv",), per="device", policy="evict")


@pytest.fixture
def policy() -> Policy:
    return Policy(
        timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=True, rules=(ONE_PER_TV,)
    )


def new(device: str, device_type: str) -> NewSession:
    return NewSession(
        str(uuid.uuid4()), "acct-1", device, "100001V3D", "COD", device_type=device_type
    )


async def state(store: SessionStore, s: NewSession) -> tuple[State, EndReason | None]:
    got = await store.get(s.account_id, s.session_id)
    return got.state, got.end_reason


async def test_a_setup_on_a_tv_ends_only_that_tvs_session(
    store: SessionStore, clock: Clock
) -> None:
    """A (tv-1, oldest), B (phone-1), C (tv-2); a setup from tv-2 ends C
    alone, which satisfies both the account limit (2 + 1 = 3) and one per TV."""
    a, b, c = new("tv-1", "tv"), new("phone-1", "phone"), new("tv-2", "tv")
    for s in (a, b, c):
        await store.setup(s)
        clock.advance(1)
    d = new("tv-2", "tv")
    assert (await store.setup(d)).active == 3
    assert await state(store, a) == (State.ACTIVE, None)
    assert await state(store, b) == (State.ACTIVE, None)
    assert await state(store, c) == (State.ENDED, EndReason.EVICTED)
    with pytest.raises(SessionNotFound) as told:
        await store.keep_alive("acct-1", c.session_id)
    assert told.value.ended is not None and told.value.ended.by_device_id == "tv-2"


async def test_the_oldest_goes_when_any_one_would_do(store: SessionStore, clock: Clock) -> None:
    """Among minimal choices the oldest keep-alive goes: a phone setup on a full account ends
    the oldest session, whatever its device."""
    a, b, c = new("tv-1", "tv"), new("phone-1", "phone"), new("tv-2", "tv")
    for s in (a, b, c):
        await store.setup(s)
        clock.advance(1)
    await store.keep_alive("acct-1", a.session_id)  # A is now the newest keep-alive
    assert (await store.setup(new("phone-2", "phone"))).active == 3
    assert await state(store, a) == (State.ACTIVE, None)
    assert await state(store, b) == (State.ENDED, EndReason.EVICTED)
    assert await state(store, c) == (State.ACTIVE, None)
