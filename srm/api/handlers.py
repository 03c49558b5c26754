"""Request handlers: authenticate, parse, call the store once, answer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from srm import metrics as srm_metrics
from srm import network
from srm.aborts import Aborter
from srm.api import bodies
from srm.api.cursors import CursorSigner
from srm.api.errors import malformed_body
from srm.auth import OperatorKeys, Principal, TokenVerifier
from srm.cdn import CdnTokens
from srm.errors import (
    KeysUnavailable,
    MalformedRequest,
    StoreUnavailable,
    StoreUnreached,
    TooSoon,
    Unauthenticated,
)
from srm.model import DAY_MS, AccountSessions, EndReason, NewSession
from srm.network import Networks
from srm.store import SessionStore

log = logging.getLogger("srm.api")

JSON = "application/json"


@dataclass
class Deps:
    """What the handlers need; stored on the app under DEPS."""

    store: SessionStore
    verifier: TokenVerifier
    operators: OperatorKeys
    timeout: int
    content_types: tuple[str, ...]
    body_timeout: float
    openapi: bytes
    qualities: tuple[str, ...] = ("SD", "HD", "UHD")
    rule_names: frozenset[str] = frozenset()
    limit_claims: bool = False  # honour the token's maxSessions claim
    cursors: CursorSigner = field(default_factory=lambda: CursorSigner(()))
    networks: Networks = field(default_factory=Networks)  # trusted proxies, network prefixes
    cdn: CdnTokens | None = None  # [cdn]: setups and keep-alives answer a CDN token
    aborts: Aborter = field(init=False)  # undoes setups whose outcome is unknown

    def __post_init__(self) -> None:
        self.aborts = Aborter(self.store)

    async def client(self, request: web.Request) -> Principal:
        token = request.headers.get("Client-Token")
        if token is None:
            token = _bearer(request)
        if not token:
            raise Unauthenticated("Client-Token missing")
        return await self.verifier.authenticate(token.strip())

    def client_address(self, request: web.Request) -> bytes:
        """The packed client address of *request*: its TCP peer, or the right-most
        X-Forwarded-For address that is not a trusted proxy when the peer is one (every
        X-Forwarded-For header, in the order received); b'' when there is none."""
        forwarded = request.headers.getall("X-Forwarded-For", [])
        return network.pack_address(self.networks.client_address(request.remote, forwarded))

    def operator(self, request: web.Request) -> None:
        self.operators.check(_bearer(request))

    async def body(self, request: web.Request) -> bytes:
        """The request body (see :func:`read_body`)."""
        return await read_body(request, self.body_timeout)


async def read_body(request: web.Request, seconds: float) -> bytes:
    """The request body, decoded as its Content-Encoding says (an announced oversize was
    refused by the middleware (app.py); a chunked one beyond ``client_max_size`` raises 413
    in read()). SRM-0002 for a body not received within *seconds*, or one that does
    not decode; aiohttp keeps it, so a second call reads nothing more."""
    try:
        if request.content.is_eof():
            # the whole body came with the headers (the usual small setup body): no wait, so
            # no timer is needed
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise MalformedRequest("request body not received in time") from None
    except web.RequestPayloadError as exc:
        raise malformed_body(exc) from None


DEPS = web.AppKey("service", Deps)


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def _operator_account(request: web.Request) -> tuple[Deps, str]:
    """The dependencies and the path's accountId of an operator call, once its key passed."""
    deps = request.app[DEPS]
    deps.operator(request)
    return deps, bodies.account_id(request.match_info["accountId"])


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON)


# -- client ------------------------------------------------------------------------------


async def setup(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    principal = await deps.client(request)
    wanted = bodies.setup_request(await deps.body(request), deps.content_types, deps.qualities)
    sid = bodies.new_session_id()
    new = NewSession(
        sid,
        principal.account_id,
        principal.device_id,
        wanted.content_id,
        wanted.content_type,
        device_type=principal.device_type,
        quality=wanted.quality,
        replaces=wanted.replaces,
        max_sessions=principal.max_sessions if deps.limit_claims else None,
        address=deps.client_address(request),
        playback_id=wanted.playback_id,
    )
    try:
        started = await deps.store.setup(new)
    except StoreUnreached:
        raise  # never sent: nothing to undo
    except (StoreUnavailable, asyncio.CancelledError):
        # sent, or maybe sent (cancelled while queued or in flight): it may have run
        deps.aborts.submit(principal.account_id, sid)
        raise
    except TooSoon:
        srm_metrics.setup_rate_limited()
        raise
    srm_metrics.setup_started(started.joined, started.flagged)
    token = None
    if deps.cdn is not None:
        content = new.content_id if started.content_id is None else started.content_id
        token = deps.cdn.token(started.session_id, content, started.at_ms, started.deadline_ms)
    return _json(bodies.setup_success(started.session_id, deps.timeout, token))


async def keep_alive(request: web.Request) -> web.Response:
    """An empty answer; with [cdn], the session's new CDN token."""
    deps = request.app[DEPS]
    principal = await deps.client(request)
    sid = bodies.session_id(request.match_info["sessionId"])
    if deps.cdn is None:
        await deps.store.keep_alive(principal.account_id, sid)
        return web.Response()
    kept = await deps.store.keep_alive_for_token(principal.account_id, sid)
    token = deps.cdn.token(sid, kept.content_id, kept.at_ms, kept.deadline_ms)
    return _json(bodies.keep_alive_success(token))


async def teardown(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    principal = await deps.client(request)
    sid = bodies.session_id(request.match_info["sessionId"])
    await deps.store.end(principal.account_id, sid, EndReason.TEARDOWN)
    return web.Response()


async def list_own(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    principal = await deps.client(request)
    listing = await _page(deps, request, principal.account_id)
    # the token's limit applies to this caller unless an operator override wins
    if (
        deps.limit_claims
        and principal.max_sessions is not None
        and not (await deps.store.get_limit(principal.account_id)).override
    ):
        listing = dataclasses.replace(listing, max_sessions=principal.max_sessions)
    return _json(bodies.session_list(listing))


async def _page(deps: Deps, request: web.Request, account_id: str) -> AccountSessions:
    """One page of the account's listing; the cursors in and out are signed for the account
    (srm/api/cursors.py), the store sees its own."""
    limit, cursor = bodies.page_query(request.query)
    at = deps.cursors.open(account_id, cursor) if cursor is not None else None
    listing = await deps.store.account_sessions(account_id, limit, at)
    if listing.next is None:
        return listing
    return dataclasses.replace(listing, next=deps.cursors.sign(account_id, listing.next))


async def get_own(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    principal = await deps.client(request)
    sid = bodies.session_id(request.match_info["sessionId"])
    session = await deps.store.get(principal.account_id, sid)
    return _json(orjson.dumps(bodies.session(session)))


async def list_own_devices(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    principal = await deps.client(request)
    return _json(bodies.devices(await deps.store.devices(principal.account_id)))


async def remove_own_device(request: web.Request) -> web.Response:
    """Unregister a device of the caller's account (any of its devices, itself included)."""
    deps = request.app[DEPS]
    principal = await deps.client(request)
    device = bodies.device_id(request.match_info["deviceId"])
    ended = await deps.store.remove_device(principal.account_id, device, by_operator=False)
    return _json(orjson.dumps({"ended": ended}))


# -- operator ----------------------------------------------------------------------------


async def list_account(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    return _json(bodies.session_list(await _page(deps, request, account)))


async def end_account_session(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    sid = bodies.session_id(request.match_info["sessionId"])
    await deps.store.end(account, sid, EndReason.OPERATOR)
    return web.Response()


async def end_account_sessions(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    ended = await deps.store.end_all(account, EndReason.OPERATOR)
    return _json(orjson.dumps({"ended": ended}))


async def end_device_sessions(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    device = bodies.device_id(request.match_info["deviceId"])
    ended = await deps.store.end_device(account, device, EndReason.OPERATOR)
    return _json(orjson.dumps({"ended": ended}))


async def list_account_devices(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    return _json(bodies.devices(await deps.store.devices(account)))


async def remove_account_device(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    device = bodies.device_id(request.match_info["deviceId"])
    force = bodies.force_query(request.query.get("force"))
    ended = await deps.store.remove_device(account, device, by_operator=True, force=force)
    return _json(orjson.dumps({"ended": ended}))


async def get_home(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    return _json(bodies.home(await deps.store.home(account)))


async def put_home(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    networks = bodies.home_request(await deps.body(request))
    return _json(bodies.home(await deps.store.set_home(account, networks)))


async def delete_home(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    return _json(bodies.home(await deps.store.set_home(account, [])))


async def get_limit(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    return _json(bodies.limit(await deps.store.get_limit(account)))


async def put_limit(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    value, rules = bodies.limit_request(await deps.body(request), deps.rule_names)
    return _json(bodies.limit(await deps.store.set_limit(account, value, rules)))


async def delete_limit(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    return _json(bodies.limit(await deps.store.clear_limit(account)))


async def get_usage(request: web.Request) -> web.Response:
    deps, account = _operator_account(request)
    days = bodies.usage_days(request.query.get("days"))
    kept = await deps.store.usage(account)
    today = await deps.store.now() // DAY_MS
    return _json(bodies.usage(account, kept, today, days))


# revocation cursors are signed as those of a listing, for no account ("" is none)
_FEED = ""
_FEED_PAGE = 1000  # revocations read per shard and poll


async def get_revocations(request: web.Request) -> web.Response:
    """The sessions an edge must refuse although their CDN token is valid ([cdn] only)."""
    deps = request.app[DEPS]
    deps.operator(request)
    cursor = request.query.get("cursor")
    since = None
    if cursor is not None:
        since = bodies.revocation_cursor(deps.cursors.open(_FEED, cursor))
    feed = await deps.store.revocations(since, _FEED_PAGE)
    return _json(bodies.revocations(feed, deps.cursors.sign(_FEED, str(feed.next_ms))))


async def get_denials(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    deps.operator(request)
    wanted, top = bodies.denials_query(request.query.get("date"), request.query.get("top"))
    flagged = bodies.flag(request.query.get("flagged"), "flagged")
    day = bodies.report_day(wanted, await deps.store.now() // DAY_MS)
    ranking = await deps.store.denials(day, top, flagged=flagged)
    return _json(bodies.denial_report(day, ranking, flagged=flagged))


# -- service -----------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return _json(b'{"status":"ok"}')


async def metrics(request: web.Request) -> web.Response:
    srm_metrics.flush()  # this process's pending counts, folded in the thread that records
    # reading every worker's sample files is blocking file I/O: keep it off the loop
    body = await asyncio.to_thread(srm_metrics.exposition)
    return web.Response(body=body, headers={"Content-Type": srm_metrics.CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _json(request.app[DEPS].openapi)


async def ready(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    if not deps.verifier.ready:
        raise KeysUnavailable()
    try:
        async with asyncio.timeout(min(1.0, deps.store.deadline)):
            await deps.store.ping()
    except TimeoutError:
        raise StoreUnavailable() from None
    return _json(b'{"status":"ready"}')
