"""Real `srm reaper` (and embedded `srm serve`) processes against a real redis-server."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from srm import keys as k
from srm.errors import LimitReached
from srm.model import EndReason, NewSession, Policy
from srm.records import COUNT_FIELD
from srm.store import SessionStore, wall_clock_ms
from tests import invariants
from tests.helpers import auth, metrics, until
from tests.keyspace import mentioned_ids
from tests.processes import srm_env, srm_serve, start_srm
from tests.redis_servers import RedisProcess, free_port, redis_process

pytestmark = pytest.mark.slow

SHARDS = 16
HOUR_MS = 3_600_000
POLICY = Policy(timeout_ms=120_000, max_sessions=3, retention_ms=0, evict=False)
Start = Callable[..., subprocess.Popen[bytes]]
UNAVAILABLE = 'srm_reaper_errors_total{kind="unavailable"}'


def reaper_env(**settings: str) -> dict[str, str]:
    return srm_env(**{"SRM_REDIS_SHARDS": str(SHARDS), "SRM_REAPER_METRICS_PORT": "0", **settings})


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts `srm <command>` processes (output kept in tmp_path); kills leftovers after."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(*command: str, **settings: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"srm-{len(procs)}.log"
        procs.append(start_srm(list(command), reaper_env(**settings), log, cwd=tmp_path))
        return procs[-1]

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def check(url: str, reaper_id: str) -> int:
    """The exit code of `srm reaper --check` for *reaper_id*."""
    return subprocess.run(
        [sys.executable, "-m", "srm.cli", "reaper", "--check"],
        env=reaper_env(SRM_REDIS_URL=url, SRM_REAPER_ID=reaper_id),
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


def stopped(proc: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout)


@pytest.fixture
async def redis(real_redis: RedisProcess) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(
        real_redis.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    yield client
    await client.aclose()


async def queued(redis: Any, keyspace: k.Keys) -> int:
    """Sessions still to sweep (the ACTIVE ones of the due accounts) or queued for the purge,
    over all shards, as of one moment: a sweep ends a session (its account's count goes
    down) and queues it for the purge (the queue goes up) in one step, so reads taken on
    either side of a sweep would show progress that was not made. The keys are watched and
    read again when a reaper changed them in between."""
    dues = [keyspace.due(shard) for shard in range(keyspace.shards)]
    reaps = [keyspace.reap(shard) for shard in range(keyspace.shards)]
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(*dues, *reaps)
                due = [account for key in dues for account in await pipe.zrange(key, 0, -1)]
                states = [keyspace.account(account).state for account in due]
                if states:
                    await pipe.watch(*states)
                pipe.multi()
                for key in reaps:
                    pipe.zcard(key)
                for state in states:
                    pipe.hget(state, COUNT_FIELD)
                replies = await pipe.execute()
            except WatchError:
                continue
        purge, counts = replies[: len(reaps)], replies[len(reaps) :]
        return int(sum(purge)) + sum(int(n or 0) for n in counts)


async def test_backlog_survives_a_kill_and_two_reapers(
    real_redis: RedisProcess, redis: Any, start: Start
) -> None:
    keyspace = k.Keys(SHARDS)
    past = SessionStore(redis, keyspace, POLICY, clock=lambda: wall_clock_ms() - HOUR_MS)
    limits: dict[str, int] = {}
    sessions: list[NewSession] = []
    for i in range(160):
        account = f"acct-{i}"
        limits[account] = 4 if i % 10 == 0 else 3
        if limits[account] != 3:
            await past.set_limit(account, limits[account])
        for j in range(limits[account]):
            s = NewSession(str(uuid.uuid4()), account, f"dev-{j}", "100001V3D", "COD")
            await past.setup(s)
            sessions.append(s)
        if i % 3 == 0:  # some ended by the client an hour ago, queued for the purge
            await past.end(account, sessions[-1].session_id, EndReason.TEARDOWN)
    assert len(sessions) >= 400
    total = await queued(redis, keyspace)
    slow = {
        "SRM_REDIS_URL": real_redis.url,
        "SRM_ENDED_RETENTION": "0",
        "SRM_REAPER_INTERVAL": "0.5",  # 16 shards x 2 accounts or purges per pass: seconds
        "SRM_REAPER_BATCH_SIZE": "2",
        "SRM_REAPER_MAX_BATCHES": "1",
    }
    first = start("reaper", SRM_REAPER_ID="reaper-a", **slow)

    async def progressed(by: int) -> bool:
        return await queued(redis, keyspace) <= total - by

    await until(lambda: progressed(1), what="the first reaper to start on the backlog")
    first.kill()  # SIGKILL, mid-backlog
    first.wait(10)
    left = await queued(redis, keyspace)
    assert 0 < left < total, "the backlog should have been cut off in the middle"
    await invariants.check(redis, keyspace)

    restarted = start("reaper", SRM_REAPER_ID="reaper-a", **slow)
    await until(lambda: progressed(total - left + 1), what="the restarted reaper to progress")
    metrics_port = free_port()
    second = start(
        "reaper", SRM_REAPER_ID="reaper-b", SRM_REAPER_METRICS_PORT=str(metrics_port), **slow
    )
    ids = {s.session_id for s in sessions}

    async def all_gone() -> bool:
        return await queued(redis, keyspace) == 0 and not ids & await mentioned_ids(redis)

    await until(all_gone, timeout=60, what="every session to be removed")
    text = await metrics(metrics_port)
    for name in ("sessions_expired_total", "sessions_purged_total", "lag_seconds", "passes_total"):
        assert f"srm_reaper_{name}" in text
    assert 'srm_reaper_batches_total{op="sweep"}' in text, "the second reaper had no share"
    assert stopped(restarted, signal.SIGTERM) == 0
    assert stopped(second, signal.SIGTERM) == 0

    await invariants.check(redis, keyspace)
    now = SessionStore(redis, keyspace, POLICY)
    for account, limit in limits.items():
        assert await redis.hget(keyspace.account(account).state, COUNT_FIELD) is None
        assert await redis.zscore(keyspace.account(account).due, account) is None
        for j in range(limit):
            await now.setup(NewSession(str(uuid.uuid4()), account, f"d{j}", "c", "COD"))
        with pytest.raises(LimitReached):
            await now.setup(NewSession(str(uuid.uuid4()), account, "over", "c", "COD"))


async def test_sigterm_exits_zero_and_check_tells_live_from_dead(
    real_redis: RedisProcess, redis: Any, start: Start
) -> None:
    keyspace = k.Keys(SHARDS)
    url = real_redis.url
    common = {"SRM_REDIS_URL": url, "SRM_REAPER_INTERVAL": "0.1", "SRM_REAPER_HEARTBEAT_TTL": "1"}
    killed = start("reaper", SRM_REAPER_ID="killed", **common)
    termed = start("reaper", SRM_REAPER_ID="termed", **common)
    for rid in ("killed", "termed"):
        await until(lambda rid=rid: redis.exists(keyspace.heartbeat(rid)), what=f"{rid} beat")
    assert check(url, "killed") == 0
    assert check(url, "termed") == 0
    assert check(url, "never-started") == 1

    assert stopped(termed, signal.SIGTERM) == 0
    assert check(url, "termed") == 1  # a clean stop clears its heartbeat at once
    killed.kill()
    killed.wait(10)

    async def expired() -> bool:
        return await redis.exists(keyspace.heartbeat("killed")) == 0

    await until(expired, what="the dead reaper's heartbeat to expire")
    assert check(url, "killed") == 1
    assert check(f"redis://127.0.0.1:{free_port()}/0", "killed") == 1  # Redis unreachable


async def test_reaper_rides_out_a_redis_outage(start: Start) -> None:
    keyspace = k.Keys(SHARDS)
    metrics_port = free_port()
    with redis_process() as server:
        reaper = start(
            "reaper",
            SRM_REDIS_URL=server.url,
            SRM_REAPER_ID="outage",
            SRM_REAPER_INTERVAL="0.1",
            SRM_ENDED_RETENTION="0",
            SRM_REAPER_METRICS_PORT=str(metrics_port),
        )
        with server.client() as c:
            await until(lambda: c.exists(keyspace.heartbeat("outage")), what="a heartbeat")
        server.kill()

        async def noticed() -> bool:
            return UNAVAILABLE in await metrics(metrics_port)

        await until(noticed, what="the reaper to notice the outage")
        server.start()  # same port, empty
        redis = aioredis.Redis.from_url(
            server.url, decode_responses=True, encoding_errors="surrogateescape"
        )
        try:
            past = SessionStore(redis, keyspace, POLICY, clock=lambda: wall_clock_ms() - HOUR_MS)
            ids = []
            for i in range(20):
                s = NewSession(str(uuid.uuid4()), f"acct-{i}", "dev", "100001V3D", "COD")
                await past.setup(s)
                ids.append(s.session_id)

            async def all_gone() -> bool:
                return not set(ids) & await mentioned_ids(redis)

            await until(all_gone, what="the reaper to come back after the outage")
            await invariants.check(redis, keyspace)
        finally:
            await redis.aclose()
        assert reaper.poll() is None
        assert stopped(reaper, signal.SIGTERM) == 0


async def test_embedded_serve_ends_lapsed_sessions_by_itself(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with srm_serve(
        tmp_path,
        cwd=tmp_path,
        SRM_EMBEDDED_DATA_DIR=str(data),
        SRM_SESSION_TIMEOUT="1",
        SRM_ENDED_RETENTION="0",
        SRM_REAPER_INTERVAL="0.1",
        SRM_REAPER_METRICS_PORT="0",
    ) as serve:
        async with aiohttp.ClientSession(serve.base) as http:
            body = {"content": {"contentID": "100001V3D", "contentType": "COD"}}
            ids = []
            for _ in range(3):
                async with http.post("/srm/sessions", json=body, headers=auth()) as resp:
                    ids.append((await resp.json())["successResponse"]["sessionId"])

            async def listed() -> list[str]:
                async with http.get("/srm/sessions", headers=auth()) as resp:
                    return [s["sessionId"] for s in (await resp.json())["sessions"]]

            assert sorted(await listed()) == sorted(ids)

            # no further request touches them: only the embedded reaper can remove them
            async def removed() -> bool:
                return await listed() == []

            await until(removed, what="the embedded reaper to remove them")
        store = aioredis.Redis(
            unix_socket_path=str(data / "redis.sock"),
            decode_responses=True,
            encoding_errors="surrogateescape",
        )
        try:
            assert not set(ids) & await mentioned_ids(store)
        finally:
            await store.aclose()
        assert serve.stop() == 0
