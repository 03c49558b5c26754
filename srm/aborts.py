"""Undoing setups whose outcome is unknown, in the background, within fixed bounds.

A setup whose reply was lost (SRM-0008 after the call was sent, or a request cancelled while
its call was queued or in flight) may have created a session the player never heard of. The
:class:`Aborter` runs ``abort.lua`` for it: the session is ended if the setup ran, or
tombstoned so that a late setup creates nothing. One per process: one bounded queue,
de-duplicated by sessionId, drained by a few worker tasks that retry with backoff and do not
sleep after their last attempt. When the queue is full the abort is dropped: the session then
lapses with its keep-alive timeout (or its provisional deadline when keep-alive is disabled).
Every outcome is counted in ``srm_setup_aborts_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from srm import metrics
from srm.errors import SrmError
from srm.store import SessionStore

log = logging.getLogger(__name__)

CAPACITY = 10_000  # aborts waiting at once
WORKERS = 2  # aborts under way at once
ATTEMPTS = 4
FIRST_DELAY = 0.1  # seconds before the second attempt, then x4 (0.1, 0.4, 1.6)
DRAIN_TIMEOUT = 5.0  # seconds the queue may take to empty at shutdown


class Aborter:
    """A bounded background queue of setups to undo."""

    def __init__(
        self,
        store: SessionStore,
        *,
        capacity: int = CAPACITY,
        workers: int = WORKERS,
        attempts: int = ATTEMPTS,
        first_delay: float = FIRST_DELAY,
    ) -> None:
        self.store = store
        self._capacity = capacity
        self._workers = workers
        self._attempts = attempts
        self._first_delay = first_delay
        self._queue: asyncio.Queue[tuple[str, str]] | None = None
        self._pending: set[str] = set()  # sessionIds queued or being aborted
        self._tasks: list[asyncio.Task[None]] = []

    def submit(self, account_id: str, session_id: str) -> bool:
        """Queue the abort of one setup; False when it is queued already or the queue is full."""
        if session_id in self._pending:
            return False
        if self._queue is None:
            self._start()
        assert self._queue is not None
        try:
            self._queue.put_nowait((account_id, session_id))
        except asyncio.QueueFull:
            metrics.setup_abort("dropped")
            log.warning("abort queue full: setup %s lapses with its deadline", session_id)
            return False
        self._pending.add(session_id)
        metrics.setup_abort("queued")
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _start(self) -> None:
        self._queue = asyncio.Queue(self._capacity)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work()) for _ in range(self._workers)]

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            account_id, session_id = await self._queue.get()
            try:
                await self._abort(account_id, session_id)
            except Exception:  # a bug must not end the worker: the next aborts still run
                log.exception("undoing setup %s failed", session_id)
            finally:
                self._pending.discard(session_id)
                self._queue.task_done()

    async def _abort(self, account_id: str, session_id: str) -> None:
        delay = self._first_delay
        for attempt in range(1, self._attempts + 1):
            try:
                await self.store.abort_setup(account_id, session_id)
            except SrmError as exc:
                if attempt == self._attempts:
                    metrics.setup_abort("gave_up")
                    log.warning(
                        "could not undo setup %s (%s); it lapses with its deadline",
                        session_id,
                        exc.code,
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 4
            else:
                metrics.setup_abort("done")
                return

    async def drain(self, within: float = DRAIN_TIMEOUT) -> None:
        """Let the queued aborts run for at most *within* seconds, then stop the workers."""
        if self._queue is not None and self._pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._queue.join()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        if self._pending:
            log.warning("%d setups left to lapse with their deadlines", len(self._pending))
            self._pending.clear()
        self._queue = None
