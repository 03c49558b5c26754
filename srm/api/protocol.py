"""aiohttp answers malformed HTTP before any middleware runs; make those answers errorResponses.

A request line or header over the limit (``LineTooLong``) answers 431 SRM-0009, other parse
errors 400 SRM-0002, and a crash 500 SRM-0001, all in the contract's JSON shape.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest

from srm import metrics
from srm.api.errors import error_response
from srm.api.observability import ERROR_CODE, HEADER, REQUEST_ID, new_request_id
from srm.errors import InternalError, MalformedRequest, SrmError, StoreUnavailable, TooLarge


class SrmRequestHandler(web_protocol.RequestHandler):
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
        response = error_response(error)
        rid = new_request_id()  # the request's own headers are suspect
        response.headers[HEADER] = rid
        request[REQUEST_ID], request[ERROR_CODE] = rid, error.code  # for the access log
        response.force_close()
        metrics.protocol_error(response.status, error.code)
        return response


class SrmServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return SrmRequestHandler(self, loop=self._loop, **self._kwargs)


class SrmAppRunner(web.AppRunner):
    """An AppRunner whose connections answer protocol errors as errorResponses."""

    async def _make_server(self) -> web_server.Server:
        server: Any = await super()._make_server()
        server.__class__ = SrmServer  # same state, one method overridden
        return server  # type: ignore[no-any-return]
