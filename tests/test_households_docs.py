"""The worked examples of docs/households.md, played against a real redis-server: each
example's TOML block goes through the configuration loader (so it stays valid configuration)
and the store it configures, and the story under it happens as the page tells it."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from bench import households as bench_households
from srm import network
from srm.config import Settings, load
from srm.connection import connect
from srm.errors import LimitReached, SessionNotFound, TooSoon
from srm.keys import Keys
from srm.model import DAY_MS, EndReason, NewSession, Session, State
from srm.process import policy
from srm.store import SessionStore
from tests import invariants
from tests.helpers import Clock, redis_settings
from tests.redis_servers import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "households.md"
ACCOUNT = "acct-1"
# the worked examples, by their headings on the page
HOME_AND_AWAY = "Home plus one stream away"
TWO_PLACES = "Two places at once"
FIVE_DEVICES = "Five devices, one swap a month"
EXAMPLES = {
    "home-and-away": HOME_AND_AWAY,
    "two-places": TWO_PLACES,
    "five-devices": FIVE_DEVICES,
}
_TOML = re.compile(r"^```toml\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section(heading: str) -> str:
    """The text under the page's ``### heading``, up to the next heading of level 1 to 3."""
    text = PAGE.read_text()
    start = re.search(rf"^### {re.escape(heading)}\n", text, re.MULTILINE)
    assert start is not None, f"docs/households.md has no example headed {heading!r}"
    end = re.compile(r"^#{1,3} ", re.MULTILINE).search(text, start.end())
    return text[start.end() : end.start() if end else len(text)]


def example_toml(heading: str) -> str:
    blocks = _TOML.findall(section(heading))
    assert len(blocks) == 1, f"the example {heading!r} should show one TOML block"
    return str(blocks[0])


def example_settings(heading: str, tmp_path: Path) -> Settings:
    """The settings of the example's TOML block, read as SRM_CONFIG would be."""
    path = tmp_path / "example.toml"
    path.write_text(example_toml(heading))
    return load(env={}, extra_file=path)


@pytest.fixture
async def open_store(real_redis: RedisProcess) -> AsyncIterator[Any]:
    """Opens stores on the real server, with a test clock; checks the invariants after."""
    redis = connect(redis_settings(url=real_redis.url))
    keys = Keys(16)

    def make(settings: Settings, clock: Clock) -> SessionStore:
        return SessionStore(redis, keys, policy(settings), clock=clock, max_in_flight=64)

    yield make
    await invariants.check(redis, keys)
    await redis.aclose()


def new(device: str, device_type: str, address: str, account: str = ACCOUNT) -> NewSession:
    return NewSession(
        str(uuid.uuid4()),
        account,
        device,
        "100001V3D",
        "COD",
        device_type=device_type,
        address=network.pack_address(ip_address(address)),
    )


def again(s: NewSession) -> NewSession:
    """The same setup as a new call (a new sessionId, as the API gives every setup)."""
    return dataclasses.replace(s, session_id=str(uuid.uuid4()))


async def session(store: SessionStore, s: NewSession) -> Session:
    return await store.get(s.account_id, s.session_id)


async def where(store: SessionStore, s: NewSession) -> tuple[str | None, str | None]:
    got = await session(store, s)
    return got.network, got.location


async def events(store: SessionStore, account: str = ACCOUNT) -> list[dict[str, str]]:
    """The account's raw events (srm/lua/_events.lua), oldest first."""
    stream = store.keys.account(account).events
    entries = await store.redis.xrange(stream)
    return [fields for _id, fields in entries if fields.get("a") == account]


def kinds(entries: list[dict[str, str]], kind: str) -> list[tuple[str, str]]:
    """(deviceId, how) of the events of one kind: R registered, X removed, H home changed."""
    return [(e["d"], e["x"]) for e in entries if e["t"] == kind]


def test_bench_run_measures_the_examples_as_the_page_shows_them(tmp_path: Path) -> None:
    """bench/run --only households (bench/households.py) measures the settings each example
    shows: its rules, its [network] and its [devices]."""
    for name, heading in EXAMPLES.items():
        rules, variables = bench_households.EXAMPLES[name]
        shown = example_settings(heading, tmp_path)
        measured = load(env={"SRM_SESSIONS_RULES": json.dumps(rules), **variables})
        assert shown.sessions.rules == measured.sessions.rules, name
        assert shown.network == measured.network, name
        assert shown.devices == measured.devices, name


async def test_home_plus_one_stream_away(open_store: Any, tmp_path: Path) -> None:
    settings = example_settings(HOME_AND_AWAY, tmp_path)
    store: SessionStore = open_store(settings, Clock())

    # 1. the TV teaches the account its home
    tv = new("tv-living-room", "tv", "203.0.113.7")
    await store.setup(tv)
    assert await store.home(ACCOUNT) == ["203.0.113.0/24"]
    assert await where(store, tv) == ("203.0.113.0/24", "home")
    # 2. a phone on the home Wi-Fi: home, not counted by the away rule
    phone_home = new("phone-anna", "phone", "203.0.113.45")
    await store.setup(phone_home)
    assert await where(store, phone_home) == ("203.0.113.0/24", "home")
    # 3. a phone on a mobile network: the first stream away
    phone_away = new("phone-ben", "phone", "198.51.100.20")
    await store.setup(phone_away)
    assert await where(store, phone_away) == ("198.51.100.0/24", "away")
    # 4. a laptop at the holiday flat: refused by the away rule, the account has room
    laptop = new("laptop", "web", "192.0.2.33")
    with pytest.raises(LimitReached) as denied:
        await store.setup(laptop)
    assert (denied.value.rule, denied.value.limit) == ("away", 1)
    assert [s.session_id for s in denied.value.sessions] == [phone_away.session_id]
    listing = await store.account_sessions(ACCOUNT)
    assert (listing.active_count, listing.max_sessions) == (3, 4)
    with pytest.raises(SessionNotFound):
        await session(store, laptop)
    # 5. the mobile phone stops; the laptop plays, away
    await store.end(ACCOUNT, phone_away.session_id, EndReason.TEARDOWN)
    laptop = again(laptop)
    await store.setup(laptop)
    assert await where(store, laptop) == ("192.0.2.0/24", "away")
    # 6. the operator adds the holiday flat's network: a tablet there is home, the fourth
    # stream; the laptop's session stays counted as it started
    await store.set_home(ACCOUNT, network.parse_home(["203.0.113.0/24", "192.0.2.0/24"]))
    tablet = new("tablet", "tablet", "192.0.2.80")
    assert (await store.setup(tablet)).active == 4
    assert await where(store, tablet) == ("192.0.2.0/24", "home")
    assert await where(store, laptop) == ("192.0.2.0/24", "away")
    homes = [e["x"] for e in await events(store) if e["t"] == "H"]
    assert homes == ["LEARNED", "OPERATOR"]


async def test_a_dual_stack_home_is_two_networks(open_store: Any, tmp_path: Path) -> None:
    """Behind a load balancer, "Prefixes": a learned home holds the teaching device's network
    only; a phone of that home on IPv6 is away. Addresses of one /56 are one network."""
    store: SessionStore = open_store(example_settings(HOME_AND_AWAY, tmp_path), Clock())
    await store.setup(new("tv-living-room", "tv", "203.0.113.7"))
    phone = new("phone-anna", "phone", "2001:db8:5:1::10")
    await store.setup(phone)
    assert await where(store, phone) == ("2001:db8:5::/56", "away")
    other = new("tablet", "tablet", "2001:db8:5:2:aaaa::1")
    with pytest.raises(LimitReached) as denied:  # the same network, away: one away already
        await store.setup(other)
    assert denied.value.rule == "away"
    await store.set_home(ACCOUNT, network.parse_home(["203.0.113.0/24", "2001:db8:5::/56"]))
    await store.setup(again(other))
    assert await where(store, phone) == ("2001:db8:5::/56", "away")  # as it started


async def test_two_places_at_once(open_store: Any, tmp_path: Path) -> None:
    settings = example_settings(TWO_PLACES, tmp_path)
    clock = Clock()  # 20:00:00
    store: SessionStore = open_store(settings, clock)

    # 1. the home TV, then a phone at home: one network
    tv = new("tv-living-room", "tv", "203.0.113.7")
    await store.setup(tv)
    clock.advance(5)
    phone_home = new("phone-anna", "phone", "203.0.113.45")
    await store.setup(phone_home)
    # 2. a tablet at home: refused by per-network
    clock.advance(5)
    with pytest.raises(LimitReached) as denied:
        await store.setup(new("tablet", "tablet", "203.0.113.80"))
    assert (denied.value.rule, denied.value.limit) == ("per-network", 2)
    counted = {s.session_id for s in denied.value.sessions}
    assert counted == {tv.session_id, phone_home.session_id}
    # 3. a phone at the bar: the second network
    clock.advance(10)
    bar = new("phone-ben", "phone", "198.51.100.20")
    await store.setup(bar)
    # 4. the TV's keep-alive
    clock.advance(20)
    await store.keep_alive(ACCOUNT, tv.session_id)
    # 5. a laptop at the office: the bar's network has the oldest latest keep-alive
    clock.advance(10)
    laptop = new("laptop-office", "web", "192.0.2.33")
    await store.setup(laptop)
    ended = await session(store, bar)
    assert (ended.state, ended.end_reason) == (State.ENDED, EndReason.EVICTED)
    with pytest.raises(SessionNotFound) as gone:
        await store.keep_alive(ACCOUNT, bar.session_id)
    assert gone.value.ended is not None
    assert gone.value.ended.by_device_id == "laptop-office"
    for s in (tv, phone_home, laptop):
        assert (await session(store, s)).state == State.ACTIVE
    # 6. a phone at the office: its network is counted already
    clock.advance(10)
    assert (await store.setup(new("phone-carl", "phone", "192.0.2.40"))).active == 4


async def test_two_places_without_the_keep_alive_evicts_the_home(
    open_store: Any, tmp_path: Path
) -> None:
    """Step 5's other case: without the TV's keep-alive, the home's latest keep-alive is the
    phone's, older than the bar's, and both home streams end."""
    clock = Clock()
    store: SessionStore = open_store(example_settings(TWO_PLACES, tmp_path), clock)
    tv = new("tv-living-room", "tv", "203.0.113.7")
    await store.setup(tv)
    clock.advance(5)
    phone_home = new("phone-anna", "phone", "203.0.113.45")
    await store.setup(phone_home)
    clock.advance(15)
    bar = new("phone-ben", "phone", "198.51.100.20")
    await store.setup(bar)
    clock.advance(30)
    await store.setup(new("laptop-office", "web", "192.0.2.33"))
    for s in (tv, phone_home):
        got = await session(store, s)
        assert (got.state, got.end_reason) == (State.ENDED, EndReason.EVICTED)
    assert (await session(store, bar)).state == State.ACTIVE


async def test_five_devices_one_swap_a_month(open_store: Any, tmp_path: Path) -> None:
    settings = example_settings(FIVE_DEVICES, tmp_path)
    clock = Clock()
    store: SessionStore = open_store(settings, clock)
    home = "203.0.113.7"
    five = {
        "tv-living-room": "tv",
        "tv-bedroom": "tv",
        "phone-anna": "phone",
        "phone-ben": "phone",
        "tablet": "tablet",
    }

    # 1. five devices play, each registered by its first setup
    for device, kind in five.items():
        s = new(device, kind, home)
        await store.setup(s)
        await store.end(ACCOUNT, s.session_id, EndReason.TEARDOWN)
        clock.advance(60)
    listed = await store.devices(ACCOUNT)
    assert [d.device_id for d in listed.devices] == list(five)
    assert [d.device_type for d in listed.devices] == list(five.values())
    assert (listed.max, listed.next_removal_at) == (5, None)
    day = clock() // DAY_MS
    assert (await store.usage(ACCOUNT))[day].registered == 5
    assert kinds(await events(store), "R") == [(d, "") for d in five]
    # 2. a sixth device is refused with the registered devices; a registered one plays
    laptop = new("laptop-guest", "web", home)
    with pytest.raises(LimitReached) as denied:
        await store.setup(laptop)
    assert (denied.value.rule, denied.value.limit) == ("devices", 5)
    assert [d.device_id for d in denied.value.devices or []] == list(five)
    assert len((await store.devices(ACCOUNT)).devices) == 5
    await store.setup(new("tv-living-room", "tv", home))
    # 3. the phone streaming is removed: its session ends; the laptop plays
    ben = new("phone-ben", "phone", home)
    await store.setup(ben)
    assert await store.remove_device(ACCOUNT, "phone-ben", by_operator=False) == 1
    got = await session(store, ben)
    assert (got.state, got.end_reason) == (State.ENDED, EndReason.OPERATOR)
    await store.setup(again(laptop))
    listed = await store.devices(ACCOUNT)
    assert "laptop-guest" in [d.device_id for d in listed.devices]
    # 4. another removal right after: 429 SRM-0011, Retry-After 30 days
    with pytest.raises(TooSoon) as soon:
        await store.remove_device(ACCOUNT, "tv-bedroom", by_operator=False)
    assert soon.value.retry_after == 30 * 86400
    next_removal = (await store.devices(ACCOUNT)).next_removal_at
    assert next_removal == clock() + 30 * DAY_MS
    # 5. support forces a removal: no wait, and the cooldown stays as it was
    assert await store.remove_device(ACCOUNT, "tablet", by_operator=True, force=True) == 0
    listed = await store.devices(ACCOUNT)
    assert "tablet" not in [d.device_id for d in listed.devices]
    assert listed.next_removal_at == next_removal
    with pytest.raises(TooSoon):
        await store.remove_device(ACCOUNT, "tv-bedroom", by_operator=False)
    assert kinds(await events(store), "X") == [("phone-ben", "CLIENT"), ("tablet", "OPERATOR")]
    # 6. 91 days later, only the living-room TV has played since: the others are forgotten
    clock.advance(60 * 86400)
    tv = new("tv-living-room", "tv", home)
    await store.setup(tv)
    await store.end(ACCOUNT, tv.session_id, EndReason.TEARDOWN)
    clock.advance(31 * 86400)
    assert [d.device_id for d in (await store.devices(ACCOUNT)).devices] == ["tv-living-room"]
    newcomers = [f"phone-{i}" for i in range(4)]
    for device in newcomers:
        s = new(device, "phone", home)
        await store.setup(s)
        await store.end(ACCOUNT, s.session_id, EndReason.TEARDOWN)
    listed = await store.devices(ACCOUNT)
    assert [d.device_id for d in listed.devices] == ["tv-living-room", *newcomers]
    forgotten = [d for d, how in kinds(await events(store), "X") if how == "FORGOTTEN"]
    assert sorted(forgotten) == ["laptop-guest", "phone-anna", "tv-bedroom"]
    assert (await store.usage(ACCOUNT))[clock() // DAY_MS].registered == 4


def test_behind_a_load_balancer_a_client_cannot_choose_its_address() -> None:
    """The rules of "Behind a load balancer", with a load balancer at 10.0.0.5."""
    lb = network.Networks.of(["10.0.0.0/24"], 24, 56)
    real = "198.51.100.20"
    # direct: the peer, whatever the header says
    assert str(lb.client_address(real, ["192.0.2.1"])) == real
    # behind the load balancer, a forged entry stands left of the real address
    assert str(lb.client_address("10.0.0.5", [f"192.0.2.1, {real}"])) == real
    # two layers of trusted proxies: the right-most address that is not one
    assert str(lb.client_address("10.0.0.5", [f"192.0.2.1, {real}", "10.0.0.9"])) == real
    # anything that is not an address: none of the header is used
    assert str(lb.client_address("10.0.0.5", [f"{real}, nonsense"])) == "10.0.0.5"
    # every address a trusted proxy: the left-most
    assert str(lb.client_address("10.0.0.5", ["10.0.0.7, 10.0.0.9"])) == "10.0.0.7"
    # no trusted proxies: the header is ignored
    assert str(network.Networks().client_address("10.0.0.5", [real])) == "10.0.0.5"
    # IPv4-mapped IPv6 is IPv4; one /56 is one network
    assert str(lb.client_address("::ffff:203.0.113.7", [])) == "203.0.113.7"
    one = lb.network_of(ip_address("2001:db8:5:1::10"))
    assert one == lb.network_of(ip_address("2001:db8:5:2:aaaa::1"))
