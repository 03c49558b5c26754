"""A TCP proxy in front of a real redis-server that loses Redis's replies on demand.

Commands always reach Redis (its scripts run); only the answers can be lost, which is what a
client sees when a network or a server stalls after executing: the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class LossyProxy:
    """Forwards 127.0.0.1:<port> to a redis-server; see lose_replies and lose_next_reply."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.lose_replies = False  # drop every reply while set
        self._lose_next = 0  # replies to drop, each closing its client connection
        self.requests = 0  # chunks of commands forwarded to Redis
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_next_reply(self, count: int = 1) -> None:
        """Drop the next *count* replies and close their connections (the client retries)."""
        self._lose_next = count

    @property
    def replies_to_lose(self) -> int:
        """Replies lose_next_reply asked to drop that have not come yet."""
        return self._lose_next

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pumps):
            task.cancel()
        if self._pumps:
            await asyncio.wait(self._pumps)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        loop = asyncio.get_running_loop()
        for pump in (self._pump(reader, up_writer, False), self._pump(up_reader, writer, True)):
            task = loop.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if not replies:
                    self.requests += 1
                elif self.lose_replies:
                    continue
                elif self._lose_next > 0:
                    self._lose_next -= 1
                    break  # and close the connection: the client sees it lost
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.close()


@contextlib.asynccontextmanager
async def lossy_proxy(upstream_port: int) -> AsyncIterator[LossyProxy]:
    proxy = LossyProxy(upstream_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
