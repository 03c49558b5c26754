"""The consumer-group loop of `srm events`: read, deliver, acknowledge, claim.

Every shard has its own stream (its own Redis Cluster slot), read through one consumer group
per stream. A pass reads up to ``events.batch_size`` new events of every shard (one script
call per shard, sent together), delivers them to the sink, and acknowledges them only once
delivered: an event is delivered at least once, whatever dies when. Events that a consumer
was given but never acknowledged (it died, or stopped mid-delivery) are claimed by another
consumer of the group once they have been idle ``events.claim_idle`` seconds (XAUTOCLAIM),
and delivered again. The claim walks each shard's pending list in bounded steps, going on
where the last one stopped, so a long list of entries that live consumers hold cannot hide a
dead consumer's entries behind it; and it never hands a consumer back what the same pass just
read (a stall of ``claim_idle`` between the two would otherwise deliver it twice). Consumers
of one group share the events: each new event goes to one of them. Events trimmed from a
stream before the group read them are lost: they are counted (``srm_events_lost``) and
logged, once per group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from srm.config import EventsSettings
from srm.errors import SrmError
from srm.events.schema import event
from srm.events.sinks import Sink
from srm.process import wait_or_stop
from srm.store import SessionStore

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE = 0.1  # seconds before retrying a failed store call
BACKOFF_CAP = 5.0
GAUGE_EVERY = 5.0  # seconds between two updates of the pending and lag gauges
PRUNE_EVERY = 600.0  # seconds between two removals of dead consumers that hold nothing
DEAD_AFTER_MS = 3_600_000  # a consumer that has not read for an hour is dead

Batch = list[tuple[int, str, dict[str, str]]]  # (shard, entry id, fields)


def consumer_name() -> str:
    """Unique per process and start: a restarted consumer never inherits a dead one's name
    (its events are claimed like any other dead consumer's)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class EventsMetrics:
    """The Prometheus metrics of `srm events`, registered in *registry*."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.delivered = Counter(
            "srm_events_delivered", "Events delivered and acknowledged", registry=registry
        )
        self.retried = Counter(
            "srm_events_retried",
            "Events whose delivery failed once and was retried",
            registry=registry,
        )
        self.claimed = Counter(
            "srm_events_claimed",
            "Events taken over from a consumer that held them longer than events.claim_idle",
            registry=registry,
        )
        self.lost = Counter(
            "srm_events_lost",
            "Events trimmed from their stream before the group read or acknowledged them",
            registry=registry,
        )
        self.pending = Gauge(
            "srm_events_pending",
            "Events given to the group's consumers and not yet acknowledged",
            registry=registry,
        )
        self.lag = Gauge(
            "srm_events_lag_seconds",
            "Age of the oldest event not yet given to a consumer of the group",
            registry=registry,
        )
        self.errors = Counter(
            "srm_events_errors", "Store calls that failed (and were retried)", registry=registry
        )


class Consumer:
    """Delivers the events of every shard to *sink*, as consumer *name* of *group*."""

    def __init__(
        self,
        store: SessionStore,
        settings: EventsSettings,
        sink: Sink,
        metrics: EventsMetrics,
        *,
        group: str,
        name: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.group = group
        self.name = name or consumer_name()
        self.stop = stop or asyncio.Event()
        self.shards = range(store.keys.shards)
        self._next_claim = 0.0
        # per shard, where the next XAUTOCLAIM starts: the walk of the pending list goes on
        # from there, and starts over at 0-0 once it has seen the whole list
        self._claim_from = dict.fromkeys(self.shards, "0-0")
        self._next_gauges = 0.0
        self._next_prune = time.monotonic() + PRUNE_EVERY

    async def run(self) -> None:
        """Deliver until the stop event is set; the batch in flight is finished first."""
        log.info("events consumer %s of group %s started", self.name, self.group)
        while not self.stop.is_set():
            delivered = await self._retrying(self.step)
            if not delivered:
                await self._wait(self.settings.poll_interval)
        try:  # leave the group, unless this consumer still holds events (another claims them)
            async with asyncio.timeout(2.0):
                await self.prune(own=True)
        except (SrmError, TimeoutError) as exc:
            log.warning("events consumer %s could not leave its group: %s", self.name, exc)
        log.info("events consumer %s stopped", self.name)

    async def step(self) -> int:
        """One pass: read, claim (when due, or a walk goes on), deliver, acknowledge; how many
        were delivered."""
        now = time.monotonic()
        batch: Batch = await self._read()  # first: a shard's first read creates its group
        if now >= self._next_claim:  # a new walk of every shard's pending list
            self._next_claim = now + max(0.1, self.settings.claim_idle / 2)
            claiming = list(self.shards)
        else:  # walks not yet through their shard's list go on at every pass
            claiming = [s for s in self.shards if self._claim_from[s] != "0-0"]
        if claiming:
            read = {(shard, entry_id) for shard, entry_id, _f in batch}
            batch += await self._claim(claiming, skip=read)
        if now >= self._next_gauges:
            self._next_gauges = now + GAUGE_EVERY
            await self.update_gauges()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            await self.prune()
        if not batch:
            return 0
        networks = self.store.policy.households.networks  # the [network] settings
        await self.sink.deliver(
            [event(shard, entry_id, f, networks) for shard, entry_id, f in batch]
        )
        by_shard: dict[int, list[str]] = defaultdict(list)
        for shard, entry_id, _f in batch:
            by_shard[shard].append(entry_id)
        await asyncio.gather(
            *(self.store.ack_events(shard, self.group, ids) for shard, ids in by_shard.items())
        )
        self.metrics.delivered.inc(len(batch))
        return len(batch)

    async def _read(self) -> Batch:
        count = self.settings.batch_size
        replies = await asyncio.gather(
            *(self.store.read_events(s, self.group, self.name, count) for s in self.shards)
        )
        batch: Batch = []
        for shard, (lost, entries) in zip(self.shards, replies, strict=True):
            if lost:
                self._lost(shard, lost, "trimmed before the group read them")
            batch += [(shard, entry_id, f) for entry_id, f in entries]
        return batch

    async def _claim(self, shards: list[int], skip: set[tuple[int, str]]) -> Batch:
        """The events idle for ``claim_idle`` in the next stretch of each of *shards*' pending
        lists (at most 10 x ``batch_size`` entries looked at on Redis 7), but those in
        *skip*: this pass read them itself (it was slow, they are already in its batch)."""
        idle_ms = int(self.settings.claim_idle * 1000)
        count = self.settings.batch_size
        claim = self.store.claim_events
        replies = await asyncio.gather(
            *(claim(s, self.group, self.name, idle_ms, count, self._claim_from[s]) for s in shards)
        )
        batch: Batch = []
        for shard, (claimed, deleted, next_start) in zip(shards, replies, strict=True):
            self._claim_from[shard] = next_start
            if deleted:
                self._lost(shard, deleted, "trimmed while a dead consumer held them")
            entries = [(entry_id, f) for entry_id, f in claimed if (shard, entry_id) not in skip]
            if entries:
                self.metrics.claimed.inc(len(entries))
                log.info("claimed %d events of shard %d from a dead consumer", len(entries), shard)
            batch += [(shard, entry_id, f) for entry_id, f in entries]
        return batch

    def _lost(self, shard: int, lost: int, why: str) -> None:
        if lost < 0:
            log.error("events of shard %d were lost (%s); Redis < 7 cannot count them", shard, why)
            self.metrics.lost.inc()
            return
        log.error("%d events of shard %d were lost: %s", lost, shard, why)
        self.metrics.lost.inc(lost)

    async def prune(self, *, own: bool = False) -> int:
        """Remove the group's dead consumers that hold nothing (and this one when *own*)."""
        name = self.name if own else ""
        removed = await asyncio.gather(
            *(self.store.prune_consumers(s, self.group, DEAD_AFTER_MS, name) for s in self.shards)
        )
        return sum(removed)

    async def update_gauges(self) -> None:
        replies = await asyncio.gather(
            *(self.store.events_backlog(s, self.group) for s in self.shards)
        )
        self.metrics.pending.set(sum(pending for pending, _age in replies))
        ages = [age for _pending, age in replies if age is not None]
        self.metrics.lag.set(max(ages, default=0) / 1000)

    async def _wait(self, seconds: float) -> None:
        await wait_or_stop(self.stop, seconds)

    async def _retrying(self, step: Callable[[], Awaitable[T]]) -> T | None:
        """*step*, retried with capped exponential backoff on store errors until we stop."""
        failures = 0
        while not self.stop.is_set():
            try:
                return await step()
            except SrmError as exc:
                self.metrics.errors.inc()
                log.warning("events: store call failed (%s); retrying", exc)
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**failures)
            failures += 1
            await self._wait(delay)
        return None
