"""Whole-keyspace inspection for tests: which sessions does anything in Redis still mention?"""

from __future__ import annotations

import re
from typing import Any

# Keys that keep the history of changes for a bounded time (events, usage, denial rankings)
# rather than state of live sessions: the purge leaves them be.
HISTORY = re.compile(r":(events|usage|denials:\d+)$")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def mentioned_ids(redis: Any) -> set[str]:
    """Every UUID found in any key name, member, field or value (SCAN; tests only).

    Event streams are left out: they are the history of changes, kept for a bounded time
    (events.maxlen, events.max_age), not state of the sessions they mention.
    """
    found: set[str] = set()
    async for key in redis.scan_iter(count=1000):
        found.update(UUID.findall(key))
        kind = await redis.type(key)
        if kind in ("none", "stream"):  # removed since the SCAN saw it; history
            continue
        if kind == "string":
            texts = [await redis.get(key) or ""]
        elif kind == "hash":
            texts = [f"{f} {v}" for f, v in (await redis.hgetall(key)).items()]
        elif kind == "zset":
            texts = await redis.zrange(key, 0, -1)
        elif kind == "set":
            texts = list(await redis.smembers(key))
        elif kind == "list":
            texts = await redis.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected {kind} key {key}")
        for text in texts:
            found.update(UUID.findall(text))
    return found


def is_history(key: str) -> bool:
    return HISTORY.search(key) is not None
