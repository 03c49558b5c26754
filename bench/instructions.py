"""Redis instructions per call of setup, keep-alive and teardown (`bench/run --only
instructions`), counted under callgrind inside FCALL: unlike times, they do not move with the
load of the machine, so a change of a few percent in a script shows.

Three sessions an account (a TV in UHD and two phones in HD, without client addresses:
households.sessions), the user's three rules and events on (the households bench's ``off``
configuration). Each session is set up, kept alive once, then torn down, each phase counted
apart. The keep-alives come in the order the sessions were set up, so each is of the session
its account has due first, as a viewer's keep-alives mostly are.

In the same run, the same calls of other accounts go as EVALSHA of each script's text (the
fragments it uses, then its body: load_script_source), the way SRM ran them before the
library: the baseline the library's gain is read against.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench import households, storage
from srm.autopipeline import AutoPipeline
from srm.connection import connect
from srm.model import EndReason, NewSession
from srm.process import make_store
from srm.store import SessionStore, load_script_source, wall_clock_ms

PHASES = ("setup", "keepalive", "teardown")
WAYS = ("fcall", "evalsha")
# the server's function that runs each way, with what it calls (callgrind_annotate --inclusive)
ENTRY = {"fcall": "fcallCommand", "evalsha": "evalGenericCommand"}


class Evalsha(AutoPipeline):
    """The store's calls as EVALSHA of each script's own text (loaded beforehand)."""

    def __init__(self, store: SessionStore, shas: dict[str, str]) -> None:
        super().__init__(store.redis, store.deadline, library=store.library.source)
        self._shas = {store.library.function(name): sha for name, sha in shas.items()}

    def call(self, function: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        future = super().call(function, keys, args)
        queued = self._queue[-1]
        queued.args = ("EVALSHA", self._shas[function], *queued.args[2:])
        return future


def per_call(calls: int) -> dict[str, dict[str, float]]:
    """Thousands of instructions inside FCALL (and, for the baseline, EVALSHA) per call, by
    way and phase; *calls* per phase and way."""
    out: dict[str, dict[str, float]] = {way: {} for way in WAYS}
    with households.counted(lambda server: _run(server, calls)) as (done, dumps):
        for (way, phase), dump in zip(done, dumps, strict=True):
            out[way][phase] = households.inclusive(dump, ENTRY[way]) / calls / 1000
    return out


async def _run(server: households.Callgrind, calls: int) -> list[tuple[str, str]]:
    # a script runs some 50 times slower under callgrind
    s = storage.settings(
        server.url,
        **households.env("off"),
        SRM_REDIS_SOCKET_TIMEOUT="10",
        SRM_REDIS_REQUEST_DEADLINE="30",
    )
    store = make_store(s, connect(s.redis))
    baseline = make_store(s, store.redis)
    shas = {name: await store.redis.script_load(load_script_source(name)) for name in PHASES_OF}
    baseline._pipeline = Evalsha(baseline, shas)
    done = []
    try:
        await store.load_library()
        for new in households.sessions(60, "warm", False):
            await store.setup(new)
        probes = {
            "fcall": list(households.sessions(calls, "cg", False)),
            "evalsha": list(households.sessions(calls, "cg-eval", False)),
        }
        for phase in PHASES:
            # the two ways one after the other, on the same data, phase by phase
            for way, st in (("fcall", store), ("evalsha", baseline)):
                step = _steps(st)[phase]
                server.control("-z")  # zero the counts
                for new in probes[way]:
                    await step(new)
                server.control("-d")  # dump them
                done.append((way, phase))
    finally:
        await store.redis.aclose()
    return done


# the scripts the phases run
PHASES_OF = ("setup", "keepalive", "end")


def _steps(store: SessionStore) -> dict[str, Callable[[NewSession], Awaitable[object]]]:
    return {
        "setup": store.setup,
        "keepalive": lambda n: store.keep_alive(n.account_id, n.session_id),
        "teardown": lambda n: store.end(n.account_id, n.session_id, EndReason.TEARDOWN),
    }


# The reaper's backlog under callgrind: as bench/storage.py's (two sessions an account, the
# user's rules, events on), on 8 shards so that a batch holds as many accounts as the
# 100k-session backlog's does on 256 (about 125 per shard here, 195 there).
REAPER_SHARDS = 8


def reaper_per_session(sessions: int, retention: int) -> dict[str, float]:
    """Thousands of instructions inside FCALL per lapsed session, for the sweep that ends
    them and the purge that removes them (`sweep`, `purge`), with an ENDED retention of
    *retention* seconds (the purge runs on a test clock moved past it)."""
    out = {}
    with households.counted(lambda server: _reap(server, sessions, retention)) as (ended, dumps):
        for step, dump in zip(("sweep", "purge"), dumps, strict=True):
            try:
                count = households.inclusive(dump, ENTRY["fcall"])
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
