"""Households in the store, on every backend: each session's network and location, home
networks (set and learned), the rule additions (locations, per network, distinct devices and
networks) and the device registry (cap, forget, removal with a swap cooldown)."""

from __future__ import annotations

import dataclasses
import ipaddress
import uuid
from typing import Any

import pytest

from srm import network
from srm.errors import LimitReached, SessionNotFound, TooSoon
from srm.model import DAY_MS, EndReason, Households, NewSession, Policy, State
from srm.network import Networks
from srm.rules import Rule
from srm.store import SessionStore
from tests.helpers import Clock

HOME = "203.0.113.7"
HOME_TOO = "203.0.113.200"
AWAY = "198.51.100.9"
AWAY_V6 = "2001:db8:77::1"


@pytest.fixture
def policy() -> Policy:
    return Policy(
        timeout_ms=120_000,
        max_sessions=10,
        retention_ms=60_000,
        evict=False,
        households=Households(networks=Networks(), learn_home=("tv",)),
    )


def new(
    device: str = "tv-1",
    ip: str | None = HOME,
    device_type: str = "tv",
    account: str = "acct-1",
    content: str = "100001V3D",
) -> NewSession:
    return NewSession(
        str(uuid.uuid4()),
        account,
        device,
        content,
        "COD",
        device_type=device_type,
        address=network.pack_address(ipaddress.ip_address(ip) if ip else None),
    )


def with_policy(store: SessionStore, **changes: Any) -> SessionStore:
    """The same store with other households or rules."""
    rules = changes.pop("rules", store.policy.rules)
    house = dataclasses.replace(store.policy.households, **changes)
    return SessionStore(
        store.redis,
        store.keys,
        dataclasses.replace(store.policy, rules=rules, households=house),
        clock=store.clock,
    )


async def event_types(store: SessionStore, account: str = "acct-1") -> list[tuple[str, str]]:
    """(type, x) of the account's raw stream entries, oldest first."""
    stream = store.keys.events(store.keys.shard_of(account))
    entries = await store.redis.xrange(stream)
    return [(f["t"], f["x"]) for _id, f in entries if f["a"] == account]


async def listing(store: SessionStore, account: str = "acct-1") -> dict[str, Any]:
    page = await store.account_sessions(account)
    return {s.device_id: (s.state, s.network, s.location) for s in page.sessions}


# -- network and location ------------------------------------------------------------------


async def test_sessions_carry_their_network_and_location(store: SessionStore) -> None:
    await store.setup(new("ph-1", None, "phone"))  # no address, no home yet
    await store.setup(new("ph-2", AWAY_V6, "phone"))  # no home yet: location unknown
    await store.setup(new("tv-1", HOME))  # learns the home
    await store.setup(new("ph-3", AWAY, "phone"))
    assert await listing(store) == {
        "ph-1": (State.ACTIVE, None, None),
        "ph-2": (State.ACTIVE, "2001:db8:77::/56", None),
        "tv-1": (State.ACTIVE, "203.0.113.0/24", "home"),
        "ph-3": (State.ACTIVE, "198.51.100.0/24", "away"),
    }


async def test_an_ended_session_keeps_its_network_and_who_ended_it(store: SessionStore) -> None:
    store = with_policy(store, rules=(Rule("one", 1, policy="evict"),))
    first = new("tv-1", AWAY_V6)
    await store.setup(first)
    await store.setup(new("tv-2", HOME))
    got = await store.get("acct-1", first.session_id)
    assert (got.state, got.end_reason, got.network) == (
        State.ENDED,
        EndReason.EVICTED,
        "2001:db8:77::/56",
    )
    with pytest.raises(SessionNotFound) as gone:
        await store.keep_alive("acct-1", first.session_id)
    assert gone.value.ended.by_device_id == "tv-2"


async def test_records_of_the_previous_version_still_read_and_end(store: SessionStore) -> None:
    """A record without network (written before households) is a session like any other."""
    s = new()
    await store.setup(s)
    state = store.keys.account("acct-1").state
    value = await store.redis.hget(state, s.session_id)
    old = value[: value.rindex(":h") - 1]  # drop L(where): the record an older version wrote
    await store.redis.hset(state, s.session_id, old)
    assert (await listing(store))["tv-1"] == (State.ACTIVE, None, None)
    await store.setup(new("tv-2"))
    await store.end_device("acct-1", "tv-1", EndReason.OPERATOR)
    got = await store.get("acct-1", s.session_id)
    assert (got.state, got.end_reason, got.network) == (State.ENDED, EndReason.OPERATOR, None)


# -- home networks -------------------------------------------------------------------------


async def test_home_networks_set_read_and_cleared_with_one_event_per_change(
    store: SessionStore,
) -> None:
    nets = network.parse_home(["203.0.113.0/24", "2001:db8:5::/56"])
    assert await store.set_home("acct-1", nets) == ["203.0.113.0/24", "2001:db8:5::/56"]
    assert await store.set_home("acct-1", nets) == ["203.0.113.0/24", "2001:db8:5::/56"]
    assert await store.home("acct-1") == ["203.0.113.0/24", "2001:db8:5::/56"]
    assert await store.set_home("acct-1", []) == []
    assert await store.home("acct-1") == []
    assert await event_types(store) == [("H", "OPERATOR"), ("H", "OPERATOR")]


async def test_a_home_network_of_any_prefix_decides_the_location(store: SessionStore) -> None:
    await store.set_home("acct-1", network.parse_home(["203.0.112.0/23", "2001:db8:70::/44"]))
    await store.setup(new("a", HOME, "phone"))  # 203.0.113.7 lies in 203.0.112.0/23
    await store.setup(new("b", "203.0.114.1", "phone"))
    await store.setup(new("c", AWAY_V6, "phone"))  # 2001:db8:77:: lies in /44 of :70::
    await store.setup(new("d", "2001:db8:80::1", "phone"))
    await store.setup(new("e", None, "phone"))  # an unknown address is not home
    assert {d: loc for d, (_s, _n, loc) in (await listing(store)).items()} == {
        "a": "home",
        "b": "away",
        "c": "home",
        "d": "away",
        "e": "away",
    }


async def test_the_first_session_of_a_learning_device_type_sets_the_home(
    store: SessionStore,
) -> None:
    await store.setup(new("ph-1", AWAY, "phone"))  # phones do not set it
    assert await store.home("acct-1") == []
    await store.setup(new("tv-1", HOME))
    assert await store.home("acct-1") == ["203.0.113.0/24"]
    await store.setup(new("tv-2", AWAY))  # a home is kept once it exists
    assert await store.home("acct-1") == ["203.0.113.0/24"]
    assert (await listing(store))["tv-2"][2] == "away"
    assert ("H", "LEARNED") in await event_types(store)


async def test_a_denied_setup_learns_no_home(store: SessionStore) -> None:
    store = with_policy(store, rules=(Rule("none", 0),))
    with pytest.raises(LimitReached):
        await store.setup(new("tv-1", HOME))
    assert await store.home("acct-1") == []


# -- rule additions ------------------------------------------------------------------------


async def test_one_stream_away_from_home_and_any_at_home(store: SessionStore) -> None:
    store = with_policy(store, rules=(Rule("away", 1, locations=("away",)),))
    await store.setup(new("tv-1", HOME))
    await store.setup(new("ph-1", AWAY, "phone"))
    await store.setup(new("tv-2", HOME_TOO))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("ph-2", "192.0.2.1", "phone"))
    assert denied.value.rule == "away"
    assert [s.device_id for s in denied.value.sessions] == ["ph-1"]


async def test_an_account_without_home_is_all_home(store: SessionStore) -> None:
    store = with_policy(store, learn_home=(), rules=(Rule("away", 0, locations=("away",)),))
    await store.setup(new("ph-1", AWAY, "phone"))
    await store.setup(new("ph-2", "192.0.2.1", "phone"))
    assert len(await listing(store)) == 2


async def test_per_network_caps_each_network(store: SessionStore) -> None:
    store = with_policy(store, rules=(Rule("per-network", 2, per="network"),))
    await store.setup(new("a", HOME))
    await store.setup(new("b", HOME_TOO))  # the same /24
    await store.setup(new("c", AWAY))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("d", "203.0.113.99"))
    assert sorted(s.device_id for s in denied.value.sessions) == ["a", "b"]


async def test_two_networks_at_once_and_a_known_network_adds_nothing(
    store: SessionStore,
) -> None:
    store = with_policy(store, rules=(Rule("two-places", 2, count="networks"),))
    await store.setup(new("a", HOME))
    await store.setup(new("b", AWAY))
    await store.setup(new("c", HOME_TOO))  # a network already counted
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("d", AWAY_V6))
    assert (denied.value.rule, denied.value.active, denied.value.limit) == ("two-places", 2, 2)
    await store.end_device("acct-1", "b", EndReason.OPERATOR)
    await store.setup(new("d", AWAY_V6))  # the away network's last session freed its place


async def test_distinct_devices_and_a_device_with_several_streams(store: SessionStore) -> None:
    store = with_policy(store, rules=(Rule("two-devices", 2, count="devices"),))
    for device in ("a", "a", "b", "b", "a"):
        await store.setup(new(device))
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("c"))
    assert (denied.value.rule, denied.value.active) == ("two-devices", 2)
    assert len(denied.value.sessions) == 5


async def test_evict_ends_every_session_of_the_network_kept_alive_longest_ago(
    store: SessionStore, clock: Clock
) -> None:
    store = with_policy(store, rules=(Rule("two-places", 2, count="networks", policy="evict"),))
    home_old = new("a", HOME)
    away = new("b", AWAY)
    home_new = new("c", HOME_TOO)
    await store.setup(home_old)
    clock.advance(1)
    await store.setup(away)
    clock.advance(1)
    await store.setup(home_new)  # home's latest keep-alive is now the newest
    clock.advance(1)
    await store.setup(new("d", AWAY_V6))
    assert {d: s for d, (s, _n, _l) in (await listing(store)).items()} == {
        "a": State.ACTIVE,
        "b": State.ENDED,
        "c": State.ACTIVE,
        "d": State.ACTIVE,
    }
    clock.advance(1)
    # the home network's latest keep-alive (c, t2) is older than the v6 one's (d, t3): both of
    # its sessions go
    await store.setup(new("e", "192.0.2.1"))
    states = {d: s for d, (s, _n, _l) in (await listing(store)).items()}
    assert (states["a"], states["c"], states["d"], states["e"]) == (
        State.ENDED,
        State.ENDED,
        State.ACTIVE,
        State.ACTIVE,
    )


async def test_rules_keep_counting_what_they_counted_when_the_home_changes(
    store: SessionStore,
) -> None:
    """A session counts in the groups of its setup; a new home moves nothing."""
    store = with_policy(store, rules=(Rule("away", 1, locations=("away",)),))
    await store.set_home("acct-1", network.parse_home(["203.0.113.0/24"]))
    s = new("ph-1", AWAY, "phone")
    await store.setup(s)
    await store.set_home("acct-1", network.parse_home(["198.51.100.0/24"]))
    with pytest.raises(LimitReached) as denied:  # ph-1 still counts where it set up: away
        await store.setup(new("ph-2", "192.0.2.1", "phone"))
    assert [x.device_id for x in denied.value.sessions] == ["ph-1"]
    assert (await listing(store))["ph-1"][2] == "away"


# -- the device registry -------------------------------------------------------------------


def registry(store: SessionStore, devices: int = 2, cooldown_days: int = 0) -> SessionStore:
    return with_policy(store, devices_max=devices, swap_cooldown_ms=cooldown_days * DAY_MS)


async def test_a_full_registry_refuses_a_new_device_and_lists_the_registered(
    store: SessionStore, clock: Clock
) -> None:
    store = registry(store)
    await store.setup(new("tv-1"))
    clock.advance(1)
    await store.setup(new("ph-1", AWAY, "phone"))
    await store.setup(new("tv-1"))  # registered: no new place needed
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("tb-1", HOME, "tablet"))
    assert (denied.value.rule, denied.value.limit, denied.value.active) == ("devices", 2, 2)
    assert [(d.device_id, d.device_type) for d in denied.value.devices or []] == [
        ("tv-1", "tv"),
        ("ph-1", "phone"),
    ]
    assert len((await store.account_sessions("acct-1")).sessions) == 3  # nothing created
    listed = await store.devices("acct-1")
    assert ([d.device_id for d in listed.devices], listed.max) == (["tv-1", "ph-1"], 2)
    usage = next(iter((await store.usage("acct-1")).values()))
    assert (usage.registered, usage.denied) == (2, 1)


async def test_last_seen_is_written_at_most_hourly_or_when_the_type_changes(
    store: SessionStore, clock: Clock
) -> None:
    store = registry(store)
    await store.setup(new("tv-1"))
    first = clock.now
    clock.advance(1800)
    await store.setup(new("tv-1"))
    assert [d.last_seen for d in (await store.devices("acct-1")).devices] == [first]
    await store.setup(new("tv-1", device_type="stb"))  # a new type is written at once
    seen = (await store.devices("acct-1")).devices
    assert [(d.device_type, d.last_seen, d.first_seen) for d in seen] == [("stb", clock.now, first)]
    clock.advance(3601)
    await store.setup(new("tv-1", device_type="stb"))
    assert [d.last_seen for d in (await store.devices("acct-1")).devices] == [clock.now]


async def test_a_denied_setup_registers_nothing(store: SessionStore) -> None:
    store = with_policy(registry(store), rules=(Rule("none", 0, device_types=("tablet",)),))
    with pytest.raises(LimitReached):
        await store.setup(new("tb-1", HOME, "tablet"))
    assert (await store.devices("acct-1")).devices == []


async def test_a_retried_devices_denial_answers_the_same_and_lists_the_devices(
    store: SessionStore,
) -> None:
    store = registry(store, devices=1)
    await store.setup(new("tv-1"))
    refused = new("tv-2")
    for _ in range(2):
        with pytest.raises(LimitReached) as denied:
            await store.setup(refused)
        assert [d.device_id for d in denied.value.devices or []] == ["tv-1"]
    usage = next(iter((await store.usage("acct-1")).values()))
    assert usage.denied == 1


async def test_a_device_idle_for_forget_after_is_unregistered(
    store: SessionStore, clock: Clock
) -> None:
    store = with_policy(registry(store), forget_after_ms=10 * DAY_MS)
    first = new("tv-1")
    await store.setup(first)
    await store.end("acct-1", first.session_id, EndReason.TEARDOWN)
    clock.advance(5 * 86400)
    await store.setup(new("ph-1", AWAY, "phone"))
    clock.advance(6 * 86400)  # tv-1 idle 11 days, ph-1 6 days
    assert [d.device_id for d in (await store.devices("acct-1")).devices] == ["ph-1"]
    await store.setup(new("tb-1", HOME, "tablet"))
    with pytest.raises(LimitReached):
        await store.setup(new("tv-1"))  # forgotten, so new again, and the registry is full
    assert ("X", "FORGOTTEN") in await event_types(store)


async def test_removing_a_device_ends_its_sessions_and_starts_the_cooldown(
    store: SessionStore, clock: Clock
) -> None:
    store = registry(store, cooldown_days=30)
    await store.setup(new("tv-1"))
    await store.setup(new("tv-1", content="other"))
    await store.setup(new("ph-1", AWAY, "phone"))
    assert await store.remove_device("acct-1", "tv-1", by_operator=False) == 2
    states = [
        (s.device_id, s.state, s.end_reason)
        for s in (await store.account_sessions("acct-1")).sessions
    ]
    assert sorted(states) == [
        ("ph-1", State.ACTIVE, None),
        ("tv-1", State.ENDED, EndReason.OPERATOR),
        ("tv-1", State.ENDED, EndReason.OPERATOR),
    ]
    listed = await store.devices("acct-1")
    assert [d.device_id for d in listed.devices] == ["ph-1"]
    assert listed.next_removal_at == clock.now + 30 * DAY_MS
    with pytest.raises(TooSoon) as soon:
        await store.remove_device("acct-1", "ph-1", by_operator=False)
    assert soon.value.retry_after == 30 * 86400
    clock.advance(29 * 86400)  # the cooldown runs on the store's clock
    with pytest.raises(TooSoon) as soon:
        await store.remove_device("acct-1", "ph-1", by_operator=True)
    assert soon.value.retry_after == 86400
    with pytest.raises(SessionNotFound):
        await store.remove_device("acct-1", "tv-1", by_operator=True)
    clock.advance(86400)  # ph-1's session has lapsed meanwhile: it ends as TIMEOUT
    assert await store.remove_device("acct-1", "ph-1", by_operator=True) == 0
    assert [t for t in await event_types(store) if t[0] in "RX"] == [
        ("R", ""),
        ("R", ""),
        ("X", "CLIENT"),
        ("X", "OPERATOR"),
    ]


async def test_the_operator_may_force_a_removal_and_starts_no_cooldown(
    store: SessionStore,
) -> None:
    store = registry(store, cooldown_days=30)
    for device in ("tv-1", "tv-2"):
        await store.setup(new(device))
    await store.remove_device("acct-1", "tv-1", by_operator=False)
    assert await store.remove_device("acct-1", "tv-2", by_operator=True, force=True) == 1
    listed = await store.devices("acct-1")
    assert listed.devices == []
    assert listed.next_removal_at is not None  # the client's removal still holds it


async def test_an_unregistered_device_is_not_found(store: SessionStore) -> None:
    store = registry(store)
    with pytest.raises(SessionNotFound):
        await store.remove_device("acct-1", "never", by_operator=True)
