"""`srm events` as a process: the consumer, its sink and its metrics, until SIGTERM/SIGINT.

With ``redis.url`` unset it reads the embedded redis-server of a `srm serve` started in the
same working directory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys

from yarl import URL

from srm.config import Settings
from srm.connection import check_server_version
from srm.embedded import with_store_url
from srm.events.consumer import Consumer, EventsMetrics
from srm.events.sinks import Sink, StdoutSink, Stopped, WebhookSink, webhook_url
from srm.process import run_companion, run_loop, serve_prometheus
from srm.store import SessionStore

log = logging.getLogger(__name__)


def run(settings: Settings, webhook: str | None, group: str) -> int:
    """Run `srm events`; the exit code: 0 after SIGTERM, 2 for a bad webhook URL or group."""
    try:
        url = webhook_url(webhook) if webhook is not None else None
    except ValueError as exc:
        print(f"srm events: --webhook: {exc}", file=sys.stderr)
        return 2
    if not group or len(group) > 200 or any(c.isspace() for c in group):
        print("srm events: --group: 1 to 200 characters, no blanks", file=sys.stderr)
        return 2
    outcome: list[int] = []
    settings = with_store_url(settings)
    run_loop(check_server_version(settings.redis))
    run_companion(settings, functools.partial(_consume, url, group, outcome))
    return outcome[0] if outcome else 0


async def _consume(
    url: URL | None,
    group: str,
    outcome: list[int],
    settings: Settings,
    store: SessionStore,
    stop: asyncio.Event,
) -> None:
    e = settings.events
    metrics = _metrics()
    sink: Sink
    if url is None:
        sink = StdoutSink()
    else:
        sink = WebhookSink(
            url,
            chunk=e.batch_size,
            timeout=e.webhook_timeout,
            retry_cap=e.retry_cap,
            stop=stop,
            on_retry=metrics.retried.inc,
        )
    server = serve_prometheus(e.metrics_host, e.metrics_port, "events")
    try:
        await Consumer(store, e, sink, metrics, group=group, stop=stop).run()
    except Stopped:
        log.info("stopped before the webhook accepted the batch in flight; it is delivered again")
    except BrokenPipeError:
        log.error("stdout was closed; the events not written are delivered again")
        outcome.append(1)
    finally:
        await sink.close()
        if server is not None:
            server.shutdown()
            server.server_close()


@functools.cache
def _metrics() -> EventsMetrics:
    return EventsMetrics()
