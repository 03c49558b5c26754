"""What every store call goes through: the scripts' library (srm/store/scripts.py), the
autopipeline, the in-flight gate, the deadline, replica acknowledgements and the store's
clock."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from srm import keys as k
from srm import metrics
from srm.autopipeline import AutoPipeline, NeverSent, function_missing
from srm.clock import ServerClock
from srm.errors import StoreUnavailable
from srm.gate import InFlightGate, NoTurn
from srm.model import (
    EventPolicy,
    Policy,
)
from srm.rules import Rule
from srm.store.boundary import REDIS_FAILURES, LegacyFirst, failed, raise_domain_error
from srm.store.scripts import Library, build_library

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], int]
EVENTS_ON = EventPolicy()


@functools.cache
def library(scripts: tuple[str, ...]) -> Library:
    """The library of *scripts*, built once per process."""
    return build_library(scripts)


def wall_clock_ms() -> int:
    """The host's wall clock in ms: for tests that stand for a host, never for the service."""
    return time.time_ns() // 1_000_000


class StoreBase:
    """SRM's state in Redis, behind typed methods.

    Time is the Redis server's (see srm/clock.py). A *clock* (ms) replaces it, in tests only:
    its value reaches every script as the clock override.
    """

    SCRIPTS = (
        "setup",
        "keepalive",
        "end",
        "abort",
        "end_all",
        "end_device",
        "device_remove",
        "home",
        "sweep",
        "purge",
        "audit",
        "recount",
        "read",
        "migrate",
        "limits",
        "events_read",
        "events_prune",
    )

    def __init__(
        self,
        redis: Any,
        keyspace: k.Keys,
        policy: Policy,
        *,
        clock: Clock | None = None,
        events: EventPolicy = EVENTS_ON,
        deadline: float = 2.0,
        max_in_flight: int = 0,
        in_flight_wait: float = 0.5,
        replica_acks: int = 0,
        replica_ack_timeout: float = 0.5,
    ) -> None:
        self.redis = redis
        self.keys = keyspace
        self.policy = policy
        # the policy's rules, setup.lua's text of them and their index texts (_rule_args)
        self._rule_set: tuple[tuple[Rule, ...], str, list[str]] = ((), "", [])
        self.clock = clock
        self._server_clock = ServerClock(self._server_time)
        self.deadline = deadline
        self.library = library(self.SCRIPTS)
        self._functions = {name: self.library.function(name) for name in self.SCRIPTS}
        self.feeds = events
        self._events = events.argument
        self._gate = InFlightGate(max_in_flight, in_flight_wait)  # 0: no bound
        self.replica_acks = replica_acks
        self._ack_timeout_ms = max(1, int(replica_ack_timeout * 1000))
        # Function calls of one event-loop turn share one pipeline write; a batch passes the
        # gate as one call (it holds at most one connection per node). With replica acks
        # every call needs its own WAIT, so those calls go one by one (_run_replicated).
        self._pipeline = AutoPipeline(redis, deadline, library=self.library.source, gate=self._gate)

    def use_library(self, library: Library) -> None:
        """Run the scripts of *library* instead (tests: a library that counts commands)."""
        self.library = library
        self._functions = {name: library.function(name) for name in self.SCRIPTS}
        self._pipeline = AutoPipeline(
            self.redis, self.deadline, library=library.source, gate=self._gate
        )

    async def load_library(self) -> None:
        """FUNCTION LOAD the library (REPLACE; on every master of a cluster). Optional: a call
        that finds its function missing loads it too."""
        with self._boundary("function_load"):
            await self._pipeline.load()

    # -- the boundary ------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _boundary(operation: str) -> Iterator[None]:
        """Time and count one store call under *operation*; Redis failures become domain
        errors (SRM-0008 or SRM-0001) here, the one place they are translated."""
        started = time.perf_counter()
        try:
            yield
        except REDIS_FAILURES as exc:
            raise_domain_error(operation, exc)
        finally:
            metrics.store_call(operation, time.perf_counter() - started)

    async def _guard(self, operation: str, call: Awaitable[T]) -> T:
        """Await one store call within the deadline, through the in-flight gate."""
        try:
            with self._boundary(operation):
                try:
                    async with asyncio.timeout(self.deadline), self._gate:
                        return await call
                except NoTurn as exc:
                    raise NeverSent("no turn at the in-flight gate") from exc
        finally:
            if inspect.iscoroutine(call):
                call.close()  # never started (no turn at the gate): no "never awaited" warning

    async def _run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        changes: bool = True,
        account: str | None = None,
    ) -> Any:
        """One script call, sent with the other calls of this event-loop turn (autopipeline).

        The batch it travels in is bounded by the deadline, so no timer of its own is needed.
        *changes*: False for a read, which never waits for replicas (its only write, the
        move of 0.x data, is made again if a failover loses it). *account*: the one account a
        script works on, whose 0.x data is moved when the script asks for it, before the call
        is made again (once per account, ever).
        """
        try:
            return await self._call(name, keys, args, changes)
        except LegacyFirst:
            if account is None:
                raise
        await self.migrate([account])
        return await self._call(name, keys, args, changes)

    async def _call(
        self, name: str, keys: Sequence[str], args: Sequence[Any], changes: bool
    ) -> Any:
        if self.replica_acks and changes:
            return await self._guard(name, self._run_replicated(name, keys, args))
        # the boundary of _boundary, inline: this is every request's path
        started = time.perf_counter()
        try:
            return await self._pipeline.call(self._functions[name], keys, args)
        except REDIS_FAILURES as exc:
            raise_domain_error(name, exc)
        finally:
            metrics.store_call(name, time.perf_counter() - started)

    async def _run_replicated(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a function, then WAIT for replicas on the same connection, in one round trip.

        Redis replicates asynchronously: a change acknowledged by a master that dies before
        its replicas have it is lost in the failover. WAIT must follow the script on the
        connection that ran it (it waits for that connection's last write), hence one
        pipeline; on a Cluster it is sent to the node that owns the keys. Too few replicas
        in time: SRM-0008, the outcome is unknown, as after any lost reply.
        """
        function = self._functions[name]
        result, acked = await self._call_then_wait(function, keys, args)
        if function_missing(result):
            # a new, restarted or flushed master: the library is loaded, then once more
            await self._pipeline.load()
            result, acked = await self._call_then_wait(function, keys, args)
        for reply in (result, acked):
            if isinstance(reply, Exception):
                raise reply
        if int(acked) < self.replica_acks:
            raise failed(
                name, StoreUnavailable(f"{acked} of {self.replica_acks} replicas acknowledged")
            )
        return result

    async def _call_then_wait(
        self, function: str, keys: Sequence[str], args: Sequence[Any]
    ) -> list[Any]:
        """The function's reply and WAIT's, each a value or the error it met."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("FCALL", function, len(keys), *keys, *args)
        wait = ("WAIT", self.replica_acks, self._ack_timeout_ms)
        if hasattr(self.redis, "get_node_from_key"):  # RedisCluster: WAIT on the keys' node
            pipe.execute_command(*wait, target_nodes=self.redis.get_node_from_key(keys[0]))
        else:
            pipe.execute_command(*wait)
        return list(await pipe.execute(raise_on_error=False))

    # -- time --------------------------------------------------------------------------------

    async def now(self) -> int:
        """Now in ms on the store's clock: the Redis server's (estimated), or the test clock."""
        if self.clock is not None:
            return self.clock()
        return await self._server_clock.now()

    def _clock_override(self) -> int | str:
        """ARGV[1] of every script: the test clock's time, or empty for the server's TIME."""
        return "" if self.clock is None else self.clock()

    async def _server_time(self) -> tuple[int, int]:
        seconds, micros = await self._guard("time", self.redis.time())
        return int(seconds), int(micros)

    async def _read(
        self, account_id: str, session_id: str = "", ended: tuple[int, str, int] = (0, "", 0)
    ) -> list[Any]:
        """read.lua: the limit override, then the record of *session_id*, or the account hash
        and a page of ENDED records: *ended* is where the page starts (HSCAN position, the
        last sessionId listed from its batch) and how many it needs."""
        ak = self.keys.account(account_id)
        keys, args = [*ak.lifecycle(), ak.limit], [account_id, session_id, *ended]
        return list(await self._run("read", keys, args, changes=False, account=account_id))

    async def ping(self) -> None:
        await self._guard("ping", self.redis.ping())

    async def migrate(self, accounts: Sequence[str]) -> int:
        """Move the 0.x data of *accounts* to their account hashes (srm/store/legacy.py)."""
        raise NotImplementedError
