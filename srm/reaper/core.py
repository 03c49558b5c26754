"""The reaper: ends lapsed sessions, removes ended ones and audits counters, shard by shard.

Every step is one of the store's atomic, idempotent scripts, so any number of reapers may run
at once and any of them may be killed at any moment: a second reaper is merely redundant.

Each pass visits every shard once, spread over ``reaper.interval`` (jittered per pass, in an
order rotated by a random start per instance, after a random start offset), so several
reapers do not hit Redis in step. Per shard it sweeps, then purges, in batches of
``reaper.batch_size`` until a batch comes back short, at most ``reaper.max_batches`` of each
per pass. The audit runs beside it at its own slow cadence: one SCAN walk over the account
keys of all shards every ``reaper.audit_interval`` (a walk per shard would read the whole
keyspace once per shard: 256 times the work, measured). Any error is logged, counted and
retried with capped exponential backoff; every wait is on the stop event, so SIGTERM ends the
reaper after the batch in flight.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager, suppress
from typing import TypeVar

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from srm.config import ReaperSettings
from srm.errors import StoreUnavailable
from srm.process import wait_or_stop
from srm.reaper.health import reaper_id
from srm.store import SessionStore

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE = 0.1  # seconds before the first retry after an error
BACKOFF_CAP = 5.0  # longest wait between retries
PASS_JITTER = 0.2  # each pass lasts interval * (1 +/- this)
PARALLEL_SHARDS = 4  # shards reaped at once per master when behind (bench/run --only reaper)
TRIM_EVERY = 10.0  # seconds between two trims of a shard's revocation feed ([cdn])


class ReaperMetrics:
    """The reaper's Prometheus metrics, registered in *registry*."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.expired = Counter(
            "srm_reaper_sessions_expired",
            "Sessions ended by the sweep because their keep-alive lapsed",
            registry=registry,
        )
        self.purged = Counter(
            "srm_reaper_sessions_purged",
            "Ended sessions removed after their retention",
            registry=registry,
        )
        self.revocations_trimmed = Counter(
            "srm_reaper_revocations_trimmed",
            "Entries of the revocation feed removed after their CDN token expired",
            registry=registry,
        )
        self.batches = Counter(
            "srm_reaper_batches", "Store calls made by the reaper", ["op"], registry=registry
        )
        self.batch_seconds = Histogram(
            "srm_reaper_batch_duration_seconds",
            "Duration of one reaper batch",
            ["op"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.lag = Gauge(
            "srm_reaper_lag_seconds",
            "Age of the oldest due sweep or purge entry found in the last pass",
            registry=registry,
        )
        self.drift_repairs = Counter(
            "srm_reaper_drift_repairs",
            "Account and rule counters the audit found out of step with what they count, repaired",
            registry=registry,
        )
        self.errors = Counter(
            "srm_reaper_errors",
            "Reaper steps that failed (and were retried)",
            ["kind"],
            registry=registry,
        )
        self.passes = Counter(
            "srm_reaper_passes", "Completed passes over all shards", registry=registry
        )
        self.active = Gauge(
            "srm_active_sessions",
            "ACTIVE sessions of all shards, as this reaper last read each shard's count",
            registry=registry,
            multiprocess_mode="livemax",  # embedded: the one reaper process, no pid label
        )

    @contextmanager
    def timed(self, op: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.batch_seconds.labels(op).observe(time.perf_counter() - started)
        self.batches.labels(op).inc()


class Reaper:
    """Sweeps, purges and audits every shard of *store* until *stop* is set."""

    def __init__(
        self,
        store: SessionStore,
        settings: ReaperSettings,
        metrics: ReaperMetrics,
        *,
        stop: asyncio.Event | None = None,
        rng: random.Random | None = None,
        backoff: tuple[float, float] = (BACKOFF_BASE, BACKOFF_CAP),
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.stop = stop or asyncio.Event()
        self.rng = rng or random.Random()
        self.id = reaper_id(settings)
        self.shards = store.keys.shards
        self.backoff = backoff
        # A random first shard per instance, so concurrent reapers visit different shards.
        self.first_shard = self.rng.randrange(self.shards)
        self._next_beat = 0.0
        # each shard's count of ACTIVE sessions, as last read; the gauge is their sum once
        # every shard has been read
        self._active: dict[int, int] = {}
        self._trimmed: dict[int, float] = {}  # shard -> when its revocation feed was trimmed

    # -- the loops -------------------------------------------------------------------------

    async def run(self) -> None:
        """Reap and audit until the stop event is set; never raises on store errors."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._reap_loop())
            tasks.create_task(self._audit_loop())
        with suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.store.clear_heartbeat(self.id)
        log.info("reaper %s stopped", self.id)

    async def _reap_loop(self) -> None:
        if not await self._idle(time.monotonic() + self.rng.uniform(0, self.settings.interval)):
            return
        while not self.stop.is_set():
            await self.reap_pass()

    async def _audit_loop(self) -> None:
        every = self.settings.audit_interval
        wait = self.rng.uniform(0, every)  # a random start, then one walk per (jittered) interval
        while await self._wait(wait):
            await self._retrying("audit", self.audit)
            wait = every * self.rng.uniform(1 - PASS_JITTER, 1 + PASS_JITTER)

    async def reap_pass(self) -> None:
        """One pass over all shards, spread over the (jittered) interval."""
        length = self.settings.interval * self.rng.uniform(1 - PASS_JITTER, 1 + PASS_JITTER)
        lags: list[float] = []

        async def one(shard: int) -> None:
            lag = await self._retrying("reap", self.reap_shard, shard)
            lags.append(lag or 0.0)

        if await self._paced(length, one):
            self.metrics.lag.set(max(lags, default=0.0))
            self.metrics.passes.inc()

    async def _paced(self, length: float, step: Callable[[int], Awaitable[None]]) -> bool:
        """Start *step* for every shard, one every length/shards seconds, keeping the heartbeat
        fresh between starts and while waiting; False if stopped. Up to PARALLEL_SHARDS steps
        run at once on each Redis master (on a Cluster, the shards of each master apart, so a
        backlog on one master does not hold up the others' shards, nor do several masters'
        shards queue behind one bound): with a backlog, one shard's Redis calls go while
        another's are being prepared (their calls share the store's pipelines). A shard whose
        master has as many in flight waits its turn (first come, first served) without
        holding up the shards of other masters."""
        slot = length / self.shards
        next_at = time.monotonic()
        limits: dict[str | None, asyncio.Semaphore] = {}
        running: set[asyncio.Task[None]] = set()

        async def bounded(shard: int, limit: asyncio.Semaphore) -> None:
            async with limit:
                if not self.stop.is_set():
                    await step(shard)

        try:
            for i in range(self.shards):
                if self.stop.is_set():
                    return False
                shard = (self.first_shard + i) % self.shards
                node = self.store.shard_node(shard)
                limit = limits.get(node)
                if limit is None:
                    limit = limits[node] = asyncio.Semaphore(PARALLEL_SHARDS)
                running.add(asyncio.ensure_future(bounded(shard, limit)))
                running = {task for task in running if not task.done()}
                # when behind (a backlog or an outage), go on at once but do not burst
                next_at = max(next_at + slot, time.monotonic())
                if not await self._idle(next_at):
                    return False
        finally:
            # the steps in flight finish their batch (each stops between batches); those
            # still waiting for their master see the stop and do not start
            if running:
                await asyncio.wait(running)
        return not self.stop.is_set()

    # -- the work of one shard -----------------------------------------------------------

    async def reap_shard(self, shard: int) -> float:
        """Sweep then purge one shard in bounded batches; the lag found there, in seconds.
        Reads the shard's count of ACTIVE sessions on the way (in the same round trip), and
        has it counted whole first if it never was (a shard of a version before the count)."""
        age, active = await self.store.shard_state(shard)
        if active is None:
            with self.metrics.timed("recount"):
                active = await self.store.recount_active(shard)
        self._active[shard] = active
        if len(self._active) == self.shards:
            self.metrics.active.set(sum(self._active.values()))
        await self._trim_revocations(shard)
        if age is None:
            return 0.0
        batch, m = self.settings.batch_size, self.metrics
        for _ in range(self.settings.max_batches):
            with m.timed("sweep"):
                swept = await self.store.sweep(shard, batch)
            m.expired.inc(swept.ended)
            m.purged.inc(swept.removed)
            if max(swept.accounts, swept.migrated) < batch or self.stop.is_set():
                break
        for _ in range(self.settings.max_batches):
            if self.stop.is_set():
                break
            with m.timed("purge"):
                removed = await self.store.purge(shard, batch)
            m.purged.inc(removed)
            if removed < batch:
                break
        return age / 1000

    async def _trim_revocations(self, shard: int) -> None:
        """Remove the shard's revocations whose token has expired, every TRIM_EVERY seconds
        (with [cdn] only: else there is no feed)."""
        lifetime = self.store.revocation_lifetime_ms
        if lifetime is None or time.monotonic() < self._trimmed.get(shard, 0.0) + TRIM_EVERY:
            return
        with self.metrics.timed("trim"):
            self.metrics.revocations_trimmed.inc(await self.store.trim_revocations(shard, lifetime))
        self._trimmed[shard] = time.monotonic()

    async def audit(self) -> int:
        """Repair every drifted counter, in chunks of ``batch_size`` accounts of one shard, as
        one SCAN walk finds them; how many were repaired. Memory stays bounded by shards x
        batch_size account ids, however many accounts there are."""
        size = self.settings.batch_size
        pending: dict[int, set[str]] = defaultdict(set)
        repaired = 0
        async with aclosing(self.store.scan_accounts()) as accounts:
            async for shard, account_id in accounts:
                if self.stop.is_set():
                    return repaired
                chunk = pending[shard]
                chunk.add(account_id)
                if len(chunk) >= size:
                    repaired += await self._audit_chunk(shard, pending.pop(shard))
        for shard, chunk in pending.items():
            if self.stop.is_set():
                break
            repaired += await self._audit_chunk(shard, chunk)
        return repaired

    async def _audit_chunk(self, shard: int, accounts: set[str]) -> int:
        with self.metrics.timed("audit"):
            repairs = await self.store.audit(shard, sorted(accounts))
        for r in repairs:
            log.warning(
                "audit repaired account %r: counter %d, active %d, rule counters %d",
                r.account_id,
                r.counter,
                r.truth,
                r.rules,
                extra={
                    "account": r.account_id,
                    "counter": r.counter,
                    "truth": r.truth,
                    "rule_repairs": r.rules,
                },
            )
        fixed = sum(r.count for r in repairs)
        self.metrics.drift_repairs.inc(fixed)
        if any(r.counter != r.truth for r in repairs):
            # The repair moved the shard's count by the counter's error, which is right only
            # if the count held that error: a count made by recount.lua (from the due index)
            # left out a drifted account with no ACTIVE session. Counted whole again, so the
            # count is the shard's sum once more (rare: only after drift).
            with self.metrics.timed("recount"):
                await self.store.recount_active(shard, force=True)
        return fixed

    async def _beat(self) -> None:
        ttl = self.settings.heartbeat_ttl
        value = orjson.dumps(
            {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}
        ).decode()
        await self.store.write_heartbeat(self.id, value, ttl)
        self._next_beat = time.monotonic() + ttl / 3

    # -- waiting and retrying ------------------------------------------------------------

    async def _idle(self, until: float) -> bool:
        """Wait until *until* (monotonic) unless stopped, writing the heartbeat when it is
        due, so that it stays fresh however long the interval; False when stopped."""
        while not self.stop.is_set():
            if time.monotonic() >= self._next_beat:
                await self._retrying("heartbeat", self._beat)
            now = time.monotonic()
            if now >= until:
                break
            await self._wait(min(until, self._next_beat) - now)
        return not self.stop.is_set()

    async def _wait(self, seconds: float) -> bool:
        """Wait *seconds* unless stopped first; False when stopped."""
        return await wait_or_stop(self.stop, seconds)

    async def _retrying(self, what: str, step: Callable[..., Awaitable[T]], *args: int) -> T | None:
        """*step*, retried with capped exponential backoff until it succeeds or we stop."""
        base, cap = self.backoff
        failures = 0
        while not self.stop.is_set():
            try:
                return await step(*args)
            except StoreUnavailable as exc:
                kind = "unavailable"
                log.warning("reaper %s failed, Redis unavailable (%s); retrying", what, exc)
            except Exception:
                kind = "internal"
                log.exception("reaper %s failed; retrying", what)
            self.metrics.errors.labels(kind).inc()
            delay = min(cap, base * 2**failures)
            failures += 1
            # full jitter, so reapers that saw the same outage do not come back in step
            await self._wait(self.rng.uniform(delay / 2, delay))
        return None
