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
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import auth
from tests.players import LOAD_ENV, SHARDS, Ledger, call, run_load, verify
from tests.processes import SrmProcess, srm_serve
from tests.redis_servers import RedisProcess, free_port

pytestmark = pytest.mark.slow


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
        **LOAD_ENV,
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
        # service resumed on the empty Redis: new lifecycles are acknowledged, and stick
        late = asyncio.run(run_load(srm.base, lambda: None, before=0.5, after=0.5))
        assert late.acked_setups and late.acked_teardowns, late
        assert srm.stop() == 0
        asyncio.run(verify(redis.url, late))


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
            body = await call(http, "GET", "/srm/sessions", auth("fault-probe"), ledger)
            assert body is not None and "sessions" in body
