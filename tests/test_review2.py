"""Review of the account-hash layout: races, counters, the due index, TTLs, 0.x data and
damaged values (each test names the failure it guards against)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from srm.errors import LimitReached, SessionNotFound
from srm.model import EndReason, NewSession, Policy
from srm.rules import parse
from srm.store import EndOutcome, SessionStore
from tests import invariants
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
    await redis_client.hset(ak.ended, s.session_id, value)
    with pytest.raises(SessionNotFound):
        await store.get(s.account_id, s.session_id)
    with pytest.raises(SessionNotFound):
        await store.keep_alive(s.account_id, s.session_id)
    assert await redis_client.hget(ak.ended, s.session_id) == value  # not rewritten
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


@pytest.mark.parametrize("groups", ["/", "a/b/c", ",,", "uhd/dd", "=:"])
async def test_a_record_with_damaged_groups_ends_cleanly(
    store: SessionStore, redis_client: Any, clock: Clock, groups: str
) -> None:
    """A rule-group reference that does not read names no counter: the session ends, counted
    once, never a script error half-way (end_session has written by then)."""
    s = new()
    await store.setup(s)
    ak = store.keys.account(s.account_id)
    await redis_client.hset(
        ak.state, s.session_id, f"{clock.now},0,120000;5:dev-11:c3:COD0:0:{len(groups)}:{groups}"
    )
    assert await store.end(s.account_id, s.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED
    assert await redis_client.hget(ak.state, "n") is None


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


RULES = [
    {"name": "uhd", "max": 1, "qualities": ["UHD"]},
    {"name": "mobile", "max": 2, "device_types": ["phone"], "policy": "evict"},
    {"name": "one-per-tv", "max": 1, "device_types": ["tv"], "per": "device", "policy": "evict"},
    {"name": "per-title", "max": 2, "per": "content"},
]


async def assert_no_drift(store: SessionStore, accounts: list[str]) -> None:
    """The invariants hold, the audit finds nothing to repair, and no hash holding a
    session record has a TTL."""
    await invariants.check(store.redis, store.keys)
    for account in accounts:
        ak = store.keys.account(account)
        assert await store.audit(ak.shard, [account]) == []
        fields = await store.redis.hkeys(ak.state)
        if any(len(f) == 36 for f in fields):
            state = {f: v for f, v in (await store.redis.hgetall(ak.state)).items() if len(f) == 36}
            assert await store.redis.pttl(ak.state) == -1, f"{account}: TTL with records {state}"


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_races_leave_no_drift(
    redis_client: Any, keyspace: Any, clock: Clock, seed: int
) -> None:
    """Every operation, in any order and at any time, keeps `n`, the rule counters, the due
    score and the TTL exact (the audit never repairs anything), on a small account and on
    one of more than 128 fields (keep-alive and teardown leave its score early)."""
    rules = parse(RULES, qualities=("SD", "HD", "UHD"), content_types=(), policy="deny")
    policy = Policy(60_000, 3, 30_000, evict=True, rules=rules)
    store = SessionStore(redis_client, keyspace, policy, clock=clock)
    rng = random.Random(seed)
    accounts = ["small", "big"]
    await store.set_limit("big", 150)
    sids: dict[str, list[str]] = {a: [] for a in accounts}
    for i in range(140):  # the big account: more than 128 fields
        s = NewSession(str(uuid.uuid4()), "big", f"d{rng.randrange(200)}", f"c{i}", "COD")
        await store.setup(s)
        sids["big"].append(s.session_id)
    for step in range(400):
        account = rng.choice(accounts)
        mine = sids[account]
        op = rng.randrange(12)
        try:
            if op <= 2:
                s = NewSession(
                    str(uuid.uuid4()),
                    account,
                    rng.choice(["tv-1", "tv-2", "phone-1", "phone-2", "box"]),
                    rng.choice(["m1", "m2", "m3"]),
                    "COD",
                    device_type=rng.choice(["tv", "phone", "web"]),
                    quality=rng.choice(["HD", "UHD", None]),
                    replaces=rng.choice(mine) if mine and rng.random() < 0.3 else None,
                )
                mine.append(s.session_id)
                await store.setup(s)
            elif op <= 4 and mine:
                await store.keep_alive(account, rng.choice(mine))
            elif op == 5 and mine:
                await store.end(account, rng.choice(mine), EndReason.TEARDOWN)
            elif op == 6:
                await store.abort_setup(account, rng.choice([*mine, str(uuid.uuid4())]))
            elif op == 7 and rng.random() < 0.2:
                await store.end_all(account, EndReason.OPERATOR, batch=rng.choice([1, 7, 1000]))
            elif op == 8:
                await store.end_device(account, "tv-1", EndReason.OPERATOR, batch=2)
            elif op == 9:
                for a in accounts:
                    await store.sweep(store.keys.account(a).shard, rng.choice([1, 50]))
            elif op == 10:
                for a in accounts:
                    await store.purge(store.keys.account(a).shard, 50)
            else:
                clock.advance(rng.choice([1, 10, 31, 61]))
        except (LimitReached, SessionNotFound):
            pass
        if step % 20 == 0 or op in (7, 8, 9, 10):
            await assert_no_drift(store, accounts)
    await assert_no_drift(store, accounts)


async def test_a_hash_holding_a_record_never_has_a_ttl(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    """An account left with usage only expires 35 days later (a denial's usage too); a
    tombstone or a 0.x move must not leave a record in a hash that may expire first (the
    tombstone gone, a late copy of the setup would create its session)."""
    s = new()
    await store.setup(s)
    await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    clock.advance(61)
    ak = store.keys.account(s.account_id)
    await store.purge(ak.shard, 100)
    assert await redis_client.pttl(ak.state) > 0  # usage only
    tomb = str(uuid.uuid4())
    assert await store.abort_setup(s.account_id, tomb) == 3
    # the tombstone is in the ENDED hash, which never expires (the reaper empties it)
    assert await redis_client.hget(ak.ended, tomb) == "T"
    assert await redis_client.pttl(ak.ended) == -1
    clock.advance(61)
    await store.purge(ak.shard, 100)
    assert await redis_client.pttl(ak.state) > 0
    await store.set_limit(s.account_id, 0)
    await redis_client.pexpire(ak.state, 86_400_000)  # a day left, say
    with pytest.raises(LimitReached):  # a denial leaves no record, and its usage is kept
        await store.setup(new())
    assert 34 * 86_400_000 < await redis_client.pttl(ak.state) <= 35 * 86_400_000
    # a record written, then 0.x usage of a process still running: the move keeps no TTL
    other = store.keys.account("acct-2")
    assert await store.abort_setup("acct-2", str(uuid.uuid4())) == 3
    await redis_client.hset(other.legacy + "usage", "20833", "1,0,0,0,0,0,0,0,1")
    assert await store.migrate(["acct-2"]) == 1
    assert await redis_client.pttl(other.ended) == -1
    clock.advance(61)
    await store.purge(other.shard, 100)
    assert 0 < await redis_client.pttl(other.state) <= 35 * 86_400_000


async def test_an_abort_after_the_deadline_ends_the_session_as_timeout(
    store: SessionStore, clock: Clock
) -> None:
    """A session that lapsed before its abort already reads ENDED (TIMEOUT at its deadline);
    the abort must not turn that into a TEARDOWN later, watched past its deadline (end.lua
    does the same for a teardown)."""
    s = new()
    await store.setup(s)
    clock.advance(121)
    before = await store.get(s.account_id, s.session_id)
    assert before.end_reason is EndReason.TIMEOUT
    assert await store.abort_setup(s.account_id, s.session_id) == 1
    after = await store.get(s.account_id, s.session_id)
    assert (after.end_reason, after.ended_at) == (before.end_reason, before.ended_at)
    (usage,) = (await store.usage(s.account_id)).values()
    assert usage.watched_ms == 120_000


async def test_0x_data_written_during_a_rolling_upgrade_merges_into_the_hash(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    """A 0.x process still running (not supported: docs/storage.md says to stop them first)
    writes a session and usage for an account this version already holds: the next setup,
    read or reaper visit moves them in, counting both, due at the earlier deadline, usage days
    summed (peak: the larger)."""
    s1 = new()
    await store.setup(s1)
    t0, day = clock.now, str(clock.now // 86_400_000)
    clock.advance(10)
    ak = store.keys.account(s1.account_id)
    s2 = str(uuid.uuid4())
    await redis_client.zadd(ak.legacy + "active", {s2: t0 + 50_000})
    await redis_client.set(ak.legacy + "count", 1)
    await redis_client.hset(ak.legacy + "rules", mapping={s2: "4:uhd:", "uhd:": "1"})
    await redis_client.hset(
        ak.legacy_sessions + s2,
        mapping={"acct": s1.account_id, "dev": "old", "cid": "c", "ctype": "COD"}
        | {"created": str(t0 - 70_000), "ka": str(t0 - 70_000)},
    )
    await redis_client.hset(ak.legacy + "usage", day, "1,0,0,0,0,0,0,0,1")
    await redis_client.zadd(ak.legacy_deadlines, {f"{s1.account_id}/{s2}": t0 + 50_000})
    await store.account_sessions(s1.account_id)
    await store.keep_alive(s1.account_id, s1.session_id)
    state = await redis_client.hgetall(ak.state)
    assert (state["n"], state["=uhd:"]) == ("2", "1")
    assert await redis_client.zscore(ak.due, s1.account_id) == t0 + 50_000
    usage = (await store.usage(s1.account_id))[int(day)]
    assert (usage.started, usage.peak_active) == (2, 1)
    assert await redis_client.zcard(ak.legacy_deadlines) == 0
    assert (await store.get(s1.account_id, s2)).device_id == "old"
    clock.advance(41)
    assert (await store.sweep(ak.shard, 10)).ended == 1
    assert await redis_client.hget(ak.state, "n") == "1"
    assert await redis_client.zscore(ak.due, s1.account_id) == t0 + 130_000


async def test_the_audit_queues_again_a_record_a_0x_reaper_dequeued(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    """A 0.x reaper still running during a rolling upgrade purges the shared queue its own
    way: it drops a current record's member and leaves the record (it looks for 0.x keys
    only). The record then stayed for ever and its hash never expired; the audit, which
    reads every record, queues it again."""
    s = new()
    await store.setup(s)
    await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    tomb = str(uuid.uuid4())
    await store.abort_setup(s.account_id, tomb)
    ak = store.keys.account(s.account_id)
    clock.advance(61)
    for sid in (s.session_id, tomb):  # what 0.x purge.lua does with these members
        await redis_client.zrem(ak.reap, f"{s.account_id}/{sid}")
    assert await store.purge(ak.shard, 100) == 0
    repairs = await store.audit(ak.shard, [s.account_id])
    assert [(r.account_id, r.count) for r in repairs] == [(s.account_id, 2)]
    assert await store.purge(ak.shard, 100) == 2
    assert set(await redis_client.hkeys(ak.state)) == {str(clock.now // 86_400_000)}
    assert await redis_client.pttl(ak.state) > 0
    assert await store.audit(ak.shard, [s.account_id]) == []


async def test_a_rule_counter_as_long_as_a_sessionid_is_no_record(
    redis_client: Any, keyspace: Any, clock: Clock
) -> None:
    """A per-device counter field "=<rule>:<deviceId>" can be 36 characters long, like a
    sessionId: no reader may take it for a record (the audit would queue it for removal,
    the purge would delete it, the TTL check would count it)."""
    rules = parse(RULES, qualities=("SD", "HD", "UHD"), content_types=(), policy="deny")
    store = SessionStore(
        redis_client, keyspace, Policy(60_000, 3, 30_000, evict=False, rules=rules), clock=clock
    )
    device = "x" * (36 - len("=one-per-tv:"))
    s = NewSession(str(uuid.uuid4()), "acct-1", device, "c", "COD", device_type="tv")
    await store.setup(s)
    ak = store.keys.account("acct-1")
    assert await redis_client.hget(ak.state, f"=one-per-tv:{device}") == "1"
    await invariants.check(redis_client, keyspace)
    assert await store.audit(ak.shard, ["acct-1"]) == []
    assert (await store.account_sessions("acct-1")).active_count == 1
    await store.end("acct-1", s.session_id, EndReason.TEARDOWN)
    clock.advance(31)
    assert await store.purge(ak.shard, 10) == 1
    await invariants.check(redis_client, keyspace)


async def test_denied_setups_leave_nothing_in_the_account_hash(
    store: SessionStore, redis_client: Any
) -> None:
    """A client retrying a denied setup in a loop must not grow what every later denial of
    the account reads: a denial's marker lives in a key of its own, for 10 s."""
    for _ in range(3):
        await store.setup(new())
    ak = store.keys.account("acct-1")
    fields = await redis_client.hlen(ak.state)
    denied = [new() for _ in range(200)]
    for s in denied:
        with pytest.raises(LimitReached):
            await store.setup(s)
    assert await redis_client.hlen(ak.state) == fields
    marker = store.keys.denied("acct-1", denied[0].session_id)
    assert 0 < await redis_client.pttl(marker) <= 10_000
    usage = next(iter((await store.usage("acct-1")).values()))
    with pytest.raises(LimitReached) as again:  # a retry of the call: the same answer, once
        await store.setup(denied[0])
    assert (again.value.rule, again.value.limit) == ("account", 3)
    assert next(iter((await store.usage("acct-1")).values())).denied == usage.denied == 200
