"""What every srm process shares: its event loop, its stop signals and its store."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from srm.config import Settings
from srm.keys import Keys
from srm.model import DAY_MS, EventPolicy, Households, Policy, RevocationFeed
from srm.network import Networks

if TYPE_CHECKING:  # imported when used: srm.embedded (and so `srm reaper --check`) stays light
    from wsgiref.simple_server import WSGIServer

    from srm.store import SessionStore

log = logging.getLogger(__name__)


def policy(settings: Settings) -> Policy:
    s, n, d = settings.sessions, settings.network, settings.devices
    return Policy(
        timeout_ms=s.timeout * 1000,
        max_sessions=s.max_sessions,
        retention_ms=s.ended_retention * 1000,
        evict=s.limit_policy == "evict",
        rules=s.rules,
        households=Households(
            networks=Networks.of(n.trusted_proxies, n.ipv4_prefix, n.ipv6_prefix),
            learn_home=n.learn_home,
            devices_max=d.max,
            forget_after_ms=d.forget_after_days * DAY_MS,
            swap_cooldown_ms=d.swap_cooldown_days * DAY_MS,
        ),
        setups_per_minute=settings.limits.setups_per_minute,
    )


def event_policy(settings: Settings) -> EventPolicy:
    e, c = settings.events, settings.cdn
    revocations = RevocationFeed(c.slack, c.revocations_maxlen) if c.enabled else None
    return EventPolicy(
        enabled=e.enabled, maxlen=e.maxlen, max_age_ms=e.max_age * 1000, revocations=revocations
    )


def make_store(settings: Settings, redis: Any) -> SessionStore:
    from srm.store import SessionStore

    return SessionStore(
        redis,
        Keys(settings.redis.shards),
        policy(settings),
        events=event_policy(settings),
        deadline=settings.redis.request_deadline,
        max_in_flight=settings.redis.pool_size,
        in_flight_wait=settings.redis.pool_timeout,
        replica_acks=settings.redis.replica_acks,
        replica_ack_timeout=settings.redis.replica_ack_timeout,
    )


def serve_prometheus(host: str, port: int, what: str) -> WSGIServer | None:
    """The process's metrics endpoint on *host:port*; None if off (port 0) or taken.

    A port already in use is logged, not fatal: the process's work matters more than its
    metrics, and two of them on one host with the default port would otherwise not both run.
    """
    if port == 0:
        return None
    from prometheus_client import REGISTRY, start_http_server

    try:
        server, _thread = start_http_server(port, host, registry=REGISTRY)
    except OSError as exc:
        log.error(
            "%s metrics not served: cannot listen on %s:%d (%s); running on without them. "
            "Set %s.metrics_port (SRM_%s_METRICS_PORT) to a free port, or 0 to turn them off",
            what,
            host,
            port,
            exc.strerror or type(exc).__name__,
            what,
            what.upper(),
        )
        return None
    log.info("%s metrics on http://%s:%d/metrics", what, host, port)
    return server


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait *seconds* unless *stop* is set first; False when stopped."""
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await stop.wait()
    return not stop.is_set()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: no parent-death signal


_prctl = _load_prctl()


def can_die_with_parent() -> bool:
    return _prctl is not None


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send *sig* to this process when *parent* (its parent) exits.

    Linux only (False elsewhere). If the parent has already gone, *sig* is sent at once.
    Safe between fork and exec: it only calls prctl, getppid and kill.
    """
    if _prctl is None or _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before prctl: no signal would come
        os.kill(os.getpid(), sig)
    return True


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


# Collection thresholds of a serving process: a request allocates hundreds of objects, so the
# default (700, 10, 10) runs a young collection every few requests and a full one every few
# hundred, each a pause every request in flight waits for (bench/run: p99 at full load about
# 2.5x the bare-aiohttp ceiling's with these, 6-7x with the defaults).
GC_THRESHOLDS = (20_000, 50, 100)


def settle_gc() -> None:
    """Once the process has started: move every object alive now (modules, the app, its
    routes, the store) out of the collector's way for good, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run *main* on uvloop (asyncio when missing), folding the pending metric counts
    (srm.metrics.flush) every metrics.FLUSH_INTERVAL meanwhile and at the end."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_flushing(main))
    else:
        uvloop.run(_flushing(main))


async def _flushing(main: Coroutine[Any, Any, None]) -> None:
    from srm import metrics

    async with metrics.flushing():
        await main


# Work a process runs alone, or beside the API (the embedded reaper), given the settings,
# the store and the stop event.
Companion = Callable[[Settings, "SessionStore", asyncio.Event], Coroutine[Any, Any, None]]


def run_companion(
    settings: Settings, companion: Companion, on_ready: Callable[[], None] | None = None
) -> None:
    """Run *companion* alone in this process (its own Redis client) until SIGTERM/SIGINT;
    *on_ready* is called once it has its store."""
    from srm import logs
    from srm.connection import connect, warm_up

    logs.setup(settings.logging.level, logs.secrets_of(settings))

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        redis = connect(settings.redis)
        await warm_up(redis, settings.redis)
        if on_ready is not None:
            on_ready()
        try:
            await companion(settings, make_store(settings, redis), stop)
        finally:
            with contextlib.suppress(Exception):
                await redis.aclose()

    run_loop(main())
