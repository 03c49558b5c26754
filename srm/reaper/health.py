"""Is a reaper alive? Its id, where it finds Redis, and `srm reaper --check`.

Kept apart from the reaper, the store and the API so that a container healthcheck, which
runs this every few seconds, stays light: one connection, one GET of the heartbeat key, and
neither aiohttp nor prometheus-client imported (tests/test_reaper_health.py holds it to that).
"""

from __future__ import annotations

import asyncio
import logging
import socket

from redis.exceptions import RedisError

from srm.config import ReaperSettings, Settings
from srm.connection import connect
from srm.embedded import with_store_url
from srm.keys import Keys

log = logging.getLogger(__name__)


def reaper_id(settings: ReaperSettings) -> str:
    """``reaper.id``, else the host name (set it to tell apart two reapers on one host)."""
    return settings.id or socket.gethostname()


def check(settings: Settings) -> int:
    """0 if this reaper id's heartbeat is in Redis, else 1 (also when Redis cannot answer)."""
    rid = reaper_id(settings.reaper)
    alive = asyncio.run(heartbeat_exists(with_store_url(settings), rid))
    print(f"reaper {rid}: {'alive' if alive else 'no heartbeat'}")
    return 0 if alive else 1


async def heartbeat_exists(settings: Settings, rid: str) -> bool:
    """Whether reaper *rid*'s heartbeat key exists: one GET within ``redis.request_deadline``."""
    redis = connect(settings.redis)
    try:
        async with asyncio.timeout(settings.redis.request_deadline):
            return await redis.get(Keys(settings.redis.shards).heartbeat(rid)) is not None
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("reaper check: store unavailable (%r)", exc)
        return False
    finally:
        await redis.aclose()
