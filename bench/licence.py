"""What a proxied licence costs SRM (`bench/run --only drm`): CPU time of `srm serve` per
licence request beside a plain keep-alive of the same sessions.

One `srm serve` worker runs with `[drm]` pointed at a stand-in licence server
(bench/licence_upstream.py, a process of its own that answers a 1 KiB licence at once) and
the user's configuration (three limit rules, events on). This process sets up one session per
account, then alternates rounds of keep-alives (PUT /srm/sessions/{id}) and of licence
requests (POST /srm/license/{id} with a 2 KiB challenge) over the same sessions, with the
same concurrency, and reads the CPU time (user + system, from /proc) of the `srm serve`
process group around each round. Both requests run the same keep-alive script; the
difference is what the proxy adds: reading the challenge, signing the upfront token, the
pooled request to the licence server and passing its answer back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

from bench import procs, storage
from srm.auth import mint

CHALLENGE = os.urandom(2048)  # a Widevine challenge is 1-3 KiB
TOKEN_KEY = "bench-licence-key-" + "0123456789abcdef" * 2


@dataclass(frozen=True)
class LicenceCost:
    keepalive_us: float  # srm CPU per keep-alive, median of the rounds
    licence_us: float  # srm CPU per licence request, median of the rounds
    keepalive_rounds: list[float]
    licence_rounds: list[float]
    requests: int  # per round and kind
    licence_rps: float  # licence requests per second, median of the rounds

    @property
    def extra_rounds(self) -> list[float]:
        """What a licence cost beyond a keep-alive in each round (the two kinds ran back to
        back, so a round's load from other processes falls on both alike)."""
        return [b - a for a, b in zip(self.keepalive_rounds, self.licence_rounds, strict=True)]

    @property
    def extra_us(self) -> float:
        """What a licence costs SRM beyond its keep-alive: the median of the rounds'."""
        return statistics.median(self.extra_rounds)


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    """The stand-in licence server; its URL."""
    port = procs.free_port()
    host = "127.0.0.1"
    script = procs.ROOT / "bench" / "licence_upstream.py"
    proc = procs.spawn([sys.executable, str(script), host, str(port)])
    base = f"http://{host}:{port}"
    try:
        procs.wait_ready(base)
        yield f"{base}/license"
    finally:
        procs.stop([proc])


async def _drive(
    url: str, method: str, paths: list[tuple[str, str]], requests: int, concurrency: int
) -> float:
    """*requests* calls of *method* on the (path, token) pairs in turn, *concurrency* at a
    time; the seconds it took. Every answer must be 200."""
    body = CHALLENGE if method == "POST" else None
    headers = {"Content-Type": "application/octet-stream"} if body else {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector) as http:
        next_call = iter(range(requests))

        async def worker() -> None:
            for i in next_call:
                path, token = paths[i % len(paths)]
                async with http.request(
                    method, path, data=body, headers={**headers, "Client-Token": token}
                ) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{method} {path}: {answer.status}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _sessions(url: str, count: int) -> list[tuple[str, str]]:
    """One session per account: the (sessionId, Client-Token) of each."""
    made = []
    async with aiohttp.ClientSession(url) as http:
        for i in range(count):
            token = mint(procs.SECRET, f"drm-bench-{i}", "dev-1", ttl=7200)
            setup = {"content": {"contentID": f"asset-{i % 50}", "contentType": "COD"}}
            async with http.post("/srm/sessions", json=setup, headers={"Client-Token": token}) as r:
                sid = (await r.json())["successResponse"]["sessionId"]
            made.append((sid, token))
    return made


def licence_cost(
    redis_url: str, sessions: int, requests: int, rounds: int, concurrency: int = 16
) -> LicenceCost:
    env = {
        **storage.USER_ENV,
        "SRM_DRM_TOKEN_KEY": TOKEN_KEY,
        "SRM_DRM_HEADERS": '{"X-Api-Key": "bench"}',
        "SRM_SESSION_TIMEOUT": "300",
    }
    cpu: dict[str, list[float]] = {"keepalive": [], "licence": []}
    rps: list[float] = []
    with (
        upstream() as licence_url,
        procs.srm_serve(redis_url, 1, SRM_DRM_UPSTREAM_URL=licence_url, **env) as srm,
    ):
        made = asyncio.run(_sessions(srm.url, sessions))
        kinds = {
            "keepalive": ("PUT", [(f"/srm/sessions/{sid}", t) for sid, t in made]),
            "licence": ("POST", [(f"/srm/license/{sid}", t) for sid, t in made]),
        }
        for method, paths in kinds.values():  # warm-up: pools, token cache, upstream pool
            asyncio.run(_drive(srm.url, method, paths, requests // 5, concurrency))
        for _ in range(rounds):
            for kind, (method, paths) in kinds.items():
                before = srm.cpu_seconds()
                seconds = asyncio.run(_drive(srm.url, method, paths, requests, concurrency))
                cpu[kind].append((srm.cpu_seconds() - before) / requests * 1e6)
                if kind == "licence":
                    rps.append(requests / seconds)
    return LicenceCost(
        keepalive_us=statistics.median(cpu["keepalive"]),
        licence_us=statistics.median(cpu["licence"]),
        keepalive_rounds=cpu["keepalive"],
        licence_rounds=cpu["licence"],
        requests=requests,
        licence_rps=statistics.median(rps),
    )
