"""The in-flight gate: a bound on the store calls that use the Redis client at once."""

from __future__ import annotations

import asyncio
from types import TracebackType


class InFlightGate:
    """At most *limit* calls hold a turn at once; a call waits *wait* seconds for its turn,
    then raises TimeoutError (SRM-0008 at the store's boundary). A *limit* of 0 lets every
    call through.

    Each store call, or autopipelined batch, holds at most one connection per node, so no
    node's pool can overflow: the blocking-pool behaviour that redis-py's cluster client
    lacks (it raises "Too many connections" at once).

    Use: ``async with gate: ...``.
    """

    __slots__ = ("_slots", "_wait")

    def __init__(self, limit: int, wait: float) -> None:
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None
        self._wait = wait

    async def __aenter__(self) -> None:
        if self._slots is not None:
            async with asyncio.timeout(self._wait):
                await self._slots.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._slots is not None:
            self._slots.release()
