"""Limit rules, eviction, replaces and the audit of rule counters, on every store backend."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from ipaddress import ip_address
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from srm import network
from srm.errors import LimitReached, SessionNotFound
from srm.keys import Keys
from srm.model import EndReason, Households, NewSession, Policy, Started, State
from srm.rules import Rule
from srm.store import SessionStore
from tests import invariants
from tests.helpers import Clock, reaper_for, sample

RULES = (
    Rule("uhd", 1, qualities=("UHD",)),
    Rule(
        "mobile",
        2,
        device_types=(
            "phone",
            "tablet",
        ),
    ),
    Rule("one-per-device", 1, device_types=("tv",), per="device", policy="evict"),
    Rule("same-title", 1, content_types=("LIVE",), per="content"),
)


@pytest.fixture
def policy() -> Policy:
    return Policy(timeout_ms=120_000, max_sessions=5, retention_ms=60_000, evict=False, rules=RULES)


def new(
    device: str = "dev-1",
    device_type: str = "web",
    quality: str | None = None,
    content: str = "100001V3D",
    content_type: str = "COD",
    replaces: str | None = None,
    account: str = "acct-1",
    address: str | None = None,
) -> NewSession:
    return NewSession(
        str(uuid.uuid4()),
        account,
        device,
        content,
        content_type,
        device_type=device_type,
        quality=quality,
        replaces=replaces,
        address=network.pack_address(ip_address(address)) if address else b"",
    )


async def state(store: SessionStore, s: NewSession) -> tuple[State, EndReason | None]:
    got = await store.get(s.account_id, s.session_id)
    return got.state, got.end_reason


async def test_a_rule_denies_and_names_itself_with_the_sessions_it_counts(
    store: SessionStore,
) -> None:
    first = new(quality="UHD", device="tv-1")
    await store.setup(first)
    await store.setup(new(quality="HD"))  # another quality: not counted by uhd
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(quality="UHD", device="tv-2"))
    assert (denied.value.rule, denied.value.limit, denied.value.active) == ("uhd", 1, 1)
    assert [s.session_id for s in denied.value.sessions] == [first.session_id]
    assert denied.value.sessions[0].device_id == "tv-1"
    assert denied.value.sessions[0].quality == "UHD"
    assert (await store.account_sessions("acct-1")).active_count == 2


@pytest.mark.parametrize("redis_client", ["standalone"], indirect=True)
async def test_setups_allowed_and_denied_are_one_redis_command_each(
    store: SessionStore, redis_client: Any
) -> None:
    """The denial detail (the counted sessions' records) comes from the setup script itself:
    MONITOR sees one command from the client per setup, allowed or denied."""
    await store.setup(new(quality="UHD", device="tv-1"))
    sent: list[str] = []
    async with redis_client.monitor() as monitor:
        await store.setup(new(quality="HD"))
        with pytest.raises(LimitReached) as denied:
            await store.setup(new(quality="UHD", device="tv-2"))
        await redis_client.echo("end of the setups")
        async for entry in monitor.listen():
            if entry["client_type"] == "lua":
                continue  # the script's own commands
            if "end of the setups" in entry["command"]:
                break
            sent.append(entry["command"].split()[0].upper())
    assert denied.value.sessions[0].device_id == "tv-1"
    handshakes = {"PING", "HELLO", "CLIENT", "SELECT", "AUTH"}  # new pooled connections
    assert [command for command in sent if command not in handshakes] == ["FCALL", "FCALL"]


@pytest.mark.parametrize("redis_client", ["standalone"], indirect=True)
async def test_setups_with_households_on_are_one_redis_command_each(
    redis_client: Any, keyspace: Keys, clock: Clock
) -> None:
    """With the households of docs/households.md on (rules by location and network, a
    learned home, a device registry), a setup that learns the home and registers its device,
    one that evicts, and ones denied by the registry, by location and per network are each
    one command from the client: the home, the registry and the counts are read and written
    inside the setup script."""
    households = (
        Rule("away", 1, locations=("away",)),
        Rule("two-places", 2, count="networks", policy="evict"),
        Rule("per-network", 2, per="network"),
    )
    policy = Policy(
        timeout_ms=120_000,
        max_sessions=5,
        retention_ms=60_000,
        evict=False,
        rules=(*RULES, *households),
        households=Households(learn_home=("tv",), devices_max=3),
    )
    store = SessionStore(redis_client, keyspace, policy, clock=clock, max_in_flight=64)
    await store.setup(new(account="acct-0"))  # the script loaded, a connection open
    denials = []
    sent: list[str] = []
    async with redis_client.monitor() as monitor:
        tv = new(device="tv-1", device_type="tv", address="203.0.113.7")
        await store.setup(tv)  # learns the home, registers the TV
        for allowed in (
            new(device="web-anna", address="203.0.113.45"),
            new(device="web-ben", address="198.51.100.20"),  # away
        ):
            clock.advance(1)  # keep-alives in order: the eviction's choice does not tie
            await store.setup(allowed)
        for refused in (
            new(device="laptop", address="192.0.2.33"),  # a fourth device
            new(device="web-anna", address="192.0.2.33"),  # a second stream away
        ):
            with pytest.raises(LimitReached) as denied:
                await store.setup(refused)
            denials.append(denied.value.rule)
        await store.setup(new(device="tv-1", device_type="tv", address="203.0.113.7"))  # evicts
        with pytest.raises(LimitReached) as denied:
            await store.setup(new(device="web-anna", address="203.0.113.46"))
        denials.append(denied.value.rule)
        await redis_client.echo("end of the setups")
        async for entry in monitor.listen():
            if entry["client_type"] == "lua":
                continue  # the script's own commands
            if "end of the setups" in entry["command"]:
                break
            sent.append(entry["command"].split()[0].upper())
    assert denials == ["devices", "away", "per-network"]
    assert await state(store, tv) == (State.ENDED, EndReason.EVICTED)
    assert await store.home("acct-1") == ["203.0.113.0/24"]
    handshakes = {"PING", "HELLO", "CLIENT", "SELECT", "AUTH"}  # new pooled connections
    assert [command for command in sent if command not in handshakes] == ["FCALL"] * 7
    await invariants.check(redis_client, keyspace)


async def test_the_account_limit_is_reported_as_account(store: SessionStore) -> None:
    for _ in range(5):
        await store.setup(new())
    with pytest.raises(LimitReached) as denied:
        await store.setup(new())
    assert (denied.value.rule, denied.value.limit, len(denied.value.sessions)) == ("account", 5, 5)


async def test_filters_and_groups(store: SessionStore) -> None:
    await store.setup(new(device="p1", device_type="phone"))
    await store.setup(new(device="p2", device_type="tablet"))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(device="p3", device_type="phone"))
    assert denied.value.rule == "mobile"
    await store.setup(new(device="w1", device_type="web"))  # not a mobile device
    # the same LIVE title twice is refused, another title or a COD of it is not
    await store.setup(new(content="ch1", content_type="LIVE"))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(content="ch1", content_type="LIVE", device="x"))
    assert denied.value.rule == "same-title"
    await store.setup(new(content="ch2", content_type="LIVE"))


async def test_zapping_on_a_tv_evicts_its_previous_session(store: SessionStore) -> None:
    first = new(device="tv-1", device_type="tv", content="ch1", content_type="COD")
    other_tv = new(device="tv-2", device_type="tv")
    await store.setup(first)
    await store.setup(other_tv)
    second = new(device="tv-1", device_type="tv", content="ch2")
    assert (await store.setup(second)).active == 2
    assert await state(store, first) == (State.ENDED, EndReason.EVICTED)
    assert await state(store, other_tv) == (State.ACTIVE, None)
    with pytest.raises(SessionNotFound) as gone:
        await store.keep_alive("acct-1", first.session_id)
    assert gone.value.ended is not None
    assert (gone.value.ended.reason, gone.value.ended.by_device_id) == (EndReason.EVICTED, "tv-1")


async def test_eviction_takes_the_oldest_keep_alive_of_the_refusing_rule(
    store: SessionStore, clock: Clock
) -> None:
    store.policy = dataclasses.replace(store.policy, evict=True)
    sessions = [new(device=f"d{i}") for i in range(5)]
    for s in sessions:
        await store.setup(s)
        clock.advance(1)
    await store.keep_alive("acct-1", sessions[0].session_id)  # now the freshest
    await store.setup(new(device="late"))
    assert await state(store, sessions[1]) == (State.ENDED, EndReason.EVICTED)
    assert all([(await state(store, s))[0] is State.ACTIVE for s in sessions[2:] + sessions[:1]])


async def test_replaces_ends_the_chosen_session_only_when_the_setup_succeeds(
    store: SessionStore,
) -> None:
    uhd = new(quality="UHD", device="tv-1")
    await store.setup(uhd)
    plain = new(device="web-1")
    await store.setup(plain)
    # replacing a session the refusing rule does not count: still denied, nothing ended
    with pytest.raises(LimitReached):
        await store.setup(new(quality="UHD", device="tv-2", replaces=plain.session_id))
    assert await state(store, plain) == (State.ACTIVE, None)
    # replacing the one that counts: the new one starts, the old one ends REPLACED
    chosen = new(quality="UHD", device="tv-2", replaces=uhd.session_id)
    assert (await store.setup(chosen)).active == 2
    assert await state(store, uhd) == (State.ENDED, EndReason.REPLACED)
    with pytest.raises(SessionNotFound) as gone:
        await store.keep_alive("acct-1", uhd.session_id)
    assert gone.value.ended is not None
    assert (gone.value.ended.reason, gone.value.ended.by_device_id) == (EndReason.REPLACED, "tv-2")


async def test_replaces_ignores_ids_that_are_not_active_sessions_of_the_account(
    store: SessionStore,
) -> None:
    theirs = new(account="acct-2")
    await store.setup(theirs)
    ended = new()
    await store.setup(ended)
    await store.end("acct-1", ended.session_id, EndReason.TEARDOWN)
    for target in (theirs.session_id, ended.session_id, str(uuid.uuid4())):
        await store.setup(new(replaces=target))
    assert await state(store, theirs) == (State.ACTIVE, None)
    assert await state(store, ended) == (State.ENDED, EndReason.TEARDOWN)


async def test_replaces_at_the_account_limit_makes_room(store: SessionStore) -> None:
    sessions = [new() for _ in range(5)]
    for s in sessions:
        await store.setup(s)
    assert (await store.setup(new(replaces=sessions[3].session_id))).active == 5
    assert await state(store, sessions[3]) == (State.ENDED, EndReason.REPLACED)


async def test_lapsed_sessions_count_for_no_rule(store: SessionStore, clock: Clock) -> None:
    lapsed, kept = new(quality="UHD"), new(device="tv-1", device_type="tv")
    await store.setup(lapsed)
    await store.setup(kept)
    clock.advance(100)
    await store.keep_alive(kept.account_id, kept.session_id)
    clock.advance(21)  # the first lapsed, no reaper ran; the tv's session is alive
    again = new(quality="UHD")
    assert (
        await store.setup(again)
    ).active == 2  # uhd (max 1) let it in: the lapsed one is not counted
    assert await state(store, lapsed) == (State.ENDED, EndReason.TIMEOUT)
    assert await state(store, kept) == (State.ACTIVE, None)
    assert await state(store, again) == (State.ACTIVE, None)
    with pytest.raises(LimitReached) as denied:  # and the new one is
        await store.setup(new(quality="UHD"))
    assert (denied.value.rule, denied.value.active) == ("uhd", 1)


async def test_a_config_change_never_misses_a_decrement(store: SessionStore) -> None:
    s = new(quality="UHD", device="p", device_type="phone")
    await store.setup(s)
    # the rules change (one removed, another added) while the session is active
    store.policy = dataclasses.replace(store.policy, rules=(Rule("uhd", 3),))
    await store.end("acct-1", s.session_id, EndReason.TEARDOWN)
    assert await counters(store, "acct-1") == {}


async def counters(store: SessionStore, account: str) -> dict[str, str]:
    """The account's counters: its ACTIVE count and rule counters."""
    fields = await store.redis.hgetall(store.keys.account(account).state)
    return {f: v for f, v in fields.items() if f == "n" or f.startswith("=")}


async def test_rule_overrides_per_account(store: SessionStore) -> None:
    limit = await store.set_limit("acct-1", None, {"uhd": 2})
    assert limit.rules is not None and limit.rules["uhd"].max == 2 and limit.rules["uhd"].override
    assert not limit.override and limit.rules["mobile"].override is False
    await store.setup(new(quality="UHD"))
    await store.setup(new(quality="UHD"))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(quality="UHD"))
    assert (denied.value.rule, denied.value.limit) == ("uhd", 2)
    await store.set_limit("acct-1", 7, {"uhd": None})
    got = await store.get_limit("acct-1")
    assert got.max_sessions == 7 and got.override
    assert got.rules is not None and (got.rules["uhd"].max, got.rules["uhd"].override) == (1, False)
    with pytest.raises(ValueError, match="unknown rule"):
        await store.set_limit("acct-1", 1, {"nope": 1})
    assert (await store.get_limit("acct-1")).max_sessions == 7  # nothing changed
    await store.set_limit("acct-1", None, {"mobile": 0})
    cleared = await store.clear_limit("acct-1")
    assert not cleared.override and cleared.rules is not None
    assert not any(r.override for r in cleared.rules.values())


async def test_a_max_of_zero_denies_even_with_evict(store: SessionStore) -> None:
    await store.set_limit("acct-1", None, {"one-per-device": 0})
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(device_type="tv"))
    assert (denied.value.rule, denied.value.limit, denied.value.sessions) == (
        "one-per-device",
        0,
        [],
    )


async def test_the_token_limit_applies_below_an_override(store: SessionStore) -> None:
    await store.setup(dataclasses.replace(new(), max_sessions=1))
    with pytest.raises(LimitReached):
        await store.setup(dataclasses.replace(new(), max_sessions=1))
    await store.set_limit("acct-1", 2, None)  # the operator's override wins over the claim
    await store.setup(dataclasses.replace(new(), max_sessions=1))


async def test_end_device_walks_a_large_account_in_bounded_windows(
    store: SessionStore,
) -> None:
    """Windows of 2 over 9 sessions of three devices: every session of the device ends, and
    no other device's, whichever windows they fall in."""
    await store.set_limit("acct-1", 100)
    devices = ["d1", "d2", "d3"] * 3
    for device in devices:
        await store.setup(new(device))
    assert await store.end_device("acct-1", "d2", EndReason.OPERATOR, batch=2) == 3
    listing = await store.account_sessions("acct-1")
    live = [s.device_id for s in listing.sessions if s.state is State.ACTIVE]
    assert sorted(live) == ["d1"] * 3 + ["d3"] * 3
    ended = [s for s in listing.sessions if s.state is State.ENDED]
    assert {(s.device_id, s.end_reason) for s in ended} == {("d2", EndReason.OPERATOR)}


async def test_end_device_ends_that_devices_sessions_only(store: SessionStore) -> None:
    mine = [new(device="d1") for _ in range(2)]
    other = new(device="d2")
    for s in [*mine, other]:
        await store.setup(s)
    assert await store.end_device("acct-1", "d1", EndReason.OPERATOR) == 2
    assert await store.end_device("acct-1", "d1", EndReason.OPERATOR) == 0
    for s in mine:
        assert await state(store, s) == (State.ENDED, EndReason.OPERATOR)
    assert await state(store, other) == (State.ACTIVE, None)


KINDS: dict[str, tuple[Rule, dict[str, Any]]] = {
    "account": (Rule("cap", 4), {}),
    "device": (Rule("dev", 4, per="device"), {"device": "tv"}),
    "content": (Rule("title", 4, per="content"), {"content": "ch1"}),
    "filtered": (Rule("uhd", 4, qualities=("UHD",)), {"quality": "UHD"}),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_sixty_concurrent_setups_yield_exactly_the_rules_max(
    store: SessionStore, kind: str
) -> None:
    rule, attributes = KINDS[kind]
    store.policy = dataclasses.replace(store.policy, max_sessions=100, rules=(rule,))
    results = await asyncio.gather(
        *(store.setup(new(**attributes)) for _ in range(60)), return_exceptions=True
    )
    assert sum(isinstance(r, Started) for r in results) == 4
    assert all(isinstance(r, Started | LimitReached) for r in results)
    assert {r.rule for r in results if isinstance(r, LimitReached)} == {rule.name}


async def test_concurrent_replaces_of_one_session_end_it_once(store: SessionStore) -> None:
    target = new(quality="UHD")
    await store.setup(target)
    results = await asyncio.gather(
        *(store.setup(new(quality="UHD", replaces=target.session_id)) for _ in range(20)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Started) for r in results) == 1  # uhd max 1: one wins the slot
    assert await state(store, target) == (State.ENDED, EndReason.REPLACED)


async def test_audit_repairs_rule_counters_and_counts_them(store: SessionStore) -> None:
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry)
    s = new(quality="UHD", device="p", device_type="phone")
    await store.setup(s)
    state = store.keys.account("acct-1").state
    await store.redis.hset(state, "=uhd:", 4)  # drifted
    await store.redis.hdel(state, "=mobile:")  # lost
    await store.redis.hset(state, "=same-title:x", 1)  # counts nothing
    await store.redis.zadd(store.keys.account("acct-1").due, {"acct-1": 2**45})  # too late
    assert await reaper.audit() == 4
    assert sample(registry, "srm_reaper_drift_repairs_total") == 4
    assert await reaper.audit() == 0
    await invariants.check(store.redis, store.keys)
    await store.end("acct-1", s.session_id, EndReason.TEARDOWN)
    assert await counters(store, "acct-1") == {}


@pytest.mark.parametrize("device", ["tv-é{s1}:|/", "5:x:", "📺" * 40])
async def test_any_device_id_is_safe_in_a_group(store: SessionStore, device: str) -> None:
    store.policy = dataclasses.replace(store.policy, rules=(Rule("dev", 1, per="device"),))
    first = new(device=device)
    await store.setup(first)
    with pytest.raises(LimitReached) as denied:
        await store.setup(new(device=device))
    assert [s.session_id for s in denied.value.sessions] == [first.session_id]
    await store.setup(new(device=device + "x"))
    await store.end("acct-1", first.session_id, EndReason.TEARDOWN)
    await store.setup(new(device=device))
