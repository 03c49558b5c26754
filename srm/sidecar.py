"""`srm reaper` as a process: the sidecar, its `--check` healthcheck, and the embedded companion.

With ``redis.url`` unset, the reaper and its check use the embedded redis-server of a
`srm serve` started in the same working directory (its unix socket under
``embedded.data_dir``); `srm serve` itself already runs the reaper in that case.
"""

from __future__ import annotations

import asyncio
import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, start_http_server

from srm.config import ReaperSettings, Settings
from srm.connection import connect
from srm.embedded import EmbeddedRedis
from srm.errors import SrmError
from srm.reaper import Reaper, ReaperMetrics, reaper_id
from srm.server import make_store, run_companion
from srm.store import SessionStore

log = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    """Run `srm reaper` until SIGTERM/SIGINT; the process exit code."""
    run_companion(_with_store_url(settings), companion)
    return 0


def check(settings: Settings) -> int:
    """0 if this reaper id's heartbeat is in Redis, else 1 (also when Redis cannot answer)."""
    settings = _with_store_url(settings)
    alive = asyncio.run(_heartbeat_exists(settings))
    rid = reaper_id(settings.reaper)
    print(f"reaper {rid}: {'alive' if alive else 'no heartbeat'}")
    return 0 if alive else 1


async def companion(settings: Settings, store: SessionStore, stop: asyncio.Event) -> None:
    """The reaper beside the API of `srm serve` (the embedded default), on the API's store."""
    metrics = ReaperMetrics()
    server = _serve_metrics(settings.reaper)
    log.info(
        "reaper %s started: %d shards every %.3gs",
        reaper_id(settings.reaper),
        settings.redis.shards,
        settings.reaper.interval,
    )
    try:
        await Reaper(store, settings.reaper, metrics, stop=stop).run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


async def _heartbeat_exists(settings: Settings) -> bool:
    redis = connect(settings.redis)
    try:
        store = make_store(settings, redis)
        return await store.read_heartbeat(reaper_id(settings.reaper)) is not None
    except SrmError as exc:
        log.warning("reaper check: %s", exc)
        return False
    finally:
        await redis.aclose()


def _with_store_url(settings: Settings) -> Settings:
    if settings.redis.url:
        return settings
    return settings.replace("redis", url=EmbeddedRedis(settings.embedded).url)


def _serve_metrics(settings: ReaperSettings) -> WSGIServer | None:
    """The metrics endpoint on ``reaper.metrics_host:metrics_port``; None if off or taken.

    A port already in use is logged, not fatal: the reaper's work matters more than its
    metrics, and two embedded `srm serve` on one host would otherwise fight over it.
    """
    if settings.metrics_port == 0:
        return None
    try:
        server, _thread = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=REGISTRY
        )
    except OSError as exc:
        log.error(
            "reaper metrics not served on %s:%d: %s",
            settings.metrics_host,
            settings.metrics_port,
            exc,
        )
        return None
    log.info("reaper metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server
