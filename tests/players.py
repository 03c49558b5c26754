"""Players under a fault: steady setup/keep-alive/teardown lifecycles on a live srm, the
ledger of what they were told, and the check of Redis against that ledger afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from srm import keys as k
from srm import records
from srm.connection import connect
from srm.errors import SessionNotFound
from srm.model import EndReason, Policy, State
from srm.store import SessionStore
from tests import invariants
from tests.helpers import SETUP, auth, redis_settings
from tests.keyspace import is_history

ACCOUNTS = [f"fault-{i}" for i in range(12)]
SHARDS = 16
# The players loop setups on few accounts as fast as SRM answers (hundreds a minute each), to
# load Redis through the fault: no viewer does that, and the default setup rate (120 a minute
# per account) would refuse most of them. The `srm serve` they call runs without it.
LOAD_ENV = {"SRM_SETUPS_PER_MINUTE": "0"}
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
            body = await call(http, "POST", "/srm/sessions", headers, ledger, json=SETUP)
            if body and "successResponse" in body:
                sid = body["successResponse"]["sessionId"]
                ledger.acked_setups[sid] = account
            if sid is None:
                await asyncio.sleep(0.02)
                continue
            await call(http, "PUT", f"/srm/sessions/{sid}", headers, ledger)
            for _ in range(3):  # a teardown that is not acknowledged is retried, as players do
                if await call(http, "DELETE", f"/srm/sessions/{sid}", headers, ledger) == {}:
                    ledger.acked_teardowns.add(sid)
                    break
                await asyncio.sleep(0.05)
        except (aiohttp.ClientError, TimeoutError):
            ledger.transport_errors += 1
            await asyncio.sleep(0.05)


async def call(
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
    redis = connect(redis_settings(url=url))  # any topology's URL
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
        # an account hash left with its usage days only expires by itself (the usage history),
        # and so does the marker of a denied setup, within 10 s; a shard's count of ACTIVE
        # sessions stays, at 0
        left = [
            key
            for key in left
            if not await usage_only(redis, keyspace, key)
            and not await denial_marker(redis, key)
            and not await zero_shard_count(redis, keyspace, key)
        ]
        assert left == [], f"keys left for removed sessions: {left[:5]}"
    finally:
        await redis.aclose()


async def denial_marker(redis: Any, key: str) -> bool:
    """Whether *key* is the short-lived marker of a denied setup (keys.Keys.denied)."""
    return ":denied:" in key and 0 < await redis.pttl(key) <= 10_000


async def zero_shard_count(redis: Any, keyspace: k.Keys, key: str) -> bool:
    """Whether *key* is a shard's count of ACTIVE sessions (keys.Keys.active), at 0."""
    shards = range(keyspace.shards)
    return key in {keyspace.active(s) for s in shards} and int(await redis.hget(key, "n") or 0) == 0


async def usage_only(redis: Any, keyspace: k.Keys, key: str) -> bool:
    """Whether *key* is an account hash holding usage days only, with a TTL."""
    parsed = keyspace.parse_account_key(key)
    if parsed is None or parsed[1] != "state":
        return False
    fields = await redis.hkeys(key)
    return all(map(records.is_day_field, fields)) and await redis.pttl(key) > 0
