"""One clock for every host: the Redis server's.

In-process, a store without a test clock takes every time from Redis (on each backend). Then
real `srm serve` and `srm reaper` processes whose clocks are off by tens of seconds (faketime,
with the monotonic clock left alone) give exactly the answers of a host with the right time.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest

from srm import keys as k
from srm.clock import ServerClock
from srm.model import NewSession, Policy, State
from srm.store import SessionStore
from tests import invariants
from tests.helpers import SECRET, token
from tests.processes import SrmProcess, srm_env, wait_ready
from tests.redis_servers import RedisProcess, free_port

POLICY = Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False)


async def server_ms(redis: Any) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_without_a_test_clock_every_time_is_the_servers(
    redis_client: Any, keyspace: k.Keys
) -> None:
    store = SessionStore(redis_client, keyspace, POLICY)
    sid = str(uuid.uuid4())
    before = await server_ms(redis_client)
    await store.setup(NewSession(sid, "acct-1", "dev-1", "c", "COD"))
    await store.keep_alive("acct-1", sid)
    after = await server_ms(redis_client)
    got = await store.get("acct-1", sid)
    assert got.state is State.ACTIVE
    assert before <= got.created_at <= got.last_keep_alive_at <= after  # type: ignore[operator]
    assert got.expires_at == got.last_keep_alive_at + POLICY.timeout_ms  # type: ignore[operator]
    assert before - 1000 <= await store.now() <= await server_ms(redis_client) + 1000
    await invariants.check(redis_client, keyspace)


async def test_the_estimate_follows_the_server_not_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ServerClock adds the measured offset to the host's monotonic clock: it reads the
    server's time (read halfway through the round trip), and measures again once the refresh
    period has passed, following a server whose clock was stepped. The host's monotonic clock
    is a test double here: the arithmetic is checked exactly, however loaded the machine."""
    mono = 1000.0  # the host's monotonic clock, in seconds (binary fractions: exact sums)
    ahead = 1_800_000_000 - 1000.25  # the server's clock, ahead of the host's monotonic one
    calls = 0

    async def read_time() -> tuple[int, int]:
        nonlocal calls, mono
        calls += 1
        mono += 0.25  # a round trip of 0.5 s, the server reading its clock halfway
        server = mono + ahead
        mono += 0.25
        return int(server), int((server % 1) * 1_000_000)

    monkeypatch.setattr("srm.clock.time", SimpleNamespace(monotonic=lambda: mono))
    clock = ServerClock(read_time, refresh=10)
    assert await clock.now() == 1_800_000_000_000 + 250  # measured, 250 ms ago
    mono += 9
    assert await clock.now() == 1_800_000_009_250  # within the refresh period: the estimate
    assert calls == 1
    mono += 1  # the refresh period has passed
    ahead += 3600  # and the server's clock was stepped an hour ahead
    assert await clock.now() == 1_800_003_610_750  # measured again: it follows the server
    assert calls == 2


# -- real processes with wrong clocks -------------------------------------------------------


def libfaketime() -> str:
    """Debian's libfaketime (package faketime), preloaded directly: the `faketime` wrapper
    forks, and its named semaphore can collide with one a killed wrapper left behind."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")) + sorted(
        glob.glob("/usr/lib/faketime/libfaketime.so.1")
    )
    assert found, "libfaketime not found: install Debian's faketime package (.ci/run does)"
    return found[0]


@contextmanager
def skewed_srm(tmp: Path, offset: str, *command: str, **settings: str) -> Iterator[SrmProcess]:
    """`srm <command>` whose wall clock is *offset* (e.g. "+50s") off, by libfaketime; its
    monotonic clock is left true. The port is SRM_PORT, if any."""
    env = srm_env(
        SRM_AUTH_SECRET=SECRET,
        LD_PRELOAD=libfaketime(),
        FAKETIME=offset,
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        **settings,
    )
    log = tmp / f"srm-{command[0]}-{offset}-{free_port()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "srm.cli", *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its children (workers, redis) are signalled with it
        )
    try:
        yield SrmProcess(proc, int(settings.get("SRM_PORT", "0")), log)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def skewed_serve(tmp: Path, offset: str, **settings: str) -> Iterator[SrmProcess]:
    port = free_port()
    with skewed_srm(tmp, offset, "serve", SRM_PORT=str(port), **settings) as srm:
        wait_ready(srm)
        yield srm


async def call(
    http: aiohttp.ClientSession, method: str, url: str, account: str = "acct-1"
) -> tuple[int, Any]:
    """One call with a token issued an hour ago: a token's own times are checked on the host's
    clock (``auth.leeway``), which is not what these tests are about."""
    body = {"content": {"contentID": "c-1", "contentType": "COD"}} if method == "POST" else None
    headers = {"Client-Token": token(account, iat=int(time.time()) - 3600)}
    async with http.request(method, url, json=body, headers=headers) as answer:
        text = await answer.text()
        return answer.status, (orjson.loads(text) if text else None)


def setup_ok(answer: tuple[int, Any]) -> str:
    status, body = answer
    assert status == 200 and "successResponse" in body, answer
    return str(body["successResponse"]["sessionId"])


@pytest.mark.slow
async def test_a_fast_host_neither_ends_live_sessions_nor_admits_one_too_many(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    """The host is 50 s fast and the timeout 20 s: on its own clock the account's three
    sessions lapsed long ago. Its setup must still see them live and deny the fourth."""
    common = {"SRM_REDIS_URL": real_redis.url, "SRM_SESSION_TIMEOUT": "20"}
    with (
        skewed_serve(tmp_path, "+0s", **common) as right,
        skewed_serve(tmp_path, "+50s", **common) as fast,
    ):
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                setup_ok(await call(http, "POST", right.base + "/srm/sessions"))
            _, body = await call(http, "POST", fast.base + "/srm/sessions")
            assert body["errorResponse"]["errorCode"] == "SRM-0005", body
            _, listing = await call(http, "GET", fast.base + "/srm/sessions")
            assert listing["activeCount"] == 3
            assert {s["state"] for s in listing["sessions"]} == {"ACTIVE"}


@pytest.mark.slow
async def test_a_slow_host_cannot_revive_a_lapsed_session(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    """The timeout is 1 s and the host 30 s slow: on its clock the lapsed session still has
    29 s to go. Its keep-alive must answer SRM-0004 and leave the deadline where it was."""
    common = {"SRM_REDIS_URL": real_redis.url, "SRM_SESSION_TIMEOUT": "1"}
    with (
        skewed_serve(tmp_path, "+0s", **common) as right,
        skewed_serve(tmp_path, "-30s", **common) as slow,
    ):
        async with aiohttp.ClientSession() as http:
            sid = setup_ok(await call(http, "POST", right.base + "/srm/sessions"))
            await asyncio.sleep(1.5)
            status, body = await call(http, "PUT", f"{slow.base}/srm/sessions/{sid}")
            assert status == 404 and body["errorResponse"]["errorCode"] == "SRM-0004"
            _, session = await call(http, "GET", f"{slow.base}/srm/sessions/{sid}")
            assert session["state"] == "ENDED" and session["endReason"] == "TIMEOUT"
            # a new session by the slow host gets a deadline on the server's clock
            sid2 = setup_ok(await call(http, "POST", slow.base + "/srm/sessions"))
            _, new = await call(http, "GET", f"{right.base}/srm/sessions/{sid2}")
            assert new["state"] == "ACTIVE"
            seconds, _ = real_redis.client().time()
            assert abs(_epoch(new["createdAt"]) - seconds) < 5


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
async def test_a_fast_reaper_ends_no_live_session(real_redis: RedisProcess, tmp_path: Path) -> None:
    """A reaper 30 s fast with the timeout at 20 s sweeps many times; the session kept alive
    by its player stays ACTIVE, and one left alone is ended by that reaper once it lapses."""
    common = {"SRM_REDIS_URL": real_redis.url, "SRM_SESSION_TIMEOUT": "20"}
    reaper_settings = {
        **common,
        "SRM_REAPER_INTERVAL": "0.1",
        "SRM_REAPER_METRICS_PORT": "0",
    }
    with skewed_serve(tmp_path, "+0s", **common) as right:
        async with aiohttp.ClientSession() as http:
            sid = setup_ok(await call(http, "POST", right.base + "/srm/sessions"))
            with skewed_srm(tmp_path, "+30s", "reaper", **reaper_settings) as reaper:
                await asyncio.sleep(2.0)  # about 20 passes of the fast reaper
                assert reaper.proc.poll() is None, reaper.output()
                status, _ = await call(http, "PUT", f"{right.base}/srm/sessions/{sid}")
                assert status == 200
                _, got = await call(http, "GET", f"{right.base}/srm/sessions/{sid}")
                assert got["state"] == "ACTIVE" and got["endReason"] is None


@pytest.mark.slow
async def test_a_fast_reaper_still_ends_what_lapsed_on_the_servers_clock(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    common = {"SRM_REDIS_URL": real_redis.url, "SRM_SESSION_TIMEOUT": "1"}
    reaper_settings = {**common, "SRM_REAPER_INTERVAL": "0.1", "SRM_REAPER_METRICS_PORT": "0"}
    with skewed_serve(tmp_path, "-30s", **common) as slow:
        async with aiohttp.ClientSession() as http:
            sid = setup_ok(await call(http, "POST", slow.base + "/srm/sessions"))
            with skewed_srm(tmp_path, "+30s", "reaper", **reaper_settings):
                keyspace = k.Keys(shards=256)
                member = k.member("acct-1", sid)
                with real_redis.client() as redis:
                    for _ in range(100):
                        if redis.zscore(keyspace.account("acct-1").reap, member) is not None:
                            break
                        await asyncio.sleep(0.1)
                    else:
                        raise AssertionError("the reaper did not end the lapsed session")
            _, got = await call(http, "GET", f"{slow.base}/srm/sessions/{sid}")
            assert got["state"] == "ENDED" and got["endReason"] == "TIMEOUT"
