"""The session store: one atomic Lua script per state change, one typed method per script.

Redis failures are turned into domain errors here and nowhere else: a store that is down,
slow, loading or failing over raises :class:`StoreUnavailable` (SRM-0008) within
``redis.request_deadline``; anything else Redis rejects is a bug and raises
:class:`InternalError`. Every script is idempotent, so a retried call is always safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Any, NoReturn, TypeVar

from redis import exceptions as rx
from redis.commands.core import AsyncScript

from srm import keys as k
from srm import listing, metrics, records
from srm.autopipeline import AutoPipeline, NeverSent
from srm.clock import ServerClock
from srm.errors import (
    InternalError,
    LimitReached,
    SessionNotFound,
    SrmError,
    StoreUnavailable,
    StoreUnreached,
)
from srm.gate import InFlightGate, NoTurn
from srm.listing import Cursor
from srm.model import (
    DEFAULT_DEVICE_TYPE,
    AccountSessions,
    DayUsage,
    EndReason,
    EventPolicy,
    Limit,
    NewSession,
    Policy,
    RuleLimit,
    Session,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], int]
EVENTS_ON = EventPolicy()

# The key kinds whose accounts the audit walk checks: the account hash, and every 0.x key the
# move deletes (srm/lua/_legacy.lua)
ACCOUNT_KINDS = frozenset({"state", "ended_records", "active", "count", "ended", "rules", "usage"})
# How long the count of an end-all call is kept: far longer than any call with its retries.
END_ALL_MARKER_MS = 600_000

# Redis answers that mean "not now" rather than "never": the call may succeed on retry.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.MasterDownError,
    rx.ClusterError,
    rx.MaxConnectionsError,
    TimeoutError,
    OSError,
)
# ... and Redis error prefixes that mean the same, with what SRM says of each (see below)
_UNAVAILABLE_BY_PREFIX = {
    "BUSY": "store busy running a script",
    "LOADING": "store loading its data",
    "MASTERDOWN": "store primary down",
    "CLUSTERDOWN": "store cluster down",
    "TRYAGAIN": "store resharding",
    "READONLY": "store read-only (failover)",
}
# redis-py prefixes the error of a command in a pipeline with that command
_PIPELINE_ERROR = re.compile(r"of pipeline caused error: \(?['\"]?")
# AttributeError and TypeError: redis-py leaks these from a connection whose transport
# closed under it (see _domain_error); the others are Redis failures proper.
_REDIS_FAILURES: tuple[type[BaseException], ...] = (
    rx.RedisError,
    *_UNAVAILABLE,
    AttributeError,
    TypeError,
)


# The error reply of a script that found data of SRM 0.x in its account (legacy_first in
# _account.lua): the store moves it (migrate.lua) and calls again.
LEGACY_FIRST = "SRMLEGACY"


class LegacyFirst(InternalError):
    """A script's account holds data of SRM 0.x; nothing was written."""


def _failed(operation: str, error: SrmError) -> SrmError:
    metrics.store_error(operation, error.code)
    return error


# What an SRM-0008 answer says in X-SRM-Error-Detail: SRM's own words, never Redis's text
# (which is logged instead). Checked in order: subclasses before their bases.
_UNAVAILABLE_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (rx.BusyLoadingError, "store loading its data"),
    (rx.MaxConnectionsError, "no store connection free"),
    (rx.ReadOnlyError, "store read-only (failover)"),
    (rx.MasterDownError, "store primary down"),
    (rx.ClusterDownError, "store cluster down"),
    (rx.TryAgainError, "store resharding"),
    (rx.ClusterError, "store cluster unavailable"),
    (rx.TimeoutError, "store timed out"),
    (TimeoutError, "store timed out"),
    (rx.ConnectionError, "store unreachable"),
    (OSError, "store unreachable"),
)
CLOSED_CONNECTION = "store connection closed"
UNAVAILABLE_DETAILS = frozenset(
    {text for _, text in _UNAVAILABLE_BY_TYPE}
    | set(_UNAVAILABLE_BY_PREFIX.values())
    | {CLOSED_CONNECTION, "store unavailable"}
)
_LOG_UNAVAILABLE_EVERY = 10.0  # seconds between two log lines of one kind of failure
_unavailable_logged: dict[str, float] = {}


def _unavailable(
    operation: str,
    exc: BaseException,
    detail: str,
    error: type[StoreUnavailable] = StoreUnavailable,
) -> SrmError:
    """SRM-0008 (*error*) with SRM's *detail*; Redis's own text goes to the log, once per
    kind and :data:`_LOG_UNAVAILABLE_EVERY` (an outage fails every call)."""
    now = time.monotonic()
    if now - _unavailable_logged.get(detail, -_LOG_UNAVAILABLE_EVERY) >= _LOG_UNAVAILABLE_EVERY:
        _unavailable_logged[detail] = now
        log.warning(
            "store unavailable (%s) on %s: %s: %s", detail, operation, type(exc).__name__, exc
        )
    return _failed(operation, error(detail))


def _redis_error_code(exc: BaseException) -> str:
    """The first word of Redis's error text (BUSY, LOADING...), in a pipeline's error too."""
    text = str(exc)
    annotated = _PIPELINE_ERROR.search(text)
    return text[annotated.end() if annotated else 0 :].partition(" ")[0]


def _unavailable_detail(exc: BaseException) -> str:
    for kind, text in _UNAVAILABLE_BY_TYPE:
        if isinstance(exc, kind):
            return text
    return _UNAVAILABLE_BY_PREFIX.get(_redis_error_code(exc), "store unavailable")


def _domain_error(operation: str, exc: BaseException) -> SrmError | None:
    """The domain error for a failed Redis call, counted under *operation*: unavailable
    (retry later) or a bug; None when *exc* is not a Redis failure (re-raise it)."""
    if isinstance(exc, NeverSent):  # failed before it was sent: the cause says why
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return _unavailable(operation, cause, _unavailable_detail(cause), StoreUnreached)
    if isinstance(exc, rx.ResponseError) and _redis_error_code(exc) == LEGACY_FIRST:
        return LegacyFirst(str(exc))
    if isinstance(exc, rx.ResponseError):
        # redis-py strips the prefix of the errors it types (ClusterDownError is "The
        # cluster is down"; TryAgainError, MasterDownError...): check the type as well
        if isinstance(exc, _UNAVAILABLE) or _redis_error_code(exc) in _UNAVAILABLE_BY_PREFIX:
            return _unavailable(operation, exc, _unavailable_detail(exc))
        log.error("redis rejected a call: %s", exc)
        return _failed(operation, InternalError(str(exc)))
    if isinstance(exc, _UNAVAILABLE):
        return _unavailable(operation, exc, _unavailable_detail(exc))
    if isinstance(exc, rx.RedisError):
        log.error("redis error: %r", exc)
        return _failed(operation, InternalError(repr(exc)))
    # AttributeError/TypeError from a connection whose transport closed under it (a peer
    # reset, or the cluster client closing connections while it re-reads the slot map;
    # redis/redis-py#4287): a connection error, not a bug of ours. Raised elsewhere: a bug.
    if not _raised_in_client(exc):
        return None
    return _unavailable(operation, exc, CLOSED_CONNECTION)


def _raise_domain_error(operation: str, exc: BaseException) -> NoReturn:
    """Raise the domain error for *exc* (see _domain_error), or *exc* itself when it is not
    a Redis failure."""
    error = _domain_error(operation, exc)
    if error is None:
        raise exc
    raise error from exc


# Packages whose AttributeError/TypeError on a closed transport is a connection failure.
_CLIENT_PACKAGES = ("redis", "asyncio", "uvloop")


def _raised_in_client(exc: BaseException) -> bool:
    """Whether *exc* was raised inside redis-py or asyncio's transports (not in SRM code),
    judged by the module of the innermost frame, never by where its file sits on disk."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.partition(".")[0] in _CLIENT_PACKAGES


def wall_clock_ms() -> int:
    """The host's wall clock in ms: for tests that stand for a host, never for the service."""
    return time.time_ns() // 1_000_000


# The shared fragments, in the order a script needs them (each may use the ones before it).
_FRAGMENTS = ("_time", "_events", "_account", "_legacy")
_DEFINITION = re.compile(r"local (?:function )?([\w, ]+?)\s*[(=]")
_NAME = re.compile(r"[A-Za-z_]\w*")
_COMMENT = re.compile(r"--.*")


def _definitions(text: str) -> list[tuple[set[str], str]]:
    """The top-level definitions of a fragment (``local function f``, ``local X = ...``),
    each with the names it defines and its text, the comment above it included."""
    blocks: list[tuple[set[str], list[str]]] = [(set(), [])]
    for line in text.splitlines(keepends=True):
        match = _DEFINITION.match(line)
        if match:
            lines = blocks[-1][1]
            comment: list[str] = []  # the comment (and blank lines) just above belong to this one
            while lines and (lines[-1].startswith("--") or not lines[-1].strip()):
                comment.insert(0, lines.pop())
            names = {n.strip() for n in match.group(1).split(",")}
            blocks.append((names, comment))
        blocks[-1][1].append(line)
    return [(names, "".join(lines)) for names, lines in blocks if names]


def load_script_source(name: str) -> str:
    """A script's Lua text, with what it uses of the shared fragments prepended: only the
    definitions it needs, directly or through one another. Every definition costs Redis
    time at every call (Lua makes a closure of each function each time a script runs)."""
    lua = resources.files("srm").joinpath("lua")
    body = lua.joinpath(f"{name}.lua").read_text()
    blocks = [
        block for f in _FRAGMENTS for block in _definitions(lua.joinpath(f"{f}.lua").read_text())
    ]

    def uses(text: str) -> set[str]:
        return set(_NAME.findall(_COMMENT.sub("", text)))

    needed = uses(body)
    while True:
        more = set(needed)
        for names, text in blocks:
            if names & needed:
                more |= uses(text)
        if more == needed:
            break
        needed = more
    used = [text for names, text in blocks if names & needed]
    return "".join(used) + "\n" + body


class EndOutcome(Enum):
    ENDED = 1
    ALREADY_ENDED = 2


@dataclass(frozen=True, slots=True)
class SweepResult:
    ended: int
    accounts: int  # accounts visited
    moved: int = 0  # of those, accounts with nothing lapsed (their due score moved later)
    migrated: int = 0  # accounts of the 0.x index moved to the account hash first


@dataclass(frozen=True, slots=True)
class Repair:
    account_id: str
    counter: int
    truth: int
    rules: int = 0  # rule counters (and stale group records) repaired

    @property
    def count(self) -> int:
        """How many counters this repair fixed."""
        return int(self.counter != self.truth) + self.rules


class SessionStore:
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
        self.clock = clock
        self._server_clock = ServerClock(self._server_time)
        self.deadline = deadline
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(load_script_source(name)) for name in self.SCRIPTS
        }
        self._events = events.argument
        self._gate = InFlightGate(max_in_flight, in_flight_wait)  # 0: no bound
        self.replica_acks = replica_acks
        self._ack_timeout_ms = max(1, int(replica_ack_timeout * 1000))
        # Script calls of one event-loop turn share one pipeline write; a batch passes the
        # gate as one call (it holds at most one connection per node). With replica acks
        # every call needs its own WAIT, so those calls go one by one (_run_replicated).
        self._pipeline = AutoPipeline(redis, deadline, gate=self._gate)

    # -- the boundary ------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _boundary(operation: str) -> Iterator[None]:
        """Time and count one store call under *operation*; Redis failures become domain
        errors (SRM-0008 or SRM-0001) here, the one place they are translated."""
        started = time.perf_counter()
        try:
            yield
        except _REDIS_FAILURES as exc:
            _raise_domain_error(operation, exc)
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
            return await self._pipeline.call(self._scripts[name], keys, args)
        except _REDIS_FAILURES as exc:
            _raise_domain_error(name, exc)
        finally:
            metrics.store_call(name, time.perf_counter() - started)

    async def _run_replicated(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script, then WAIT for replicas on the same connection, in one round trip.

        Redis replicates asynchronously: a change acknowledged by a master that dies before
        its replicas have it is lost in the failover. WAIT must follow the script on the
        connection that ran it (it waits for that connection's last write), hence one
        pipeline; on a Cluster it is sent to the node that owns the keys. Too few replicas
        in time: SRM-0008, the outcome is unknown, as after any lost reply.
        """
        script = self._scripts[name]
        try:
            result, acked = await self._script_then_wait(script, keys, args)
        except rx.NoScriptError:  # a new or restarted master: load it there, then once more
            await self.redis.script_load(script.script)
            result, acked = await self._script_then_wait(script, keys, args)
        if int(acked) < self.replica_acks:
            raise _failed(
                name, StoreUnavailable(f"{acked} of {self.replica_acks} replicas acknowledged")
            )
        return result

    async def _script_then_wait(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        wait = ("WAIT", self.replica_acks, self._ack_timeout_ms)
        if hasattr(self.redis, "get_node_from_key"):  # RedisCluster: WAIT on the keys' node
            pipe.execute_command(*wait, target_nodes=self.redis.get_node_from_key(keys[0]))
        else:
            pipe.execute_command(*wait)
        return list(await pipe.execute())

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

    # -- client operations -------------------------------------------------------------------

    async def setup(self, new: NewSession) -> int:
        """Create the session unless a limit refuses it; the account's active count after it.

        Raises LimitReached, naming the refusing limit and the sessions counted against it,
        when the account limit or a limit rule is reached (and evicting cannot make room).
        Safe to retry with the same sessionId.
        """
        ak = self.keys.account(new.account_id)
        matched = [
            r
            for r in self.policy.rules
            if r.matches(new.quality, new.device_type, new.content_type)
        ]
        rule_args: list[Any] = []
        for rule in matched:
            field = "=" + rule.group(new.device_id, new.content_id)
            rule_args += [rule.name, field, rule.max, rule.policy]
        answer = await self._run(
            "setup",
            [
                ak.limit,
                ak.rule_limits,
                self.keys.denied(new.account_id, new.session_id),
                *ak.lifecycle(),
            ],
            [
                self._clock_override(),
                new.session_id,
                new.account_id,
                new.device_id,
                new.content_id,
                new.content_type,
                self.policy.setup_period_ms,
                self.policy.max_sessions if new.max_sessions is None else new.max_sessions,
                self.policy.retention_ms,
                "evict" if self.policy.evict else "deny",
                "" if new.device_type == DEFAULT_DEVICE_TYPE else new.device_type,
                new.quality or "",
                new.replaces or "",
                ",".join(r.reference for r in matched),
                self._events,
                *rule_args,
            ],
            account=new.account_id,
        )
        status = answer[0]
        if status in (1, 2):
            if self.policy.timeout_ms == 0:
                await self._confirm(new.account_id, new.session_id)
            return int(answer[1])
        if status == 0:
            now = await self.now()
            counted = [
                session
                for sid, _deadline, value in answer[4:]
                if (session := records.session(sid, value, now, new.account_id)) is not None
            ]
            raise LimitReached(int(answer[1]), int(answer[2]), str(answer[3]), counted)
        # -1: abandoned by an earlier try of this very call
        raise InternalError(f"setup of {new.session_id} refused with status {status}")

    async def _confirm(self, account_id: str, session_id: str) -> None:
        """Keep-alive disabled: replace the provisional deadline of a setup known to have run.

        Until then the session lapses after PROVISIONAL_MS, so a setup whose reply was lost
        and whose abort failed holds its slot for that long, not for ever.
        """
        try:
            await self.keep_alive(account_id, session_id, confirm=True)
        except SessionNotFound:
            pass  # ended meanwhile (evicted, ended by an operator): it holds no slot
        except StoreUnreached as exc:
            raise StoreUnavailable(str(exc)) from exc  # the setup itself did run

    async def keep_alive(self, account_id: str, session_id: str, *, confirm: bool = False) -> None:
        """Move the deadline of an ACTIVE session; SessionNotFound if ended, lapsed or unknown.

        *confirm*: a setup's confirmation, which leaves lastKeepAliveAt at the setup time.
        """
        moved = await self._run(
            "keepalive",
            self.keys.account(account_id).lifecycle(),
            [
                self._clock_override(),
                session_id,
                account_id,
                self.policy.period_ms,
                "1" if confirm else "0",
            ],
            account=account_id,
        )
        if moved == 1:
            return
        if isinstance(moved, str | bytes) and moved:
            raise SessionNotFound(
                ended=records.ended_text(moved if isinstance(moved, str) else moved.decode())
            )
        raise SessionNotFound()

    async def end(self, account_id: str, session_id: str, reason: EndReason) -> EndOutcome:
        """End one session exactly once; ALREADY_ENDED on repeats, SessionNotFound if unknown."""
        status = await self._end(account_id, session_id, reason)
        if status == 0:
            raise SessionNotFound()
        return EndOutcome.ALREADY_ENDED if status == 2 else EndOutcome.ENDED

    async def _end(self, account_id: str, session_id: str, reason: EndReason) -> int:
        """end.lua's status: 1 ended with *reason*, 3 ended as TIMEOUT, 2 already, 0 unknown."""
        return int(
            await self._run(
                "end",
                self.keys.account(account_id).lifecycle(),
                [
                    self._clock_override(),
                    session_id,
                    account_id,
                    reason.value,
                    self.policy.retention_ms,
                    self._events,
                ],
                account=account_id,
            )
        )

    async def end_device(
        self, account_id: str, device_id: str, reason: EndReason, batch: int = 1000
    ) -> int:
        """End every ACTIVE session of one device of the account; how many *reason* ended.

        end_device.lua ends at most *batch* of them a call; like end-all, the calls share a
        marker counting what this call ended, so a call run twice (its reply lost, then
        resent) still reports the sessions its first run ended.
        """
        ak = self.keys.account(account_id)
        marker = self.keys.end_all_marker(account_id, str(uuid.uuid4()))
        while True:
            more, total = await self._run(
                "end_device",
                [*ak.lifecycle(), marker],
                [
                    self._clock_override(),
                    account_id,
                    device_id,
                    reason.value,
                    self.policy.retention_ms,
                    batch,
                    END_ALL_MARKER_MS,
                    self._events,
                ],
                account=account_id,
            )
            if not int(more):
                break
        with contextlib.suppress(SrmError):  # else it expires by itself
            await self._guard("end_all_marker", self.redis.delete(marker))
        return int(total)

    async def abort_setup(self, account_id: str, session_id: str) -> int:
        """Undo a setup whose outcome is unknown (see abort.lua); returns the script status."""
        ak = self.keys.account(account_id)
        return int(
            await self._run(
                "abort",
                ak.lifecycle(),
                [
                    self._clock_override(),
                    session_id,
                    account_id,
                    self.policy.retention_ms,
                    self._events,
                ],
                account=account_id,
            )
        )

    async def end_all(self, account_id: str, reason: EndReason, batch: int = 1000) -> int:
        """End every ACTIVE session of the account (bounded batches); how many *reason* ended.

        The batches share a marker key counting what this call ended, so a batch run twice
        (its reply lost, then retried) still reports the sessions its first run ended.
        """
        ak = self.keys.account(account_id)
        marker = self.keys.end_all_marker(account_id, str(uuid.uuid4()))
        while True:
            _ended, _lapsed, remaining, total = await self._run(
                "end_all",
                [*ak.lifecycle(), marker],
                [
                    self._clock_override(),
                    account_id,
                    reason.value,
                    batch,
                    self.policy.retention_ms,
                    END_ALL_MARKER_MS,
                    self._events,
                ],
                account=account_id,
            )
            if int(remaining) == 0:
                break
        with contextlib.suppress(SrmError):  # else it expires by itself
            await self._guard("end_all_marker", self.redis.delete(marker))
        return int(total)

    # -- reads -------------------------------------------------------------------------------

    async def _read(
        self, account_id: str, session_id: str = "", ended: tuple[int, str, int] = (0, "", 0)
    ) -> list[Any]:
        """read.lua: the limit override, then the record of *session_id*, or the account hash
        and a page of ENDED records: *ended* is where the page starts (HSCAN position, the
        last sessionId listed from its batch) and how many it needs."""
        ak = self.keys.account(account_id)
        keys, args = [*ak.lifecycle(), ak.limit], [account_id, session_id, *ended]
        return list(await self._run("read", keys, args, changes=False, account=account_id))

    async def get(self, account_id: str, session_id: str) -> Session:
        """One session of the account, ACTIVE or ENDED; SessionNotFound otherwise."""
        _limit, value = await self._read(account_id, session_id)
        session = records.session(session_id, value, await self.now(), account_id)
        if session is None:
            raise SessionNotFound()
        return session

    async def account_sessions(
        self, account_id: str, limit: int = 100, cursor: str | None = None
    ) -> AccountSessions:
        """One page of the account's sessions not yet removed, ACTIVE ones first, with the
        account's active count and limit (see srm/listing.py for the walk): one round trip
        that reads the ACTIVE records and about one page of ENDED ones. MalformedRequest for a
        foreign *cursor*."""
        at = Cursor.decode(cursor) if cursor else Cursor()
        page = (at.position, at.sid if at.phase == "e" else "", limit + 1)
        override, flat, ended, rest = await self._read(account_id, ended=page)
        now = await self.now()
        walk = listing.Walk(now)
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            if records.is_session_field(field):
                walk.add(field, value)
        for i in range(0, len(ended), 3):
            walk.add_ended(int(ended[i]), ended[i + 1], ended[i + 2])
        walk.ended_rest(int(rest))
        picked, following = walk.page(at, limit)
        return AccountSessions(
            sessions=[
                session
                for sid, record in picked
                if (session := records.session_of(sid, record, now, account_id)) is not None
            ],
            active_count=walk.active,
            max_sessions=int(override) if override is not None else self.policy.max_sessions,
            next=following.encode() if following is not None else None,
        )

    # -- limits ------------------------------------------------------------------------------

    async def get_limit(self, account_id: str) -> Limit:
        """The account limit and every configured rule's max, with whether each is overridden."""
        ak = self.keys.account(account_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(ak.limit)
        pipe.hgetall(ak.rule_limits)
        value, overrides = await self._guard("get_limit", pipe.execute())
        rules = {
            r.name: RuleLimit(int(overrides[r.name]), True)
            if r.name in overrides
            else RuleLimit(r.max, False)
            for r in self.policy.rules
        }
        if value is None:
            return Limit(max_sessions=self.policy.max_sessions, override=False, rules=rules)
        return Limit(max_sessions=int(value), override=True, rules=rules)

    async def set_limit(
        self,
        account_id: str,
        max_sessions: int | None,
        rules: dict[str, int | None] | None = None,
    ) -> Limit:
        """Set the account limit override (None: unchanged) and rule overrides (a value of
        None removes that rule's override), in one step. Rule names must be configured."""
        await self._limits(account_id, "" if max_sessions is None else max_sessions, rules or {})
        return await self.get_limit(account_id)

    async def clear_limit(self, account_id: str) -> Limit:
        """Remove every override of the account: the configured limits apply again."""
        await self._limits(account_id, "-", {}, clear_rules=True)
        return await self.get_limit(account_id)

    async def _limits(
        self,
        account_id: str,
        account_limit: int | str,
        rules: dict[str, int | None],
        *,
        clear_rules: bool = False,
    ) -> None:
        known = {r.name for r in self.policy.rules}
        unknown = sorted(set(rules) - known)
        if unknown:
            raise ValueError(f"unknown rule {unknown[0]!r}")
        ak = self.keys.account(account_id)
        pairs: list[Any] = []
        for name, value in sorted(rules.items()):
            pairs += [name, "" if value is None else value]
        await self._run(
            "limits",
            [ak.limit, ak.rule_limits, ak.events],
            [
                self._clock_override(),
                account_limit,
                "1" if clear_rules else "",
                self._events,
                account_id,
                *pairs,
            ],
        )

    # -- usage and denials -------------------------------------------------------------------

    async def usage(self, account_id: str) -> dict[int, DayUsage]:
        """The account's usage per UTC day (days since the epoch), for the days kept."""
        _limit, flat, _ended, _rest = await self._read(account_id)
        return {
            int(field): records.day_usage(int(field), value)
            for field, value in zip(flat[::2], flat[1::2], strict=True)
            if records.is_day_field(field)
        }

    async def denials(self, day: int, top: int) -> list[tuple[str, int]]:
        """The *top* accounts most often denied on UTC *day*, most denied first.

        Each shard keeps its own ranking; the top *top* of every shard are merged, so the work
        is bounded by shards x top whatever the number of accounts.
        """
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.zrevrange(self.keys.denials(shard, day), 0, top - 1, withscores=True)
        per_shard = await self._guard("denials", pipe.execute())
        merged = [(account, int(score)) for ranking in per_shard for account, score in ranking]
        merged.sort(key=lambda item: (-item[1], item[0]))
        return merged[:top]

    # -- events ------------------------------------------------------------------------------

    async def read_events(
        self, shard: int, group: str, consumer: str, count: int
    ) -> tuple[int, list[tuple[str, dict[str, str]]]]:
        """(events lost to trimming before the group read them, new events for *consumer*)
        of one shard's stream; creates the group at the oldest event kept if it is new."""
        lost, entries = await self._run(
            "events_read", [self.keys.events(shard)], ["", group, consumer, count]
        )
        return int(lost), _entries(entries)

    async def claim_events(
        self, shard: int, group: str, consumer: str, idle_ms: int, count: int
    ) -> tuple[list[tuple[str, dict[str, str]]], int]:
        """Events of the group pending for longer than *idle_ms* (a consumer died with them),
        now *consumer*'s, and how many of those were trimmed away before being claimed."""
        reply = await self._guard(
            "events_claim",
            self.redis.xautoclaim(
                self.keys.events(shard), group, consumer, idle_ms, "0-0", count=count
            ),
        )
        # Redis 7 lists the trimmed ones apart; 6.2 returns them with no fields
        claimed = _entries(reply[1])
        kept = [(entry_id, fields) for entry_id, fields in claimed if fields]
        deleted = (len(reply[2]) if len(reply) > 2 else 0) + len(claimed) - len(kept)
        return kept, deleted

    async def prune_consumers(self, shard: int, group: str, idle_ms: int, own: str = "") -> int:
        """Remove the group's consumers that hold no event and are idle longer than *idle_ms*
        (and *own*, if it holds none); how many were removed."""
        removed = await self._run(
            "events_prune", [self.keys.events(shard)], ["", group, idle_ms, own]
        )
        return int(removed)

    async def ack_events(self, shard: int, group: str, ids: Sequence[str]) -> None:
        if ids:
            await self._guard("events_ack", self.redis.xack(self.keys.events(shard), group, *ids))

    async def events_backlog(self, shard: int, group: str) -> tuple[int, int | None]:
        """(events delivered to the group but not acknowledged, age in ms of the oldest event
        not yet delivered, None when there is none) of one shard's stream."""
        stream = self.keys.events(shard)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(stream)
        pipe.xinfo_stream(stream)
        try:
            groups, info = await self._guard("events_backlog", pipe.execute())
        except InternalError:  # no stream yet (a shard with no event)
            return 0, None
        found = [g for g in groups if _field(g, "name") == group]
        if not found:
            return 0, None
        last = str(_field(found[0], "last-delivered-id"))
        newest = _field(info, "last-entry")
        pending = int(_field(found[0], "pending") or 0)
        if not newest or _id_key(str(newest[0])) <= _id_key(last):
            return pending, None
        # the oldest event not yet delivered is the first one after the group's position
        first = await self._guard(
            "events_backlog", self.redis.xrange(stream, "(" + last, "+", count=1)
        )
        if not first:
            return pending, None
        return pending, max(0, await self.now() - _id_key(first[0][0])[0])

    # -- reaper ------------------------------------------------------------------------------

    async def sweep(self, shard: int, batch: int) -> SweepResult:
        """End the lapsed sessions of up to *batch* accounts of one shard (TIMEOUT), first
        moving up to *batch* accounts of the shard's 0.x index, if any.

        The due accounts are picked on the estimated server time; the script decides each one
        on the server's own clock.
        """
        migrated = await self._migrate_indexed(shard, batch)
        now = await self.now()
        due = await self._guard(
            "sweep_due",
            self.redis.zrangebyscore(self.keys.due(shard), "-inf", now, start=0, num=batch),
        )
        if not due:
            return SweepResult(0, 0, 0, migrated)
        script_keys = self.keys.shard_keys(shard)
        for account_id in due:
            script_keys += self.keys.account(account_id).own()
        ended, moved = await self._run(
            "sweep",
            script_keys,
            [self._clock_override(), self.policy.retention_ms, self._events, *due],
        )
        return SweepResult(int(ended), len(due), int(moved), migrated)

    async def _migrate_indexed(self, shard: int, batch: int) -> int:
        """Move accounts named by the shard's 0.x deadline index; how many had 0.x data."""
        members = await self._guard(
            "migrate_due",
            self.redis.zrange(self.keys.legacy_deadlines(shard), 0, batch - 1),
        )
        if not members:
            return 0
        accounts = list(dict.fromkeys(k.parse_member(m)[0] for m in members))
        moved = await self.migrate(accounts)
        # The move unindexed the sessions it found active; the members left name none (0.x
        # left such stale members, its sweep dropped them) and no 0.x process re-adds them:
        # its keep-alive finds the moved session gone.
        await self._guard(
            "migrate_due", self.redis.zrem(self.keys.legacy_deadlines(shard), *members)
        )
        return moved

    async def migrate(self, accounts: Sequence[str]) -> int:
        """Move the 0.x data of *accounts* (all of one shard) into their account hashes; how
        many had any."""
        if not accounts:
            return 0
        script_keys = self.keys.account(accounts[0]).shard_keys()
        for account_id in accounts:
            script_keys += self.keys.account(account_id).own()
        return int(await self._run("migrate", script_keys, list(accounts)))

    async def purge(self, shard: int, batch: int) -> int:
        """Remove up to *batch* ENDED sessions of one shard whose retention has passed."""
        now = await self.now()
        reap = self.keys.reap(shard)
        due = await self._guard(
            "purge_due", self.redis.zrangebyscore(reap, "-inf", now, start=0, num=batch)
        )
        if not due:
            return 0
        script_keys = self.keys.shard_keys(shard)
        for mbr in due:
            script_keys += self.keys.account(k.parse_member(mbr)[0]).own()
        removed, _skipped = await self._run("purge", script_keys, [self._clock_override(), *due])
        return int(removed)

    async def oldest_due(self, shard: int) -> int | None:
        """Age in ms of the oldest entry of the shard that is due for sweep or purge."""
        return (await self.shard_state(shard))[0]

    async def shard_state(self, shard: int) -> tuple[int | None, int | None]:
        """The shard's oldest_due, and its count of ACTIVE sessions (None until recount.lua
        has counted it whole: recount_active), in one round trip."""
        now = await self.now()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.due(shard), 0, 0, withscores=True)
        pipe.zrange(self.keys.reap(shard), 0, 0, withscores=True)
        pipe.zrange(self.keys.legacy_deadlines(shard), 0, 0, withscores=True)
        pipe.hmget(self.keys.active(shard), "n", "recounted")
        *heads, (active, recounted) = await self._guard("oldest_due", pipe.execute())
        due = [int(score) for head in heads for _m, score in head if score <= now]
        return (now - min(due) if due else None), (int(active or 0) if recounted else None)

    async def recount_active(self, shard: int, *, force: bool = False) -> int:
        """Count the shard's ACTIVE sessions whole, unless it was and not *force*
        (recount.lua); the count."""
        script_keys = [*self.keys.shard_keys(shard), self.keys.account_prefix(shard)]
        args = [self._clock_override(), "1" if force else "0"]
        return int(await self._run("recount", script_keys, args))

    async def audit(self, shard: int, accounts: Sequence[str]) -> list[Repair]:
        """Repair counters and due scores of *accounts* (all in *shard*) that differ from
        their sessions (moving 0.x data first)."""
        if not accounts:
            return []
        script_keys = self.keys.shard_keys(shard)
        for account_id in accounts:
            ak = self.keys.account(account_id)
            if ak.shard != shard:
                raise ValueError(f"account {account_id!r} is not in shard {shard}")
            script_keys += ak.own()
        flat = await self._run("audit", script_keys, list(accounts))
        return [
            Repair(accounts[int(flat[i]) - 1], int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]

    async def scan_accounts(self, count: int = 1000) -> AsyncGenerator[tuple[int, str], None]:
        """(shard, accountId) of every account with a hash (or 0.x data), by SCAN.

        For the audit only, never on a request path. One walk covers every shard (a walk per
        shard would read the whole keyspace once per shard); ``scan_iter`` works on a
        standalone and a Cluster client alike. An account may come twice. Each SCAN call is
        bounded by the deadline, the whole walk is not.
        """
        walk = self.redis.scan_iter(match=self.keys.all_accounts_pattern(), count=count)
        try:
            while True:
                try:
                    key: str = await self._guard("scan_accounts", anext(walk))
                except StopAsyncIteration:
                    return
                parsed = self.keys.parse_account_key(key)
                if parsed is None or parsed[1] not in ACCOUNT_KINDS:
                    continue
                shard = self.keys.shard_of(parsed[0])
                if key.startswith(self.keys.tag(shard) + ":"):
                    yield shard, parsed[0]
                else:  # only if redis.shards changed under live data, which it must not
                    log.error("account key %r is not in its account's shard %d", key, shard)
        finally:
            await walk.aclose()

    async def write_heartbeat(self, reaper_id: str, value: str, ttl: int) -> None:
        await self._guard(
            "write_heartbeat", self.redis.set(self.keys.heartbeat(reaper_id), value, ex=ttl)
        )

    async def read_heartbeat(self, reaper_id: str) -> str | None:
        """The heartbeat of reaper *reaper_id*, or None once its TTL has run out."""
        value: str | None = await self._guard(
            "read_heartbeat", self.redis.get(self.keys.heartbeat(reaper_id))
        )
        return value

    async def clear_heartbeat(self, reaper_id: str) -> None:
        await self._guard("clear_heartbeat", self.redis.delete(self.keys.heartbeat(reaper_id)))

    async def ping(self) -> None:
        await self._guard("ping", self.redis.ping())


def _entries(raw: Any) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as (id, fields); an entry trimmed while pending has no fields."""
    entries = []
    for entry_id, flat in raw or []:
        if not flat:
            fields: dict[str, str] = {}
        elif isinstance(flat, dict):
            fields = flat
        else:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
        entries.append((str(entry_id), fields))
    return entries


def _field(reply: Any, name: str) -> Any:
    """A field of an XINFO reply (a dict, or a flat list of names and values)."""
    if isinstance(reply, dict):
        return reply.get(name)
    items = list(reply)
    for i in range(0, len(items) - 1, 2):
        if items[i] == name:
            return items[i + 1]
    return None


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
