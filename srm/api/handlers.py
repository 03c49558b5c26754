"""Request handlers: authenticate, parse, call the store once, answer."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from srm import metrics as srm_metrics
from srm.api import views
from srm.auth import OperatorKeys, Principal, TokenVerifier
from srm.errors import MalformedRequest, SrmError, StoreUnavailable, Unauthenticated
from srm.model import EndReason, NewSession
from srm.store import SessionStore

log = logging.getLogger("srm.api")

JSON = "application/json"
ABORT_ATTEMPTS = 5


@dataclass
class Service:
    """What the handlers need; stored on the app under SERVICE."""

    store: SessionStore
    verifier: TokenVerifier
    operators: OperatorKeys
    timeout: int
    content_types: tuple[str, ...]
    body_timeout: float
    openapi: bytes
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def client(self, request: web.Request) -> Principal:
        token = request.headers.get("Client-Token")
        if token is None:
            token = _bearer(request)
        if not token:
            raise Unauthenticated("Client-Token missing")
        return self.verifier.verify(token.strip())

    def operator(self, request: web.Request) -> None:
        self.operators.check(_bearer(request))

    async def body(self, request: web.Request) -> bytes:
        """The request body (an announced oversize was refused by the header_limit middleware;
        a chunked one beyond ``client_max_size`` raises 413 in read())."""
        if request.content.is_eof():
            # the whole body came with the headers (the usual small setup body): no wait, so
            # no timer is needed
            return await request.read()
        try:
            async with asyncio.timeout(self.body_timeout):
                return await request.read()
        except TimeoutError:
            raise MalformedRequest("request body not received in time") from None

    def abort_later(self, account_id: str, session_id: str) -> None:
        """Undo, in the background, a setup whose outcome is unknown."""
        task = asyncio.get_running_loop().create_task(self._abort(account_id, session_id))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _abort(self, account_id: str, session_id: str) -> None:
        delay = 0.05
        for _ in range(ABORT_ATTEMPTS):
            try:
                await self.store.abort_setup(account_id, session_id)
                return
            except SrmError:
                await asyncio.sleep(delay)
                delay *= 4
        log.warning("could not undo setup %s; it lapses with its keep-alive", session_id)


SERVICE = web.AppKey("service", Service)


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


# -- client ------------------------------------------------------------------------------


async def setup(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    principal = svc.client(request)
    content_id, content_type = views.setup_request(await svc.body(request), svc.content_types)
    sid = str(uuid.uuid4())
    new = NewSession(sid, principal.account_id, principal.device_id, content_id, content_type)
    try:
        await svc.store.setup(new)
    except StoreUnavailable:
        svc.abort_later(principal.account_id, sid)
        raise
    return _json(views.setup_success(sid, svc.timeout))


async def keep_alive(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    principal = svc.client(request)
    sid = views.session_id(request.match_info["sessionId"])
    await svc.store.keep_alive(principal.account_id, sid)
    return web.Response()


async def teardown(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    principal = svc.client(request)
    sid = views.session_id(request.match_info["sessionId"])
    await svc.store.end(principal.account_id, sid, EndReason.TEARDOWN)
    return web.Response()


async def list_own(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    principal = svc.client(request)
    return _json(views.session_list(await svc.store.account_sessions(principal.account_id)))


async def get_own(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    principal = svc.client(request)
    sid = views.session_id(request.match_info["sessionId"])
    session = await svc.store.get(principal.account_id, sid)
    return _json(orjson.dumps(views.session(session)))


# -- operator ----------------------------------------------------------------------------


async def list_account(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.operator(request)
    account = views.account_id(request.match_info["accountId"])
    return _json(views.session_list(await svc.store.account_sessions(account)))


async def end_account_session(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.operator(request)
    account = views.account_id(request.match_info["accountId"])
    sid = views.session_id(request.match_info["sessionId"])
    await svc.store.end(account, sid, EndReason.OPERATOR)
    return web.Response()


async def end_account_sessions(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.operator(request)
    account = views.account_id(request.match_info["accountId"])
    ended = await svc.store.end_all(account, EndReason.OPERATOR)
    return _json(orjson.dumps({"ended": ended}))


async def get_limit(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.operator(request)
    account = views.account_id(request.match_info["accountId"])
    return _json(views.limit(await svc.store.get_limit(account)))


async def put_limit(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.operator(request)
    account = views.account_id(request.match_info["accountId"])
    value = views.limit_request(await svc.body(request))
    return _json(views.limit(await svc.store.set_limit(account, value)))


async def delete_limit(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    svc.operator(request)
    account = views.account_id(request.match_info["accountId"])
    return _json(views.limit(await svc.store.clear_limit(account)))


# -- service -----------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return _json(b'{"status":"ok"}')


async def metrics(request: web.Request) -> web.Response:
    # reading every worker's sample files is blocking file I/O: keep it off the loop
    body = await asyncio.to_thread(srm_metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": srm_metrics.CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _json(request.app[SERVICE].openapi)


async def ready(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    try:
        async with asyncio.timeout(min(1.0, svc.store.deadline)):
            await svc.store.ping()
    except TimeoutError:
        raise StoreUnavailable() from None
    return _json(b'{"status":"ready"}')
