"""SRM_REDIS_URL forms: what each one connects to, and the mistakes that fail at start."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError

from srm.config import ConfigError
from srm.connection import BlockingSentinelConnectionPool, Target, connect, parse_url
from tests.helpers import redis_settings
from tests.redis_servers import SentinelGroup


def test_sentinel_url_with_passwords_hosts_and_db() -> None:
    target = parse_url(
        "redis+sentinel://:data%40pw@h1:26379,h2,[::1]:26380/mymaster/2"
        "?sentinel_password=spw&min_other_sentinels=1"
    )
    assert target == Target(
        kind="sentinel",
        nodes=(("h1", 26379), ("h2", 26379), ("::1", 26380)),
        password="data@pw",
        service="mymaster",
        db=2,
        options={"sentinel_password": "spw", "min_other_sentinels": "1"},
    )


def test_cluster_url_with_user_and_tls() -> None:
    target = parse_url("rediss+cluster://app:pw@n1:7000,n2:7001?ssl_cert_reqs=none")
    assert (target.kind, target.nodes, target.tls) == (
        "cluster",
        (("n1", 7000), ("n2", 7001)),
        True,
    )
    assert (target.username, target.password) == ("app", "pw")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://h1:26379", "master name"),
        ("redis+sentinel://h1/m/0/extra", "master name"),
        ("redis+sentinel://h1/m/x", "database number"),
        ("redis+sentinel:///m", "no sentinel hosts"),
        ("redis+sentinel://h1:notaport/m", "port"),
        ("redis+sentinel://h1:70000/m", "port out of range"),
        ("redis+sentinel://h1/m?ssl_ca_certs=x", "unknown option"),  # TLS options need rediss+
        ("redis+cluster://n1:7000/3", "only database 0"),
        ("redis+cluster://n1?sentinel_password=x", "unknown option"),
        ("rediss+cluster://n1?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis+proxy://n1", "unsupported scheme"),
    ],
)
def test_bad_urls_fail_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_url(url)


def test_a_password_in_a_bad_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as failure:
        parse_url("redis+cluster://:secret@")
    assert "secret" not in str(failure.value)


async def test_each_form_builds_redis_pys_own_client() -> None:
    sentinel = connect(
        redis_settings(url="redis+sentinel://127.0.0.1:1/m?sentinel_password=spw", pool_size=7)
    )
    try:
        pool = sentinel.connection_pool
        assert isinstance(pool, BlockingSentinelConnectionPool)
        assert (pool.max_connections, pool.service_name) == (7, "m")
        manager = pool.sentinel_manager
        assert manager.sentinels[0].connection_pool.connection_kwargs["password"] == "spw"
    finally:
        await sentinel.aclose()
    cluster = connect(redis_settings(url="redis+cluster://127.0.0.1:1,127.0.0.1:2", pool_size=7))
    try:
        assert isinstance(cluster, RedisCluster)
        assert list(cluster.nodes_manager.startup_nodes) == ["127.0.0.1:1", "127.0.0.1:2"]
    finally:
        await cluster.aclose()


async def test_a_full_sentinel_pool_blocks_then_gives_up(sentinel_servers: SentinelGroup) -> None:
    client = connect(redis_settings(url=sentinel_servers.url, pool_size=1, pool_timeout=0.2))
    try:
        held = await client.connection_pool.get_connection()
        with pytest.raises(ConnectionError, match="No connection available"):
            await client.ping()
        await client.connection_pool.release(held)
        assert await client.ping()
    finally:
        await client.aclose()
