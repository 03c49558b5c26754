"""The DRM licence proxy (API.md, "DRM licence proxy"): ``POST /srm/license/{sessionId}``.

With ``[drm]`` configured, a licence request is the session's keep-alive and, only when that
moved the session's deadline, a forward of the CDM's challenge to ``drm.upstream_url`` with
an upfront token naming the session (a JWT in ``drm.token_header``) and the configured
headers. The licence server's status (2xx, 4xx), body and Content-Type come back as they
are. A session that is ended, lapsed, unknown or another account's answers as keep-alive
does (SRM-0004), and nothing is forwarded; a licence server that fails answers 502 SRM-0012,
one that does not answer within ``drm.timeout`` 504 SRM-0012.

Each API process holds one pooled HTTP client to the licence server (``drm.pool_size``
connections), opened when the application starts and closed on its cleanup. Neither the
upfront token nor ``drm.token_key`` nor the values of ``drm.headers`` is ever logged.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import hdrs, web
from jwt.algorithms import HMACAlgorithm
from multidict import CIMultiDict

from srm import __version__, metrics
from srm.api import bodies
from srm.api.handlers import DEPS
from srm.config import DrmSettings
from srm.errors import LicenceServerFailed, MalformedRequest, SessionNotFound
from srm.model import Kept

log = logging.getLogger("srm.api")

PATH = "/license/{sessionId:[^/]+}"  # under every API prefix
TOKEN_SECONDS = 60  # lifetime of an upfront token
# A licence is a few kilobytes; a larger answer is not one (and is not held in memory).
MAX_LICENCE_BYTES = 1 << 20
OCTET_STREAM = "application/octet-stream"
_HASHES = {
    "HS256": HMACAlgorithm.SHA256,
    "HS384": HMACAlgorithm.SHA384,
    "HS512": HMACAlgorithm.SHA512,
}


class LicenceProxy:
    """The licence server as this API process reaches it: the pooled HTTP client (open
    between :meth:`start` and :meth:`close`), the headers every forward carries, and the key
    of the upfront tokens."""

    def __init__(self, settings: DrmSettings) -> None:
        self.url = settings.upstream_url
        self.timeout = settings.timeout
        self.pool_size = settings.pool_size
        self._signer = HMACAlgorithm(_HASHES[settings.token_algorithm])
        self._signing_key = self._signer.prepare_key(settings.token_key)
        head = {"alg": settings.token_algorithm, "typ": "JWT"}
        self._token_head = _b64(orjson.dumps(head)) + b"."
        self._token_header = settings.token_header
        # the licence's bytes as the server has them: no compression asked for (aiohttp
        # still decodes an answer compressed regardless, before it is passed back)
        self._base = CIMultiDict(
            {hdrs.ACCEPT_ENCODING: "identity", hdrs.USER_AGENT: f"srm/{__version__}"}
        )
        self._extra = tuple(settings.headers.items())
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=0),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # one client serves every player: a cookie the licence server sets for one must
            # never go out with another's request (and keeping none saves ~50 us a request)
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def upfront_token(self, session_id: str, account_id: str, device_id: str, kept: Kept) -> str:
        """The JWT naming the session, issued at the keep-alive's time (the Redis server's
        clock, as every time SRM gives) and valid TOKEN_SECONDS.

        Signed with PyJWT's HMAC algorithm and a key prepared once; the header is encoded
        once and the claims with orjson: jwt.encode does the same work in 60-70 us a token
        (it prepares the key and builds the header every time), this in about 10."""
        issued = kept.at_ms // 1000
        claims = {
            "sessionId": session_id,
            "accountId": account_id,
            "deviceId": device_id,
            "contentID": kept.content_id,
            "iat": issued,
            "exp": issued + TOKEN_SECONDS,
        }
        signed = self._token_head + _b64(orjson.dumps(claims))
        return (signed + b"." + _b64(self._signer.sign(signed, self._signing_key))).decode()

    async def forward(self, challenge: bytes, content_type: str | None, token: str) -> web.Response:
        """The licence server's answer to *challenge* as SRM's answer (2xx and 4xx), or
        LicenceServerFailed; counted in the licence metrics. The challenge goes with the
        player's Content-Type (none: application/octet-stream), which drm.headers may
        override, and the upfront token, which nothing overrides."""
        assert self._client is not None, "the licence proxy is not started"
        headers = self._base.copy()
        headers[hdrs.CONTENT_TYPE] = content_type or OCTET_STREAM
        for name, value in self._extra:
            headers[name] = value
        headers[self._token_header] = token
        started = time.perf_counter()
        status: int | None = None
        failure = ""
        try:
            async with self._client.post(
                self.url, data=challenge, headers=headers, allow_redirects=False
            ) as answer:
                status = answer.status
                if not (200 <= status < 300 or 400 <= status < 500):
                    failure = "answer"
                    log.warning("licence server answered %d", status)
                    raise LicenceServerFailed(f"the licence server answered {status}")
                if (answer.content_length or 0) > MAX_LICENCE_BYTES:
                    failure = "answer"
                    raise LicenceServerFailed("the licence server's answer is over 1 MiB")
                body = await _read(answer)
                if body is None:
                    failure = "answer"
                    raise LicenceServerFailed("the licence server's answer is over 1 MiB")
            return _passed_back(status, answer.headers.get(hdrs.CONTENT_TYPE), body)
        except TimeoutError:
            # aiohttp's timeouts are TimeoutErrors (its ServerTimeoutError a ClientError too)
            failure = "timeout"
            log.warning("licence server did not answer within %g s", self.timeout)
            raise LicenceServerFailed(
                f"the licence server did not answer within {self.timeout:g} s", timed_out=True
            ) from None
        except aiohttp.ClientError as exc:
            failure = "unreachable" if status is None else "answer"
            # the class only: a message may name the URL, whose query may hold a secret
            log.warning("licence server failed: %s", type(exc).__name__)
            raise LicenceServerFailed(
                "the licence server is unreachable"
                if status is None
                else "the licence server's answer broke off"
            ) from None
        finally:
            metrics.licence_upstream(time.perf_counter() - started, status, failure)


def _b64(raw: bytes) -> bytes:
    """base64url without padding, as JWT segments are (RFC 7515)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


async def _read(answer: aiohttp.ClientResponse) -> bytes | None:
    """The whole body of *answer*; None when it is over MAX_LICENCE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await answer.content.read(65536):
        size += len(chunk)
        if size > MAX_LICENCE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _passed_back(status: int, content_type: str | None, body: bytes) -> web.Response:
    response = web.Response(status=status, body=body)
    # the header as the licence server sent it, parameters and all
    response.headers[hdrs.CONTENT_TYPE] = OCTET_STREAM if content_type is None else content_type
    return response


LICENCES = web.AppKey("licences", LicenceProxy)


async def licence(request: web.Request) -> web.Response:
    """Keep the session alive, then forward its CDM's challenge to the licence server."""
    deps = request.app[DEPS]
    principal = await deps.client(request)
    sid = bodies.session_id(request.match_info["sessionId"])
    challenge = await deps.body(request)
    if not challenge:
        raise MalformedRequest("the licence challenge (the request body) is empty")
    try:
        kept = await deps.store.keep_alive_for_token(principal.account_id, sid)
    except SessionNotFound:
        metrics.licence_refused()
        raise
    proxy = request.app[LICENCES]
    token = proxy.upfront_token(sid, principal.account_id, principal.device_id, kept)
    return await proxy.forward(challenge, request.headers.get(hdrs.CONTENT_TYPE), token)


def routes(prefixes: tuple[str, ...]) -> list[web.RouteDef]:
    return [web.post(prefix + PATH, licence) for prefix in prefixes]


def install(app: web.Application, settings: DrmSettings, prefixes: tuple[str, ...]) -> None:
    """Serve the licence proxy on *app* under *prefixes* (only with ``[drm]`` configured)."""
    app[LICENCES] = LicenceProxy(settings)
    app.add_routes(routes(prefixes))
    app.cleanup_ctx.append(_client)


async def _client(app: web.Application) -> AsyncIterator[None]:
    """The process's pooled client to the licence server, open while the app runs."""
    proxy = app[LICENCES]
    await proxy.start()
    try:
        yield
    finally:
        await proxy.close()
