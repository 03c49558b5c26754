"""The aiohttp application: routes on /srm and /srm/v1, middlewares, and its dependencies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from srm import logs, metrics, process
from srm.api import console, licence, openapi
from srm.api import handlers as h
from srm.api.cursors import CursorSigner
from srm.api.errors import answer
from srm.api.handlers import DEPS, Deps, read_body
from srm.api.observability import ERROR_CODE, HEADER, REQUEST_ID, ROUTE, request_id, route_of
from srm.auth import OperatorKeys, TokenVerifier
from srm.cdn import CdnTokens
from srm.config import Settings
from srm.errors import TooLarge
from srm.store import SessionStore

PREFIXES = ("/srm", "/srm/v1")
CONTENT_ENCODING = hdrs.CONTENT_ENCODING
# Path ids may hold any character but "/": aiohttp's default pattern also refuses "{" and "}",
# which account ids may contain (keys.py keeps them harmless).
SID = "{sessionId:[^/]+}"
ACCT = "{accountId:[^/]+}"
DEV = "{deviceId:[^/]+}"


def routes(settings: Settings) -> Iterable[web.RouteDef]:
    """Every route; those of a section that is not configured ([cdn]) are left out: 404."""
    for p in PREFIXES:
        yield web.post(f"{p}/sessions", h.setup)
        yield web.get(f"{p}/sessions", h.list_own, allow_head=False)
        yield web.get(f"{p}/sessions/{SID}", h.get_own, allow_head=False)
        yield web.put(f"{p}/sessions/{SID}", h.keep_alive)
        yield web.delete(f"{p}/sessions/{SID}", h.teardown)
        yield web.get(f"{p}/devices", h.list_own_devices, allow_head=False)
        yield web.delete(f"{p}/devices/{DEV}", h.remove_own_device)
        yield web.get(f"{p}/accounts/{ACCT}/sessions", h.list_account, allow_head=False)
        yield web.delete(f"{p}/accounts/{ACCT}/sessions", h.end_account_sessions)
        yield web.delete(f"{p}/accounts/{ACCT}/sessions/{SID}", h.end_account_session)
        yield web.delete(f"{p}/accounts/{ACCT}/devices/{DEV}/sessions", h.end_device_sessions)
        yield web.get(f"{p}/accounts/{ACCT}/devices", h.list_account_devices, allow_head=False)
        yield web.delete(f"{p}/accounts/{ACCT}/devices/{DEV}", h.remove_account_device)
        yield web.get(f"{p}/accounts/{ACCT}/home", h.get_home, allow_head=False)
        yield web.put(f"{p}/accounts/{ACCT}/home", h.put_home)
        yield web.delete(f"{p}/accounts/{ACCT}/home", h.delete_home)
        yield web.get(f"{p}/accounts/{ACCT}/limit", h.get_limit, allow_head=False)
        yield web.put(f"{p}/accounts/{ACCT}/limit", h.put_limit)
        yield web.delete(f"{p}/accounts/{ACCT}/limit", h.delete_limit)
        yield web.get(f"{p}/accounts/{ACCT}/usage", h.get_usage, allow_head=False)
        yield web.get(f"{p}/reports/denials", h.get_denials, allow_head=False)
        if settings.cdn.enabled:
            yield web.get(f"{p}/revocations", h.get_revocations, allow_head=False)
        yield web.get(f"{p}/openapi.json", h.openapi, allow_head=False)
    yield web.get("/health", h.health, allow_head=False)
    yield web.get("/ready", h.ready, allow_head=False)
    yield web.get("/metrics", h.metrics, allow_head=False)
    yield from console.routes(PREFIXES)


def middleware(
    deny_status: int, max_bytes: int, max_body_bytes: int, body_timeout: float = 10.0
) -> Middleware:
    """The one middleware of every routed request.

    Outermost first: the request id (``X-Request-ID`` on the answer, in every log line), the
    in-flight gauge, count and latency by outcome; then every error answered as an
    errorResponse (errors.answer); then 431 when the request line plus header block exceed
    *max_bytes* in total and 413 when the announced body exceeds *max_body_bytes*, before
    anything else looks at the request; then a body with a Content-Encoding is read (and
    decoded) whatever the route, so one that does not decode answers 400 SRM-0002 on every
    path, never a traceback from aiohttp discarding it after the answer (the body is kept
    for the handler). One middleware rather than three: every suspension
    and resumption of a request's task passes through each coroutine frame of its chain.
    """

    @web.middleware
    async def handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id(request.headers.get(HEADER))
        request[REQUEST_ID] = rid
        request[ROUTE] = route = route_of(request)
        context = logs.REQUEST_ID.set(rid)
        metrics.request_started()
        started = time.perf_counter()
        try:
            try:
                length = request.content_length
                if length is not None and length > max_body_bytes:
                    raise TooLarge("request body too large")
                size = len(request.method) + len(request.raw_path) + 12
                for name, value in request.raw_headers:
                    size += len(name) + len(value) + 4
                if size > max_bytes:
                    raise TooLarge("request line and headers too large", headers=True)
                if CONTENT_ENCODING in request.headers and request.body_exists:
                    await read_body(request, body_timeout)
                response = await handler(request)
                error_code = ""
            except Exception as exc:
                response = answer(request, exc, deny_status)
                error_code = request[ERROR_CODE]  # set by answer()
        finally:
            metrics.request_finished()
            logs.REQUEST_ID.reset(context)
        if not response.prepared:
            response.headers[HEADER] = rid
        metrics.http_request(
            route,
            request.method,
            response.status,
            error_code,
            time.perf_counter() - started,
        )
        return response

    return handle


def create_app(settings: Settings, store: SessionStore) -> web.Application:
    """The API application for *settings*, serving from *store* (whose client it does not own)."""
    app = web.Application(
        middlewares=[
            middleware(
                settings.sessions.deny_status,
                settings.server.max_header_bytes,
                settings.server.max_body_bytes,
                settings.server.body_timeout,
            )
        ],
        client_max_size=settings.server.max_body_bytes,
        handler_args={
            "max_line_size": settings.server.max_header_bytes,
            "max_field_size": settings.server.max_header_bytes,
            # also bounds a client that never finishes its request line and headers
            "keepalive_timeout": settings.server.keepalive_timeout,
        },
    )
    service = Deps(
        store=store,
        verifier=TokenVerifier(settings.auth),
        operators=OperatorKeys(settings.operator.keys),
        timeout=settings.sessions.timeout,
        content_types=settings.sessions.content_types,
        body_timeout=settings.server.body_timeout,
        openapi=openapi.document_bytes(settings, PREFIXES),
        qualities=settings.sessions.qualities,
        rule_names=frozenset(r.name for r in settings.sessions.rules),
        limit_claims=settings.auth.limit_claims,
        cursors=CursorSigner.of(settings),
        networks=process.policy(settings).households.networks,
        cdn=CdnTokens(settings.cdn) if settings.cdn.enabled else None,
    )
    app[DEPS] = service
    app[console.CONSOLE] = console.load(bool(settings.operator.keys))
    app.add_routes(list(routes(settings)))
    if settings.drm.enabled:
        licence.install(app, settings.drm, PREFIXES)
    if service.verifier.jwks is not None:
        app.cleanup_ctx.append(_jwks_refresh)
    # on cleanup, not on shutdown: aiohttp runs cleanup after the requests in flight have
    # finished or been cancelled, so the aborts they queued are run too
    app.on_cleanup.append(_finish_aborts)
    return app


async def _jwks_refresh(app: web.Application) -> AsyncIterator[None]:
    """The JWKS keys of this process, fetched in the background while the app runs."""
    jwks = app[DEPS].verifier.jwks
    assert jwks is not None
    await jwks.start()
    try:
        yield
    finally:
        await jwks.close()


async def _finish_aborts(app: web.Application) -> None:
    await app[DEPS].aborts.drain()
