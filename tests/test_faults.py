"""Fault injection with real processes: Redis killed, restarted or stalled, and API workers
SIGKILLed, all under a steady load of player lifecycles. Afterwards nothing acknowledged is
lost or undone and every counter equals its active set."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from srm import keys as k
from srm.config import RedisSettings
from srm.connection import connect
from srm.errors import SessionNotFound
from srm.model import EndReason, Policy, State
from srm.store import SessionStore
from tests import invariants
from tests.conftest import auth
from tests.keyspace import is_history
from tests.processes import SrmProcess, srm_serve
from tests.redis_servers import RedisProcess, free_port

pytestmark = pytest.mark.slow

SETUP = {"content": {"contentID": "100001V3D", "contentType": "COD"}}
ACCOUNTS = [f"fault-{i}" for i in range(12)]
SHARDS = 16
ALLOWED_ERRORS = {"SRM-0005", "SRM-0008"}


@dataclass
class Ledger:
    """What the players were told: the ground truth to check Redis against afterwards."""

    acked_setups: dict[str, str] = field(default_factory=dict)  # sid -> account
    acked_teardowns: set[str] = field(default_factory=set)
    unavailable: int = 0
    denied: int = 0
    transport_errors: int = 0
    answers: int = 0


async def player(
    http: aiohttp.ClientSession, account: str, ledger: Ledger, stop: asyncio.Event
) -> None:
    headers = auth(account)
    while not stop.is_set():
        sid = None
        try:
            body = await _call(http, "POST", "/srm/sessions", headers, ledger, json=SETUP)
            if body and "successResponse" in body:
                sid = body["successResponse"]["sessionId"]
                ledger.acked_setups[sid] = account
            if sid is None:
                await asyncio.sleep(0.02)
                continue
            await _call(http, "PUT", f"/srm/sessions/{sid}", headers, ledger)
            for _ in range(3):  # a teardown that is not acknowledged is retried, as players do
                if await _call(http, "DELETE", f"/srm/sessions/{sid}", headers, ledger) == {}:
                    ledger.acked_teardowns.add(sid)
                    break
                await asyncio.sleep(0.05)
        except (aiohttp.ClientError, TimeoutError):
            ledger.transport_errors += 1
            await asyncio.sleep(0.05)


async def _call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    headers: dict[str, str],
    ledger: Ledger,
    json: Any = None,
) -> dict[str, Any] | None:
    """The answer's body ({} for an empty 200), or None for a contract error."""
    async with http.request(method, path, headers=headers, json=json) as answer:
        ledger.answers += 1
        raw = await answer.read()
        if answer.status == 200 and not raw:
            return {}
        body: dict[str, Any] = await answer.json(content_type=None)
        if "errorResponse" in body:
            code = body["errorResponse"]["errorCode"]
            assert code in ALLOWED_ERRORS or (code == "SRM-0004" and method != "POST"), body
            ledger.unavailable += code == "SRM-0008"
            ledger.denied += code == "SRM-0005"
            return None
        return body


async def run_load(
    base: str, fault: Callable[[], Any], *, before: float = 1.0, after: float = 2.0
) -> Ledger:
    """Players on every account; *fault* runs (in a thread) after *before* seconds."""
    ledger, stop = Ledger(), asyncio.Event()
    # a generous per-request bound: a request that takes longer than this has hung
    timeout = aiohttp.ClientTimeout(total=15)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(base, timeout=timeout, connector=connector) as http:
        players = [
            asyncio.create_task(player(http, a, ledger, stop)) for a in ACCOUNTS for _ in range(2)
        ]
        await asyncio.sleep(before)
        await asyncio.to_thread(fault)
        await asyncio.sleep(after)
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*players)
    return ledger


async def verify(url: str, ledger: Ledger, *, durable: bool = True) -> None:
    """After the fault: invariants hold, acknowledged work stuck, and all can be removed."""
    redis = connect(RedisSettings(url=url))  # any topology's URL
    keyspace = k.Keys(SHARDS)
    try:
        await invariants.check(redis, keyspace)
        store = SessionStore(redis, keyspace, Policy(120_000, 3, 60_000, evict=False))
        if durable:
            for sid, account in ledger.acked_setups.items():
                try:
                    session = await store.get(account, sid)
                except SessionNotFound:
                    pytest.fail(f"acknowledged setup {sid} was lost")
                if sid in ledger.acked_teardowns:
                    assert session.state is State.ENDED, f"acknowledged teardown {sid} undone"
                    assert session.end_reason is EndReason.TEARDOWN
        for account in ACCOUNTS:
            listing = await store.account_sessions(account)
            assert listing.active_count <= 3
            await store.end_all(account, EndReason.OPERATOR)
        # removal: a store whose clock is past every retention purges everything
        later = SessionStore(
            redis, keyspace, store.policy, clock=lambda: int(time.time() * 1000) + 3_600_000
        )
        for shard in range(SHARDS):
            while await later.purge(shard, 500):
                pass
        left = [key async for key in redis.scan_iter(match="srm:*") if not is_history(key)]
        # a denied setup's record (so that a retry answers the same denial) expires by itself
        left = [
            key
            for key in left
            if not (
                ":sess:" in key and await redis.hexists(key, "denied") and await redis.pttl(key) > 0
            )
        ]
        assert left == [], f"keys left for removed sessions: {left[:5]}"
    finally:
        await redis.aclose()


@contextlib.contextmanager
def redis_with(*args: str) -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="srm-fault-") as tmp:
        server = RedisProcess(port=free_port(), workdir=Path(tmp), args=list(args))
        server.start()
        try:
            yield server
        finally:
            server.kill()


def serve_on(
    redis: RedisProcess, tmp: Path, **env: str
) -> contextlib.AbstractContextManager[SrmProcess]:
    return srm_serve(
        tmp,
        SRM_REDIS_URL=redis.url,
        SRM_REDIS_SHARDS=str(SHARDS),
        SRM_REDIS_REQUEST_DEADLINE="1.5",
        **env,
    )


def test_redis_killed_and_restarted_with_aof_loses_nothing(tmp_path: Path) -> None:
    with (
        redis_with("--appendonly", "yes", "--appendfsync", "always") as redis,
        serve_on(redis, tmp_path) as srm,
    ):

        def fault() -> None:
            redis.kill(signal.SIGKILL)
            time.sleep(1.0)
            redis.start()

        ledger = asyncio.run(run_load(srm.base, fault))
        assert ledger.unavailable > 0, "the outage was not observed"
        assert len(ledger.acked_setups) > 20
        assert srm.stop() == 0
        asyncio.run(verify(redis.url, ledger))


def test_redis_restarted_empty_resumes_service(tmp_path: Path) -> None:
    with redis_with("--appendonly", "no") as redis, serve_on(redis, tmp_path) as srm:

        def fault() -> None:
            redis.kill(signal.SIGKILL)
            time.sleep(0.5)
            redis.start()  # no persistence: everything is gone, scripts too

        ledger = asyncio.run(run_load(srm.base, fault))
        assert ledger.unavailable > 0
        late = Ledger()
        asyncio.run(run_load(srm.base, lambda: None, before=0.5, after=0.5))
        assert srm.stop() == 0
        asyncio.run(verify(redis.url, late, durable=False))


def test_redis_stalled_answers_srm_0008_then_recovers(tmp_path: Path) -> None:
    with (
        redis_with("--appendonly", "yes", "--appendfsync", "always") as redis,
        serve_on(redis, tmp_path) as srm,
    ):

        def fault() -> None:
            with redis.client() as c:
                c.execute_command("CLIENT", "PAUSE", "3000", "ALL")  # every command waits 3 s
            time.sleep(3)

        ledger = asyncio.run(run_load(srm.base, fault, after=1.5))
        assert ledger.unavailable > 0
        assert srm.stop() == 0
        asyncio.run(verify(redis.url, ledger))


def test_api_worker_killed_under_load(tmp_path: Path) -> None:
    with (
        redis_with("--appendonly", "no") as redis,
        serve_on(redis, tmp_path, SRM_WORKERS="2") as srm,
    ):

        def fault() -> None:
            workers = subprocess.run(
                ["pgrep", "-P", str(srm.proc.pid), "-f", "spawn_main"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            assert len(workers) == 2, workers
            subprocess.run(["kill", "-KILL", workers[0]], check=True)

        ledger = asyncio.run(run_load(srm.base, fault))
        assert srm.proc.poll() is None, "the supervisor died with its worker"
        after = Ledger()
        asyncio.run(_serves(srm.base, after))
        assert srm.stop() == 0
        asyncio.run(verify(redis.url, ledger))


async def _serves(base: str, ledger: Ledger) -> None:
    """After the fault every request is answered again (the dead worker was replaced)."""
    async with aiohttp.ClientSession(base) as http:
        for _ in range(20):
            body = await _call(http, "GET", "/srm/sessions", auth("fault-probe"), ledger)
            assert body is not None and "sessions" in body
