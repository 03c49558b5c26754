"""Redis instructions per call of setup, keep-alive and teardown (`bench/run --only
instructions`), counted under callgrind inside EVALSHA: unlike times, they do not move with
the load of the machine, so a change of a few percent in a script shows.

Three sessions an account (a TV in UHD and two phones in HD, without client addresses:
households.sessions), the user's three rules and events on (the households bench's ``off``
configuration). Each session is set up, kept alive once, then torn down, each phase counted
apart. The keep-alives come in the order the sessions were set up, so each is of the session
its account has due first, as a viewer's keep-alives mostly are.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import households, storage
from srm.connection import connect
from srm.model import EndReason, NewSession
from srm.process import make_store
from srm.store import wall_clock_ms

PHASES = ("setup", "keepalive", "teardown")


def per_call(calls: int) -> dict[str, float]:
    """Thousands of instructions inside EVALSHA per call, by phase; *calls* per phase."""
    with tempfile.TemporaryDirectory(prefix="srm-callgrind-") as tmp:
        server = households.Callgrind(Path(tmp))
        try:
            asyncio.run(_run(server, calls))
        finally:
            server.stop()
        return {
            phase: households.inclusive(dump, "evalGenericCommand") / calls / 1000
            for phase, dump in zip(PHASES, server.dumps(), strict=True)
        }


async def _run(server: households.Callgrind, calls: int) -> None:
    # a script runs some 50 times slower under callgrind
    s = storage.settings(
        server.url,
        **households.env("off"),
        SRM_REDIS_SOCKET_TIMEOUT="10",
        SRM_REDIS_REQUEST_DEADLINE="30",
    )
    store = make_store(s, connect(s.redis))
    try:
        for new in households.sessions(60, "warm", False):
            await store.setup(new)
        probes = list(households.sessions(calls, "cg", False))
        steps: dict[str, Callable[[NewSession], Awaitable[object]]] = {
            "setup": store.setup,
            "keepalive": lambda n: store.keep_alive(n.account_id, n.session_id),
            "teardown": lambda n: store.end(n.account_id, n.session_id, EndReason.TEARDOWN),
        }
        for phase in PHASES:
            server.control("-z")  # zero the counts
            for new in probes:
                await steps[phase](new)
            server.control("-d")  # dump them
    finally:
        await store.redis.aclose()


# The reaper's backlog under callgrind: as bench/storage.py's (two sessions an account, the
# user's rules, events on), on 8 shards so that a batch holds as many accounts as the
# 100k-session backlog's does on 256 (about 125 per shard here, 195 there).
REAPER_SHARDS = 8


def reaper_per_session(sessions: int, retention: int) -> dict[str, float]:
    """Thousands of instructions inside EVALSHA per lapsed session, for the sweep that ends
    them and the purge that removes them (`sweep`, `purge`), with an ENDED retention of
    *retention* seconds (the purge runs on a test clock moved past it)."""
    with tempfile.TemporaryDirectory(prefix="srm-callgrind-") as tmp:
        server = households.Callgrind(Path(tmp))
        try:
            ended = asyncio.run(_reap(server, sessions, retention))
        finally:
            server.stop()
        out = {}
        for step, dump in zip(("sweep", "purge"), server.dumps(), strict=True):
            try:
                count = households.inclusive(dump, "evalGenericCommand")
            except RuntimeError:  # no script ran: nothing was left to purge
                count = 0
            out[step] = count / ended / 1000
        return out


async def _reap(server: households.Callgrind, sessions: int, retention: int) -> int:
    s = storage.settings(
        server.url,
        **storage.USER_ENV,
        SRM_ENDED_RETENTION=str(retention),
        SRM_REDIS_SHARDS=str(REAPER_SHARDS),
        SRM_REDIS_SOCKET_TIMEOUT="60",
        SRM_REDIS_REQUEST_DEADLINE="120",
    )
    store = make_store(s, connect(s.redis))
    try:
        past = wall_clock_ms() - 3_600_000
        store.clock = lambda: past  # set up an hour ago with a 120 s keep-alive
        backlog = storage.user_sessions(sessions, storage.BACKLOG_PER_ACCOUNT, "cg")
        await storage.fill(store, backlog)
        store.clock = None
        ended = 0
        server.control("-z")
        for shard in range(REAPER_SHARDS):
            while True:
                swept = await store.sweep(shard, 500)
                ended += swept.ended
                if swept.accounts < 500:
                    break
        server.control("-d")
        later = wall_clock_ms() + retention * 1000 + 1000
        store.clock = lambda: later  # the retention has passed
        for shard in range(REAPER_SHARDS):
            while await store.purge(shard, 500) == 500:
                pass
        server.control("-d")
        return ended
    finally:
        await store.redis.aclose()
