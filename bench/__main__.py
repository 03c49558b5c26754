"""`bench/run` (python -m bench): measure every performance target of SRM in one run.

Starts its own redis-server, `srm serve` and the bare-aiohttp ceiling (bench/ceiling.py) on
free ports, drives both with wrk, then measures the store directly; prints each figure as it
comes and a Markdown table of targets at the end. Everything it starts, it stops. The
options are in bench/options.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import (
    bodies,
    capacity,
    enforcement,
    events,
    households,
    instructions,
    licence,
    load,
    procs,
    storage,
)
from bench.options import parse

Row = tuple[str, str, str, str]  # target, goal, measured, met


@dataclass
class Found:
    """Figures one part measured that a later part of the same run uses (the capacity model)."""

    bytes_per_session: float | None = None  # Redis memory per active session, one per account
    reaper_us: float | None = None  # Redis time per session one `srm reaper` ends and removes


def say(text: str) -> None:
    print(text, flush=True)


def machine() -> str:
    load1, load5, _ = os.getloadavg()
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python "
        f"{platform.python_version()}, redis-server {_redis_version()}; load average at start "
        f"{load1:.1f}/{load5:.1f} (1/5 min)"
    )


def _redis_version() -> str:
    import subprocess

    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split("v=", 1)[1].split()[0] if "v=" in out else "?"


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    # SIGTERM unwinds like Ctrl-C, so every server this run started is stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parts = {
        "http",
        "commands",
        "memory",
        "latency",
        "reaper",
        "rules",
        "events",
        "cluster",
        "households",
        "instructions",
        "enforcement",
        "drm",
        "capacity",
        "bodies",
    }
    only = set(a.only.split(",")) if a.only else parts
    if a.quick:  # the regression guard: the ratio with one worker and commands per request
        a.workers, a.rounds, a.seconds, only = "1", 3, 3.0, {"http", "commands"}
    rows: list[Row] = []
    found = Found()
    say(f"machine: {machine()}")
    if a.households:
        say(
            "configuration: the households of docs/households.md's worked examples on; setups "
            "pass X-Forwarded-For through a trusted proxy (the http and commands parts)"
        )
    with tempfile.TemporaryDirectory(prefix="srm-bench-") as tmp:
        work = Path(tmp)
        tokens = load.write_tokens(work / "tokens.txt", a.accounts)
        with procs.redis_server(work) as rds:
            redis_url = rds.url
            if "http" in only:
                http_rows(a, rds, tokens, rows)
            if "commands" in only:
                command_rows(a, redis_url, tokens, rows)
            if "memory" in only:
                memory_rows(a, redis_url, rows, found)
            if "latency" in only:
                latency_rows(a, redis_url, work, rows)
            if "reaper" in only:
                reaper_rows(a, redis_url, rows, found)
            if "rules" in only:
                rules_rows(a, redis_url, rows)
            if "events" in only:
                event_rows(a, redis_url, tokens, rows)
            if "cluster" in only:
                cluster_rows(a, redis_url, rows)
            if "capacity" in only:
                capacity_rows(a, rds, tokens, rows, found)
            if "households" in only:
                household_rows(a, redis_url, rows)
            if "instructions" in only:
                instruction_rows(a, rows)
            if "enforcement" in only:
                enforcement_rows(a, redis_url, rows)
            if "drm" in only:
                drm_rows(a, redis_url, rows)
        if "bodies" in only:
            body_rows(a, rows)
    say("\n| target | goal | measured | met |\n|---|---|---|---|")
    for row in rows:
        say("| " + " | ".join(row) + " |")
    return 0


def serve_env(a: argparse.Namespace) -> dict[str, str]:
    """The configuration `srm serve` runs with: the user's (storage.USER_ENV), or with
    --households the worked examples' households, behind a trusted proxy."""
    if a.households:
        return {**households.env("on"), "SRM_TRUSTED_PROXIES": "127.0.0.1/32"}
    return storage.USER_ENV


def on(a: argparse.Namespace) -> str:
    """What a row's label adds when --households is on."""
    return ", households on" if a.households else ""


@dataclass
class SideBySide:
    """Ceiling and srm driven alternately by wrk: each one's rounds and CPU per request."""

    runs: dict[str, list[load.WrkResult]]
    us: dict[str, float]  # CPU per request: ceiling, srm, redis (whole process); scripts

    @property
    def ratios(self) -> list[float]:
        return [s.rps / c.rps for c, s in zip(self.runs["ceiling"], self.runs["srm"], strict=True)]


def side_by_side(
    a: argparse.Namespace, rds: procs.Server, tokens: Path, workers: int, keepalives: int
) -> SideBySide:
    """Ceiling and srm run side by side; wrk drives them in alternating rounds, so that load
    from other processes on the machine falls on both alike and the ratio stays meaningful.
    CPU time per request of each process group (and of redis-server, whole process: /proc)
    shows where time goes. *keepalives*: keep-alives per lifecycle (lifecycle.lua)."""
    client = redis.Redis.from_url(rds.url)
    client.flushall()
    with (
        procs.ceiling(workers) as top,
        procs.srm_serve(rds.url, workers, **serve_env(a)) as srm,
    ):
        for server in (top, srm):
            # warm-up: pools, token cache
            load.wrk(server.url, tokens, a.connections, 5, keepalives, forwarded=a.households)
        runs: dict[str, list[load.WrkResult]] = {"ceiling": [], "srm": []}
        cpu = {"ceiling": 0.0, "srm": 0.0, "redis": 0.0}
        script_usec = 0.0  # Redis's own time in SRM's scripts (INFO commandstats)
        for _ in range(a.rounds):
            for name, server in (("ceiling", top), ("srm", srm)):
                client.config_resetstat()
                before = server.cpu_seconds(), rds.cpu_seconds()
                runs[name].append(
                    load.wrk(
                        server.url,
                        tokens,
                        a.connections,
                        a.seconds,
                        keepalives,
                        forwarded=a.households,
                    )
                )
                cpu[name] += server.cpu_seconds() - before[0]
                if name == "srm":
                    cpu["redis"] += rds.cpu_seconds() - before[1]
                    script_usec += script_time_us(client)
    for name, results in runs.items():
        for r in results:
            say(
                f"{workers} worker(s) {name:8s} {r.rps:8.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                f"p99 {r.p99_ms:6.2f} ms  max {r.max_ms:7.2f} ms  socket errors {r.errors}  "
                f"non-200 {r.failed} {r.example[:80]!r}  denied {r.denied}"
            )
    done = {name: sum(r.requests for r in results) for name, results in runs.items()}
    us = {
        "ceiling": cpu["ceiling"] / done["ceiling"] * 1e6,
        "srm": cpu["srm"] / done["srm"] * 1e6,
        "redis": cpu["redis"] / done["srm"] * 1e6,
        "scripts": script_usec / done["srm"],
    }
    say(
        f"{workers} worker(s) CPU per request: ceiling {us['ceiling']:.0f} us; srm "
        f"{us['srm']:.0f} us + redis-server {us['redis']:.0f} us, of which "
        f"{us['scripts']:.1f} us running SRM's scripts"
    )
    return SideBySide(runs, us)


# Round three's goals (issue 26): SRM's CPU per request at most 1.5 times the ceiling's, and
# redis-server's whole-process CPU per request of the lifecycle mix halved from the 64 us
# measured when the round began (a third each of setups, keep-alives, teardowns)
SRM_CPU_GOAL = 1.5
REDIS_CPU_GOAL_US = 32.0


def http_rows(a: argparse.Namespace, rds: procs.Server, tokens: Path, rows: list[Row]) -> None:
    """The lifecycle mix (a third each of setups, keep-alives and teardowns) against the
    ceiling: throughput, CPU per request, p99."""
    miss, hit = load.token_costs(tokens)
    say(f"Client-Token verification: {miss:.0f} us on a cache miss, {hit:.1f} us on a hit")
    rows.append((
        "Client-Token verification (context)",
        "cached",
        f"{miss:.0f} us per signature check, {hit:.1f} us per cache hit",
        "",
    ))  # fmt: skip
    for workers in (int(w) for w in a.workers.split(",")):
        m = side_by_side(a, rds, tokens, workers, 1)
        runs, us, ratios = m.runs, m.us, m.ratios
        top_r, srm_r = _median(runs["ceiling"]), _median(runs["srm"])
        ratio = statistics.median(ratios)
        say(f"{workers} worker(s) srm/ceiling per round {[round(r, 2) for r in ratios]}")
        say(f"{workers} worker(s) RATIO {ratio:.2f} (srm/ceiling, median of {a.rounds} rounds)")
        cpu_ratio = us["srm"] / us["ceiling"]
        rows.append((
            f"SRM CPU per request, lifecycle mix, {workers} worker(s){on(a)}",
            f"<= {SRM_CPU_GOAL} x ceiling's",
            f"srm {us['srm']:.0f} us vs ceiling {us['ceiling']:.0f} us: **{cpu_ratio:.2f}x** "
            f"(whole process, /proc)",
            "yes" if cpu_ratio <= SRM_CPU_GOAL else "no",
        ))  # fmt: skip
        rows.append((
            f"redis-server CPU per request, lifecycle mix, {workers} worker(s){on(a)}",
            f"<= {REDIS_CPU_GOAL_US:.0f} us (half of 64)",
            f"**{us['redis']:.0f} us** whole process (/proc), of which {us['scripts']:.1f} us "
            f"running scripts (INFO commandstats)",
            "yes" if us["redis"] <= REDIS_CPU_GOAL_US else "no",
        ))  # fmt: skip
        rows.append((
            f"lifecycle throughput, {workers} worker(s), {a.connections} connections{on(a)}",
            "(context: bounded by 2 shared cores)",
            f"{srm_r.rps:.0f} req/s vs ceiling {top_r.rps:.0f} req/s: ratio **{ratio:.2f}** "
            f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})",
            "",
        ))  # fmt: skip
        # p99 of every round pooled: the median round's own p99 swings with one hiccup
        p99 = statistics.median(r.p99_ms for r in runs["srm"])
        top_p99 = statistics.median(r.p99_ms for r in runs["ceiling"])
        rows.append((
            f"p99 latency, {workers} worker(s), {a.connections} connections, full load{on(a)}",
            "<= 2 x ceiling's p99",
            f"p99 {p99:.1f} ms vs ceiling {top_p99:.1f} ms: **{p99 / top_p99:.1f}x** "
            f"(median of the rounds' p99; p50 {srm_r.p50_ms:.1f} vs {top_r.p50_ms:.1f} ms)",
            "yes" if p99 <= 2 * top_p99 else "no",
        ))  # fmt: skip


def capacity_rows(
    a: argparse.Namespace, rds: procs.Server, tokens: Path, rows: list[Row], found: Found
) -> None:
    """The capacity model (bench/capacity.py) from the model's own mix, measured here: wrk
    lifecycles of one setup, ten keep-alives and one teardown, one worker; with the memory
    per session and the reaper's Redis time per session of the same run when it measured
    them."""
    m = side_by_side(a, rds, tokens, 1, capacity.KEEPALIVES_PER_LIFECYCLE)
    measured = capacity.Measured(
        srm_us=m.us["srm"],
        redis_us=m.us["redis"],
        bytes_per_session=found.bytes_per_session,
        reaper_us=found.reaper_us,
    )
    out = capacity.model(measured)
    text = capacity.describe(measured, out)
    say(f"capacity model: {text}")
    rows.append((
        "capacity model: 10M sessions, 100k requests/s (83% keep-alives, measured as such)",
        f"<= {capacity.GOAL_API_CORES} API cores, <= {capacity.GOAL_MASTERS} masters",
        text,
        "yes" if out.met else "no",
    ))  # fmt: skip


def script_time_us(client: redis.Redis) -> float:
    """Microseconds Redis spent in FCALL/EVALSHA/EVAL since the last CONFIG RESETSTAT."""
    stats = procs.redis_info(client, "commandstats")
    return float(
        sum(stats.get(f"cmdstat_{n}", {}).get("usec", 0) for n in ("fcall", "evalsha", "eval"))
    )


def _median(results: list[load.WrkResult]) -> load.WrkResult:
    """The round with the median throughput."""
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def command_rows(a: argparse.Namespace, redis_url: str, tokens: Path, rows: list[Row]) -> None:
    few = tokens.read_text().split()
    redis.Redis.from_url(redis_url).flushall()
    with procs.srm_serve(redis_url, 1, **serve_env(a)) as srm:
        counts = load.count_commands(srm.url, redis_url, few, forwarded=a.households)
    for c in counts:
        # a connection the pool opens meanwhile says HELLO (and PING on its first use): once
        # per connection, not per request
        handshake = {n: v for n, v in c.names.items() if n in HANDSHAKE}
        per = (c.commands - sum(handshake.values())) / c.requests
        say(
            f"{c.kind:9s} {c.requests} requests -> {c.commands} Redis commands: {c.names} "
            f"({c.script_calls} FCALL/EVALSHA/EVAL in INFO commandstats)"
        )
        extra = f"; plus {handshake} from a new pool connection" if handshake else ""
        rows.append((
            f"Redis commands per {c.kind}{on(a)}",
            "exactly 1",
            f"{per:.3f} ({c.commands - sum(handshake.values())} for {c.requests}{extra})",
            "yes" if per == 1 and c.names.get("fcall") == c.requests else "no",
        ))  # fmt: skip


HANDSHAKE = frozenset({"hello", "ping", "client|setinfo", "auth", "select"})


MEMORY_GOAL = 300  # bytes per active session, one per account (issue 26)


def memory_rows(a: argparse.Namespace, redis_url: str, rows: list[Row], found: Found) -> None:
    for per_account in (1, 3):
        m = asyncio.run(storage.memory_per_session(redis_url, a.memory_sessions, per_account))
        if per_account == 1:
            found.bytes_per_session = m.bytes_per_session
        say(
            f"memory: {m.sessions} active sessions over {m.accounts} accounts -> "
            f"{m.bytes_per_session:.0f} bytes/session; MEMORY USAGE {m.breakdown}"
        )
        rows.append((
            f"Redis memory per active session ({per_account} per account), events off",
            f"<= {MEMORY_GOAL} bytes" if per_account == 1 else "(reported)",
            f"{m.bytes_per_session:.0f} bytes ({m.sessions} sessions, {m.accounts} accounts; "
            f"three rules, usage included)",
            ("yes" if m.bytes_per_session <= MEMORY_GOAL else "no") if per_account == 1 else "",
        ))  # fmt: skip


def latency_rows(a: argparse.Namespace, redis_url: str, work: Path, rows: list[Row]) -> None:
    t0 = time.perf_counter()
    with procs.redis_server(work) as other:
        small, large = asyncio.run(
            storage.latency_at(redis_url, other.url, (a.small, a.large), a.samples)
        )
    for lat in (small, large):
        say(
            f"latency with {lat.stored} stored: setup p50 {lat.setup_p50_ms:.3f} ms "
            f"p99 {lat.setup_p99_ms:.3f} ms, teardown p50 {lat.teardown_p50_ms:.3f} ms "
            f"p99 {lat.teardown_p99_ms:.3f} ms, Redis {lat.redis_us_per_call:.1f} us per script"
        )
    say(f"(latency phase took {time.perf_counter() - t0:.0f} s)")
    for op in ("setup", "teardown"):
        s50, l50 = getattr(small, f"{op}_p50_ms"), getattr(large, f"{op}_p50_ms")
        change = l50 / s50 - 1
        rows.append((
            f"{op} latency at {large.stored} vs {small.stored} stored sessions",
            "within 10%",
            f"p50 {l50:.3f} vs {s50:.3f} ms (**{change:+.0%}**); p99 "
            f"{getattr(large, f'{op}_p99_ms'):.3f} vs {getattr(small, f'{op}_p99_ms'):.3f} ms",
            "yes" if abs(change) <= 0.10 else "no",
        ))  # fmt: skip
    rows.append((
        "Redis time per script at large vs small",
        "(context)",
        f"{large.redis_us_per_call:.1f} vs {small.redis_us_per_call:.1f} us per FCALL",
        "",
    ))  # fmt: skip
    redis.Redis.from_url(redis_url).flushall()


def event_rows(a: argparse.Namespace, redis_url: str, tokens: Path, rows: list[Row]) -> None:
    m = asyncio.run(events.event_memory(redis_url, a.event_lifecycles))
    say(
        f"events: {m.events} events -> {m.bytes_per_event:.1f} bytes/event (MEMORY USAGE of "
        f"the streams); usage {m.bytes_per_account_day:.1f} bytes per account-day over 35 days "
        f"({m.first_day_bytes} bytes for an account's first day); default retention "
        f"(events.maxlen per shard stream) at most {m.default_retention_bytes / 2**20:.0f} MiB"
    )
    rows.append((
        "memory per event (stream entry)",
        "(context)",
        f"{m.bytes_per_event:.0f} bytes; default retention at most "
        f"{m.default_retention_bytes / 2**20:.0f} MiB (events.maxlen x 256 shards)",
        "",
    ))  # fmt: skip
    rows.append((
        "memory per account-day of usage",
        "compact",
        f"{m.bytes_per_account_day:.0f} bytes (35 days in one hash; "
        f"{m.first_day_bytes} bytes with one day)",
        "",
    ))  # fmt: skip
    costs = asyncio.run(events.script_cost(redis_url, 3000))
    by = {c.events: c for c in costs}
    say(
        f"events: Redis time per setup script {by[True].setup_us:.1f} us on, "
        f"{by[False].setup_us:.1f} us off; per teardown {by[True].end_us:.1f} us on, "
        f"{by[False].end_us:.1f} us off"
    )
    rows.append((
        "Redis time per script, events on vs off",
        "(context)",
        f"setup {by[True].setup_us:.1f} vs {by[False].setup_us:.1f} us; teardown "
        f"{by[True].end_us:.1f} vs {by[False].end_us:.1f} us",
        "",
    ))  # fmt: skip
    redis.Redis.from_url(redis_url).flushall()
    h = events.http_cost(redis_url, tokens, a.connections, a.seconds, a.rounds)
    say(
        f"events: srm serve {h.on_rps:.0f} req/s with events, {h.off_rps:.0f} without; "
        f"ratio per round {[round(r, 2) for r in h.rounds]}"
    )
    rows.append((
        "lifecycle throughput, events on vs off (1 worker)",
        ">= 0.9",
        f"{h.on_rps:.0f} vs {h.off_rps:.0f} req/s: ratio **{h.ratio:.2f}** (median of "
        f"{a.rounds} alternating rounds)",
        "yes" if h.ratio >= 0.9 else "no",
    ))  # fmt: skip


def drm_rows(a: argparse.Namespace, redis_url: str, rows: list[Row]) -> None:
    """The DRM licence proxy (docs/enforcement.md): srm CPU per licence request beside a
    plain keep-alive of the same sessions (bench/licence.py)."""
    c = licence.licence_cost(redis_url, a.licence_sessions, a.licence_requests, a.rounds)
    say(
        f"drm: srm CPU per keep-alive {c.keepalive_us:.0f} us, per licence {c.licence_us:.0f} "
        f"us; {c.extra_us:.0f} us more per licence, median of the rounds' differences "
        f"{[round(x) for x in c.extra_rounds]} ({c.requests} of each per round; keep-alive "
        f"{[round(x) for x in c.keepalive_rounds]}, licence "
        f"{[round(x) for x in c.licence_rounds]}); {c.licence_rps:.0f} licences/s"
    )
    rows.append((
        "srm CPU per proxied licence beyond its keep-alive (1 worker)",
        "(cost)",
        f"**{c.extra_us:.0f} us** (rounds {', '.join(f'{x:.0f}' for x in c.extra_rounds)}; "
        f"{c.licence_us:.0f} us per licence vs {c.keepalive_us:.0f} us per keep-alive, "
        f"medians of {a.rounds} rounds of {c.requests})",
        "",
    ))  # fmt: skip
    redis.Redis.from_url(redis_url).flushall()


def body_rows(a: argparse.Namespace, rows: list[Row]) -> None:
    """A setup body decoded and checked by SRM's hand-written parser and by msgspec Structs
    (bench/bodies.py), in time and, with valgrind, in instructions."""
    calls = 2000 if a.callgrind_setups and households.callgrind_available() else 0
    ns = bodies.times(a.rounds * 3)
    ir = bodies.instructions(calls) if calls else None
    say("request body decode+validate per body, median of alternating rounds:")
    say(bodies.report(ns, ir))
    rows.append((
        "request body decode+validate, hand-written vs msgspec",
        "(context: bench/README.md, Request bodies)",
        bodies.row(ns, ir),
        "",
    ))  # fmt: skip


def rules_rows(a: argparse.Namespace, redis_url: str, rows: list[Row]) -> None:
    none, three = asyncio.run(storage.rules_cost(redis_url, a.rules_sessions, a.samples))
    for c in (none, three):
        say(
            f"rules: {c.rules} configured -> {c.bytes_per_session:.0f} bytes/session, "
            f"Redis {c.redis_us_per_setup:.1f} us per setup"
        )
    rows.append((
        "setup with three limit rules vs none",
        "(cost)",
        f"Redis {three.redis_us_per_setup:.1f} vs {none.redis_us_per_setup:.1f} us per setup; "
        f"{three.bytes_per_session:.0f} vs {none.bytes_per_session:.0f} bytes per session",
        "",
    ))  # fmt: skip
    redis.Redis.from_url(redis_url).flushall()


def enforcement_rows(a: argparse.Namespace, redis_url: str, rows: list[Row]) -> None:
    """Enforcement (docs/enforcement.md): what a CDN token, a revocation and a poll of the
    feed cost, each beside the same work without it (bench/enforcement.py)."""
    c = asyncio.run(enforcement.enforcement_cost(redis_url, a.samples, a.rounds))
    say(
        f"enforcement: keep-alive Redis {c.keepalive_us['token']:.1f} us with a CDN token vs "
        f"{c.keepalive_us['plain']:.1f} us plain; minting the token {c.mint_us:.1f} us of "
        f"SRM CPU; operator end {c.end_us['feed']:.1f} us with the revocation feed vs "
        f"{c.end_us['off']:.1f} us off"
    )
    say(
        f"enforcement: a poll of {c.shards} shards {c.poll_ms['empty']:.2f} ms empty, "
        f"{c.poll_ms['entries']:.2f} ms with {enforcement.FEED_ENTRIES} entries (Redis "
        f"{c.poll_redis_us['empty']:.0f} / {c.poll_redis_us['entries']:.0f} us); "
        f"{c.bytes_per_entry:.0f} bytes per revocation"
    )
    rows.append((
        "keep-alive with a CDN token vs plain",
        "(cost)",
        f"Redis {c.keepalive_us['token']:.1f} vs {c.keepalive_us['plain']:.1f} us; "
        f"+{c.mint_us:.1f} us SRM CPU to mint",
        "",
    ))  # fmt: skip
    rows.append((
        "operator end with the revocation feed vs off",
        "(cost)",
        f"Redis {c.end_us['feed']:.1f} vs {c.end_us['off']:.1f} us; "
        f"{c.bytes_per_entry:.0f} bytes per revocation",
        "",
    ))  # fmt: skip
    rows.append((
        f"one poll of the revocation feed ({c.shards} shards)",
        "(cost)",
        f"{c.poll_ms['empty']:.2f} ms empty, {c.poll_ms['entries']:.2f} ms with "
        f"{enforcement.FEED_ENTRIES} entries",
        "",
    ))  # fmt: skip


def instruction_rows(a: argparse.Namespace, rows: list[Row]) -> None:
    """Redis instructions per setup, keep-alive and teardown under callgrind
    (bench/instructions.py): the scripts' own work, whatever the load of the machine."""
    if not (a.callgrind_setups and households.callgrind_available()):
        say("instructions: valgrind not installed (or --callgrind-setups 0), nothing counted")
        return
    k = instructions.per_call(a.callgrind_setups)
    f, e = k["fcall"], k["evalsha"]
    say(
        "thousands of instructions per call (callgrind, three sessions an account), FCALL vs "
        "EVALSHA of the script's text: "
        + ", ".join(
            f"{phase} {f[phase]:.0f}k vs {e[phase]:.0f}k ({f[phase] / e[phase]:.2f}x)"
            for phase in instructions.PHASES
        )
    )
    rows.append((
        "Redis instructions per call (callgrind; 3 sessions an account, 3 rules, events on)",
        "(context)",
        ", ".join(f"{phase} {f[phase]:.0f}k" for phase in instructions.PHASES),
        "",
    ))  # fmt: skip
    rows.append((
        "the same, FCALL / EVALSHA of each script's text",
        "< 1",
        ", ".join(f"{phase} {f[phase] / e[phase]:.2f}x" for phase in instructions.PHASES),
        "",
    ))  # fmt: skip


def household_rows(a: argparse.Namespace, redis_url: str, rows: list[Row]) -> None:
    """Households (docs/households.md): Redis time, commands and memory per setup with the
    worked examples' settings on, beside the same sessions with them off (bench/households.py)."""
    c = asyncio.run(
        households.households_cost(redis_url, a.households_sessions, a.samples, a.rounds)
    )
    for phase in households.PHASES:
        us, cpu = c.setup_us[phase], c.cpu_us[phase]
        say(
            f"households, {phase} setups: Redis {us['on']:.1f} us per setup on, "
            f"{us['addresses']:.1f} us with addresses only, {us['off']:.1f} us off: ratio "
            f"{c.ratio(phase):.2f} (rounds {[round(r, 2) for r in c.round_ratios(phase)]}); "
            f"redis-server main thread CPU {cpu['on']:.1f} / {cpu['addresses']:.1f} / "
            f"{cpu['off']:.1f} us per setup"
        )
    for config in households.CONFIGS:
        b = c.breakdown[config]
        say(
            f"households {config}: {c.bytes_per_session[config]:.0f} bytes per active session; "
            f"MEMORY USAGE of an account of three: hash {b.account_hash}, registry "
            f"{b.devices_key}, home {b.home_key}; a TV session's record {b.record} bytes; "
            f"{b.counter_fields} counter fields of {b.counter_bytes} bytes"
        )
    say(
        f"households: record bytes {c.record_bytes}; registry {c.bytes_per_device:.0f} bytes "
        f"per device (36-character deviceIds); commands sent for {c.setups_counted} setups: "
        f"{c.commands}"
    )
    for phase, what in (("repeat", "a device's later setups"), ("first", "a device's first")):
        us = c.setup_us[phase]
        rows.append((
            f"Redis time per setup, households on vs off ({what})",
            "(what households add)" if phase == "repeat" else "(context)",
            f"{us['on']:.1f} vs {us['off']:.1f} us (medians of {a.rounds} rounds of "
            f"{a.samples}): **{c.ratio(phase):.2f}x** (median of the rounds' ratios "
            f"{', '.join(f'{r:.2f}' for r in c.round_ratios(phase))}); addresses only "
            f"{us['addresses']:.1f} us",
            "",
        ))  # fmt: skip
    rows.append((
        "Redis commands per setup, households on",
        "exactly 1",
        f"{c.commands_per_setup:.3f} ({c.setups_counted} setups, one denied: {c.commands})",
        "yes" if c.commands_per_setup == 1 else "no",
    ))  # fmt: skip
    off, on = c.bytes_per_session["off"], c.bytes_per_session["on"]
    rows.append((
        "Redis memory per active session, households on vs off (3 per account)",
        "(cost)",
        f"{on:.0f} vs {off:.0f} bytes (addresses only {c.bytes_per_session['addresses']:.0f}); "
        f"registry {c.bytes_per_device:.0f} bytes per device, home key "
        f"{c.breakdown['on'].home_key} bytes",
        "",
    ))  # fmt: skip
    redis.Redis.from_url(redis_url).flushall()
    if a.callgrind_setups and households.callgrind_available():
        counts = households.instructions(a.callgrind_setups)
        before = households.instructions_before(a.callgrind_setups)
        on = counts["repeat"]["on"]
        if before is None:
            say(f"households: {households.BEFORE} not in this clone, the setup before not counted")
        else:
            say(
                f"households: a later setup at {households.BEFORE} (before households, EVALSHA) "
                f"{before:.0f}k instructions; today's with the examples on {on:.0f}k"
            )
            rows.append((
                "Redis instructions per later setup (callgrind), households on vs the setup "
                f"before households ({households.BEFORE})",
                "<= 1.2 x before",
                f"{on:.0f}k vs {before:.0f}k: **{on / before:.2f}x** (the same sessions, three "
                "rules, events on; then in EVALSHA, now in FCALL)",
                "yes" if on <= 1.2 * before else "no",
            ))  # fmt: skip
        for phase in households.PHASES:
            k = counts[phase]
            ratio = k["on"] / k["off"]
            say(
                f"households, {phase} setups: thousands of instructions in FCALL per setup "
                + ", ".join(f"{config} {n:.0f}k" for config, n in k.items())
                + f": on/off {ratio:.2f}"
            )
            examples = ", ".join(
                f"{name} {k[name]:.0f}k ({k[name] / k['off']:.2f}x)" for name in households.EXAMPLES
            )
            rows.append((
                f"Redis instructions per setup (callgrind), households on vs off ({phase})",
                "(what households add)",
                f"{k['on']:.0f}k vs {k['off']:.0f}k: **{ratio:.2f}x**; addresses only "
                f"{k['addresses']:.0f}k; each example alone: {examples}",
                "",
            ))  # fmt: skip
    elif a.callgrind_setups:
        say("households: valgrind not installed, instructions per setup not counted")


SCRIPT_GOALS_US = (20, 8, 20)  # setup, keep-alive, teardown: the scripts' own time (issue 26)


def cluster_rows(a: argparse.Namespace, redis_url: str, rows: list[Row]) -> None:
    """Redis time per setup, keep-alive and teardown on the standalone server and on a
    3-master Cluster (started the way the tests start theirs); and the reaper's backlog
    worked off on that Cluster by one `srm reaper`."""
    from tests.redis_servers import redis_cluster

    redis.Redis.from_url(redis_url).flushall()
    costs = [asyncio.run(storage.script_cost(redis_url, "standalone", a.cost_calls))]
    with redis_cluster(3) as cluster:
        costs.append(
            asyncio.run(storage.script_cost(cluster.url, "3-master Cluster", a.cost_calls))
        )
        if storage.reaper_available():
            asyncio.run(storage.lapsed_backlog(cluster.url, a.backlog))
            run = asyncio.run(storage.reap_with_process(cluster.url, a.backlog))
            reaper_row(a, run, rows)
    for c in costs:
        say(
            f"Redis time per script on {c.where}: setup {c.setup_us:.1f} us, keep-alive "
            f"{c.keepalive_us:.1f} us, teardown {c.teardown_us:.1f} us"
        )
        standalone = c.where == "standalone"
        times = (c.setup_us, c.keepalive_us, c.teardown_us)
        met = all(t <= goal for t, goal in zip(times, SCRIPT_GOALS_US, strict=True))
        rows.append((
            f"Redis time per request, {c.where} (three rules, events on)",
            "setup <= {}, keep-alive <= {}, teardown <= {} us".format(*SCRIPT_GOALS_US)
            if standalone
            else "(context)",
            f"setup {c.setup_us:.1f} us, keep-alive {c.keepalive_us:.1f} us, teardown "
            f"{c.teardown_us:.1f} us ({a.cost_calls} of each, INFO commandstats of every master)",
            ("yes" if met else "no") if standalone else "",
        ))  # fmt: skip
    redis.Redis.from_url(redis_url).flushall()


def reaper_rows(a: argparse.Namespace, redis_url: str, rows: list[Row], found: Found) -> None:
    runs = []
    if storage.reaper_available():
        asyncio.run(storage.lapsed_backlog(redis_url, a.backlog))
        runs.append(asyncio.run(storage.reap_with_process(redis_url, a.backlog)))
    asyncio.run(storage.lapsed_backlog(redis_url, a.backlog))
    runs.append(
        asyncio.run(storage.reap_with_store(redis_url, a.backlog, a.reap_batch, a.reap_parallel))
    )
    left = asyncio.run(storage.remaining_sessions(redis_url))
    for run in runs:
        reaper_row(a, run, rows)
        target = run.how == "one `srm reaper` process, default batch size"
        if target or found.reaper_us is None:
            found.reaper_us = run.redis_seconds / max(run.sessions, 1) * 1e6
    say(f"reaper: {left} session records left")
    if not (a.callgrind_setups and households.callgrind_available()):
        return
    for retention in (0, 60):
        k = instructions.reaper_per_session(REAPER_CALLGRIND_SESSIONS, retention)
        say(
            f"reaper under callgrind, retention {retention} s: thousands of instructions in "
            f"FCALL per lapsed session: sweep {k['sweep']:.0f}k, purge {k['purge']:.0f}k"
        )
        rows.append((
            f"Redis instructions per lapsed session ended and removed, retention {retention} s "
            "(callgrind; 2 sessions an account, 3 rules, events on)",
            "(context)",
            f"{k['sweep'] + k['purge']:.0f}k: sweep {k['sweep']:.0f}k, purge {k['purge']:.0f}k",
            "",
        ))  # fmt: skip


def reaper_row(a: argparse.Namespace, run: storage.ReaperRun, rows: list[Row]) -> None:
    masters = ""
    if len(run.per_master) > 1:
        masters = " (per master " + ", ".join(f"{s:.2f}" for s in run.per_master) + " s)"
    say(
        f"reaper: {run.sessions} sessions ended and removed in {run.seconds:.2f} s = "
        f"{run.per_second:.0f}/s ({run.how}); Redis busy {run.redis_seconds:.2f} s of it"
        f"{masters} = {run.redis_seconds / max(run.sessions, 1) * 1e6:.0f} us per session"
        + ("" if run.reaper_cpu is None else f"; the reaper process's CPU {run.reaper_cpu:.2f} s")
    )
    # the standalone process's run is the target; the store's and the Cluster's are context
    target = run.how == "one `srm reaper` process, default batch size"
    rows.append((
        f"reaper, backlog of {a.backlog} lapsed sessions (three rules, events on)",
        ">= 50000 sessions/s" if target else "(context)",
        f"{run.per_second:.0f}/s ended and removed ({run.how}); Redis busy "
        f"{run.redis_seconds:.1f} of {run.seconds:.1f} s{masters} "
        f"({run.redis_seconds / max(run.sessions, 1) * 1e6:.0f} us per session)",
        ("yes" if run.per_second >= 50000 else "no") if target else "",
    ))  # fmt: skip


REAPER_CALLGRIND_SESSIONS = 2000  # about 125 accounts a batch on instructions.REAPER_SHARDS


if __name__ == "__main__":
    sys.exit(main())
