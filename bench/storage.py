"""Store-level measurements on a real redis-server: memory per session, latency against the
number of stored sessions, and reaper throughput."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from srm import records
from srm.config import Settings, load
from srm.connection import connect
from srm.keys import Keys
from srm.model import EndReason, NewSession
from srm.process import make_store
from srm.store import SessionStore, wall_clock_ms

FILL_CONCURRENCY = 512


def settings(redis_url: str, **env: str) -> Settings:
    return load(env={"SRM_REDIS_URL": redis_url, "SRM_AUTH_SECRET": "x" * 32, **env})


# The user configuration every target is measured with: the three rules of the worked
# examples in docs/rules.md, events on (the default).
USER_RULES = (
    '[{"name": "uhd", "max": 1, "qualities": ["UHD"]},'
    ' {"name": "mobile", "max": 2, "device_types": ["phone", "tablet"]},'
    ' {"name": "one-per-tv", "max": 1, "device_types": ["tv", "stb"], "per": "device",'
    ' "policy": "evict"}]'
)
USER_ENV = {"SRM_SESSIONS_RULES": USER_RULES, "SRM_EVENTS_ENABLED": "true"}


def new_sessions(count: int, per_account: int, tag: str, **extra: Any) -> Iterable[NewSession]:
    """*count* sessions, *per_account* to an account, with realistic field sizes."""
    for i in range(count):
        yield NewSession(
            str(uuid.uuid4()),
            f"{tag}-account-{i // per_account:08d}",
            f"device-{i % per_account}",
            "100001V3D",
            "COD",
            **extra,
        )


def user_sessions(count: int, per_account: int, tag: str) -> Iterable[NewSession]:
    """Like new_sessions, as USER_RULES count them and none refuses: an account's first
    session plays in UHD on a TV (rules uhd and one-per-tv), the others in HD on phones
    (rule mobile, at most two)."""
    assert per_account <= 3
    for i in range(count):
        first = i % per_account == 0
        yield NewSession(
            str(uuid.uuid4()),
            f"{tag}-account-{i // per_account:08d}",
            f"device-{i % per_account}",
            "100001V3D",
            "COD",
            device_type="tv" if first else "phone",
            quality="UHD" if first else "HD",
        )


async def fill(store: SessionStore, sessions: Iterable[NewSession]) -> int:
    """Create every session, FILL_CONCURRENCY calls in flight at a time."""
    todo = iter(sessions)
    created = 0

    async def worker() -> None:
        nonlocal created
        for new in todo:
            await store.setup(new)
            created += 1

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
    return created


async def settled_memory(redis: Any, timeout: float = 15.0) -> int:
    """used_memory once it stops moving: Redis grows its key table by incremental rehashing,
    and while that runs both tables count (about 20 bytes per session at 100k sessions)."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        used = int((await redis.info("memory"))["used_memory"])
        if used == last or time.monotonic() > deadline:
            return used
        last = used
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class Memory:
    sessions: int
    accounts: int
    bytes_per_session: float
    breakdown: dict[str, int]


async def memory_per_session(redis_url: str, count: int, per_account: int) -> Memory:
    # the session state and its usage; the event streams are a bounded retention buffer,
    # measured apart (bench/events.py)
    # with the user's rules: their counters are part of what a session costs
    s = settings(redis_url, SRM_EVENTS_ENABLED="false", SRM_SESSIONS_RULES=USER_RULES)
    redis = connect(s.redis)
    store = make_store(s, redis)
    try:
        await redis.flushall()
        await fill(store, user_sessions(200, per_account, "warm"))  # scripts loaded, pool open
        await redis.flushall()
        before = (await redis.info("memory"))["used_memory"]
        sample = next(iter(user_sessions(1, per_account, "probe")))
        await fill(store, user_sessions(count - 1, per_account, "mem"))
        await store.setup(sample)
        with_rates = await settled_memory(redis)
        active = await active_sessions(redis, store.keys)
        if active != count:
            raise RuntimeError(f"{count} setups left {active} active sessions")
        ak = store.keys.account(sample.account_id)
        accounts = await redis.zcard(ak.due)
        rate_key = await redis.memory_usage(ak.rate, samples=0)
        # an account's setup-rate window (limits.setups_per_minute) expires two minutes after
        # its last setup: it is not part of what an active session costs for hours, so it is
        # dropped before the measure and reported apart
        rates = await drop_rate_keys(redis, store.keys)
        after = await settled_memory(redis)
        breakdown = {
            "account hash": await redis.memory_usage(ak.state, samples=0),
            "shard due zset / its accounts": round(
                await redis.memory_usage(ak.due, samples=0) / accounts
            ),
            "rate key, for 2 min after a setup (not counted)": rate_key or 0,
            "rate keys' used_memory / account": round((with_rates - after) / max(1, rates)),
        }
        return Memory(count, -(-count // per_account), (after - before) / count, breakdown)
    finally:
        await redis.aclose()


async def drop_rate_keys(redis: Any, keyspace: Keys) -> int:
    """Delete every account's setup-rate window; how many there were."""
    dropped = 0
    async for key in redis.scan_iter(match=f"{keyspace.prefix}:{{s*}}:acct:*:rate", count=1000):
        dropped += await redis.delete(key)
    return dropped


async def active_sessions(redis: Any, keyspace: Keys) -> int:
    """The ACTIVE sessions of every account: the sum of the account counters."""
    total = 0
    async for key in redis.scan_iter(match=f"{keyspace.prefix}:{{s*}}:a:*", count=1000):
        total += int(await redis.hget(key, "n") or 0)
    return total


@dataclass(frozen=True)
class Latency:
    stored: int
    setup_p50_ms: float
    setup_p99_ms: float
    teardown_p50_ms: float
    teardown_p99_ms: float
    redis_us_per_call: float


def _p(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)
    )


async def latency_at(
    small_url: str, large_url: str, sizes: tuple[int, int], samples: int
) -> list[Latency]:
    """Sequential setup + teardown latency (one call in flight) on two servers holding
    *sizes* sessions; samples alternate between them, so load from other processes on the
    machine falls on both alike."""
    stores = []
    try:
        for url, size in zip((small_url, large_url), sizes, strict=True):
            s = settings(url)
            redis = connect(s.redis)
            store = make_store(s, redis)
            stores.append(store)
            await redis.flushall()
            await fill(store, new_sessions(size, 2, f"stored{size}"))
        timings: list[dict[str, list[float]]] = [{"setup": [], "teardown": []} for _ in stores]
        probes = [list(new_sessions(samples + 200, 1, f"probe{i}")) for i in range(len(stores))]
        for i in range(samples + 200):
            for store, times, mine in zip(stores, timings, probes, strict=True):
                new = mine[i]
                t0 = time.perf_counter()
                await store.setup(new)
                t1 = time.perf_counter()
                await store.end(new.account_id, new.session_id, EndReason.TEARDOWN)
                t2 = time.perf_counter()
                if i == 200:  # the first 200 warm up connections and caches
                    await store.redis.config_resetstat()
                if i >= 200:
                    times["setup"].append((t1 - t0) * 1000)
                    times["teardown"].append((t2 - t1) * 1000)
        results = []
        for store, times, size in zip(stores, timings, sizes, strict=True):
            cs = await store.redis.info("commandstats")
            results.append(
                Latency(
                    size,
                    _p(times["setup"], 50),
                    _p(times["setup"], 99),
                    _p(times["teardown"], 50),
                    _p(times["teardown"], 99),
                    float(cs["cmdstat_fcall"]["usec_per_call"]),
                )
            )
        return results
    finally:
        for store in stores:
            await store.redis.aclose()


@dataclass(frozen=True)
class ReaperRun:
    sessions: int
    seconds: float
    how: str
    redis_seconds: float  # time Redis spent running the reaper's scripts and reads
    per_master: tuple[float, ...] = ()  # the same, per master (several on a Cluster)
    reaper_cpu: float | None = None  # CPU seconds of the `srm reaper` process in the run

    @property
    def per_second(self) -> float:
        return self.sessions / self.seconds


async def redis_busy_seconds(redis: Any) -> float:
    """Time Redis spent executing commands since the last CONFIG RESETSTAT, script-internal
    calls excluded (they are inside the FCALL time), summed over every master."""
    return sum(await busy_per_master(redis))


async def busy_per_master(redis: Any) -> list[float]:
    """redis_busy_seconds of each master (one but on a Cluster)."""
    if hasattr(redis, "get_primaries"):
        per_node = await redis.info("commandstats", target_nodes=redis.PRIMARIES)
        stats = list(per_node.values())
    else:
        stats = [await redis.info("commandstats")]
    wanted = SCRIPT_STATS + READ_STATS
    return [sum(int(v["usec"]) for name, v in s.items() if name in wanted) / 1e6 for s in stats]


SCRIPT_STATS = ("cmdstat_fcall", "cmdstat_eval")
READ_STATS = ("cmdstat_zrangebyscore", "cmdstat_zrange", "cmdstat_scan")


BACKLOG_PER_ACCOUNT = 2  # sessions per account of the reaper's backlog


async def lapsed_backlog(redis_url: str, count: int) -> None:
    """*count* ACTIVE sessions whose keep-alive lapsed an hour ago (retention 0), two to an
    account."""
    s = settings(redis_url, SRM_ENDED_RETENTION="0", **USER_ENV)
    redis = connect(s.redis)
    past = wall_clock_ms() - 3_600_000
    store = make_store(s, redis)
    store.clock = lambda: past  # created an hour ago with a 120 s keep-alive
    try:
        await redis.flushall()
        await fill(store, user_sessions(count, BACKLOG_PER_ACCOUNT, "lapsed"))
    finally:
        await redis.aclose()


async def reap_with_store(redis_url: str, count: int, batch: int, parallel: int) -> ReaperRun:
    """End and remove the backlog with the store's sweep and purge, *parallel* shards at once
    (their calls share pipelines), each shard until it has nothing due."""
    s = settings(redis_url, SRM_ENDED_RETENTION="0", **USER_ENV)
    redis = connect(s.redis)
    store = make_store(s, redis)
    shards = iter(range(s.redis.shards))
    removed = 0

    async def reap() -> None:
        nonlocal removed
        for shard in shards:
            # with no retention the sweep removes what it ends (an account's sessions that
            # all lapsed); the purge the rest
            while ended := (await store.sweep(shard, batch)).ended:
                removed += ended
            while await store.purge(shard, batch):
                pass

    try:
        await redis.config_resetstat()
        t0 = time.perf_counter()
        await asyncio.gather(*(reap() for _ in range(parallel)))
        elapsed = time.perf_counter() - t0
        busy = await redis_busy_seconds(redis)
    finally:
        await redis.aclose()
    how = f"store.sweep + store.purge, batch {batch}, {parallel} shards at a time"
    return ReaperRun(removed, elapsed, how, busy)


def reaper_available() -> bool:
    """Whether this build has the reaper sidecar (`srm reaper`)."""
    return importlib.util.find_spec("srm.reaper") is not None


async def reap_with_process(redis_url: str, count: int) -> ReaperRun:
    """Let one `srm reaper` process work the backlog off; time from its first progress until
    nothing is left (its start-up is not counted)."""
    s = settings(redis_url)
    redis = connect(s.redis)
    keyspace = Keys(s.redis.shards)

    async def backlog() -> int:
        """Sessions left: those of the accounts still due (every account of the backlog
        lapses whole), and those queued for removal."""
        pipe = redis.pipeline(transaction=False)
        for shard in range(s.redis.shards):
            pipe.zcard(keyspace.due(shard))
            pipe.zcard(keyspace.reap(shard))
        counts: list[int] = await pipe.execute()
        return BACKLOG_PER_ACCOUNT * sum(counts[::2]) + sum(counts[1::2])

    env = {
        "SRM_REDIS_URL": redis_url,
        "SRM_ENDED_RETENTION": "0",
        "SRM_REAPER_INTERVAL": "0.01",  # passes back to back: a backlog, not a steady state
        "SRM_REAPER_METRICS_PORT": "0",
        "SRM_LOGGING_LEVEL": "WARNING",
        **USER_ENV,
    }
    started = left = await backlog()
    await _reset_stats(redis)
    proc = procs.spawn([str(Path(sys.executable).parent / "srm"), "reaper"], env)
    try:
        deadline = time.monotonic() + 300
        while left == started and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            left = await backlog()
        t0, first, cpu0 = time.perf_counter(), left, _cpu_seconds(proc.pid)
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # each poll is 512 ZCARDs: polled often, they slow Redis
            left = await backlog()
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(proc.pid) - cpu0
        busy = await busy_per_master(redis)  # includes this function's ZCARD polls
    finally:
        procs.stop([proc])
        await redis.aclose()
    how = "one `srm reaper` process, default batch size"
    if len(busy) > 1:
        how += f", {len(busy)}-master Cluster"
    return ReaperRun(first - left, elapsed, how, sum(busy), tuple(busy), cpu)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process *pid* so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def remaining_sessions(redis_url: str) -> int:
    """Session records left in every account hash."""
    s = settings(redis_url)
    redis = connect(s.redis)
    try:
        n = 0
        async for key in redis.scan_iter(match="srm:{s*}:a:*", count=10000):
            n += sum(map(records.is_session_field, await redis.hkeys(key)))
        return n
    finally:
        await redis.aclose()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# Three limit rules that every bench session matches (none refuses: the cost is counting).
THREE_RULES = (
    '[{"name": "uhd", "max": 3, "qualities": ["UHD"]},'
    ' {"name": "mobile", "max": 3, "device_types": ["phone", "tablet"]},'
    ' {"name": "one-per-device", "max": 1, "per": "device"}]'
)


@dataclass(frozen=True)
class RulesCost:
    rules: int
    bytes_per_session: float
    redis_us_per_setup: float


def rule_sessions(count: int, per_account: int, tag: str) -> Iterable[NewSession]:
    """Like new_sessions, on phones in UHD: each session matches all of THREE_RULES."""
    return new_sessions(count, per_account, tag, device_type="phone", quality="UHD")


async def rules_cost(redis_url: str, count: int, samples: int, rounds: int = 3) -> list[RulesCost]:
    """Memory per active session and Redis time per setup (FCALL usec_per_call in INFO
    commandstats), without rules and with THREE_RULES, 3 sessions per account. The setup
    timings alternate between the two in *rounds*, so other load falls on both alike."""
    stores = []
    try:
        for rules in ("[]", THREE_RULES):
            s = settings(redis_url, SRM_SESSIONS_RULES=rules)
            stores.append(make_store(s, connect(s.redis)))
        memory = []
        for i, store in enumerate(stores):
            redis = store.redis
            await redis.flushall()
            await fill(store, rule_sessions(200, 3, "warm"))
            await redis.flushall()
            before = (await redis.info("memory"))["used_memory"]
            await fill(store, rule_sessions(count, 3, f"mem{i}"))
            memory.append(((await settled_memory(redis)) - before) / count)
        await stores[0].redis.flushall()
        usec: list[list[float]] = [[], []]
        for r in range(rounds):
            for i, store in enumerate(stores):
                probes = list(rule_sessions(samples, 3, f"time{r}-{i}"))
                await store.redis.config_resetstat()
                for new in probes:
                    await store.setup(new)
                cs = await store.redis.info("commandstats")
                usec[i].append(float(cs["cmdstat_fcall"]["usec_per_call"]))
        return [
            RulesCost(len(store.policy.rules), memory[i], statistics.median(usec[i]))
            for i, store in enumerate(stores)
        ]
    finally:
        for store in stores:
            await store.redis.aclose()


@dataclass(frozen=True)
class ScriptCost:
    where: str
    setup_us: float
    keepalive_us: float
    teardown_us: float

    @property
    def lifecycle_us(self) -> float:
        """Redis time of one setup, one keep-alive and one teardown."""
        return self.setup_us + self.keepalive_us + self.teardown_us


async def script_cost(redis_url: str, where: str, count: int, concurrency: int = 64) -> ScriptCost:
    """Redis's own time per setup, keep-alive and teardown script with the user configuration
    (USER_RULES, events on): *count* of each through the store, *concurrency* at a time,
    ``usec`` of FCALL in INFO commandstats summed over every master."""
    s = settings(redis_url, **USER_ENV)
    redis = connect(s.redis)
    store = make_store(s, redis)
    sessions = list(user_sessions(count, 1, f"cost-{where}"))

    async def each(op: Callable[[NewSession], Any]) -> float:
        todo = iter(sessions)

        async def worker() -> None:
            for new in todo:
                await op(new)

        await _reset_stats(redis)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return await _script_usec(redis) / count

    try:
        await fill(store, user_sessions(200, 1, f"warm-{where}"))  # scripts loaded, pools open
        setup = await each(store.setup)
        keepalive = await each(lambda n: store.keep_alive(n.account_id, n.session_id))
        teardown = await each(lambda n: store.end(n.account_id, n.session_id, EndReason.TEARDOWN))
        return ScriptCost(where, setup, keepalive, teardown)
    finally:
        await redis.aclose()


async def _reset_stats(redis: Any) -> None:
    if hasattr(redis, "get_primaries"):  # a Cluster client: every master
        await redis.config_resetstat(target_nodes=redis.PRIMARIES)
    else:
        await redis.config_resetstat()


async def _script_usec(redis: Any) -> float:
    if hasattr(redis, "get_primaries"):
        per_node = await redis.info("commandstats", target_nodes=redis.PRIMARIES)
        stats = list(per_node.values())
    else:
        stats = [await redis.info("commandstats")]
    return float(sum(int(s.get(name, {}).get("usec", 0)) for s in stats for name in SCRIPT_STATS))
