"""Load generation: wrk running real lifecycles, and an exact Redis command count per request."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis

from bench.procs import ROOT, SECRET, redis_info
from srm.auth import TokenVerifier, mint
from srm.config import load

LIFECYCLE_LUA = ROOT / "bench" / "lifecycle.lua"


DEVICE_TYPES = ("tv", "phone")  # alternately: with UHD setups each matches two user rules


def write_tokens(path: Path, accounts: int) -> Path:
    """One Client-Token per account (valid for two hours), one per line; the device types
    alternate between a TV and a phone."""
    with path.open("w") as f:
        for i in range(accounts):
            kind = DEVICE_TYPES[i % len(DEVICE_TYPES)]
            f.write(mint(SECRET, f"bench-{i}", "dev-1", ttl=7200, deviceType=kind) + "\n")
    return path


def token_costs(tokens: Path) -> tuple[float, float]:
    """Microseconds to verify one Client-Token: a cache miss (signature check), a cache hit."""
    verifier = TokenVerifier(load(env={"SRM_AUTH_SECRET": SECRET}).auth)
    sample = tokens.read_text().split()
    t0 = time.perf_counter()
    for token in sample:
        verifier.verify(token)
    t1 = time.perf_counter()
    for token in sample:
        verifier.verify(token)
    t2 = time.perf_counter()
    return (t1 - t0) / len(sample) * 1e6, (t2 - t1) / len(sample) * 1e6


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    failed: int  # lifecycles cut short by a non-200 answer
    denied: int  # setups denied at the account limit (SRM-0005)
    example: str  # one failed answer, for the log

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str,
    tokens: Path,
    connections: int,
    seconds: float,
    keepalives: int = 1,
    forwarded: bool = False,
) -> WrkResult:
    """wrk with one thread per connection (see lifecycle.lua), for *seconds*; *forwarded*:
    setups carry X-Forwarded-For, an address of their account's (as through a proxy)."""
    out = subprocess.run(
        ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds:g}s",
         "--timeout", "5s", "-s", str(LIFECYCLE_LUA), url,
         "--", str(tokens), str(keepalives), str(connections), "xff" if forwarded else ""],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    match = re.search(r"^RESULT (\{.*\})$", out.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out.stdout}\n{out.stderr}")
    r = json.loads(match.group(1))
    return WrkResult(
        requests=r["requests"],
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        errors=r["errors"],
        failed=r["failed"],
        denied=r["denied"],
        example=r["example"],
    )


@dataclass(frozen=True)
class CommandCount:
    kind: str
    requests: int
    commands: int  # commands clients sent to Redis (MONITOR, script-internal calls excluded)
    script_calls: int  # FCALL (+ EVALSHA, EVAL) calls (INFO commandstats)
    names: dict[str, int]


class Monitor:
    """Every command clients send to Redis, via MONITOR (commands run inside Lua excluded)."""

    LINE = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"')

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.seen: dict[str, int] = {}
        # Any: redis-py annotates its connections in some releases only
        self._conn: Any = cast(Any, self.client.connection_pool.get_connection())
        self._conn.send_command("MONITOR")
        assert self._conn.read_response() in (b"OK", "OK")

    def drain(self, quiet: float = 0.3) -> dict[str, int]:
        """Names and counts of the commands seen since the last drain."""
        self.seen = {}
        while self._conn.can_read(timeout=quiet):
            line = self._conn.read_response()
            text = line.decode() if isinstance(line, bytes) else str(line)
            m = self.LINE.match(text)
            if m is None or m.group(1) == "lua":
                continue
            name = m.group(2).lower()
            self.seen[name] = self.seen.get(name, 0) + 1
        return self.seen

    def close(self) -> None:
        self._conn.disconnect()
        self.client.close()


def count_commands(
    url: str, redis_url: str, tokens: list[str], forwarded: bool = False
) -> list[CommandCount]:
    """Commands Redis receives per setup, keep-alive and teardown (exact, via MONITOR);
    *forwarded*: setups carry X-Forwarded-For (forwarded_for)."""
    results = []
    stats = redis.Redis.from_url(
        redis_url, decode_responses=True, encoding_errors="surrogateescape"
    )
    monitor = Monitor(redis_url)
    try:
        sids: dict[int, str] = {}
        for kind in ("setup", "keepalive", "teardown"):  # warm-up: pool connections open
            asyncio.run(_phase(url, tokens, kind, sids, forwarded))
        monitor.drain()
        for kind in ("setup", "keepalive", "teardown"):
            stats.config_resetstat()
            monitor.drain(0.1)
            asyncio.run(_phase(url, tokens, kind, sids, forwarded))
            time.sleep(0.2)
            names = monitor.drain()
            names.pop("config|resetstat", None)
            names.pop("config", None)
            cs = redis_info(stats, "commandstats")
            scripts = sum(
                cs.get(f"cmdstat_{n}", {}).get("calls", 0) for n in ("fcall", "evalsha", "eval")
            )
            results.append(CommandCount(kind, len(tokens), sum(names.values()), scripts, names))
    finally:
        monitor.close()
        stats.close()
    return results


def forwarded_for(account: int) -> str:
    """The client address of an account's setups in a forwarded run: its own /24 (10.x.y.7),
    as lifecycle.lua writes it."""
    return f"10.{account // 256 % 256}.{account % 256}.7"


async def _phase(
    url: str, tokens: list[str], kind: str, sids: dict[int, str], forwarded: bool
) -> None:
    todo = iter(range(len(tokens)))

    async def worker(http: aiohttp.ClientSession) -> None:
        for i in todo:
            headers = {"Client-Token": tokens[i]}
            if forwarded:
                headers["X-Forwarded-For"] = forwarded_for(i)
            if kind == "setup":
                body = {
                    "content": {"contentID": "100001V3D", "contentType": "COD"},
                    "quality": "UHD",
                }
                async with http.post(url + "/srm/sessions", json=body, headers=headers) as r:
                    sids[i] = (await r.json())["successResponse"]["sessionId"]
                continue
            method = http.put if kind == "keepalive" else http.delete
            async with method(f"{url}/srm/sessions/{sids[i]}", headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"{kind} of {sids[i]} answered {r.status}")

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http) for _ in range(32)))
