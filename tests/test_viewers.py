"""Viewers and roll-out in the store, on every backend: one playback is one slot (a setup with
the playbackId of an ACTIVE session of the same device joins it), monitor rules flag instead
of refusing, and a setup rate per account."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from unittest.mock import patch

import pytest

from srm.errors import LimitReached, SessionNotFound, StoreUnavailable, TooSoon
from srm.model import EndReason, NewSession, Policy, Started, State
from srm.rules import Rule
from srm.store import SessionStore
from tests.helpers import Clock, reaper_for


@pytest.fixture
def policy() -> Policy:
    return Policy(timeout_ms=120_000, max_sessions=2, retention_ms=60_000, evict=False)


def new(
    playback: str | None = None,
    device: str = "tv-1",
    account: str = "acct-1",
    quality: str | None = None,
) -> NewSession:
    return NewSession(
        str(uuid.uuid4()),
        account,
        device,
        "100001V3D",
        "COD",
        device_type="tv",
        quality=quality,
        playback_id=playback,
    )


def changed(store: SessionStore, **changes: object) -> SessionStore:
    return SessionStore(
        store.redis, store.keys, dataclasses.replace(store.policy, **changes), clock=store.clock
    )


async def actives(store: SessionStore, account: str = "acct-1") -> list[str]:
    page = await store.account_sessions(account)
    return [s.session_id for s in page.sessions if s.state is State.ACTIVE]


# -- one playback, one slot ----------------------------------------------------------------


async def test_a_retried_playback_joins_its_session_and_moves_its_deadline(
    store: SessionStore, clock: Clock
) -> None:
    first = await store.setup(new("pb-1"))
    clock.advance(60)
    again = await store.setup(new("pb-1"))
    assert (again.session_id, again.joined, again.active) == (first.session_id, True, 1)
    got = await store.get("acct-1", first.session_id)
    assert (got.last_keep_alive_at, got.expires_at) == (clock.now, clock.now + 120_000)
    assert await actives(store) == [first.session_id]


async def test_thirty_concurrent_setups_of_one_playback_make_one_session(
    store: SessionStore,
) -> None:
    results = await asyncio.gather(*(store.setup(new("pb-race")) for _ in range(30)))
    assert len({r.session_id for r in results}) == 1
    assert sum(not r.joined for r in results) == 1
    assert len(await actives(store)) == 1


async def test_a_playback_of_another_device_or_account_never_joins(store: SessionStore) -> None:
    mine = await store.setup(new("pb-1"))
    other_device = await store.setup(new("pb-1", device="tv-2"))
    other_account = await store.setup(new("pb-1", account="acct-2"))
    assert not other_device.joined and not other_account.joined
    assert len({mine.session_id, other_device.session_id, other_account.session_id}) == 3


async def test_an_ended_or_lapsed_playback_starts_a_new_session(
    store: SessionStore, clock: Clock
) -> None:
    first = await store.setup(new("pb-1"))
    await store.end("acct-1", first.session_id, EndReason.TEARDOWN)
    second = await store.setup(new("pb-1"))
    assert not second.joined and second.session_id != first.session_id
    clock.advance(121)  # second lapses
    third = await store.setup(new("pb-1"))
    assert not third.joined and third.session_id != second.session_id
    assert await actives(store) == [third.session_id]


async def test_a_join_counts_no_slot_at_the_limit(store: SessionStore) -> None:
    await store.setup(new("pb-1"))
    await store.setup(new("pb-2"))
    assert (await store.setup(new("pb-2"))).joined  # at the limit of 2, yet it plays on
    with pytest.raises(LimitReached):
        await store.setup(new("pb-3"))


async def test_the_reaper_and_the_audit_keep_playbacks_to_active_sessions(
    store: SessionStore, clock: Clock
) -> None:
    joined = await store.setup(new("pb-1"))
    state = store.keys.account("acct-1").state
    await store.redis.hset(state, ">4:tv-1stale", joined.session_id)  # damage: a stray playback
    clock.advance(121)
    reaper = reaper_for(store)
    await reaper.reap_pass()  # ends the lapsed session, and its playback with it
    await reaper.audit()  # removes the stray one
    assert [f for f in await store.redis.hkeys(state) if f.startswith(">")] == []


# -- monitor mode --------------------------------------------------------------------------


async def test_a_monitor_rule_that_would_deny_flags_and_lets_through(
    store: SessionStore,
) -> None:
    store = changed(store, rules=(Rule("uhd", 1, qualities=("UHD",), mode="monitor"),))
    plain = await store.setup(new(quality="UHD"))
    flagged = await store.setup(new(quality="UHD", device="tv-2"))
    assert (plain.flagged, flagged.flagged) == ((), ("uhd",))
    listed = {s.session_id: s.flagged for s in (await store.account_sessions("acct-1")).sessions}
    assert listed == {plain.session_id: (), flagged.session_id: ("uhd",)}
    day = next(iter((await store.usage("acct-1")).values()))
    assert (day.started, day.flagged, day.denied) == (2, 1, 0)
    today = await store.now() // 86_400_000
    assert await store.denials(today, 10, flagged=True) == [("acct-1", 1)]
    assert await store.denials(today, 10) == []


async def test_a_monitor_evict_rule_evicts_nothing(store: SessionStore) -> None:
    store = changed(
        store,
        rules=(Rule("one-per-tv", 1, per="device", policy="evict", mode="monitor"),),
    )
    first = await store.setup(new())
    second = await store.setup(new())
    assert second.flagged == ("one-per-tv",)
    assert sorted(await actives(store)) == sorted([first.session_id, second.session_id])


async def test_an_enforced_rule_still_denies_beside_a_monitor_one(store: SessionStore) -> None:
    store = changed(
        store,
        rules=(
            Rule("watch", 0, mode="monitor"),
            Rule("uhd", 1, qualities=("UHD",)),
        ),
    )
    await store.setup(new(quality="UHD"))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(quality="UHD", device="tv-2"))
    assert denied.value.rule == "uhd"


async def test_a_rule_moves_from_monitor_to_enforce_by_configuration_alone(
    store: SessionStore,
) -> None:
    watch = Rule("uhd", 1, qualities=("UHD",), mode="monitor")
    await changed(store, rules=(watch,)).setup(new(quality="UHD"))
    enforcing = changed(store, rules=(dataclasses.replace(watch, mode="enforce"),))
    with pytest.raises(LimitReached):  # the sessions counted while monitoring count now
        await enforcing.setup(new(quality="UHD", device="tv-2"))


# -- the setup rate --------------------------------------------------------------------------


async def test_setups_over_the_rate_are_refused_and_change_nothing(
    store: SessionStore, clock: Clock
) -> None:
    store = changed(store, setups_per_minute=3, max_sessions=1)
    clock.now = (clock.now // 60_000) * 60_000  # the start of a minute
    await store.setup(new("pb-1"))  # created
    await store.setup(new("pb-1"))  # joined: counts
    with pytest.raises(LimitReached):
        await store.setup(new("pb-2"))  # denied: counts
    with pytest.raises(TooSoon) as soon:
        await store.setup(new("pb-3"))
    # this minute's 3 weigh fully until it ends, then fall below 2 a third of a minute later
    assert soon.value.retry_after == 80
    day = next(iter((await store.usage("acct-1")).values()))
    assert (day.started, day.denied) == (1, 1)
    one = (await actives(store))[0]
    await store.keep_alive("acct-1", one)  # keep-alives and teardowns are not setups
    await store.end("acct-1", one, EndReason.TEARDOWN)
    assert (await store.setup(new("pb-4", account="acct-2"))).active == 1  # per account
    clock.advance(90)  # half the last minute still weighs: 1.5 + 1 <= 3
    assert not (await store.setup(new("pb-5"))).joined


async def test_a_rate_refusal_is_not_counted_so_a_loop_is_held_not_locked_out(
    store: SessionStore, clock: Clock
) -> None:
    store = changed(store, setups_per_minute=2, max_sessions=100)
    clock.now = (clock.now // 60_000) * 60_000
    for _ in range(2):
        await store.setup(new())
    for _ in range(50):
        with pytest.raises(TooSoon):
            await store.setup(new())
    clock.advance(120)  # two minutes later nothing weighs
    await store.setup(new())


async def test_a_retried_setup_is_one_setup_of_the_rate(store: SessionStore) -> None:
    store = changed(store, setups_per_minute=1)
    s = new()
    await store.setup(s)
    assert (await store.setup(s)).session_id == s.session_id  # a retry, answered as before
    with pytest.raises(SessionNotFound):
        await store.keep_alive("acct-1", str(uuid.uuid4()))


def test_started_is_what_setup_answers() -> None:
    assert Started("x", 1).joined is False


# -- a join and the undo of an unknown outcome ------------------------------------------------


async def test_the_undo_of_a_lost_setup_spares_the_session_a_retry_joined(
    store: SessionStore,
) -> None:
    """A setup ran but its reply was lost (SRM-0008): the API undoes it in the background
    (abort_setup). The player retries at once with the same playbackId and joins the session
    the lost try created, and is told its sessionId. An undo that runs after that join must not
    end the session the player now holds."""
    lost = new("pb-1")
    await store.setup(lost)  # it ran; the API never saw the reply and queued the undo
    retried = await store.setup(new("pb-1"))
    assert retried.joined and retried.session_id == lost.session_id  # the player holds it
    await store.abort_setup("acct-1", lost.session_id)  # the background undo, late
    await store.keep_alive("acct-1", retried.session_id)  # still the player's


async def test_with_keep_alive_disabled_a_lost_join_never_shortens_the_session(
    store: SessionStore, clock: Clock
) -> None:
    store = changed(store, timeout_ms=0)
    first = await store.setup(new("pb-1"))  # answered, so confirmed: it never lapses
    real = store._run

    async def reply_lost(name: str, *args: object, **kwargs: object) -> object:
        await real(name, *args, **kwargs)  # the join runs in Redis; its reply is lost
        raise StoreUnavailable(f"{name}: reply lost")

    with patch.object(store, "_run", reply_lost), pytest.raises(StoreUnavailable):
        await store.setup(new("pb-1"))  # SRM-0008: nothing confirms the join
    clock.advance(61)  # the first player plays on: no keep-alives without a timeout
    assert await actives(store) == [first.session_id]
