"""A request's Redis work is bounded by the account's ACTIVE sessions (and a constant), never
by its history: ENDED records waiting for the reaper cost a setup, a denial, a keep-alive, a
teardown, a `replaces` or a lapse nothing, and a listing page one page of them.

Work is counted, not timed: every script runs with each ``redis.call`` counted in a key of the
test's own, one unit per command, per argument and per element of its reply, so an HGETALL of
5,000 records counts 10,000 where a fresh account's counts a handful."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from srm import keys as k
from srm.errors import LimitReached
from srm.model import EndReason, NewSession, Policy
from srm.rules import Rule
from srm.store import SessionStore, build_library
from tests import invariants
from tests.helpers import Clock, in_batches
from tests.redis_servers import RedisProcess

WORK = "srm-test:work"  # a standalone server only: the counter is no key of any script's slot
ENDED = 5_000
RULES = (Rule("one-per-tv", 1, device_types=("tv",), per="device", policy="evict"),)
# Every redis.call of a script goes through this, which adds its cost to WORK.
COUNTING = """
local function __counted(...)
  local reply = redis.call(...)
  local n = 1 + select('#', ...)
  if type(reply) == 'table' then
    n = n + #reply
    for _, item in ipairs(reply) do
      if type(item) == 'table' then
        n = n + #item
      end
    end
  end
  redis.call('INCRBY', 'WORK', n)
  return reply
end
""".replace("WORK", WORK)


@pytest.fixture
async def redis(real_redis: RedisProcess) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(
        real_redis.url, decode_responses=True, encoding_errors="surrogateescape"
    )
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Any, clock: Clock) -> SessionStore:
    store = SessionStore(
        redis,
        k.Keys(shards=4),
        Policy(
            timeout_ms=120_000, max_sessions=ENDED, retention_ms=60_000, evict=False, rules=RULES
        ),
        clock=clock,
    )
    store.use_library(
        build_library(
            store.SCRIPTS,
            lambda text: text.replace("redis.call(", "__counted("),
            COUNTING,
            flags={},  # the counting writes, in every function
        )
    )
    return store


def new(account: str, device: str = "phone-1", **kw: Any) -> NewSession:
    device_type = "tv" if device.startswith("tv") else "phone"
    return NewSession(
        str(uuid.uuid4()), account, device, "100001V3D", "COD", device_type=device_type, **kw
    )


async def work(store: SessionStore, call: Any) -> int:
    """The Redis work of one store call."""
    before = int(await store.redis.get(WORK) or 0)
    with contextlib.suppress(LimitReached):
        await call
    return int(await store.redis.get(WORK) or 0) - before


async def with_history(store: SessionStore, account: str, ended: int) -> None:
    """*ended* sessions set up and ended (waiting for the reaper) in *account*."""
    await in_batches([new(account, f"phone-{i}") for i in range(ended)], store.setup)
    await store.end_all(account, EndReason.TEARDOWN)


async def two_accounts(store: SessionStore) -> tuple[str, str, dict[str, list[NewSession]]]:
    """A fresh account and one with ENDED history, each with the same two ACTIVE sessions and
    an account limit of 2."""
    await with_history(store, "old", ENDED)
    live: dict[str, list[NewSession]] = {}
    for account in ("fresh", "old"):
        await store.set_limit(account, 2)
        live[account] = [new(account, "tv-1"), new(account, "phone-1")]
        for s in live[account]:
            await store.setup(s)
    return "fresh", "old", live


async def test_a_denial_costs_no_more_with_5000_ended_records(store: SessionStore) -> None:
    fresh, old, _live = await two_accounts(store)
    costs = {a: await work(store, store.setup(new(a, "phone-9"))) for a in (fresh, old)}
    assert costs[old] <= 2 * costs[fresh], costs
    await invariants.check(store.redis, store.keys)


async def test_keep_alive_teardown_replaces_evict_and_lapse_ignore_ended_records(
    store: SessionStore, clock: Clock
) -> None:
    fresh, old, live = await two_accounts(store)
    replacing = {a: new(a, "phone-2", replaces=live[a][1].session_id) for a in (fresh, old)}
    calls = {
        "keep-alive": lambda a: store.keep_alive(a, live[a][0].session_id),
        "replaces": lambda a: store.setup(replacing[a]),
        "teardown": lambda a: store.end(a, replacing[a].session_id, EndReason.TEARDOWN),
        "evict": lambda a: store.setup(new(a, "tv-1")),
    }
    for name, call in calls.items():
        costs = {a: await work(store, call(a)) for a in (fresh, old)}
        assert costs[old] <= 2 * costs[fresh], (name, costs)
    clock.advance(600)  # every session lapses: the next setup ends them first
    costs = {a: await work(store, store.setup(new(a, "phone-3"))) for a in (fresh, old)}
    assert costs[old] <= 2 * costs[fresh], ("lapse", costs)
    await invariants.check(store.redis, store.keys)


async def test_a_keep_alive_of_the_session_due_first_reads_no_other_record(
    store: SessionStore, clock: Clock
) -> None:
    """The keep-alive of the session that holds the due score costs the same in an account of
    two and of forty ACTIVE sessions: the score stays early, nothing reads the account."""
    costs = {}
    for account, n in (("two", 2), ("forty", 40)):
        sessions = [new(account, f"phone-{i}") for i in range(n)]
        for s in sessions:
            await store.setup(s)
            clock.advance(1)
        costs[account] = await work(store, store.keep_alive(account, sessions[0].session_id))
    assert costs["forty"] == costs["two"], costs
    await invariants.check(store.redis, store.keys)


async def test_a_listing_page_reads_one_page_of_ended_records(store: SessionStore) -> None:
    await with_history(store, "some", 200)
    await with_history(store, "many", ENDED)
    costs = {}
    for account in ("some", "many"):
        page = await store.account_sessions(account, limit=10)
        assert len(page.sessions) == 10 and page.next is not None
        costs[account] = await work(store, store.account_sessions(account, 10, page.next))
    assert costs["many"] <= 2 * costs["some"], costs
