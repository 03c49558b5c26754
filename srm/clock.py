"""The one clock SRM uses: the Redis server's, never the clock of the host it runs on.

Scripts read it themselves (``TIME``, in ``lua/_time.lua``), so every deadline, creation and
end time stored comes from Redis, and hosts whose clocks disagree by minutes give the same
answers. Python code that needs "now" outside a script (picking the reaper's due entries,
telling a lapsed session on a read, the reaper's lag) estimates the server's time with
:class:`ServerClock`: an offset to the local monotonic clock, measured with one ``TIME`` call
and measured again every ``refresh`` seconds. A wrong or jumping host wall clock moves
neither. Such estimates only choose candidates or shape a read; every change is decided
inside a script on the server's own clock.

Tests control time by giving the store a clock function instead: its value then reaches
the scripts as their clock override (ARGV[1]) and replaces the estimate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

# Seconds between two measurements of the server's clock. Between them the estimate drifts
# only as far as the host's monotonic clock runs at another rate than the server's.
REFRESH = 10.0

ReadServerTime = Callable[[], Awaitable[tuple[int, int]]]


class ServerClock:
    """The Redis server's time in ms, estimated from the local monotonic clock."""

    def __init__(self, read_time: ReadServerTime, refresh: float = REFRESH) -> None:
        self._read_time = read_time
        self._refresh = refresh
        self._offset_ms: float | None = None
        self._measured_at = 0.0

    async def now(self) -> int:
        mono = time.monotonic()
        if self._offset_ms is None or mono - self._measured_at >= self._refresh:
            await self._measure()
        assert self._offset_ms is not None
        return int(time.monotonic() * 1000 + self._offset_ms)

    async def _measure(self) -> None:
        before = time.monotonic()
        seconds, micros = await self._read_time()
        after = time.monotonic()
        server_ms = seconds * 1000 + micros / 1000
        # the server read its clock somewhere within the round trip: take the middle
        self._offset_ms = server_ms - (before + after) / 2 * 1000
        self._measured_at = after
