"""aiohttp answers some requests before any middleware runs; make those answers errorResponses.

A request line or header over the limit (``LineTooLong``) answers 431 SRM-0009, other parse
errors 400 SRM-0002, and a crash 500 SRM-0001, all in the contract's JSON shape. An HTTP
exception raised before the middlewares (aiohttp's 417 for an ``Expect`` other than
``100-continue``) answers its SRM code too (400 SRM-0002), never aiohttp's text body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest

from srm import metrics
from srm.api.errors import error_response, from_http_exception
from srm.api.observability import ERROR_CODE, HEADER, REQUEST_ID, new_request_id
from srm.errors import InternalError, MalformedRequest, SrmError, StoreUnavailable, TooLarge


class SrmRequestHandler(web_protocol.RequestHandler):
    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's log of an error outside the handler; a body that fails to decode while
        aiohttp discards it after the answer is the peer's fault: no traceback, no line
        above DEBUG (the app's middleware reads every encoded body first, so this is a
        second line of defence)."""
        exc = kw.get("exc_info")
        if isinstance(exc, web_protocol.RequestPayloadError):
            self.log_debug("request body discarded after the answer did not decode: %s", exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error: SrmError
        if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower()
        ):
            error = TooLarge("request line or headers too large", headers=True)
        elif status == 400:
            error = MalformedRequest("malformed HTTP request")
        elif status in (503, 504):
            error = StoreUnavailable()
        else:
            error = InternalError()
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error body")
        if status >= 500:
            self.log_exception("error handling request", exc_info=exc)
        response = unrouted_error(request, error)
        response.force_close()
        return response


def unrouted_error(request: BaseRequest, error: SrmError) -> web.Response:
    """The errorResponse of a request answered before the middlewares ran."""
    response = error_response(error)
    rid = new_request_id()  # the request's own headers are suspect
    response.headers[HEADER] = rid
    request[REQUEST_ID], request[ERROR_CODE] = rid, error.code  # for the access log
    metrics.protocol_error(response.status, error.code)
    return response


AppHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def json_http_exceptions(handle: AppHandler) -> AppHandler:
    """*handle* (the application's), with an HTTP exception aiohttp raises before the
    middlewares (the Expect check) answered as an errorResponse."""

    async def handler(request: BaseRequest) -> web.StreamResponse:
        try:
            return await handle(request)
        except web.HTTPException as exc:
            return unrouted_error(request, from_http_exception(exc))

    return handler


class SrmServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return SrmRequestHandler(self, loop=self._loop, **self._kwargs)


class SrmAppRunner(web.AppRunner):
    """An AppRunner whose connections answer protocol errors as errorResponses."""

    async def _make_server(self) -> web_server.Server:
        server: Any = await super()._make_server()
        server.__class__ = SrmServer  # same state, one method overridden
        # each connection's RequestHandler reads the Server's request_handler when made
        server.request_handler = json_http_exceptions(server.request_handler)
        return cast(web_server.Server, server)
