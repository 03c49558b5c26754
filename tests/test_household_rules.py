"""Household rules and the device registry under concurrency and failure: 60-way races of
distinct-device and distinct-network counts, per-network groups and the registry (deny and
evict), the audit's repair of distinct counters, retried and raced device removals, the slot
a device's last session frees, and the choice of victims among devices and networks."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import pytest
from prometheus_client import CollectorRegistry

from srm.errors import LimitReached, SessionNotFound, TooSoon
from srm.model import EndReason, Households, NewSession, Policy, Started, State
from srm.rules import Rule
from srm.store import SessionStore
from tests import invariants
from tests.helpers import Clock, open_backend, reaper_for, sample

ACCOUNT = "acct-1"
HOME = "203.0.113.5"


@pytest.fixture(params=["standalone", "fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A real redis-server, and fakeredis for the fast loop (the races are about scripts
    being atomic, which every topology gives alike)."""
    async with open_backend(request, request.param) as client:
        yield client


@pytest.fixture
def policy() -> Policy:
    return Policy(timeout_ms=120_000, max_sessions=100, retention_ms=60_000, evict=False)


def network(i: int) -> str:
    """An address in the i-th /24 (i in 0..255): every i is another network."""
    return f"198.51.{i}.7"


def sid(n: int) -> str:
    """A sessionId that sorts by n (ties between equal keep-alives go by sessionId)."""
    return f"{n:08x}-0000-4000-8000-000000000000"


def new(
    device: str = "dev-1",
    address: str | None = HOME,
    *,
    quality: str | None = None,
    session_id: str | None = None,
    device_type: str = "web",
    account: str = ACCOUNT,
) -> NewSession:
    return NewSession(
        session_id or str(uuid.uuid4()),
        account,
        device,
        "100001V3D",
        "COD",
        device_type=device_type,
        quality=quality,
        address=ipaddress.ip_address(address).packed if address else b"",
    )


def with_rules(store: SessionStore, *rules: Rule, **households: Any) -> None:
    store.policy = dataclasses.replace(
        store.policy, rules=rules, households=Households(**households)
    )


async def state(store: SessionStore, s: NewSession) -> tuple[State, EndReason | None]:
    got = await store.get(s.account_id, s.session_id)
    return got.state, got.end_reason


async def events(store: SessionStore, account: str = ACCOUNT) -> list[dict[str, str]]:
    stream = store.keys.account(account).events
    return [e for _id, e in await store.redis.xrange(stream) if e["a"] == account]


async def live(store: SessionStore, account: str = ACCOUNT) -> list[Any]:
    listing = await store.account_sessions(account, limit=500)
    return [s for s in listing.sessions if s.state is State.ACTIVE]


# -- 60-way races ---------------------------------------------------------------------------


async def test_sixty_devices_at_once_register_exactly_devices_max(store: SessionStore) -> None:
    """60 setups from 60 devices against devices.max = 5: five register and stream, 55 are
    the `devices` denial listing those five; the registry, the events and the day's usage
    agree."""
    with_rules(store, devices_max=5)
    setups = [new(f"dev-{i}") for i in range(60)]
    results = await asyncio.gather(*(store.setup(s) for s in setups), return_exceptions=True)
    won = {s.device_id for s, r in zip(setups, results, strict=True) if isinstance(r, Started)}
    denials = [r for r in results if isinstance(r, LimitReached)]
    assert len(won) == 5 and len(denials) == 55
    for denial in denials:
        assert (denial.rule, denial.limit, denial.active) == ("devices", 5, 5)
        assert denial.devices is not None
        assert {d.device_id for d in denial.devices} == won
    registry = await store.devices(ACCOUNT)
    assert {d.device_id for d in registry.devices} == won
    assert {s.device_id for s in await live(store)} == won
    kinds = [e["t"] for e in await events(store)]
    assert (kinds.count("R"), kinds.count("S"), kinds.count("D")) == (5, 5, 55)
    [today] = (await store.usage(ACCOUNT)).values()
    assert (today.registered, today.started, today.denied) == (5, 5, 55)


@dataclasses.dataclass(frozen=True)
class Race:
    """A rule and 60 setups (device, address) racing against it."""

    rule: Rule
    setups: tuple[tuple[str, str], ...]

    def group(self, device: str, address: str) -> str:
        return address if self.rule.per == "network" else ""

    def value(self, device: str, address: str) -> str:
        return {"devices": device, "networks": address}.get(self.rule.count, "")


RACES = {
    # 60 devices, 60 networks: any two networks win
    "networks": Race(
        Rule("places", 2, count="networks"),
        tuple((f"d{i}", network(i)) for i in range(60)),
    ),
    # 60 devices in one network
    "devices": Race(Rule("screens", 4, count="devices"), tuple((f"d{i}", HOME) for i in range(60))),
    # 10 setups from each of 6 networks: every setup from the two that win must start
    "networks-repeated": Race(
        Rule("places", 2, count="networks"),
        tuple((f"d{i}", network(i % 6)) for i in range(60)),
    ),
    # 10 setups from each of 6 devices (in 60 networks)
    "devices-repeated": Race(
        Rule("screens", 3, count="devices"),
        tuple((f"d{i % 6}", network(i)) for i in range(60)),
    ),
    # 20 setups from each of 3 networks, at most 4 sessions per network
    "per-network": Race(
        Rule("per-net", 4, per="network"),
        tuple((f"d{i}", network(i % 3)) for i in range(60)),
    ),
    # 3 networks x 4 devices x 5 setups, at most 2 devices per network
    "per-network-devices": Race(
        Rule("lan", 2, per="network", count="devices"),
        tuple((f"d{i % 4}", network(i % 3)) for i in range(60)),
    ),
}


@pytest.mark.parametrize("kind", list(RACES))
async def test_sixty_concurrent_setups_count_distinct_values_exactly(
    store: SessionStore, kind: str
) -> None:
    """Deny: in every group exactly max devices (networks, sessions) win, every setup of a
    winning device (network) starts, every other setup is the rule's denial."""
    race = RACES[kind]
    with_rules(store, race.rule)
    setups = [
        dataclasses.replace(new(d, a), content_id=str(i)) for i, (d, a) in enumerate(race.setups)
    ]
    results = await asyncio.gather(*(store.setup(s) for s in setups), return_exceptions=True)
    assert all(isinstance(r, Started | LimitReached) for r in results), results
    winners: dict[str, set[str]] = {}
    for (d, a), s, r in zip(race.setups, setups, results, strict=True):
        if isinstance(r, Started):
            winners.setdefault(race.group(d, a), set()).add(race.value(d, a) or s.session_id)
    groups = {race.group(d, a) for d, a in race.setups}
    assert {g: len(v) for g, v in winners.items()} == dict.fromkeys(groups, race.rule.max)
    for (d, a), r in zip(race.setups, results, strict=True):
        value = race.value(d, a)
        if value and value in winners[race.group(d, a)]:
            assert isinstance(r, Started), f"{d} {a}: a setup of a counted value must start"
        elif isinstance(r, LimitReached):
            assert (r.rule, r.limit, r.active) == (race.rule.name, race.rule.max, race.rule.max)
    active = await live(store)
    assert sum(isinstance(r, Started) for r in results) == len(active)


@pytest.mark.parametrize("kind", list(RACES))
async def test_sixty_concurrent_setups_evict_to_exactly_the_max(
    store: SessionStore, kind: str
) -> None:
    """Evict: every setup starts; afterwards each group holds exactly max devices (networks,
    sessions), every ended session was EVICTED, once, and the counters are exact (the
    store fixture's invariants)."""
    race = RACES[kind]
    with_rules(store, dataclasses.replace(race.rule, policy="evict"))
    setups = [
        dataclasses.replace(new(d, a), content_id=str(i)) for i, (d, a) in enumerate(race.setups)
    ]
    results = await asyncio.gather(*(store.setup(s) for s in setups), return_exceptions=True)
    assert all(isinstance(r, Started) for r in results), results
    listing = await store.account_sessions(ACCOUNT, limit=500)
    active = [s for s in listing.sessions if s.state is State.ACTIVE]
    by_group: dict[str, set[str]] = {}
    for s in active:
        d, a = race.setups[int(s.content_id)]
        by_group.setdefault(race.group(d, a), set()).add(race.value(d, a) or s.session_id)
    groups = {race.group(d, a) for d, a in race.setups}
    assert {g: len(v) for g, v in by_group.items()} == dict.fromkeys(groups, race.rule.max)
    ended = [s for s in listing.sessions if s.state is State.ENDED]
    assert {s.end_reason for s in ended} <= {EndReason.EVICTED}
    assert len(active) + len(ended) == 60
    kinds = [e["t"] for e in await events(store)]
    assert (kinds.count("S"), kinds.count("E")) == (60, len(ended))


# -- the audit ------------------------------------------------------------------------------


async def test_audit_repairs_distinct_counters_and_counts_them(store: SessionStore) -> None:
    """Damaged distinct counters and value fields are set back to the truth of the ACTIVE
    records, each repair counted; ending the sessions then leaves no counter."""
    with_rules(
        store,
        Rule("places", 3, count="networks"),
        Rule("lan", 3, per="network", count="devices"),
    )
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry)
    sessions = [new("tv", network(1)), new("tv", network(2)), new("phone", network(1))]
    for s in sessions:
        await store.setup(s)
    ak = store.keys.account(ACCOUNT)
    net1 = bytes([198, 51, 1, 0])
    before = await store.redis.hgetall(ak.state)
    distinct = "=places+n:"
    value1 = (b"=places+n#0:" + net1).decode("utf-8", "surrogateescape")
    lan1 = b"=lan+d#4:" + net1
    lan_counter = (b"=lan+d:" + net1).decode("utf-8", "surrogateescape")
    lan_phone = (lan1 + b"phone").decode("utf-8", "surrogateescape")
    assert (before[distinct], before[value1], before[lan_counter], before[lan_phone]) == (
        "2",
        "2",
        "2",
        "1",
    )
    await store.redis.hset(ak.state, distinct, 5)  # drifted
    await store.redis.hset(ak.state, value1, 1)  # a value's sessions drifted
    await store.redis.hdel(ak.state, lan_phone)  # a value lost
    ghost = (lan1 + b"ghost").decode("utf-8", "surrogateescape")
    await store.redis.hset(ak.state, ghost, 1)  # a value of nothing
    await store.redis.hset(ak.state, "=places+n#0:\x01\x02\x03\x04", 1)  # another
    assert await reaper.audit() == 5
    assert sample(registry, "srm_reaper_drift_repairs_total") == 5
    assert await store.redis.hgetall(ak.state) == before
    assert await reaper.audit() == 0
    await invariants.check(store.redis, store.keys)
    for s in sessions:
        await store.end(ACCOUNT, s.session_id, EndReason.TEARDOWN)
    fields = await store.redis.hgetall(ak.state)
    assert [f for f in fields if f.startswith("=") or f == "n"] == []


# -- retries and races of the registry --------------------------------------------------------


async def test_a_retried_setup_after_a_devices_denial_answers_it_again(
    store: SessionStore,
) -> None:
    """The same sessionId again (its first answer lost) is the same denial, counted once,
    and registers nothing, even once a place is free."""
    with_rules(store, devices_max=2)
    for device in ("tv", "phone"):
        await store.setup(new(device))
    late = new("tablet")
    with pytest.raises(LimitReached) as first:
        await store.setup(late)
    await store.remove_device(ACCOUNT, "phone", by_operator=True)
    with pytest.raises(LimitReached) as again:
        await store.setup(late)
    for denial in (first.value, again.value):
        assert (denial.rule, denial.limit) == ("devices", 2)
        assert denial.devices is not None
    assert [d.device_id for d in again.value.devices or []] == ["tv"]
    assert [d.device_id for d in (await store.devices(ACCOUNT)).devices] == ["tv"]
    kinds = [e["t"] for e in await events(store)]
    assert (kinds.count("D"), kinds.count("R")) == (1, 2)
    [today] = (await store.usage(ACCOUNT)).values()
    assert (today.denied, today.registered) == (1, 2)
    await store.setup(new("tablet"))  # a new setup (sessionId) registers it
    assert {d.device_id for d in (await store.devices(ACCOUNT)).devices} == {"tv", "tablet"}


@pytest.mark.parametrize("cooldown", [0, 60_000])
async def test_concurrent_removals_of_one_device_end_its_sessions_once(
    store: SessionStore, cooldown: int
) -> None:
    """Twenty removals of one device at once: one unregisters it and ends its three
    sessions, the others find it unregistered (SRM-0004)."""
    with_rules(store, devices_max=3, swap_cooldown_ms=cooldown)
    mine = [new("tv") for _ in range(3)]
    other = new("phone")
    for s in [*mine, other]:
        await store.setup(s)
    results = await asyncio.gather(
        *(store.remove_device(ACCOUNT, "tv", by_operator=True) for _ in range(20)),
        return_exceptions=True,
    )
    assert sorted(r for r in results if isinstance(r, int)) == [3]
    assert all(isinstance(r, int | SessionNotFound) for r in results), results
    for s in mine:
        assert await state(store, s) == (State.ENDED, EndReason.OPERATOR)
    assert await state(store, other) == (State.ACTIVE, None)
    kinds = [e["t"] for e in await events(store)]
    assert (kinds.count("E"), kinds.count("X")) == (3, 1)
    assert [d.device_id for d in (await store.devices(ACCOUNT)).devices] == ["phone"]


async def test_concurrent_removals_of_devices_start_one_cooldown(store: SessionStore) -> None:
    """Ten devices removed at once under a swap cooldown: one removal, nine SRM-0011."""
    with_rules(store, devices_max=10, swap_cooldown_ms=60_000)
    for i in range(10):
        await store.setup(new(f"d{i}"))
    results = await asyncio.gather(
        *(store.remove_device(ACCOUNT, f"d{i}", by_operator=False) for i in range(10)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["TooSoon"] * 9 + ["int"]
    assert len((await store.devices(ACCOUNT)).devices) == 9
    assert len(await live(store)) == 9


async def test_a_device_streaming_past_forget_after_keeps_its_place(
    store: SessionStore, clock: Clock
) -> None:
    with_rules(store, devices_max=1, forget_after_ms=100_000)
    watching = new("tv")
    await store.setup(watching)
    for _ in range(2):
        clock.advance(55)
        await store.keep_alive(ACCOUNT, watching.session_id)  # still streaming at 110 s
    with pytest.raises(LimitReached):
        await store.setup(new("phone"))


@contextmanager
def replies_lost(store: SessionStore, script: str) -> Iterator[None]:
    """Every call of *script* runs, its reply is lost, and it is resent as it was."""
    real = store._run

    async def resent(name: str, keys: Any, args: Any, **kwargs: Any) -> Any:
        if name == script:
            await real(name, keys, args, **kwargs)
        return await real(name, keys, args, **kwargs)

    with patch.object(store, "_run", resent):
        yield


@pytest.mark.parametrize("cooldown", [0, 60_000])
async def test_a_resent_device_removal_answers_what_it_ended(
    store: SessionStore, cooldown: int
) -> None:
    """The removal's first run unregistered the device and ended its sessions; the resent
    call finds its marker: no SRM-0004, no cooldown refusal, the same count."""
    with_rules(store, devices_max=3, swap_cooldown_ms=cooldown)
    for _ in range(2):
        await store.setup(new("tv"))
    with replies_lost(store, "device_remove"):
        assert await store.remove_device(ACCOUNT, "tv", by_operator=False) == 2
    assert (await store.devices(ACCOUNT)).devices == []
    kinds = [e["t"] for e in await events(store)]
    assert (kinds.count("E"), kinds.count("X")) == (2, 1)


async def test_the_swap_cooldown_runs_on_the_stores_clock(
    store: SessionStore, clock: Clock
) -> None:
    """Like every time SRM compares, the cooldown is on the store's clock (the test clock
    here): one removal per 30 s, the listing says when the next one is allowed, the
    operator's force skips it without starting one."""
    with_rules(store, devices_max=4, swap_cooldown_ms=30_000)
    for device in ("a", "b", "c", "d"):
        await store.setup(new(device))
    start = clock.now
    await store.remove_device(ACCOUNT, "a", by_operator=False)
    assert (await store.devices(ACCOUNT)).next_removal_at == start + 30_000
    clock.advance(29.5)
    with pytest.raises(TooSoon) as early:
        await store.remove_device(ACCOUNT, "b", by_operator=False)
    assert early.value.retry_after == 1
    await store.remove_device(ACCOUNT, "b", by_operator=True, force=True)
    clock.advance(0.5)
    assert (await store.devices(ACCOUNT)).next_removal_at is None
    await store.remove_device(ACCOUNT, "c", by_operator=False)
    assert (await store.devices(ACCOUNT)).next_removal_at == clock.now + 30_000


# -- a device's (network's) last session frees its place ------------------------------------


def source(count: str, i: int) -> tuple[str, str]:
    """The i-th device (count devices, all at home) or network (count networks, one device)."""
    return (f"d{i}", HOME) if count == "devices" else ("dev", network(i))


@pytest.mark.parametrize("count", ["devices", "networks"])
@pytest.mark.parametrize("end", ["teardown", "lapse", "evicted"])
async def test_the_last_session_of_a_device_or_network_frees_its_place(
    store: SessionStore, clock: Clock, count: str, end: str
) -> None:
    """Two devices (networks) allowed: a third is refused while the first has a session,
    and starts once its last one ended (teardown, keep-alive lapsed, evicted by another
    rule), not before."""
    with_rules(
        store, Rule("two", 2, count=count), Rule("uhd", 1, qualities=("UHD",), policy="evict")
    )
    a, b = new(*source(count, 1), quality="UHD"), new(*source(count, 1))
    c = new(*source(count, 2))
    for s in (a, b, c):
        await store.setup(s)

    async def refused() -> None:
        with pytest.raises(LimitReached) as denied:
            await store.setup(new(*source(count, 3)))
        assert (denied.value.rule, denied.value.active) == ("two", 2)

    await refused()
    if end == "teardown":
        await store.end(ACCOUNT, a.session_id, EndReason.TEARDOWN)
        await refused()
        await store.end(ACCOUNT, b.session_id, EndReason.TEARDOWN)
    elif end == "lapse":
        clock.advance(60)
        await store.keep_alive(ACCOUNT, b.session_id)
        await store.keep_alive(ACCOUNT, c.session_id)
        clock.advance(61)  # a lapsed (the refused setup ends it)
        await refused()
        await store.keep_alive(ACCOUNT, c.session_id)
        clock.advance(60)  # b lapsed too
    else:
        await store.end(ACCOUNT, b.session_id, EndReason.TEARDOWN)
        await refused()
        await store.setup(new(*source(count, 2), quality="UHD"))  # uhd evicts a
        assert await state(store, a) == (State.ENDED, EndReason.EVICTED)
    await store.setup(new(*source(count, 3)))
    assert await state(store, c) == (State.ACTIVE, None)


@pytest.mark.parametrize("count", ["devices", "networks"])
async def test_evict_ends_every_session_of_the_device_or_network_idle_longest(
    store: SessionStore, clock: Clock, count: str
) -> None:
    """The first device (network) has two sessions, the older one older than the second
    device's: its latest keep-alive is the older one, so both its sessions end."""
    with_rules(store, Rule("two", 2, count=count, policy="evict"))
    a, b, c = new(*source(count, 1)), new(*source(count, 1)), new(*source(count, 2))
    for s in (a, c, b):
        await store.setup(s)
        clock.advance(1)
    await store.keep_alive(ACCOUNT, b.session_id)
    clock.advance(1)
    await store.keep_alive(ACCOUNT, c.session_id)  # the first source's latest is older now
    await store.setup(new(*source(count, 3)))
    assert await state(store, a) == (State.ENDED, EndReason.EVICTED)
    assert await state(store, b) == (State.ENDED, EndReason.EVICTED)
    assert await state(store, c) == (State.ACTIVE, None)


# -- which sessions eviction ends ------------------------------------------------------------

DISTINCT_RULES = (
    Rule("dv", 2, count="devices", policy="evict"),
    Rule("nw", 2, count="networks", policy="evict"),
    Rule("uhd", 1, qualities=("UHD",), policy="evict"),
)


async def build(
    store: SessionStore, clock: Clock, sessions: list[tuple[NewSession, float]]
) -> None:
    """Set up *sessions* at their times (seconds after now) over raised limits, then put the
    limits back: the account holds what no setup under them could have made."""
    await store.set_limit(ACCOUNT, 100, {r.name: 100 for r in store.policy.rules})
    start = clock.now
    for s, at in sessions:
        clock.now = start + int(at * 1000)
        await store.setup(s)
    await store.clear_limit(ACCOUNT)


async def test_eviction_keeps_the_newest_keep_alive_a_minimal_choice_allows(
    store: SessionStore, clock: Clock
) -> None:
    """UHD max 1 (evict) ends the three UHD sessions; then devices d1 (s4, keep-alive at 0)
    and d2 (s3, at 1) are one too many: d1's goes, the device whose latest keep-alive left
    is the oldest. Both are taken (each device's sessions together); giving back newest
    keep-alive first keeps s3."""
    store.policy = dataclasses.replace(store.policy, max_sessions=4, rules=DISTINCT_RULES)
    n1, n2, n3 = network(1), network(2), network(3)
    s4, s3 = new("d1", n1), new("d2", n2)
    s0, s1, s2 = (
        new("d2", n2, quality="UHD"),
        new("d1", n1, quality="UHD"),
        new("d3", n1, quality="UHD"),
    )
    await build(store, clock, [(s4, 0), (s3, 1), (s0, 2), (s1, 3), (s2, 4)])
    clock.advance(1)
    await store.setup(new("d4", n3, quality="UHD"))
    assert await state(store, s3) == (State.ACTIVE, None)
    for s in (s4, s0, s1, s2):
        assert await state(store, s) == (State.ENDED, EndReason.EVICTED)


async def test_eviction_candidates_that_tie_go_in_the_rules_order(
    store: SessionStore, clock: Clock
) -> None:
    """Device d3's sessions and network n2's have the same latest keep-alive and oldest
    session: d3's (rule dv, declared first) are taken first, which makes room for dv and nw
    but leaves a UHD session: the deny rule uhd refuses. (Taking n2's first would have
    ended all five sessions.)"""
    rules = (
        Rule("dv", 1, count="devices", policy="evict"),
        Rule("nw", 2, count="networks", policy="evict"),
        Rule("uhd", 1, qualities=("UHD",)),
    )
    store.policy = dataclasses.replace(store.policy, max_sessions=4, rules=rules)
    n1, n2, n3 = network(1), network(2), network(3)
    sessions = [
        (new("d3", n2, quality="UHD", session_id=sid(1)), 1),
        (new("d1", n2, quality="UHD", session_id=sid(2)), 1),
        (new("d3", n2, session_id=sid(3)), 3),
        (new("d3", n1, session_id=sid(4)), 3),
        (new("d3", n2, session_id=sid(5)), 3),
    ]
    await build(store, clock, sessions)
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("d1", n3, quality="UHD"))
    assert (denied.value.rule, denied.value.active) == ("uhd", 2)
    assert all([(await state(store, s))[0] is State.ACTIVE for s, _ in sessions])
