"""The capacity model of docs/performance.md, computed from figures measured in one `bench/run`:
what 10 million concurrent sessions and 100,000 requests a second cost in API cores, Redis
masters and Redis memory.

The mix it assumes: every session sends one keep-alive per keep-alive timeout (120 s), so
10M sessions send 83,333 keep-alives a second; the other requests are setups and teardowns in
equal numbers (8,333 a second each, sessions lasting 20 minutes), and the reaper removes as
many ended sessions. `bench/run --only capacity` measures this mix directly: wrk runs
lifecycles of one setup, ten keep-alives and one teardown (10/12 = 83% keep-alives).

CPU figures are whole-process (user + system time of the processes, from /proc), measured
under load: they include reading, parsing and writing the protocol, which Redis's own
INFO commandstats leaves out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SESSIONS = 10_000_000
REQUESTS = 100_000  # a second
KEEPALIVE_TIMEOUT_S = 120
KEEPALIVES_PER_LIFECYCLE = 10  # the wrk mix that matches the model: 83% keep-alives
API_UTILISATION = 0.6  # API cores kept 60% busy: headroom for bursts and a lost host
MASTER_BUSY = 0.5  # a master kept half busy: it absorbs a burst, a reshard, a failed neighbour
USAGE_DAYS_KEPT = 34  # usage history beyond today's, per account (35 days kept)
USAGE_BYTES_PER_DAY = 21  # one more day of usage in an account hash (bench/README.md)
RETENTION_S = 60  # sessions.ended_retention: ENDED records kept before the reaper removes them
ENDED_BYTES = 210  # an ENDED record and its purge queue entry
STREAMS_GB = 0.04  # event streams, bounded by events.maxlen / max_age (docs/events.md)
OVERHEAD = 1.3  # allocator fragmentation, replication and client buffers
MASTER_MEMORY_GB = 25.0  # data a master is given at most (maxmemory), a typical host's share
GOAL_API_CORES = 8
GOAL_MASTERS = 4


@dataclass(frozen=True)
class Measured:
    srm_us: float  # srm serve CPU per request of the mix (whole process, 1 worker)
    redis_us: float  # redis-server CPU per request of the mix (whole process)
    bytes_per_session: float | None  # Redis memory per active session, one per account
    reaper_us: float | None  # Redis time per session the reaper ends and removes


@dataclass(frozen=True)
class Model:
    keepalives: float  # a second
    setups: float  # a second (as many teardowns, and reaped sessions)
    api_cpu: float  # seconds of API CPU a second
    api_cores: int
    redis_cpu: float  # seconds of redis-server CPU a second, reaper included
    reaper_cpu: float | None
    masters_by_cpu: int
    memory_gb: float | None  # with Redis's overhead
    masters_by_memory: int | None
    masters: int

    @property
    def met(self) -> bool:
        return self.api_cores <= GOAL_API_CORES and self.masters <= GOAL_MASTERS

    def dominant(self) -> str:
        """Which figure sizes the Redis side."""
        if self.masters_by_memory is not None and self.masters_by_memory > self.masters_by_cpu:
            return "memory"
        return "redis CPU"


def model(m: Measured) -> Model:
    keepalives = SESSIONS / KEEPALIVE_TIMEOUT_S
    setups = (REQUESTS - keepalives) / 2
    api_cpu = REQUESTS * m.srm_us / 1e6
    reaper_cpu = None if m.reaper_us is None else setups * m.reaper_us / 1e6
    redis_cpu = REQUESTS * m.redis_us / 1e6 + (reaper_cpu or 0.0)
    masters_by_cpu = max(1, math.ceil(redis_cpu / MASTER_BUSY))
    memory_gb = None
    masters_by_memory = None
    if m.bytes_per_session is not None:
        data = (
            SESSIONS * m.bytes_per_session
            + SESSIONS * USAGE_DAYS_KEPT * USAGE_BYTES_PER_DAY
            + setups * RETENTION_S * ENDED_BYTES
        ) / 1e9 + STREAMS_GB
        memory_gb = data * OVERHEAD
        masters_by_memory = max(1, math.ceil(memory_gb / MASTER_MEMORY_GB))
    return Model(
        keepalives=keepalives,
        setups=setups,
        api_cpu=api_cpu,
        api_cores=math.ceil(api_cpu / API_UTILISATION),
        redis_cpu=redis_cpu,
        reaper_cpu=reaper_cpu,
        masters_by_cpu=masters_by_cpu,
        memory_gb=memory_gb,
        masters_by_memory=masters_by_memory,
        masters=max(masters_by_cpu, masters_by_memory or 0),
    )


def describe(m: Measured, out: Model) -> str:
    """The model in one paragraph, each figure with what it comes from."""
    requests_cpu = REQUESTS * m.redis_us / 1e6
    reaper = (
        f" + the reaper's {out.setups:,.0f} sessions/s x {m.reaper_us:.0f} us = "
        f"{out.reaper_cpu:.2f} s"
        if m.reaper_us is not None and out.reaper_cpu is not None
        else " (the reaper not measured in this run)"
    )
    memory = (
        f"memory {out.memory_gb:.1f} GB with overhead ({m.bytes_per_session:.0f} bytes per "
        f"session, {USAGE_DAYS_KEPT} days of usage history): {out.masters_by_memory} master(s) "
        f"at {MASTER_MEMORY_GB:.0f} GB"
        if out.memory_gb is not None and m.bytes_per_session is not None
        else "memory not measured in this run"
    )
    return (
        f"{REQUESTS:,} requests/s ({out.keepalives:,.0f} keep-alives, {out.setups:,.0f} setups, "
        f"{out.setups:,.0f} teardowns): API {REQUESTS:,} x {m.srm_us:.0f} us = "
        f"{out.api_cpu:.1f} cores busy, **{out.api_cores} cores** at "
        f"{API_UTILISATION:.0%}; Redis {REQUESTS:,} x {m.redis_us:.0f} us = "
        f"{requests_cpu:.2f} s{reaper}: {out.redis_cpu:.2f} s of CPU a second, "
        f"{out.masters_by_cpu} master(s) at "
        f"{MASTER_BUSY:.0%} busy; {memory}; **{out.masters} master(s)**, sized by "
        f"{out.dominant()}"
    )
