"""Review of the account-hash layout: races, counters, the due index, TTLs, 0.x data and
damaged values (each test names the failure it guards against)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from srm.errors import SessionNotFound
from srm.model import EndReason
from srm.store import EndOutcome, SessionStore
from tests.helpers import Clock, new, reaper_for


def account_in_shard(store: SessionStore, shard: int, stem: str) -> str:
    """An accountId of *shard*, made from *stem*."""
    return next(f"{stem}-{i}" for i in range(10_000) if store.keys.shard_of(f"{stem}-{i}") == shard)


async def test_stale_members_of_the_0x_index_are_dropped(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    """0.x tolerated index members naming no active session (its sweep dropped them): the
    move must drop them too, or the index never drains and the reaper reports a lag that
    grows for ever (oldest_due reads the index head)."""
    ghost = store.keys.account("ghost")  # no 0.x key at all any more (evicted, expired)
    live = account_in_shard(store, ghost.shard, "live")
    ak = store.keys.account(live)
    kept, stale = str(uuid.uuid4()), str(uuid.uuid4())
    await redis_client.zadd(ak.legacy + "active", {kept: clock.now + 60_000})
    await redis_client.set(ak.legacy + "count", 1)
    await redis_client.zadd(
        ghost.legacy_deadlines,
        {
            f"ghost/{uuid.uuid4()}": clock.now - 2_000,
            f"{live}/{stale}": clock.now - 1_000,  # its account has 0.x data, not this one
            f"{live}/{kept}": clock.now + 60_000,
        },
    )
    reaper = reaper_for(store)
    await reaper.reap_pass()
    await reaper.reap_pass()
    assert await redis_client.zrange(ghost.legacy_deadlines, 0, -1) == []
    assert await store.oldest_due(ghost.shard) is None
    assert (await store.get(live, kept)).state.value == "ACTIVE"


@pytest.mark.parametrize(
    "damage",
    [
        "{c},0,120000,,TEARDOWN;",  # an ENDED record lacking its end offset
        "{c},0,120000,5,;",  # ... lacking its reason
        "{c},0,120000,,;",  # ... lacking both
        "{c},0,120000,5,NOSUCHREASON;",  # an unknown reason
    ],
)
async def test_a_damaged_ended_record_is_no_session_to_every_script(
    store: SessionStore, redis_client: Any, clock: Clock, damage: str
) -> None:
    """A record the Python reader takes for no session (records.parse) must be no session
    to the scripts as well: never a Lua error (a 500), never an ACTIVE session revived by
    a keep-alive behind the counter's back."""
    s = new()
    await store.setup(s)
    await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    ak = store.keys.account(s.account_id)
    value = damage.format(c=clock.now) + "5:dev-1"
    await redis_client.hset(ak.state, s.session_id, value)
    with pytest.raises(SessionNotFound):
        await store.get(s.account_id, s.session_id)
    with pytest.raises(SessionNotFound):
        await store.keep_alive(s.account_id, s.session_id)
    assert await redis_client.hget(ak.state, s.session_id) == value  # not rewritten
    with pytest.raises(SessionNotFound):
        await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    assert await store.abort_setup(s.account_id, s.session_id) == 2
    await store.setup(new())  # the account goes on
    assert (await store.account_sessions(s.account_id)).active_count == 1
    assert await store.end_all(s.account_id, EndReason.OPERATOR) == 1


@pytest.mark.parametrize("lengths", ["-3:abc", "5:dev-1-2:xy", "+5:dev-1", "0x5:dev-1"])
async def test_a_record_with_a_bad_string_length_ends_cleanly(
    store: SessionStore, redis_client: Any, clock: Clock, lengths: str
) -> None:
    """A damaged length prefix ends the strings a record is read for, in Lua as in Python:
    a negative one made record_strings loop for ever (an UNKILLABLE busy Redis, since
    end_session has written by then)."""
    s = new()
    await store.setup(s)
    ak = store.keys.account(s.account_id)
    await redis_client.hset(ak.state, s.session_id, f"{clock.now},0,120000;{lengths}")
    got = await store.get(s.account_id, s.session_id)
    assert got.state.value == "ACTIVE" and got.device_id in ("", "dev-1")
    assert await store.end(s.account_id, s.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED
    assert (await store.get(s.account_id, s.session_id)).device_id == got.device_id


async def test_damaged_0x_groups_are_moved_as_far_as_they_read(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    """0.x group lists with a bad length prefix move what they hold before it (a negative
    prefix looped for ever, a missing colon was a Lua error)."""
    ak = store.keys.account("acct-1")
    sids = [str(uuid.uuid4()) for _ in range(3)]
    await redis_client.zadd(ak.legacy + "active", {sid: clock.now + 60_000 for sid in sids})
    groups = ["4:uhd:-3:abc", "4:uhd:no-colon", "4:uhd:"]
    await redis_client.hset(ak.legacy + "rules", mapping=dict(zip(sids, groups, strict=True)))
    assert await store.migrate(["acct-1"]) == 1
    state = await redis_client.hgetall(ak.state)
    assert state["n"] == "3" and state["=uhd:"] == "3"
