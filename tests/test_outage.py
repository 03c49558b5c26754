"""Store outages on a real redis-server: killed, restarted empty, stuck (DEBUG SLEEP, CLIENT
PAUSE, SIGSTOP). Every endpoint answers SRM-0008 without hanging, and service resumes once
Redis is back, with no restart of SRM.

Bounds are asserted with generous "did not hang" timeouts, never tight timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from srm.api.errors import DETAIL_HEADER
from srm.store import UNAVAILABLE_DETAILS
from tests.helpers import OPERATOR, SECRET, SETUP, api_on, auth
from tests.processes import SrmProcess, srm_env, start_srm, wait_ready
from tests.redis_servers import RedisProcess, debug_command_args, free_port, redis_process

# generous: each request is bounded by redis.request_deadline (1 s here) plus a pool wait
DID_NOT_HANG = 20.0

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test alone: it gets killed, paused and restarted."""
    with redis_process(*debug_command_args()) as server:
        yield server


def every_store_call(client: Any) -> list[Any]:
    """One request to every endpoint that needs the store, on both prefixes."""
    sid = str(uuid.uuid4())
    calls = [client.get("/ready")]
    for p in ("/srm", "/srm/v1"):
        acct = f"{p}/accounts/acct-x"
        calls += [
            client.post(f"{p}/sessions", json=SETUP, headers=auth()),
            client.get(f"{p}/sessions", headers=auth()),
            client.get(f"{p}/sessions/{sid}", headers=auth()),
            client.put(f"{p}/sessions/{sid}", headers=auth()),
            client.delete(f"{p}/sessions/{sid}", headers=auth()),
            client.get(f"{acct}/sessions", headers=OPERATOR),
            client.delete(f"{acct}/sessions", headers=OPERATOR),
            client.delete(f"{acct}/sessions/{sid}", headers=OPERATOR),
            client.get(f"{acct}/limit", headers=OPERATOR),
            client.put(f"{acct}/limit", json={"maxSessions": 2}, headers=OPERATOR),
            client.delete(f"{acct}/limit", headers=OPERATOR),
        ]
    return calls


async def assert_all_unavailable(client: Any) -> None:
    async with asyncio.timeout(DID_NOT_HANG):
        answers = await asyncio.gather(*every_store_call(client))
        bodies = [await a.json() for a in answers]
    for answer, body in zip(answers, bodies, strict=True):
        assert answer.status == 503, (answer.url, body)
        assert body["errorResponse"]["errorCode"] == "SRM-0008"
        assert answer.headers["X-Request-ID"]
        # SRM's own words only, never Redis's error text
        assert answer.headers.get(DETAIL_HEADER) in {None, *UNAVAILABLE_DETAILS}
    async with asyncio.timeout(DID_NOT_HANG):
        assert (await client.get("/health")).status == 200  # the process itself is fine


async def wait_store(client: Any) -> None:
    async with asyncio.timeout(DID_NOT_HANG):
        while (await client.get("/ready")).status != 200:
            await asyncio.sleep(0.1)


async def assert_service_works(client: Any, account: str) -> None:
    """A whole lifecycle, with every answer checked against what was asked (no mixed-up
    replies from connections that timed out mid-call)."""
    async with asyncio.timeout(DID_NOT_HANG):
        sids = []
        for device in ("a", "b"):
            resp = await client.post("/srm/sessions", json=SETUP, headers=auth(account, device))
            assert resp.status == 200
            sids.append((await resp.json())["successResponse"]["sessionId"])
        for sid, device in zip(sids, ("a", "b"), strict=True):
            got = await (await client.get(f"/srm/sessions/{sid}", headers=auth(account))).json()
            assert (got["sessionId"], got["deviceId"], got["state"]) == (sid, device, "ACTIVE")
            assert (await client.put(f"/srm/sessions/{sid}", headers=auth(account))).status == 200
        listing = await (await client.get("/srm/sessions", headers=auth(account))).json()
        assert {s["sessionId"] for s in listing["sessions"]} == set(sids)
        resp = await client.put(
            f"/srm/v1/accounts/{account}/limit", json={"maxSessions": 7}, headers=OPERATOR
        )
        assert await resp.json() == {"maxSessions": 7, "override": True, "rules": {}}
        resp = await client.delete(f"/srm/v1/accounts/{account}/sessions", headers=OPERATOR)
        assert await resp.json() == {"ended": 2}


async def test_redis_killed_then_restarted_empty(settings: Any, own_redis: RedisProcess) -> None:
    async with api_on(settings, own_redis.url) as client:
        await assert_service_works(client, "before")
        own_redis.kill(signal.SIGKILL)
        await assert_all_unavailable(client)
        await assert_all_unavailable(client)  # and again: nothing got wedged
        own_redis.start()  # same port, empty: the scripts are gone too
        with own_redis.client() as c:
            assert c.dbsize() == 0 and c.script_exists("0" * 40) == [False]
        await wait_store(client)
        await assert_service_works(client, "after")


def _stuck_until(server: RedisProcess, kind: str, seconds: float) -> threading.Thread:
    """Make *server* stop answering for about *seconds*, from another thread."""

    def run() -> None:
        with redis.Redis.from_url(server.url, socket_timeout=seconds + 30) as c:
            if kind == "debug-sleep":
                c.execute_command("DEBUG", "SLEEP", seconds)
            elif kind == "client-pause":
                c.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")

    if kind == "sigstop":
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        timer = threading.Timer(seconds, server.proc.send_signal, (signal.SIGCONT,))
        timer.start()
        return timer
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("kind", ["debug-sleep", "client-pause", "sigstop"])
async def test_redis_stuck_then_back(settings: Any, own_redis: RedisProcess, kind: str) -> None:
    async with api_on(settings, own_redis.url) as client:
        await assert_service_works(client, "before")
        # long enough that every bounded request finishes while Redis is still stuck, even
        # on a loaded machine that stalls this process for seconds
        stuck = _stuck_until(own_redis, kind, 10.0)
        try:
            await asyncio.sleep(0.3)  # let the command reach Redis
            await assert_all_unavailable(client)
        finally:
            await asyncio.to_thread(stuck.join, DID_NOT_HANG)
        await wait_store(client)
        await assert_service_works(client, f"after-{kind}")


async def test_a_busy_redis_keeps_its_error_text_to_the_log(
    settings: Any, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """BUSY (a script running too long) answers SRM-0008 with SRM's own detail, on /ready
    too; Redis's "BUSY Redis is busy running a script..." is logged, never sent."""
    with own_redis.client() as c:
        c.config_set("lua-time-limit", 50)  # answer BUSY once a script has run 50 ms

    def run_forever() -> None:
        with own_redis.client() as c, contextlib.suppress(redis.ResponseError):
            c.eval("while true do end", 0)  # until SCRIPT KILL

    busy = threading.Thread(target=run_forever, daemon=True)
    async with api_on(settings, own_redis.url) as client:
        busy.start()
        try:
            with own_redis.client() as c:
                while True:
                    with contextlib.suppress(redis.ResponseError):
                        c.ping()
                        await asyncio.sleep(0.05)
                        continue
                    break
            await assert_all_unavailable(client)
            ready = await client.get("/ready")
            assert ready.status == 503
            assert ready.headers[DETAIL_HEADER] == "store busy running a script"
        finally:
            with own_redis.client() as c:
                c.script_kill()
            await asyncio.to_thread(busy.join, DID_NOT_HANG)
        await wait_store(client)
    assert "BUSY Redis is busy running a script" in caplog.text


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=DID_NOT_HANG) as answer:  # noqa: S310
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_srm_serve_starts_before_redis_and_becomes_ready_with_it(tmp_path: Path) -> None:
    """Started with its Redis not up yet, srm serve is alive but not ready, then ready."""
    server = RedisProcess(port=free_port(), workdir=tmp_path, args=[])
    port = free_port()
    env = srm_env(SRM_PORT=str(port), SRM_AUTH_SECRET=SECRET, SRM_REDIS_URL=server.url)
    srm = SrmProcess(start_srm(["serve"], env, tmp_path / "srm.log"), port, tmp_path / "srm.log")
    try:
        deadline = time.monotonic() + DID_NOT_HANG
        while True:
            with contextlib.suppress(OSError):
                if _get(srm.base + "/health")[0] == 200:
                    break
            assert time.monotonic() < deadline and srm.proc.poll() is None, srm.output()
            time.sleep(0.1)
        status, body = _get(srm.base + "/ready")
        assert (status, body["errorResponse"]["errorCode"]) == (503, "SRM-0008")
        server.start()
        wait_ready(srm)
        assert srm.stop() == 0
    finally:
        if srm.proc.poll() is None:
            srm.stop(signal.SIGKILL)
        server.kill()
