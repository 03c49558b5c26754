"""What enforcement beyond the player costs (`bench/run --only enforcement`), each figure
beside the same work without it, measured in the same run (docs/enforcement.md):

- a keep-alive that answers a CDN token (keepalive.lua returns the new deadline and the
  contentID) against a plain one: Redis time per call (commandstats), and SRM's CPU to mint
  the token (HMAC-SHA256 in Python);
- an operator's end that writes a revocation against one without the feed;
- a poll of the revocation feed over every shard (one XRANGE each, one pipeline): its wall
  time from the client and Redis time, empty and with entries;
- the feed's memory per entry.
The configuration is the user's (storage.USER_ENV: three rules, events on) with [cdn].
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass

from bench import storage
from srm.cdn import CdnTokens
from srm.connection import connect
from srm.model import EndReason, NewSession
from srm.process import make_store
from srm.store import SessionStore

KEY = "00112233445566778899aabbccddeeff"
FEED_ENTRIES = 1000  # revocations in the feed for the polls "with entries"


@dataclass(frozen=True)
class EnforcementCost:
    keepalive_us: dict[str, float]  # plain | token: median usec_per_call of FCALL
    end_us: dict[str, float]  # off | feed: median usec_per_call of an operator end
    mint_us: float  # SRM CPU (process time) per token minted
    poll_ms: dict[str, float]  # empty | entries: median wall ms of one poll of every shard
    poll_redis_us: dict[str, float]  # the same polls' Redis time (XRANGE calls, summed)
    bytes_per_entry: float  # the feed's memory per revocation
    shards: int


async def _fcall_us(store: SessionStore) -> float:
    stats = await store.redis.info("commandstats")
    return float(stats["cmdstat_fcall"]["usec_per_call"])


async def _xrange_us(store: SessionStore) -> float:
    stats = await store.redis.info("commandstats")
    return float(stats.get("cmdstat_xrange", {}).get("usec", 0.0))


def _sessions(count: int, tag: str) -> list[NewSession]:
    return [
        NewSession(str(uuid.uuid4()), f"{tag}-{i:06d}", "phone-1", "100001V3D", "COD")
        for i in range(count)
    ]


async def enforcement_cost(redis_url: str, samples: int, rounds: int) -> EnforcementCost:
    env = {**storage.USER_ENV, "SRM_SETUPS_PER_MINUTE": "0"}
    plain_settings = storage.settings(redis_url, **env)
    cdn_settings = storage.settings(redis_url, **env, SRM_CDN_KEY=KEY)
    plain = make_store(plain_settings, connect(plain_settings.redis))
    fed = make_store(cdn_settings, connect(cdn_settings.redis))
    try:
        await plain.redis.flushall()
        ka: dict[str, list[float]] = {"plain": [], "token": []}
        ends: dict[str, list[float]] = {"off": [], "feed": []}
        for r in range(rounds):
            probes = _sessions(samples, f"ka{r}")
            for new in probes:
                await fed.setup(new)
            for kind in ("plain", "token"):
                await plain.redis.config_resetstat()
                for new in probes:
                    if kind == "plain":
                        await plain.keep_alive(new.account_id, new.session_id)
                    else:
                        await fed.keep_alive_for_token(new.account_id, new.session_id)
                ka[kind].append(await _fcall_us(plain))
            for kind, store in (("off", plain), ("feed", fed)):
                victims = _sessions(samples, f"end{r}{kind}")
                for new in victims:
                    await store.setup(new)
                await plain.redis.config_resetstat()
                for new in victims:
                    await store.end(new.account_id, new.session_id, EndReason.OPERATOR)
                ends[kind].append(await _fcall_us(plain))
            await plain.redis.flushall()
        tokens = CdnTokens(cdn_settings.cdn)
        sid = str(uuid.uuid4())
        started = time.process_time()
        for _ in range(20_000):
            tokens.token(sid, "100001V3D", 1_780_000_000_000, 1_780_000_120_000)
        mint_us = (time.process_time() - started) / 20_000 * 1e6
        poll_ms: dict[str, float] = {}
        poll_redis: dict[str, float] = {}
        for kind in ("empty", "entries"):
            if kind == "entries":
                victims = _sessions(FEED_ENTRIES, "feed")
                for new in victims:
                    await fed.setup(new)
                    await fed.end(new.account_id, new.session_id, EndReason.OPERATOR)
                await asyncio.sleep(0.5)
            walls: list[float] = []
            await plain.redis.config_resetstat()
            for _ in range(samples // 10 or 1):
                t0 = time.perf_counter()
                await fed.revocations(None, 1000)
                walls.append((time.perf_counter() - t0) * 1000)
            poll_ms[kind] = statistics.median(walls)
            poll_redis[kind] = await _xrange_us(plain) / len(walls)
        used = 0
        for shard in range(fed.keys.shards):
            used += int(await fed.redis.memory_usage(fed.keys.revoked(shard), samples=0) or 0)
        return EnforcementCost(
            keepalive_us={k: statistics.median(v) for k, v in ka.items()},
            end_us={k: statistics.median(v) for k, v in ends.items()},
            mint_us=mint_us,
            poll_ms=poll_ms,
            poll_redis_us=poll_redis,
            bytes_per_entry=used / FEED_ENTRIES,
            shards=fed.keys.shards,
        )
    finally:
        await plain.redis.flushall()
        await plain.redis.aclose()
        await fed.redis.aclose()
