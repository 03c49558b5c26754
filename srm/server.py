"""`srm serve`: the API in one process, or N worker processes sharing the port (SO_REUSEPORT).

SIGTERM/SIGINT stop accepting, let requests in flight finish (``server.shutdown_timeout``),
and exit 0. With ``redis.url`` unset, the embedded redis-server is started first.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import time
from typing import Any

from aiohttp import web

from srm import logs
from srm.api.app import create_app
from srm.api.observability import runner_options
from srm.api.protocol import SrmAppRunner
from srm.config import Settings, require_auth_key
from srm.connection import check_eviction, connect, warm_up
from srm.embedded import EmbeddedRedis
from srm.metrics import SharedMetricsDir
from srm.process import install_stop_handlers, make_store, run_loop
from srm.reaper.sidecar import Companion, run_companion

log = logging.getLogger("srm.server")


async def serve_api(
    settings: Settings,
    *,
    reuse_port: bool = False,
    companion: Companion | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or *stop*), then drain and close."""
    stop = stop or asyncio.Event()
    install_stop_handlers(stop)
    redis = connect(settings.redis)
    await warm_up(redis, settings.redis)
    store = make_store(settings, redis)
    app = create_app(settings, store)
    runner = SrmAppRunner(
        app,
        shutdown_timeout=settings.server.shutdown_timeout,
        **runner_options(settings),
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.server.host,
        settings.server.port,
        reuse_port=reuse_port or None,
        backlog=2048,
    )
    await site.start()
    log.info("listening on %s:%d", settings.server.host, settings.server.port)
    extra: asyncio.Task[None] | None = (
        asyncio.create_task(companion(settings, store, stop)) if companion else None
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing requests in flight")
        await runner.cleanup()
        if extra is not None:
            stop.set()
            await extra
        await redis.aclose()
        log.info("stopped")


async def _check_store(settings: Settings) -> None:
    """Checks of the store made once, before any worker starts (ConfigError: exit 2)."""
    redis = connect(settings.redis)
    try:
        await check_eviction(redis, settings.redis)
    finally:
        await redis.aclose()


def _worker(settings: Settings) -> None:
    logs.setup(settings.logging.level, logs.secrets_of(settings))
    run_loop(serve_api(settings, reuse_port=True))


def serve(settings: Settings, companion: Companion | None = None) -> int:
    """Run `srm serve` to completion; the process exit code."""
    require_auth_key(settings)
    embedded = None
    if not settings.redis.url:
        embedded = EmbeddedRedis(settings.embedded)
        settings = settings.replace("redis", url=embedded.start())
    try:
        run_loop(_check_store(settings))
        if settings.server.workers == 1:
            run_loop(serve_api(settings, companion=companion))
            return 0
        return _supervise(settings, companion)
    finally:
        if embedded is not None:
            embedded.stop()


def _supervise(settings: Settings, companion: Companion | None) -> int:
    """Keep N workers running until SIGTERM/SIGINT; restart a worker that dies.

    The workers (and the companion) share their metrics through a directory made here
    before any of them starts and removed after all of them have exited.
    """
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    shared_metrics = SharedMetricsDir()

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    workers: list[Any] = []
    side: Any = None
    try:
        for _ in range(settings.server.workers):
            workers.append(_start(ctx, settings))
        if companion is not None:
            side = ctx.Process(target=run_companion, args=(settings, companion), daemon=False)
            side.start()
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(workers):
                if not proc.is_alive() and not stopping:
                    log.error("worker %d exited with %s; restarting", proc.pid, proc.exitcode)
                    shared_metrics.process_exited(proc.pid)
                    workers[i] = _start(ctx, settings)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        everyone = [*workers, *([side] if side is not None else [])]
        for proc in everyone:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + settings.server.shutdown_timeout + 5
        for proc in everyone:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        shared_metrics.remove()
    return 0


def _start(ctx: Any, settings: Settings) -> Any:
    proc = ctx.Process(target=_worker, args=(settings,), daemon=False)
    proc.start()
    return proc
