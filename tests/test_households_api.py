"""Households over HTTP (API.md, "Households"): the client address and its network (spoofing
included), sessions' network and location, home networks, the device registry's endpoints,
its denial and its swap cooldown (429 SRM-0011 with Retry-After)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

from srm import process
from srm.api import bodies
from srm.config import Settings, load
from srm.model import DAY_MS, Device, Policy
from srm.store import SessionStore
from tests.helpers import (
    OPERATOR,
    OPERATOR_KEY,
    SECRET,
    SETUP,
    T0,
    Clock,
    api,
    expect_error,
    open_backend,
    token,
)
from tests.processes import srm_serve
from tests.redis_servers import RedisProcess
from tests.test_answers import raw_request

LOOPBACK = "127.0.0.0/24"  # the aiohttp test client's peer, 127.0.0.1, cut to 24 bits


@pytest.fixture(params=["standalone", "cluster"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A real standalone and a real Cluster (the household keys share the account's slot)."""
    async with open_backend(request, request.param) as client:
        yield client


@pytest.fixture
def settings() -> Settings:
    return load(
        env={
            "SRM_AUTH_SECRET": SECRET,
            "SRM_OPERATOR_KEYS": OPERATOR_KEY,
            "SRM_REDIS_SHARDS": "16",
            "SRM_MAX_SESSIONS": "10",
        }
    )


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return process.policy(settings)


def client_headers(
    account: str = "acct-1", device: str = "dev-1", forwarded: Sequence[str] = (), **claims: Any
) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict({"Client-Token": token(account, device, **claims)})
    for value in forwarded:
        headers.add("X-Forwarded-For", value)
    return headers


async def start(
    client: Any, account: str = "acct-1", device: str = "dev-1", **kw: Any
) -> dict[str, Any]:
    """The body of a setup (success or denial)."""
    resp = await client.post(
        "/srm/sessions", json=SETUP, headers=client_headers(account, device, **kw)
    )
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def started(client: Any, account: str = "acct-1", device: str = "dev-1", **kw: Any) -> str:
    answer = await start(client, account, device, **kw)
    assert "successResponse" in answer, answer
    return str(answer["successResponse"]["sessionId"])


async def session_of(client: Any, sid: str, account: str = "acct-1") -> dict[str, Any]:
    resp = await client.get(f"/srm/sessions/{sid}", headers=client_headers(account))
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    return answer


# -- the client address ------------------------------------------------------------------------


async def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says(
    client: Any,
) -> None:
    """Spoofing: a client that is not behind a trusted proxy cannot choose its network."""
    plain = await started(client)
    spoofing = await started(client, forwarded=["203.0.113.7"])
    chained = await started(client, forwarded=["203.0.113.7, 198.51.100.1"])
    for sid in (plain, spoofing, chained):
        got = await session_of(client, sid)
        assert (got["network"], got["location"]) == (LOOPBACK, None)


@pytest.mark.parametrize(
    ("forwarded", "network"),
    [
        (["203.0.113.7"], "203.0.113.0/24"),
        # the right-most address that is not a trusted proxy: the ones left of it are the
        # client's to write
        (["198.51.100.9, 203.0.113.7, 127.0.0.5"], "203.0.113.0/24"),
        (["198.51.100.9,203.0.113.7 , 127.0.0.5,127.1.2.3"], "203.0.113.0/24"),
        # several headers are one list, in the order received
        (["198.51.100.9", "203.0.113.7"], "203.0.113.0/24"),
        (["203.0.113.7", "198.51.100.9"], "198.51.100.0/24"),
        (["203.0.113.7", "198.51.100.9, 127.0.0.9"], "198.51.100.0/24"),
        # IPv6, cut to 56 bits; brackets and an IPv4-mapped address
        (["2001:db8:5:ff::1"], "2001:db8:5::/56"),
        (["[2001:db8:5:1ff::1]"], "2001:db8:5:100::/56"),
        (["::ffff:203.0.113.7"], "203.0.113.0/24"),
        # malformed from a trusted proxy: nothing in it is believed, the peer is the client
        (["203.0.113.7, not-an-address"], LOOPBACK),
        (["203.0.113.7", ""], LOOPBACK),
        (["unknown"], LOOPBACK),
        (["203.0.113.7:443"], LOOPBACK),
        # every hop a trusted proxy: the left-most one
        (["127.0.0.9, 127.0.0.5"], LOOPBACK),
    ],
)
async def test_behind_a_trusted_proxy_the_right_most_untrusted_forwarded_address_counts(
    settings: Settings, store: SessionStore, forwarded: list[str], network: str
) -> None:
    trusting = settings.replace("network", trusted_proxies=("127.0.0.0/8",))
    async with api(trusting, store) as client:
        sid = await started(client, forwarded=forwarded)
        got = await session_of(client, sid)
    assert (got["network"], got["location"]) == (network, None)


async def test_a_real_server_believes_only_its_trusted_proxies(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    """`srm serve` with SRM_TRUSTED_PROXIES: a request from a trusted peer is placed by its
    X-Forwarded-For; without the setting the same header is ignored."""
    setup = json.dumps(SETUP).encode()
    spoofed = {"X-Forwarded-For": "203.0.113.7", "Content-Type": "application/json"}

    def network_seen(base: str, account: str) -> Any:
        request = urllib.request.Request(  # noqa: S310
            base + "/srm/sessions",
            data=setup,
            method="POST",
            headers={**spoofed, "Client-Token": token(account, "dev-1")},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            assert "successResponse" in json.load(answer)
        listing = urllib.request.Request(  # noqa: S310
            f"{base}/srm/v1/accounts/{account}/sessions",
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        )
        with urllib.request.urlopen(listing, timeout=10) as answer:  # noqa: S310
            (session,) = json.load(answer)["sessions"]
        return session["network"], session["location"]

    common = {"SRM_REDIS_URL": real_redis.url, "SRM_OPERATOR_KEYS": OPERATOR_KEY}
    with srm_serve(tmp_path, SRM_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1/32", **common) as srm:
        assert network_seen(srm.base, "behind-proxy") == ("203.0.113.0/24", None)
    with srm_serve(tmp_path, **common) as srm:
        assert network_seen(srm.base, "direct") == (LOOPBACK, None)


# -- home networks -----------------------------------------------------------------------------


async def home_of(client: Any, account: str = "acct-1", prefix: str = "/srm/v1") -> Any:
    resp = await client.get(f"{prefix}/accounts/{account}/home", headers=OPERATOR)
    assert resp.status == 200
    return (await resp.json())["networks"]


@pytest.mark.parametrize("prefix", ["/srm", "/srm/v1"])
async def test_home_networks_are_set_read_and_cleared_and_place_each_session(
    client: Any, prefix: str
) -> None:
    path = f"{prefix}/accounts/acct-1/home"
    assert await home_of(client, prefix=prefix) == []
    before = await started(client)
    resp = await client.put(path, json={"networks": [LOOPBACK, "2001:db8::/48"]}, headers=OPERATOR)
    assert resp.status == 200
    assert await resp.json() == {"networks": [LOOPBACK, "2001:db8::/48"]}
    assert await home_of(client, prefix=prefix) == [LOOPBACK, "2001:db8::/48"]
    at_home = await started(client)
    resp = await client.put(path, json={"networks": ["203.0.113.0/24"]}, headers=OPERATOR)
    assert await resp.json() == {"networks": ["203.0.113.0/24"]}
    away = await started(client)
    resp = await client.delete(path, headers=OPERATOR)
    assert resp.status == 200 and await resp.json() == {"networks": []}
    assert await home_of(client, prefix=prefix) == []
    after = await started(client)
    # a session keeps the location it had at setup
    places = [(await session_of(client, sid))["location"] for sid in (before, at_home, away, after)]
    assert places == [None, "home", "away", None]
    listing = await client.get(f"{prefix}/accounts/acct-1/sessions", headers=OPERATOR)
    by_id = {s["sessionId"]: s for s in (await listing.json())["sessions"]}
    assert (by_id[at_home]["network"], by_id[at_home]["location"]) == (LOOPBACK, "home")
    assert by_id[away]["location"] == "away"


async def test_home_networks_are_normalised(client: Any) -> None:
    """Host bits are cleared, duplicates dropped, blanks around a CIDR ignored, the order
    kept; an address alone is a one-address network."""
    resp = await client.put(
        "/srm/v1/accounts/acct-1/home",
        json={
            "networks": [
                "203.0.113.77/24",
                " 203.0.113.0/24 ",
                "2001:DB8:5:7::1/56",
                "198.51.100.7",
            ]
        },
        headers=OPERATOR,
    )
    assert await resp.json() == {
        "networks": ["203.0.113.0/24", "2001:db8:5::/56", "198.51.100.7/32"]
    }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "request body is empty"),
        (b"not json", "request body is not JSON"),
        (b"[]", "request body is not a JSON object"),
        (b"{}", "networks is required"),
        (b'{"networks": null}', "networks must be a list of CIDR strings"),
        (b'{"networks": "203.0.113.0/24"}', "networks must be a list of CIDR strings"),
        (b'{"networks": [1]}', "networks must be a list of CIDR strings"),
        (b'{"networks": [["203.0.113.0/24"]]}', "networks must be a list of CIDR strings"),
        (b'{"networks": ["not-a-cidr"]}', "networks: 'not-a-cidr' is not a CIDR"),
        (b'{"networks": ["203.0.113.0/33"]}', "networks: '203.0.113.0/33' is not a CIDR"),
        (b'{"networks": [""]}', "networks: '' is not a CIDR"),
        (
            b'{"networks": ["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", '
            b'"10.4.0.0/16"]}',
            "networks holds at most 4 CIDRs",
        ),
        (
            b'{"networks": ["10.0.0.0/8"], "learn": true}',
            "unknown key 'learn': the body holds networks only",
        ),
    ],
)
async def test_a_bad_home_body_is_400_with_a_detail_and_changes_nothing(
    client: Any, body: bytes, detail: str
) -> None:
    path = "/srm/v1/accounts/acct-1/home"
    await client.put(path, json={"networks": ["198.51.100.0/24"]}, headers=OPERATOR)
    resp = await client.put(
        path, data=body, headers={**OPERATOR, "Content-Type": "application/json"}
    )
    await expect_error(resp, 400, "SRM-0002")
    assert (await resp.json())["detail"] == detail
    assert await home_of(client) == ["198.51.100.0/24"]


# -- the device registry -----------------------------------------------------------------------


@pytest.fixture
def settings_with_devices(settings: Settings) -> Settings:
    return settings.replace("devices", max=2, swap_cooldown_days=1)


@pytest.fixture
async def registry(settings_with_devices: Settings, store: SessionStore) -> AsyncIterator[Any]:
    """A client of an API with devices.max = 2 and a swap cooldown of a day."""
    async with api(settings_with_devices, store) as client:
        yield client


async def devices_of(client: Any, account: str = "acct-1", device: str = "dev-1") -> Any:
    resp = await client.get("/srm/devices", headers=client_headers(account, device))
    assert resp.status == 200
    own = await resp.json()
    resp = await client.get(f"/srm/v1/accounts/{quote(account, safe='')}/devices", headers=OPERATOR)
    assert resp.status == 200
    operators = await resp.json()
    # the client's and the operator's listings agree; the cooldown's end is the Redis server's
    # time now plus what is left of it (PTTL), and moves by a millisecond between two reads
    # while the test clock stands still
    assert ms(operators.pop("nextRemovalAt")) == pytest.approx(ms(own["nextRemovalAt"]), abs=1000)
    assert {**operators, "nextRemovalAt": own["nextRemovalAt"]} == own
    return own


def ms(iso: str | None) -> int | None:
    """Epoch ms of an ISO-8601 time of an answer."""
    if iso is None:
        return None
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_full_registry_denies_a_new_device_and_lists_the_registered_ones(
    registry: Any, clock: Clock
) -> None:
    tv = await started(registry, device="living-room", deviceType="tv")
    clock.advance(30)
    await started(registry, device="phone-1", deviceType="phone")
    clock.advance(30)
    await started(registry, device="living-room", deviceType="tv")  # registered: no new slot
    denied = await start(registry, device="laptop")
    assert denied["errorResponse"]["errorCode"] == "SRM-0005"
    assert denied["errorResponse"]["status"] == "DENIED"
    assert denied["detail"] == "the account allows at most 2 registered devices"
    registered = [
        {
            "deviceId": "living-room",
            "deviceType": "tv",
            "firstSeenAt": bodies.iso(T0),
            "lastSeenAt": bodies.iso(T0),  # written at most hourly (setup.lua SEEN_EVERY)
        },
        {
            "deviceId": "phone-1",
            "deviceType": "phone",
            "firstSeenAt": bodies.iso(T0 + 30_000),
            "lastSeenAt": bodies.iso(T0 + 30_000),
        },
    ]
    assert denied["denial"] == {"rule": "devices", "max": 2, "sessions": [], "devices": registered}
    assert await devices_of(registry) == {"devices": registered, "max": 2, "nextRemovalAt": None}
    listing = await registry.get("/srm/sessions", headers=client_headers())
    assert (await listing.json())["activeCount"] == 3  # the denial created nothing
    assert (await session_of(registry, tv))["state"] == "ACTIVE"
    usage = await registry.get("/srm/v1/accounts/acct-1/usage?days=1", headers=OPERATOR)
    (today,) = (await usage.json())["days"]
    assert (today["started"], today["denied"], today["devicesRegistered"]) == (3, 1, 2)


async def test_a_client_removes_a_device_then_waits_out_the_swap_cooldown(
    registry: Any,
) -> None:
    tv = await started(registry, device="tv-1")
    tv_again = await started(registry, device="tv-1")
    phone = await started(registry, device="phone-1")
    resp = await registry.delete("/srm/devices/tv-1", headers=client_headers(device="phone-1"))
    assert resp.status == 200 and await resp.json() == {"ended": 2}
    for sid in (tv, tv_again):
        resp = await registry.put(f"/srm/sessions/{sid}", headers=client_headers(device="tv-1"))
        await expect_error(resp, 404, "SRM-0004")
        assert (await resp.json())["ended"]["endReason"] == "OPERATOR"
    assert (await session_of(registry, phone))["state"] == "ACTIVE"
    listed = await devices_of(registry)
    assert [d["deviceId"] for d in listed["devices"]] == ["phone-1"]
    assert T0 + DAY_MS - 10_000 < (ms(listed["nextRemovalAt"]) or 0) <= T0 + DAY_MS
    # a second removal within the day: 429 with Retry-After, nothing removed
    resp = await registry.delete("/srm/v1/devices/phone-1", headers=client_headers())
    await expect_error(resp, 429, "SRM-0011")
    assert resp.headers["Retry-After"] == "86400"
    assert "swap_cooldown_days" in (await resp.json())["detail"]
    assert (await session_of(registry, phone))["state"] == "ACTIVE"
    # the operator is held to it too, unless it forces
    path = "/srm/v1/accounts/acct-1/devices/phone-1"
    resp = await registry.delete(path, headers=OPERATOR)
    await expect_error(resp, 429, "SRM-0011")
    assert resp.headers["Retry-After"] == "86400"
    resp = await registry.delete(path + "?force=true", headers=OPERATOR)
    assert resp.status == 200 and await resp.json() == {"ended": 1}
    assert (await devices_of(registry))["devices"] == []
    # the removed device registers again with its next setup
    await started(registry, device="tv-1")
    assert [d["deviceId"] for d in (await devices_of(registry))["devices"]] == ["tv-1"]


@pytest.mark.parametrize("force", ["TRUE", "1", "", "yes"])
async def test_force_is_true_or_false(registry: Any, force: str) -> None:
    await started(registry)
    resp = await registry.delete(
        f"/srm/v1/accounts/acct-1/devices/dev-1?force={force}", headers=OPERATOR
    )
    await expect_error(resp, 400, "SRM-0002")
    assert (await resp.json())["detail"] == "force must be true or false"
    assert len((await devices_of(registry))["devices"]) == 1


async def test_an_unregistered_device_is_404_and_starts_no_cooldown(registry: Any) -> None:
    await started(registry, account="other", device="theirs")
    await started(registry)
    for resp in (
        await registry.delete("/srm/devices/nobody", headers=client_headers()),
        await registry.delete("/srm/devices/theirs", headers=client_headers()),  # not its own
        await registry.delete("/srm/v1/accounts/acct-1/devices/theirs", headers=OPERATOR),
    ):
        await expect_error(resp, 404, "SRM-0004")
        assert (await resp.json())["detail"] == "no such registered device for this account"
    assert (await devices_of(registry))["nextRemovalAt"] is None
    assert len((await devices_of(registry, account="other"))["devices"]) == 1
    resp = await registry.delete("/srm/devices/dev-1", headers=client_headers())
    assert resp.status == 200 and await resp.json() == {"ended": 1}


async def test_without_a_registry_nothing_is_registered(client: Any) -> None:
    await started(client)
    assert await devices_of(client) == {"devices": [], "max": 0, "nextRemovalAt": None}
    resp = await client.delete("/srm/devices/dev-1", headers=client_headers())
    await expect_error(resp, 404, "SRM-0004")


@pytest.mark.parametrize("device", ["a/b", "tv 1?x=1#y", "%2F", "..a", "tv-é-電視-📺", "x" * 256])
async def test_any_device_id_is_addressed_percent_encoded(registry: Any, device: str) -> None:
    sid = await started(registry, device=device)
    encoded = quote(device, safe="")
    resp = await registry.delete(
        f"/srm/v1/accounts/acct-1/devices/{encoded}/sessions", headers=OPERATOR
    )
    assert resp.status == 200 and await resp.json() == {"ended": 1}  # the older path still works
    assert [d["deviceId"] for d in (await devices_of(registry, device=device))["devices"]] == [
        device
    ]
    resp = await registry.delete(f"/srm/devices/{encoded}", headers=client_headers(device=device))
    assert resp.status == 200 and await resp.json() == {"ended": 0}
    assert (await session_of(registry, sid))["endReason"] == "OPERATOR"
    assert (await devices_of(registry))["devices"] == []


@pytest.mark.parametrize("account", ["a/b", "acct 1", "{x}", "é"])
async def test_any_account_id_is_addressed_percent_encoded(registry: Any, account: str) -> None:
    await started(registry, account=account)
    encoded = quote(account, safe="")
    resp = await registry.put(
        f"/srm/v1/accounts/{encoded}/home", json={"networks": [LOOPBACK]}, headers=OPERATOR
    )
    assert await resp.json() == {"networks": [LOOPBACK]}
    assert await home_of(registry, encoded) == [LOOPBACK]
    assert await home_of(registry) == []
    resp = await registry.delete(
        f"/srm/v1/accounts/{encoded}/devices/dev-1?force=true", headers=OPERATOR
    )
    assert resp.status == 200 and await resp.json() == {"ended": 1}


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("DELETE", "/srm/devices/%2E%2E", "client"),
        ("DELETE", "/srm/devices/%2e", "client"),
        ("DELETE", "/srm/v1/accounts/acct-1/devices/%2E%2E", "operator"),
        ("GET", "/srm/v1/accounts/%2E%2E/devices", "operator"),
        ("PUT", "/srm/v1/accounts/%2E/home", "operator"),
        ("DELETE", "/srm/v1/accounts/%2E%2E/home", "operator"),
    ],
)
async def test_dot_ids_in_household_paths_are_refused(
    registry: Any, method: str, path: str, headers: str
) -> None:
    """Sent raw: an HTTP client library collapses such segments before sending."""
    await started(registry)
    sent = dict(client_headers()) if headers == "client" else OPERATOR
    body = b'{"networks": []}' if method == "PUT" else b""
    status, _headers, answer = await raw_request(registry.port, method, path, sent, body)
    assert status == 400, answer
    assert answer["errorResponse"]["errorCode"] == "SRM-0002"
    assert "may not be . or .." in answer["detail"]
    assert len((await devices_of(registry))["devices"]) == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/srm/v1/accounts/acct-1/home"),
        ("PUT", "/srm/v1/accounts/acct-1/home"),
        ("DELETE", "/srm/v1/accounts/acct-1/home"),
        ("GET", "/srm/v1/accounts/acct-1/devices"),
        ("DELETE", "/srm/v1/accounts/acct-1/devices/dev-1"),
    ],
)
async def test_household_operator_paths_need_an_operator_key(
    registry: Any, method: str, path: str
) -> None:
    await started(registry)
    for headers in ({}, dict(client_headers()), {"Authorization": "Bearer wrong"}):
        resp = await registry.request(
            method, path, json={"networks": ["203.0.113.0/24"]}, headers=headers
        )
        await expect_error(resp, 403, "SRM-0006")
    assert await home_of(registry) == []
    assert len((await devices_of(registry))["devices"]) == 1


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/srm/devices"), ("DELETE", "/srm/devices/d")]
)
async def test_household_client_paths_need_a_client_token(
    registry: Any, method: str, path: str
) -> None:
    for headers in ({}, OPERATOR, {"Client-Token": "not-a-jwt"}):
        resp = await registry.request(method, path, headers=headers)
        await expect_error(resp, 401, "SRM-0003")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/srm/devices", "GET"),
        ("PUT", "/srm/devices/d", "DELETE"),
        ("POST", "/srm/v1/accounts/a/home", "DELETE,GET,PUT"),
        ("PUT", "/srm/v1/accounts/a/devices", "GET"),
        ("GET", "/srm/v1/accounts/a/devices/d", "DELETE"),
    ],
)
async def test_a_method_a_household_path_lacks_is_405(
    client: Any, method: str, path: str, allowed: str
) -> None:
    resp = await client.request(method, path, headers=OPERATOR)
    await expect_error(resp, 405, "SRM-0007")
    assert sorted(resp.headers["Allow"].split(",")) == allowed.split(",")


def test_the_denial_lists_the_devices_first_registered_first() -> None:
    """Whatever order the registry hash gives them in (a hash of more than 128 fields keeps
    none), as the registry's listing does."""
    given = [
        Device("zz", "tv", T0 + 2, T0 + 9),
        Device("aa", "tv", T0, T0),
        Device("bb", "", T0, T0),
    ]
    denial = bodies.denial("devices", 3, [], given)
    assert [d["deviceId"] for d in denial["devices"]] == ["aa", "bb", "zz"]
    assert denial["sessions"] == []
    assert "devices" not in bodies.denial("account", 3, [])


async def test_a_device_idle_past_forget_after_days_is_forgotten(
    settings: Settings, store: SessionStore, clock: Clock
) -> None:
    forgetful = settings.replace("devices", max=1, forget_after_days=1)
    async with api(forgetful, store) as client:
        sid = await started(client, device="old")
        await client.delete(f"/srm/sessions/{sid}", headers=client_headers(device="old"))
        clock.advance(86_401)
        assert (await devices_of(client))["devices"] == []
        resp = await client.delete("/srm/devices/old", headers=client_headers())
        await expect_error(resp, 404, "SRM-0004")
        await started(client, device="new")  # its place is free
        assert [d["deviceId"] for d in (await devices_of(client))["devices"]] == ["new"]


async def test_a_learning_device_type_sets_the_home_of_an_account_without_one(
    settings: Settings, store: SessionStore
) -> None:
    learning = settings.replace("network", learn_home=("tv",))
    async with api(learning, store) as client:
        phone = await started(client, device="phone", deviceType="phone")
        assert await home_of(client) == []
        tv = await started(client, device="tv", deviceType="tv")
        assert await home_of(client) == [LOOPBACK]
        places = [(await session_of(client, sid))["location"] for sid in (phone, tv)]
        assert places == [None, "home"]
        # an operator's home is never replaced by learning
        await client.put(
            "/srm/v1/accounts/acct-1/home", json={"networks": ["203.0.113.0/24"]}, headers=OPERATOR
        )
        away = await started(client, device="tv", deviceType="tv")
        assert (await session_of(client, away))["location"] == "away"
        assert await home_of(client) == ["203.0.113.0/24"]
