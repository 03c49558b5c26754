"""Real `srm events` processes against a real redis-server: kills, restarts and exit codes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from srm import keys as k
from srm.events.schema import event_id
from srm.model import EndReason, NewSession, Policy
from srm.store import SessionStore
from tests.helpers import metrics, until
from tests.processes import srm_env
from tests.redis_servers import RedisProcess, free_port, redis_process

pytestmark = pytest.mark.slow

SHARDS = 16
POLICY = Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False)


class EventsProcess:
    """`srm events` with its stdout (the events) and stderr (its log) in two files."""

    def __init__(self, tmp: Path, url: str, *args: str, **settings: str) -> None:
        n = len(list(tmp.glob("events-*.out")))
        self.out = tmp / f"events-{n}.out"
        self.err = tmp / f"events-{n}.err"
        env = srm_env(
            **{
                "SRM_REDIS_URL": url,
                "SRM_REDIS_SHARDS": str(SHARDS),
                "SRM_EVENTS_METRICS_PORT": "0",
                "SRM_EVENTS_POLL_INTERVAL": "0.05",
                **settings,
            }
        )
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "srm.cli", "events", *args], env=env, stdout=out, stderr=err
            )

    def events(self) -> list[dict[str, Any]]:
        """The complete lines written so far (a kill may cut the last one)."""
        found = []
        for line in self.out.read_bytes().split(b"\n"):
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def consumers(tmp_path: Path) -> Iterator[Callable[..., EventsProcess]]:
    started: list[EventsProcess] = []

    def start(url: str, *args: str, **settings: str) -> EventsProcess:
        started.append(EventsProcess(tmp_path, url, *args, **settings))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.wait(10)


@pytest.fixture
async def redis(real_redis: RedisProcess) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(
        real_redis.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    yield client
    await client.aclose()


async def changes(store: SessionStore, accounts: int, tag: str) -> None:
    """Per account: two setups and one teardown (three events), many accounts at once."""

    async def one(i: int) -> None:
        account = f"{tag}-{i}"
        sessions = [NewSession(str(uuid.uuid4()), account, f"d{j}", "c", "COD") for j in range(2)]
        for s in sessions:
            await store.setup(s)
        await store.end(account, sessions[0].session_id, EndReason.TEARDOWN)

    for start in range(0, accounts, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(accounts, start + 200))))


async def written(redis: Any, keyspace: k.Keys) -> set[str]:
    """The id of every event in the streams."""
    ids = set()
    for shard in range(keyspace.shards):
        for entry_id, _fields in await redis.xrange(keyspace.events(shard)):
            ids.add(event_id(shard, entry_id))
    return ids


async def test_sigkill_mid_stream_and_a_restart_lose_nothing(
    real_redis: RedisProcess, redis: Any, consumers: Callable[..., EventsProcess]
) -> None:
    keyspace = k.Keys(SHARDS)
    store = SessionStore(redis, keyspace, POLICY)
    await changes(store, 2000, "before")
    slow = {"SRM_EVENTS_BATCH_SIZE": "1", "SRM_EVENTS_CLAIM_IDLE": "1"}
    first = consumers(real_redis.url, **slow)
    await until(lambda: len(first.events()) > 0, what="the first events")
    first.stop(signal.SIGKILL)
    cut = len(first.events())
    assert 0 < cut < 6000, "the consumer should have been killed mid-stream"
    await changes(store, 100, "while-dead")
    expected = await written(redis, keyspace)
    assert len(expected) == 6300

    second = consumers(real_redis.url, **slow)

    def delivered() -> set[str]:
        return {e["id"] for p in (first, second) for e in p.events()}

    await until(lambda: delivered() >= expected, timeout=120, what="every event delivered")
    assert delivered() == expected

    async def all_acknowledged() -> bool:
        # what the killed consumer had printed but not acknowledged is claimed (after
        # claim_idle), delivered again and acknowledged by the second
        for shard in range(SHARDS):
            if (await redis.xpending(keyspace.events(shard), "srm-events"))["pending"]:
                return False
        return True

    await until(all_acknowledged, timeout=60, what="every event acknowledged")
    assert second.stop() == 0
    # one id per change: each session started once, and the torn-down one ended once
    unique = {e["id"]: e for p in (first, second) for e in p.events()}.values()
    per_change = Counter((e["type"], e["sessionId"]) for e in unique)
    assert set(per_change.values()) == {1}
    assert Counter(e["type"] for e in unique) == {"session.started": 4200, "session.ended": 2100}


async def test_the_consumer_rides_out_a_redis_restart(
    tmp_path: Path, consumers: Callable[..., EventsProcess]
) -> None:
    keyspace = k.Keys(SHARDS)
    with redis_process("--appendonly", "yes") as server:
        client = aioredis.Redis.from_url(
            server.url, decode_responses=True, encoding_errors="surrogateescape"
        )
        try:
            consumer = consumers(server.url, SRM_REDIS_REQUEST_DEADLINE="1.0")
            await changes(SessionStore(client, keyspace, POLICY), 50, "before")
            before = await written(client, keyspace)
            await until(lambda: {e["id"] for e in consumer.events()} >= before, what="delivery")
            await client.aclose()
            server.kill(signal.SIGTERM)  # a clean shutdown: the AOF keeps the streams and group
            await asyncio.sleep(1.0)
            server.start()
            client = aioredis.Redis.from_url(
                server.url, decode_responses=True, encoding_errors="surrogateescape"
            )
            await changes(SessionStore(client, keyspace, POLICY), 50, "after")
            every = await written(client, keyspace)
            assert len(every) == 300

            def delivered() -> set[str]:
                return {e["id"] for e in consumer.events()}

            await until(lambda: delivered() >= every, timeout=60, what="delivery after restart")
            assert consumer.proc.poll() is None
            assert consumer.stop() == 0
            assert "retrying" in consumer.err.read_text()
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    "args",
    [
        ("--webhook", "ftp://example.com/x"),
        ("--webhook", "not a url"),
        ("--webhook", "http://"),
        ("--group", ""),
        ("--group", "two words"),
    ],
)
def test_bad_arguments_exit_2_at_start(args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "srm.cli", "events", *args],
        env=srm_env(SRM_REDIS_URL="redis://127.0.0.1:1/0"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert b"srm events" in result.stderr


async def test_webhook_down_then_up_sigterm_mid_retry_and_metrics(
    real_redis: RedisProcess, redis: Any, consumers: Callable[..., EventsProcess]
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    received: list[dict[str, Any]] = []
    attempts = [0]
    up = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        attempts[0] += 1
        if not up.is_set():
            return web.Response(status=503)
        received.extend(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    keyspace = k.Keys(SHARDS)
    await changes(SessionStore(redis, keyspace, POLICY), 40, "hook")
    expected = await written(redis, keyspace)
    async with TestServer(app) as server:
        url = str(server.make_url("/hook"))
        fast = {"SRM_EVENTS_CLAIM_IDLE": "1", "SRM_EVENTS_RETRY_CAP": "0.2"}
        first = consumers(real_redis.url, "--webhook", url, **fast)
        await until(lambda: attempts[0] >= 3, what="the webhook to be retried")
        assert first.stop() == 0  # SIGTERM while retrying: exits 0, nothing acknowledged
        assert received == []
        up.set()
        port = free_port()
        second = consumers(
            real_redis.url, "--webhook", url, SRM_EVENTS_METRICS_PORT=str(port), **fast
        )

        def delivered() -> set[str]:
            return {e["id"] for e in received}

        await until(lambda: delivered() >= expected, timeout=60, what="every event delivered")
        assert delivered() == expected
        text = await metrics(port)
        for name in (
            "srm_events_delivered_total",
            "srm_events_claimed_total",
            "srm_events_lost_total",
            "srm_events_pending",
            "srm_events_lag_seconds",
        ):
            assert name in text
        assert "srm_events_claimed_total 120.0" in text  # the first consumer's, after claim_idle
        assert second.stop() == 0
