"""What session events and usage cost: memory per event and per account-day (MEMORY USAGE on
a real redis-server), Redis time per script with events on and off, and the HTTP throughput
ratio of `srm serve` with events on and off (see bench/README.md)."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import load, procs
from bench.storage import fill, new_sessions, settings
from srm.connection import connect
from srm.keys import Keys
from srm.model import DAY_MS, EndReason, NewSession
from srm.process import event_policy, make_store
from srm.store import SessionStore


@dataclass(frozen=True)
class EventMemory:
    events: int
    bytes_per_event: float
    bytes_per_account_day: float  # a usage hash holding 35 days, per day
    first_day_bytes: int  # a usage hash holding one day
    default_retention_bytes: float  # default events.maxlen x shards x bytes per event


async def event_memory(redis_url: str, lifecycles: int) -> EventMemory:
    """*lifecycles* setups and teardowns (two events each) through the store, then MEMORY
    USAGE of every shard's stream; and one account's usage hash over 35 days."""
    s = settings(redis_url)
    keep_all = settings(redis_url, SRM_EVENTS_MAXLEN="0")  # every event kept, for the count
    redis = connect(s.redis)
    try:
        await redis.flushall()
        store = make_store(keep_all, redis)
        sessions = list(new_sessions(lifecycles, 1, "events"))
        await fill(store, sessions)
        for new in sessions:
            await store.end(new.account_id, new.session_id, EndReason.TEARDOWN)
        streams = [store.keys.events(shard) for shard in range(store.keys.shards)]
        used = sum([await redis.memory_usage(key, samples=0) or 0 for key in streams])
        count = sum([await redis.xlen(key) for key in streams])
        per_event = used / count

        clock = [1_800_000_000_000]
        dated = SessionStore(
            redis,
            Keys(s.redis.shards),
            store.policy,
            clock=lambda: clock[0],
            events=event_policy(s),
        )
        account = "usage-account-00000001"
        first_day = 0
        for day in range(35):
            clock[0] = 1_800_000_000_000 + day * DAY_MS
            for device in range(3):  # three lifecycles a day
                new = NewSession(str(uuid.uuid4()), account, f"device-{device}", "100001V3D", "COD")
                await dated.setup(new)
                await dated.end(account, new.session_id, EndReason.TEARDOWN)
            if day == 0:
                first_day = await usage_bytes(redis, store.keys.account(account).state)
        usage = await usage_bytes(redis, store.keys.account(account).state)
        return EventMemory(
            events=count,
            bytes_per_event=per_event,
            bytes_per_account_day=usage / 35,
            first_day_bytes=first_day,
            default_retention_bytes=s.events.maxlen * s.redis.shards * per_event,
        )
    finally:
        await redis.aclose()


@dataclass(frozen=True)
class ScriptCost:
    events: bool
    setup_us: float
    end_us: float


async def script_cost(redis_url: str, lifecycles: int, rounds: int = 5) -> list[ScriptCost]:
    """Redis time per setup and per teardown script (INFO commandstats), events on and off in
    alternating rounds on one server."""
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for r in range(rounds):
        for enabled in (True, False):
            s = settings(redis_url, SRM_EVENTS_ENABLED=str(enabled).lower())
            redis = connect(s.redis)
            try:
                store = make_store(s, redis)
                batch = list(new_sessions(lifecycles, 1, f"cost-{enabled}-{r}"))
                await store.setup(batch[0])  # scripts loaded, pool open
                await redis.config_resetstat()
                setup_us = await _timed_calls(store, redis, batch[1:], setup=True)
                end_us = await _timed_calls(store, redis, batch[1:], setup=False)
                results[enabled].append((setup_us, end_us))
            finally:
                await redis.aclose()
    return [
        ScriptCost(
            enabled,
            statistics.median(x[0] for x in results[enabled]),
            statistics.median(x[1] for x in results[enabled]),
        )
        for enabled in (True, False)
    ]


async def _timed_calls(
    store: SessionStore, redis: Any, batch: list[NewSession], *, setup: bool
) -> float:
    await redis.config_resetstat()
    if setup:
        await fill(store, batch)
    else:
        for new in batch:
            await store.end(new.account_id, new.session_id, EndReason.TEARDOWN)
    stats = await redis.info("commandstats")
    return float(stats["cmdstat_fcall"]["usec_per_call"])


@dataclass(frozen=True)
class HttpCost:
    on_rps: float
    off_rps: float
    ratio: float
    rounds: list[float]


def http_cost(
    redis_url: str, tokens: Path, connections: int, seconds: float, rounds: int
) -> HttpCost:
    """`srm serve` with events on and off side by side on one redis-server, driven by wrk in
    alternating rounds (load from other processes falls on both alike)."""
    with (
        procs.srm_serve(redis_url, 1, SRM_EVENTS_ENABLED="true") as on,
        procs.srm_serve(redis_url, 1, SRM_EVENTS_ENABLED="false") as off,
    ):
        for server in (on, off):
            load.wrk(server.url, tokens, connections, 3)  # warm-up
        pairs = []
        for _ in range(rounds):
            a = load.wrk(on.url, tokens, connections, seconds)
            b = load.wrk(off.url, tokens, connections, seconds)
            pairs.append((a.rps, b.rps))
    ratios = [a / b for a, b in pairs]
    return HttpCost(
        statistics.median(a for a, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(ratios),
        ratios,
    )


async def usage_bytes(redis: Any, state: str) -> int:
    """MEMORY USAGE of an account hash once its session records are removed (the reaper's
    purge does that after the retention): what its usage days cost."""
    fields = await redis.hkeys(state)
    records = [f for f in fields if len(f) == 36]
    if records:
        await redis.hdel(state, *records)
    return int(await redis.memory_usage(state, samples=0) or 0)
