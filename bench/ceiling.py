"""The ceiling: a bare aiohttp process answering SRM's client routes with no auth and no store.

It does what any aiohttp service must do for these requests (route, read the body, answer
a setup with a fresh UUID in the same JSON shape) and nothing else, so the gap between it and
`srm serve` in the same run is what SRM itself costs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid

import orjson
import uvloop
from aiohttp import web

PREFIXES = ("/srm", "/srm/v1")


async def setup(request: web.Request) -> web.Response:
    await request.read()
    body = {"successResponse": {"sessionId": str(uuid.uuid4()), "timeout": 120}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def empty(request: web.Request) -> web.Response:
    return web.Response()


async def ready(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def app() -> web.Application:
    application = web.Application()
    for p in PREFIXES:
        application.router.add_post(f"{p}/sessions", setup)
        application.router.add_put(f"{p}/sessions/{{sessionId}}", empty)
        application.router.add_delete(f"{p}/sessions/{{sessionId}}", empty)
    application.router.add_get("/ready", ready)
    return application


async def serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=True, backlog=2048).start()
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1], int(sys.argv[2])))
