"""Is a reaper alive? Its id, where it finds Redis, and `srm reaper --check`.

Kept apart from the reaper and the API so that a container healthcheck, which runs this every
few seconds, imports little: no aiohttp, no prometheus-client.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from srm.config import ReaperSettings, Settings
from srm.connection import connect
from srm.embedded import EmbeddedRedis
from srm.errors import SrmError
from srm.keys import Keys
from srm.model import Policy
from srm.store import SessionStore

log = logging.getLogger(__name__)

# The check only reads the heartbeat; no session rule applies to it.
_NO_SESSIONS = Policy(timeout_ms=0, max_sessions=0, retention_ms=0, evict=False)


def reaper_id(settings: ReaperSettings) -> str:
    """``reaper.id``, else the host name (set it to tell apart two reapers on one host)."""
    return settings.id or socket.gethostname()


def with_store_url(settings: Settings) -> Settings:
    """*settings*, with ``redis.url`` unset meaning the embedded redis-server of a
    `srm serve` started in the same working directory (its socket in ``embedded.data_dir``)."""
    if settings.redis.url:
        return settings
    return settings.replace("redis", url=EmbeddedRedis(settings.embedded).url)


def check(settings: Settings) -> int:
    """0 if this reaper id's heartbeat is in Redis, else 1 (also when Redis cannot answer)."""
    rid = reaper_id(settings.reaper)
    alive = asyncio.run(_heartbeat_exists(with_store_url(settings), rid))
    print(f"reaper {rid}: {'alive' if alive else 'no heartbeat'}")
    return 0 if alive else 1


async def _heartbeat_exists(settings: Settings, rid: str) -> bool:
    redis = connect(settings.redis)
    try:
        store = SessionStore(
            redis,
            Keys(settings.redis.shards),
            _NO_SESSIONS,
            deadline=settings.redis.request_deadline,
        )
        return await store.read_heartbeat(rid) is not None
    except SrmError as exc:
        log.warning("reaper check: %s", exc)
        return False
    finally:
        await redis.aclose()
