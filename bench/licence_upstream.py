"""A stand-in licence server for `bench/run --only drm`: answers every POST with a fixed
licence of 1 KiB, at once. It runs as a process of its own, so its CPU time is not counted
as SRM's. Usage: python bench/licence_upstream.py HOST PORT
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import uvloop
from aiohttp import web

LICENCE = os.urandom(1024)


async def licence(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=LICENCE, content_type="application/octet-stream")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def main(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/license", licence)
    app.router.add_get("/ready", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
