"""Domain errors to `errorResponse` bodies: every error a request meets becomes one."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from srm.api import bodies
from srm.api.observability import ERROR_CODE
from srm.errors import (
    InternalError,
    LicenceServerFailed,
    LimitReached,
    MalformedRequest,
    MethodNotAllowed,
    NoSuchPath,
    SessionNotFound,
    SrmError,
    TooLarge,
    TooSoon,
    Unauthenticated,
)

log = logging.getLogger("srm.api")

# The HTTP status of each SRM code, the one table of it: openapi.py derives the document's
# statuses from it. SRM-0005 answers the configured sessions.deny_status; SRM-0009 answers
# HEADERS_TOO_LARGE instead when the request line or headers are over the limit; SRM-0012
# answers LICENCE_TIMEOUT instead when the licence server did not answer in time.
STATUS = {
    "SRM-0001": 500,
    "SRM-0002": 400,
    "SRM-0003": 401,
    "SRM-0004": 404,
    "SRM-0006": 403,
    "SRM-0007": 405,
    "SRM-0008": 503,
    "SRM-0009": 413,
    "SRM-0010": 404,
    "SRM-0011": 429,
    "SRM-0012": 502,
}
HEADERS_TOO_LARGE = 431
LICENCE_TIMEOUT = 504  # SRM-0012 when the licence server did not answer in time
DETAIL_HEADER = "X-SRM-Error-Detail"
# RFC 9110 (11.6.1): a 401 carries at least one challenge. Client-Token holds the same JWT
# that the Authorization header's Bearer scheme (RFC 6750) carries.
CHALLENGE = 'Bearer realm="srm"'
# RFC 9110 (10.2.3), on SRM-0011: whole seconds before the request may succeed
RETRY_AFTER = "Retry-After"


def http_status(error: SrmError, deny_status: int = 200) -> int:
    if isinstance(error, LimitReached):
        return deny_status
    if isinstance(error, TooLarge) and error.headers:
        return HEADERS_TOO_LARGE
    if isinstance(error, LicenceServerFailed) and error.timed_out:
        return LICENCE_TIMEOUT
    return STATUS[error.code]


def error_body(error: SrmError, status: int) -> bytes:
    body: dict[str, Any] = {
        "errorResponse": {
            "code": str(status),
            "status": "DENIED" if isinstance(error, LimitReached) else "ERROR",
            "errorCode": error.code,
            "errorMessage": error.message,
        }
    }
    # the extensions of API.md, beside the unchanged errorResponse
    detail = public_detail(error)
    if detail:
        body["detail"] = detail
    if isinstance(error, LimitReached):
        body["denial"] = bodies.denial(error.rule, error.limit, error.sessions, error.devices)
    elif isinstance(error, SessionNotFound) and error.ended is not None:
        body["ended"] = bodies.ended(error.ended)
    return orjson.dumps(body)


def public_detail(error: SrmError) -> str | None:
    """What exactly was wrong, in SRM's own words (``detail`` in the body and the
    X-SRM-Error-Detail header); None for an internal error, whose detail is for the log."""
    if isinstance(error, InternalError):
        return None
    return error.detail or None


def error_response(error: SrmError, deny_status: int = 200) -> web.Response:
    status = http_status(error, deny_status)
    response = web.Response(status=status, body=error_body(error, status))
    response.content_type = "application/json"
    detail = public_detail(error)
    if detail:
        response.headers[DETAIL_HEADER] = detail.encode("ascii", "replace").decode()
    if status == STATUS[Unauthenticated.code]:
        response.headers["WWW-Authenticate"] = CHALLENGE
    if isinstance(error, TooSoon):
        response.headers[RETRY_AFTER] = str(error.retry_after)
    return response


def from_http_exception(exc: web.HTTPException) -> SrmError:
    if exc.status == 404:
        return NoSuchPath()
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")  # aiohttp's, from the route table
        return MethodNotAllowed(f"this path allows {allowed}" if allowed else None)
    if exc.status == 413:
        return TooLarge("request body too large")
    if exc.status == 431:
        return TooLarge("request headers too large", headers=True)
    if 400 <= exc.status < 500:
        return MalformedRequest(HTTPStatus(exc.status).phrase)  # not exc.reason: any text
    return InternalError()


def malformed_body(exc: web.RequestPayloadError) -> MalformedRequest:
    """SRM-0002 for a body aiohttp could not read: not what its Content-Encoding says
    (ContentEncodingError), or cut short or badly chunked."""
    if isinstance(exc.__cause__, ContentEncodingError):
        return MalformedRequest("request body does not decode as its Content-Encoding says")
    return MalformedRequest("request body is malformed or incomplete")


def answer(request: web.Request, exc: Exception, deny_status: int) -> web.Response:
    """The errorResponse for *exc*, raised while handling *request* (call it in the except
    clause: an unexpected error is logged with its traceback)."""
    if isinstance(exc, SrmError):
        if isinstance(exc, InternalError):
            log.error("internal error on %s %s: %s", request.method, request.path, exc)
        request[ERROR_CODE] = exc.code
        return error_response(exc, deny_status)
    if isinstance(exc, web.RequestPayloadError):  # a body read outside handlers.read_body
        return answer(request, malformed_body(exc), deny_status)
    if isinstance(exc, web.HTTPException):
        mapped = from_http_exception(exc)
        request[ERROR_CODE] = mapped.code
        response = error_response(mapped, deny_status)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    log.exception("unhandled error on %s %s", request.method, request.path)
    request[ERROR_CODE] = InternalError.code
    return error_response(InternalError(), deny_status)
