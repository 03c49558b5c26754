"""A fake DRM licence server for the tests (aiohttp on a free loopback port).

Like a multi-DRM vendor's licence server with upfront authorisation, it checks every
request's upfront token (signature, algorithm, claims, expiry) and the extra headers SRM
was configured to send, then answers a licence: ``LICENCE`` (binary, with a Content-Type
that has a parameter) for a good challenge, 403 with a JSON reason for a token it refuses or
a challenge it does not like, or what a test sets (``status``, ``delay``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import web

from tests.redis_servers import free_port

TOKEN_KEY = "licence-upfront-key-" + "fedcba9876543210" * 4  # 84 bytes: enough for HS512
TOKEN_HEADER = "x-dt-auth-token"
HEADERS = {"X-Vendor-Api-Key": "vendor-api-key-0123456789", "X-Tenant": "srm-tests"}
# bytes no text codec would leave alone: NUL, CR LF, 0xFF, invalid UTF-8
LICENCE = b"\x08\x02\x12\x00\r\n\xff\xfe\xc3\x28licence-" + bytes(range(256)) * 8
LICENCE_TYPE = "application/octet-stream; profile=widevine"
BAD_CHALLENGE = b"refuse me"
CLAIMS = ("sessionId", "accountId", "deviceId", "contentID", "iat", "exp")


@dataclass
class LicenceServer:
    """Serves licences at ``url``; records every request it got (``seen``: its body, headers
    and decoded token, or the reason the token was refused)."""

    port: int = field(default_factory=free_port)
    status: int | None = None  # answer this status (with a text body) whatever comes
    delay: float = 0.0  # seconds before answering
    licence: bytes = LICENCE  # the licence it hands out
    chunked: bool = False  # send the licence chunked (no Content-Length)
    algorithm: str = "HS256"
    seen: list[dict[str, Any]] = field(default_factory=list)
    most_at_once: int = 0  # the most requests it was answering at one time
    _now: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/license/widevine?tenant=srm"

    @property
    def requests(self) -> int:
        return len(self.seen)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/license/widevine", self._licence)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LicenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _licence(self, request: web.Request) -> web.StreamResponse:
        self._now += 1
        self.most_at_once = max(self.most_at_once, self._now)
        try:
            return await self._answer(request)
        finally:
            self._now -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        entry: dict[str, Any] = {
            "body": body,
            "headers": dict(request.headers),
            "peer": peer[1] if peer else None,  # the client port: one per connection
        }
        self.seen.append(entry)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status is not None:
            return web.Response(status=self.status, text="licence server trouble")
        problem = self._check(request, entry)
        if problem is None and body == BAD_CHALLENGE:
            problem = "the challenge is not a Widevine licence request"
        if problem is not None:
            entry["refused"] = problem
            reason = orjson.dumps({"error": problem})
            return web.Response(status=403, body=reason, content_type="application/json")
        if not self.chunked:
            response = web.Response(body=self.licence, headers={"Content-Type": LICENCE_TYPE})
            # a cookie naming this player: a proxy must not send it with anyone's request
            response.set_cookie("licence-session", entry["claims"]["sessionId"])
            return response
        response = web.StreamResponse(headers={"Content-Type": LICENCE_TYPE})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(self.licence), 65536):
            await response.write(self.licence[i : i + 65536])
        await response.write_eof()
        return response

    def _check(self, request: web.Request, entry: dict[str, Any]) -> str | None:
        """Why the request's upfront token or headers are refused; None when they are good."""
        for name, value in HEADERS.items():
            if request.headers.get(name) != value:
                return f"header {name} missing or wrong"
        token = request.headers.get(TOKEN_HEADER)
        if not token:
            return "no upfront token"
        try:
            claims = jwt.decode(
                token, TOKEN_KEY, algorithms=[self.algorithm], options={"require": list(CLAIMS)}
            )
        except jwt.InvalidTokenError as exc:
            return f"upfront token refused: {exc}"
        entry["claims"] = claims
        entry["received_at"] = time.time()
        if claims["exp"] - claims["iat"] != 60:
            return "the upfront token does not live 60 s"
        return None
