"""Soak run: SRM at about half its measured capacity for a long while, with the reaper.

Starts its own redis-server, `srm serve` and `srm reaper` on free ports, measures capacity
with a short burst, then runs players at half of it for --duration seconds. Players set up a
session, keep it alive a few times and tear it down; one in five abandons its session so that
it lapses and the reaper ends and removes it. Every --every seconds it prints throughput,
p50/p99 latency and errors; at the end, API and Redis memory at start and end, and the keys
left once every session has ended and been removed (there should be none).

    .venv/bin/python bench/soak.py                 # 10 minutes
    .venv/bin/python bench/soak.py --duration 60   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis

from srm.auth import mint

ROOT = Path(__file__).resolve().parent.parent
SECRET = "soak-secret-" + "0123456789abcdef" * 4
SETUP = {"content": {"contentID": "100001V3D", "contentType": "LIVE"}}
TIMEOUT = 10  # keep-alive period of the soak (s): abandoned sessions lapse quickly
RETENTION = 5


def used_memory(client: redis.Redis) -> int:
    """Redis's used_memory (redis-py types INFO's reply loosely in some releases)."""
    memory: Any = client.info("memory")
    return int(memory["used_memory"])


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Window:
    started: float = field(default_factory=time.monotonic)
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, seconds: float, error: str | None) -> None:
        self.latencies.append(seconds)
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1


class Load:
    """An open-loop request rate shared by all players (token bucket)."""

    def __init__(self, base: str, accounts: int) -> None:
        self.base = base
        self.tokens = {a: mint(SECRET, f"soak-{a}", f"dev-{a}", ttl=86400) for a in range(accounts)}
        self.window = Window()
        self.rate = 0.0
        self._allowance = 0.0
        self._last = time.monotonic()

    async def permit(self) -> None:
        while True:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate)
            self._last = now
            if self._allowance >= 1:
                self._allowance -= 1
                return
            await asyncio.sleep(max(0.0005, (1 - self._allowance) / max(self.rate, 1)))

    async def call(
        self, http: aiohttp.ClientSession, method: str, path: str, token: str, body: Any = None
    ) -> dict[str, Any] | None:
        await self.permit()
        started = time.perf_counter()
        error = None
        answer: dict[str, Any] | None = None
        try:
            async with http.request(method, path, json=body, headers={"Client-Token": token}) as r:
                raw = await r.read()
                if raw:
                    answer = await r.json(content_type=None)
                    if "errorResponse" in answer:
                        error = answer["errorResponse"]["errorCode"]
                else:
                    answer = {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
        self.window.record(time.perf_counter() - started, error)
        return answer

    async def player(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            token = self.tokens[random.randrange(len(self.tokens))]
            answer = await self.call(http, "POST", "/srm/sessions", token, SETUP)
            if not answer or "successResponse" not in answer:
                continue
            sid = answer["successResponse"]["sessionId"]
            for _ in range(random.randint(1, 3)):
                await self.call(http, "PUT", f"/srm/sessions/{sid}", token)
            if random.random() < 0.8:
                await self.call(http, "DELETE", f"/srm/sessions/{sid}", token)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def family(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(int(p) for p in children.split())]


@contextlib.contextmanager
def stack(workers: int) -> Iterator[tuple[str, redis.Redis, subprocess.Popen[bytes]]]:
    tmp = Path(tempfile.mkdtemp(prefix="srm-soak-"))
    redis_port, api_port = free_port(), free_port()
    binary = shutil.which("redis-server") or "redis-server"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp),
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        url = f"redis://127.0.0.1:{redis_port}/0"
        client = redis.Redis.from_url(url, decode_responses=True, encoding_errors="surrogateescape")
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SRM_")}
        env.update(
            SRM_REDIS_URL=url,
            SRM_PORT=str(api_port),
            SRM_AUTH_SECRET=SECRET,
            SRM_WORKERS=str(workers),
            SRM_SESSION_TIMEOUT=str(TIMEOUT),
            SRM_ENDED_RETENTION=str(RETENTION),
            SRM_REAPER_INTERVAL="0.5",
            SRM_REAPER_METRICS_PORT="0",
            SRM_MAX_SESSIONS="3",
        )
        log = open(tmp / "srm.log", "wb")  # noqa: SIM115
        api = subprocess.Popen(
            [sys.executable, "-m", "srm.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        procs.append(api)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "srm.cli", "reaper"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )
        base = f"http://127.0.0.1:{api_port}"
        for _ in range(300):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", api_port), timeout=0.2).close()
                break
            time.sleep(0.1)
        yield base, client, api
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(20)
            if p.poll() is None:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def left_behind(client: redis.Redis) -> list[str]:
    """The keys still holding session state once every session ended and was removed.

    Some keys outlive sessions by design and are not counted: the event streams (trimmed by
    age and length), each shard's count of ACTIVE sessions (back at 0), and keys that expire
    by themselves: account hashes holding only usage days, the daily denial rankings, the
    accounts' setup-rate windows (limits.setups_per_minute: two minutes after the last
    setup). Anything else, or such a key without its expiry, is left behind."""
    left = []
    for key in client.scan_iter(match="srm:*", count=1000):
        if ":reaper:" in key or key.endswith(":events"):
            continue
        if key.endswith(":active"):
            if int(client.hget(key, "n") or 0):
                left.append(key)
        elif ":a:" in key and not all(field.isdigit() for field in client.hkeys(key)):
            left.append(key)  # a session record, a counter or a playback is still there
        elif client.pttl(key) == -1:  # no expiry (-2: it expired meanwhile)
            left.append(key)
    return left


def summary(window: Window, seconds: float) -> str:
    lat = sorted(window.latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return (
        f"{len(window.latencies) / seconds:8.0f} req/s  p50 {statistics.median(lat) * 1000:6.2f} ms"
        f"  p99 {p99 * 1000:6.2f} ms  errors {dict(window.errors) or '-'}"
    )


async def drive(load: Load, players: int, seconds: float, every: float | None) -> list[str]:
    rows: list[str] = []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=players)
    async with aiohttp.ClientSession(
        load.base, connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as http:
        tasks = [asyncio.create_task(load.player(http, stop)) for _ in range(players)]
        end = time.monotonic() + seconds
        load.window = Window()
        while time.monotonic() < end:
            await asyncio.sleep(min(every or seconds, end - time.monotonic()))
            elapsed = time.monotonic() - load.window.started
            rows.append(summary(load.window, elapsed))
            if every:
                print(f"  t+{seconds - (end - time.monotonic()):5.0f}s {rows[-1]}", flush=True)
                load.window = Window()
        stop.set()
        await asyncio.gather(*tasks)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--every", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--players", type=int, default=64)
    parser.add_argument(
        "--rate", type=float, default=0, help="req/s; 0: half the measured capacity"
    )
    args = parser.parse_args()
    with stack(args.workers) as (base, client, api):
        load = Load(base, args.accounts)
        if args.rate:
            load.rate = args.rate
        else:
            load.rate = 1e9
            print("measuring capacity (15 s burst) ...", flush=True)
            burst = asyncio.run(drive(load, args.players, 15, None))
            capacity = len(load.window.latencies) / 15
            print(f"  capacity {capacity:.0f} req/s ({burst[-1].strip()})")
            load.rate = capacity / 2
        api_pids = family(api.pid)
        start_mem = (rss_kib(api_pids), used_memory(client))
        print(
            f"soak at {load.rate:.0f} req/s for {args.duration:.0f} s "
            f"(timeout {TIMEOUT} s, retention {RETENTION} s, 20% of sessions abandoned)"
        )
        asyncio.run(drive(load, args.players, args.duration, args.every))
        end_mem = (rss_kib(family(api.pid)), used_memory(client))
        print(
            f"API RSS   {start_mem[0] / 1024:8.1f} MiB at start  "
            f"{end_mem[0] / 1024:8.1f} MiB at end"
        )
        print(
            f"Redis mem {start_mem[1] / 1048576:8.1f} MiB at start  "
            f"{end_mem[1] / 1048576:8.1f} MiB at end"
        )
        wait = TIMEOUT + RETENTION + 5
        print(f"waiting {wait} s for every session to lapse and be removed ...", flush=True)
        time.sleep(wait)
        left = left_behind(client)
        print(f"keys left after all sessions ended: {len(left)} {left[:5]}")
        return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
