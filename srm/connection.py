"""The Redis client for a deployment, built from ``redis.url``.

Pools block (with ``redis.pool_timeout``) rather than raise "Too many connections", sockets
time out after ``redis.socket_timeout``, and connection errors are retried with a short
backoff: every SRM script is idempotent, so a retry after an ambiguous failure is safe.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from srm.config import ConfigError, RedisSettings


def retry_policy() -> Retry:
    return Retry(ExponentialBackoff(cap=0.25, base=0.025), retries=2)


def common_options(settings: RedisSettings) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry_policy(),
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": 30,
    }


def connect(settings: RedisSettings) -> Any:
    """A redis-py asyncio client for ``settings.url`` (standalone ``redis://``/``rediss://``/``unix://``)."""
    scheme = settings.url.split("://", 1)[0]
    if scheme in {"redis", "rediss", "unix"}:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.pool_size,
            timeout=settings.pool_timeout,
            **common_options(settings),
        )
        return aioredis.Redis(connection_pool=pool)
    raise ConfigError(f"redis.url (SRM_REDIS_URL): unsupported scheme {scheme!r}")
