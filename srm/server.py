"""`srm serve`: the API in one process, or N worker processes sharing the port (SO_REUSEPORT).

SIGTERM/SIGINT stop accepting, let requests in flight finish (``server.shutdown_timeout``),
and exit 0. With ``redis.url`` unset, the embedded redis-server is started first.

With several workers a supervisor process starts them (and, in embedded mode, the reaper
as a process of its own) and keeps each running. A child that exits by itself (not killed
by a signal) before it is first ready (a worker has bound its port, the reaper has its
store) is a start failure: `srm serve` stops the others and exits 1 (2 for a start error
the child reported in one line, such as a listen address taken since the supervisor checked
it). A listen address already taken is found before any worker starts (exit 2). A child that
exits later is restarted after a delay that doubles with each exit in a row (:data:`RESTART_DELAY`
up to :data:`RESTART_DELAY_MAX`) and starts over once the child has run for
:data:`RESTART_STABLE`. Every child gets SIGTERM when the supervisor dies, however it dies.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from srm import logs
from srm.api import cursors
from srm.api.app import create_app
from srm.api.observability import runner_options
from srm.api.protocol import SrmAppRunner
from srm.config import ConfigError, Settings, require_auth_key
from srm.connection import check_store, connect, warm_up
from srm.embedded import EmbeddedRedis
from srm.metrics import SharedMetricsDir
from srm.process import (
    Companion,
    die_with_parent,
    install_stop_handlers,
    make_store,
    run_companion,
    run_loop,
    settle_gc,
)

log = logging.getLogger("srm.server")

RESTART_DELAY = 0.5  # seconds before restarting a child that exited after it was ready
RESTART_DELAY_MAX = 30.0
RESTART_STABLE = 60.0  # seconds a child must run for its next exit to count as the first
START_ERROR = 2  # the exit code of a start error reported in one line (srm.cli)


async def serve_api(
    settings: Settings,
    *,
    reuse_port: bool = False,
    companion: Companion | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
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
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await redis.aclose()
        raise listen_error(settings, exc) from None
    settle_gc()
    if on_ready is not None:
        on_ready()
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


def listen_error(settings: Settings, exc: OSError) -> ConfigError:
    """The one-line start error of a listen address that cannot be bound (in use, not an
    address of this host, a privileged port)."""
    host, port = settings.server.host, settings.server.port
    return ConfigError(
        f"server.host, server.port (SRM_HOST, SRM_PORT): cannot listen on {host}:{port}: "
        f"{os.strerror(exc.errno) if exc.errno else type(exc).__name__}"
    )


async def check_listen(settings: Settings) -> None:
    """Bind the listen address once without SO_REUSEPORT and let it go: ConfigError if it is
    taken, even by processes that share it among themselves (another `srm serve` with
    workers), before any worker starts."""
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            asyncio.Protocol, settings.server.host, settings.server.port, reuse_address=True
        )
    except OSError as exc:
        raise listen_error(settings, exc) from None
    server.close()
    await server.wait_closed()


def _worker(settings: Settings, parent: int, ready: Any) -> None:
    die_with_parent(parent)
    logs.setup(settings.logging.level, logs.secrets_of(settings))
    try:
        run_loop(serve_api(settings, reuse_port=True, on_ready=ready.set))
    except ConfigError as exc:  # the address was taken since the supervisor checked it
        print(f"srm: configuration error: {exc}", file=sys.stderr)
        sys.exit(START_ERROR)


def _reaper(settings: Settings, companion: Companion, parent: int, ready: Any) -> None:
    die_with_parent(parent)
    run_companion(settings, companion, on_ready=ready.set)


def serve(settings: Settings, companion: Companion | None = None) -> int:
    """Run `srm serve` to completion; the process exit code."""
    require_auth_key(settings)
    if not cursors.key_material(settings):
        # nothing secret configured to derive the key of listing cursors from: one random
        # key for this `srm serve`, shared by its workers (srm/api/cursors.py)
        settings = settings.replace("server", cursor_key=secrets.token_urlsafe(32))
        log.warning(
            "server.cursor_key: no key set and no HS secret or operator key to derive one "
            "from: listing cursors are valid on this srm serve only, until it restarts; set "
            "SRM_SERVER_CURSOR_KEY to the same secret on every instance behind one address"
        )
    embedded = None
    if not settings.redis.url:
        embedded = EmbeddedRedis(settings.embedded)
        settings = settings.replace("redis", url=embedded.start())
    try:
        run_loop(check_store(settings.redis))  # once, before any worker starts
        if settings.server.workers == 1:
            run_loop(serve_api(settings, companion=companion))
            return 0
        run_loop(check_listen(settings))
        return _supervise(settings, companion)
    finally:
        if embedded is not None:
            embedded.stop()


@dataclass
class _Child:
    """One supervised process: a worker or the reaper, and when to restart it."""

    name: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    proc: Any = None
    ready: Any = None  # a multiprocessing Event the child sets once it serves
    ready_at: float | None = None
    served: bool = False  # it was ready once: a later start failure is just an exit
    exits: int = 0  # exits in a row, each after less than RESTART_STABLE of running
    restart_at: float = 0.0

    def start(self, ctx: Any) -> None:
        self.ready = ctx.Event()
        self.ready_at = None
        self.proc = ctx.Process(
            target=self.target, args=(*self.args, os.getpid(), self.ready), daemon=False
        )
        self.proc.start()

    def restart_delay(self, now: float) -> float:
        """After an exit (once ready): the delay before the next start, counting the exit."""
        if self.ready_at is not None and now - self.ready_at >= RESTART_STABLE:
            self.exits = 0
        self.exits = min(self.exits + 1, 64)  # 2.0 ** n overflows a float past n = 1023
        return min(RESTART_DELAY_MAX, RESTART_DELAY * 2.0 ** (self.exits - 1))


def _supervise(settings: Settings, companion: Companion | None) -> int:
    """Keep N workers (and the reaper) running until SIGTERM/SIGINT; 1 if one cannot start.

    The children share their metrics through a directory made here before any of them
    starts and removed after all of them have exited.
    """
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    shared_metrics = SharedMetricsDir()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children = [
        _Child(f"worker {i + 1}", _worker, (settings,)) for i in range(settings.server.workers)
    ]
    if companion is not None:
        children.append(_Child("reaper", _reaper, (settings, companion)))
    try:
        for child in children:
            child.start(ctx)
        while not stopping.wait(0.1):
            now = time.monotonic()
            for child in children:
                if stopping.is_set():
                    break
                if child.proc is None:
                    if now >= child.restart_at:
                        child.start(ctx)
                    continue
                if child.ready_at is None and child.ready.is_set():
                    child.ready_at, child.served = now, True
                if child.proc.is_alive():
                    continue
                pid, code = child.proc.pid, child.proc.exitcode
                child.proc.join()
                child.proc = None
                shared_metrics.process_exited(pid)
                if not child.served and not child.ready.is_set() and code >= 0:
                    log.error("%s (pid %d) failed to start (exit code %s)", child.name, pid, code)
                    return START_ERROR if code == START_ERROR else 1
                delay = child.restart_delay(now)
                child.restart_at = now + delay
                log.error(
                    "%s (pid %d) exited with %s; restarting in %.3g s", child.name, pid, code, delay
                )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        running = [c.proc for c in children if c.proc is not None]
        for proc in running:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + settings.server.shutdown_timeout + 5
        for proc in running:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        shared_metrics.remove()
    return 0
