"""Request ids, request metrics and the JSON access log.

Every response carries ``X-Request-ID``: the caller's own id when it is short and made of
safe characters (so it can go into logs and headers as is), else a fresh one. The id is in
every log line written while the request is handled.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from srm import metrics
from srm.config import Settings

HEADER = "X-Request-ID"
MAX_ID_LENGTH = 128
_SAFE_ID = re.compile(rf"[A-Za-z0-9._:@+/=-]{{1,{MAX_ID_LENGTH}}}")

REQUEST_ID = web.RequestKey("request_id", str)
# Set by the error middleware when it answers with an SRM error code.
ERROR_CODE = web.RequestKey("error_code", str)
ROUTE = web.RequestKey("route", str)
UNMATCHED = "unmatched"

access_log = logging.getLogger("srm.access")


def new_request_id() -> str:
    return os.urandom(16).hex()  # as unique as a uuid4, a quarter of the cost


def request_id(given: str | None) -> str:
    """*given* when it is a safe id, else a new one."""
    if given is not None and _SAFE_ID.fullmatch(given):
        return given
    return new_request_id()


def route_of(request: web.Request) -> str:
    """The canonical path template of the matched route (bounded, unlike raw paths)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request on ``srm.access`` (only when ``server.access_log`` is on).

    It logs the path but never the query string or headers, where credentials could be.
    """

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID) or response.headers.get(HEADER)
        self.logger.info(
            "request",
            extra={
                "request_id": rid,
                "method": request.method,
                "path": request.path,
                # a request aiohttp could not parse never reached the middleware
                "route": request.get(ROUTE, metrics.UNPARSED),
                "status": response.status,
                "error_code": request.get(ERROR_CODE),
                "duration_ms": round(time * 1000, 3),
                "remote": request.remote,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def runner_options(settings: Settings) -> dict[str, Any]:
    """AppRunner options for the access log: none at all unless ``server.access_log``."""
    if not settings.server.access_log:
        return {"access_log": None}
    return {"access_log": access_log, "access_log_class": JsonAccessLogger}
