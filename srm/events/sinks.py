"""Where `srm events` delivers: JSON lines on stdout, or JSON arrays POSTed to a webhook.

A sink's ``deliver`` returns once every event given was written (stdout flushed) or accepted
(the webhook answered 2xx); only then are they acknowledged. A webhook that fails is retried
with capped exponential backoff, with full jitter, until it accepts or the consumer stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Protocol

import aiohttp
import orjson
from yarl import URL

from srm.process import wait_or_stop

log = logging.getLogger(__name__)

RETRY_BASE = 0.2  # seconds before the first retry of a failed POST


class Stopped(Exception):
    """Raised when the consumer stops before a delivery succeeded."""


class Sink(Protocol):
    async def deliver(self, events: Sequence[dict[str, Any]]) -> None: ...

    async def close(self) -> None: ...


def webhook_url(text: str) -> URL:
    """The webhook URL, or ValueError: http(s) with a host, nothing else."""
    try:
        url = URL(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a URL: {text!r}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"not an http(s) URL with a host: {text!r}")
    return url


class StdoutSink:
    """One JSON event per line, flushed before the events count as delivered."""

    def __init__(self, out: BinaryIO | None = None) -> None:
        self.out = out or sys.stdout.buffer

    async def deliver(self, events: Sequence[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in events)
        # a slow reader (a full pipe) must not block the loop, nor SIGTERM's handling
        await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    async def close(self) -> None:
        return None


class WebhookSink:
    """POSTs JSON arrays of at most *chunk* events, retried until a 2xx answer."""

    def __init__(
        self,
        url: URL,
        *,
        chunk: int,
        timeout: float,
        retry_cap: float,
        stop: asyncio.Event,
        on_retry: Callable[[int], None] = lambda n: None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        # for the log: no credentials, no query (either may hold a secret)
        self.shown = str(url.with_user(None).with_query(None).with_fragment(None))
        self.chunk = chunk
        self.retry_cap = retry_cap
        self.stop = stop
        self.on_retry = on_retry
        self.rng = rng or random.Random()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def deliver(self, events: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(events), self.chunk):
            chunk = list(events[start : start + self.chunk])
            await self._post(orjson.dumps(chunk), len(chunk))

    async def _post(self, body: bytes, count: int) -> None:
        failures = 0
        while True:
            try:
                async with self._http.post(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    if 200 <= resp.status < 300:
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            failures += 1
            self.on_retry(count)
            delay = min(self.retry_cap, RETRY_BASE * 2 ** (failures - 1))
            log.warning("webhook %s failed (%s); retry %d", self.shown, problem, failures)
            if not await wait_or_stop(self.stop, self.rng.uniform(delay / 2, delay)):
                raise Stopped()

    async def close(self) -> None:
        await self._http.close()
