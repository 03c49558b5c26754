"""The in-flight gate: a bound on the store calls that use the Redis client at once."""

from __future__ import annotations

import asyncio
from types import TracebackType


class NoTurn(TimeoutError):
    """Raised when a call got no turn at the gate in time: it never reached Redis."""


class InFlightGate:
    """At most *limit* calls hold a turn at once; a call waits *wait* seconds for its turn,
    then raises :class:`NoTurn` (SRM-0008 at the store's boundary). A *limit* of 0 lets every
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
            try:
                async with asyncio.timeout(self._wait):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise NoTurn(f"no turn at the in-flight gate within {self._wait} s") from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._slots is not None:
            self._slots.release()
