"""Households over HTTP (API.md, "Households"): the client address and its network (spoofing
included), sessions' network and location, home networks, the device registry's endpoints,
its denial and its swap cooldown (429 SRM-0011 with Retry-After)."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from srm import process
from srm.api.app import create_app
from srm.config import Settings, load
from srm.model import Policy
from srm.store import SessionStore
from tests.helpers import (
    OPERATOR_KEY,
    SECRET,
    SETUP,
    open_backend,
    token,
)
from tests.processes import srm_serve
from tests.redis_servers import RedisProcess

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
        }
    )


@pytest.fixture
def policy(settings: Settings) -> Policy:
    return process.policy(settings)


@contextlib.asynccontextmanager
async def api(settings: Settings, store: SessionStore) -> AsyncIterator[Any]:
    """A test client of the API for *settings*, on a store that applies them (same Redis,
    same clock as *store*)."""
    applied = SessionStore(store.redis, store.keys, process.policy(settings), clock=store.clock)
    async with TestClient(TestServer(create_app(settings, applied))) as client:
        yield client


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
