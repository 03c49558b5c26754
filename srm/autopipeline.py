"""Auto-pipelining: the function calls of concurrent requests leave in one pipeline write.

A redis-py call costs far more Python CPU (packing, a pool checkout, a socket write, retry and
observability wrappers) than Redis spends running one of SRM's scripts. So calls are not sent
one by one: every call made during one event-loop turn is queued, and at the end of the turn
(``call_soon``) the queue goes out as one non-transactional pipeline, one write and one pooled
connection for the lot, as ioredis and envoy's ratelimit do. Under load a turn holds many
requests, so the cost per request falls as load rises; alone, a call waits one turn at most.

Each call keeps its own outcome: an error answer fails only that call; a connection failure,
or the batch outliving *deadline*, fails every call of the batch (the waiters then see it at
once instead of each running its own timer). A "Function not found" answer (Redis restarted
empty, failed over to a node that never had the library, or had its functions flushed; a new
Cluster master) loads the library (FUNCTION LOAD REPLACE, on every master of a cluster) and
resends only the calls that got it; a call that got it did not run, so resending it is safe.

A batch that fails before any of it was written to a socket (no connection to be had: refused,
pool or gate timeout) fails its calls with :class:`NeverSent`: their scripts did not run, so
there is nothing to undo. A call cancelled while still queued is never sent.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import hiredis
from hiredis import pack_command
from redis import exceptions as rx
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.connection import ConnectionPool

from srm.gate import InFlightGate

MAX_BATCH = 1000  # calls per pipeline: bounds one write and one read loop
LOAD_RESENDS = 1


class NeverSent(rx.ConnectionError):
    """Raised when a call failed before it was written to Redis: its script did not run."""


class _Batch:
    __slots__ = ("calls", "sent")

    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls
        self.sent = False  # set just before the first write: from then on it may have run


class _Call:
    __slots__ = ("args", "future")

    def __init__(self, args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.args = args  # the whole command: FCALL, function, key count, keys, arguments
        self.future = future


def function_missing(reply: object) -> bool:
    """Whether *reply* (of a pipeline run with raise_on_error=False, which leaves the error
    as Redis sent it) says the function called is not on the server (its library is not
    loaded there): the call did not run."""
    return isinstance(reply, rx.ResponseError) and str(reply).startswith("Function not found")


class AutoPipeline:
    """Calls the functions of one library by FCALL, coalescing the calls of one event-loop
    turn; *library* is the library's text, loaded where its functions are missing."""

    def __init__(
        self,
        redis: Any,
        deadline: float,
        max_batch: int = MAX_BATCH,
        *,
        library: str,
        gate: InFlightGate | None = None,
    ) -> None:
        self._redis = redis
        self._library = library
        self._loading: asyncio.Future[Any] | None = None
        self._deadline = deadline
        self._max_batch = max_batch
        self._gate = gate or InFlightGate(0, 0)
        self._queue: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        # A client with one pool (standalone, Sentinel) gets the lean path; a client that
        # routes by key itself (Redis Cluster) gets its own non-transactional pipeline.
        pooled = isinstance(getattr(redis, "connection_pool", None), ConnectionPool)
        self._roundtrip = self._pooled_roundtrip if pooled else self._client_roundtrip

    def call(self, function: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Queue one FCALL; an awaitable of its reply (or of the error it met)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Call(("FCALL", function, len(keys), *keys, *args), future))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        # a call whose caller went away (cancelled) before this turn ended is not sent
        queue = [call for call in self._queue if not call.future.done()]
        self._queue = []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queue), self._max_batch):
            task = loop.create_task(self._send(_Batch(queue[start : start + self._max_batch])))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        failure: BaseException = rx.ConnectionError("the pipeline was abandoned")
        try:
            async with asyncio.timeout(self._deadline):
                await self._execute(batch)
        except Exception as exc:
            failure = exc
            if not batch.sent:
                failure = NeverSent(f"not sent: {exc!r}")
                failure.__cause__ = exc
        finally:
            # whatever happened, no caller is left waiting (also on cancellation)
            for call in batch.calls:
                if not call.future.done():
                    call.future.set_exception(failure)

    async def _execute(self, batch: _Batch) -> None:
        pending = batch.calls
        for resend in range(LOAD_RESENDS + 1):
            replies = await self._roundtrip([call.args for call in pending], batch)
            missing: list[_Call] = []
            for call, reply in zip(pending, replies, strict=True):
                if call.future.done():  # its caller went away (cancelled)
                    continue
                if resend < LOAD_RESENDS and function_missing(reply):
                    missing.append(call)
                elif isinstance(reply, Exception):
                    call.future.set_exception(reply)
                else:
                    call.future.set_result(reply)
            if not missing:
                return
            await self.load()
            pending = missing

    async def load(self) -> None:
        """FUNCTION LOAD REPLACE the library (on every master of a cluster: redis-py sends it
        to all primaries). Batches that find it missing at the same time share one load."""
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(
                self._redis.function_load(self._library, replace=True)
            )
        await asyncio.shield(self._loading)

    async def _client_roundtrip(self, commands: list[tuple[Any, ...]], batch: _Batch) -> list[Any]:
        """The FCALLs through the client's own pipeline; their replies, in order.

        A batch passes the store's gate as one call (it holds at most one connection per
        node), so a burst never overflows a node's pool (redis-py's cluster pools do not
        block; they refuse).
        """
        pipe = self._redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        async with self._gate:
            # the cluster client connects and writes inside: from here the batch may have run
            batch.sent = True
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    async def _pooled_roundtrip(self, commands: list[tuple[Any, ...]], batch: _Batch) -> list[Any]:
        """Send the FCALLs in one write on one pooled connection; their replies, in order.

        Connection failures are retried on a fresh connection by the client's retry policy
        (every script is idempotent, so resending a batch is safe).
        """
        pool = self._redis.connection_pool
        conn = await pool.get_connection()
        try:
            replies: list[Any] = await conn.retry.call_with_retry(
                lambda: self._exchange(conn, commands, batch), conn.disconnect
            )
            return replies
        finally:
            await pool.release(conn)

    @staticmethod
    async def _exchange(conn: Any, commands: list[tuple[Any, ...]], batch: _Batch) -> list[Any]:
        # packed in C by hiredis: redis-py's pure-Python packer was the largest share of its
        # CPU per call (and of the reaper's, whose calls carry thousands of keys)
        payload = [pack_command(c) for c in commands]
        replies: list[Any] = []
        try:
            batch.sent = True
            await conn.send_packed_command(payload)
            parser = _hiredis_parser(conn)  # of the connection just written to
            # Only the first reply waits on the socket timeout; the rest of the batch follows
            # it, and the batch as a whole is bounded by the deadline.
            timeout: float | None = None
            for _ in commands:
                # most replies of a batch arrive in the read of its first one: those are taken
                # from the parser's buffer, without read_response's machinery per reply
                reply = NOT_ENOUGH_DATA
                if parser is not None and timeout is not None:
                    reply = parser._reader.gets()
                    push = parser._hiredis_PushNotificationType
                    while push is not None and isinstance(reply, push):  # RESP3, as the parser
                        await parser.handle_push_response(reply)
                        reply = parser._reader.gets()
                    if isinstance(reply, rx.ConnectionError):  # as the parser does
                        raise reply
                if reply is NOT_ENOUGH_DATA:
                    try:
                        reply = await conn.read_response(timeout=timeout)
                    except rx.ResponseError as exc:
                        reply = exc
                replies.append(reply)
                timeout = math.inf
        except BaseException:
            # a half-read connection must never serve another call
            await conn.disconnect()
            raise
        return replies


def _hiredis_parser(conn: Any) -> Any:
    """*conn*'s redis-py hiredis parser, whose Reader holds the replies read so far
    (``gets()``: the next whole one, or NOT_ENOUGH_DATA); None with another parser, and then
    read_response reads every reply."""
    parser = getattr(conn, "_parser", None)
    if isinstance(parser, _AsyncHiredisParser) and isinstance(
        getattr(parser, "_reader", None), hiredis.Reader
    ):
        return parser
    return None
