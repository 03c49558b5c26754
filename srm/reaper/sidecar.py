"""`srm reaper` as a process, and the same reaper as the companion of the embedded `srm serve`.

With ``redis.url`` unset, `srm reaper` uses the embedded redis-server of a `srm serve` started
in the same working directory; that `srm serve` already runs the reaper itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY

from srm.config import ReaperSettings, Settings
from srm.connection import check_store
from srm.embedded import with_store_url
from srm.process import run_companion, run_loop, serve_prometheus
from srm.reaper.core import Reaper, ReaperMetrics
from srm.reaper.health import reaper_id
from srm.store import SessionStore

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Run `srm reaper` until SIGTERM/SIGINT; the process exit code."""
    settings = with_store_url(settings)
    run_loop(check_store(settings.redis))
    run_companion(settings, sidecar)
    return 0


async def sidecar(settings: Settings, store: SessionStore, stop: asyncio.Event) -> None:
    """`srm reaper`: the reaper, with its metrics on ``reaper.metrics_port``."""
    server = serve_metrics(settings.reaper)
    try:
        await companion(settings, store, stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


async def companion(settings: Settings, store: SessionStore, stop: asyncio.Event) -> None:
    """The reaper beside the API of the embedded `srm serve`, on the API's store.

    It opens no port of its own (``reaper.metrics_port`` is the sidecar's): its metrics are
    in the process registry, where the API process can serve them.
    """
    log.info(
        "reaper %s started: %d shards every %.3gs",
        reaper_id(settings.reaper),
        settings.redis.shards,
        settings.reaper.interval,
    )
    await Reaper(store, settings.reaper, _process_metrics(), stop=stop).run()


@functools.cache
def _process_metrics() -> ReaperMetrics:
    """The metrics in the process-wide registry, registered once however often the reaper
    starts in this process (also what an API /metrics on that registry would show)."""
    return ReaperMetrics(REGISTRY)


def serve_metrics(settings: ReaperSettings) -> WSGIServer | None:
    """The metrics endpoint on ``reaper.metrics_host:metrics_port``; None if off or taken."""
    return serve_prometheus(settings.metrics_host, settings.metrics_port, "reaper")
