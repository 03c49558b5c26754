"""Redis failures turned into domain errors, the one place they are translated: a store that
is down, slow, loading or failing over is :class:`StoreUnavailable` (SRM-0008); anything
else Redis rejects is a bug, :class:`InternalError`."""

from __future__ import annotations

import logging
import re
import time
from typing import NoReturn

from redis import exceptions as rx

from srm import metrics
from srm.autopipeline import NeverSent
from srm.errors import (
    InternalError,
    SrmError,
    StoreUnavailable,
    StoreUnreached,
)

log = logging.getLogger(__name__)

# Redis answers that mean "not now" rather than "never": the call may succeed on retry.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.MasterDownError,
    rx.ClusterError,
    rx.MaxConnectionsError,
    TimeoutError,
    OSError,
)
# ... and Redis error prefixes that mean the same, with what SRM says of each (see below)
_UNAVAILABLE_BY_PREFIX = {
    "BUSY": "store busy running a script",
    "LOADING": "store loading its data",
    "MASTERDOWN": "store primary down",
    "CLUSTERDOWN": "store cluster down",
    "TRYAGAIN": "store resharding",
    "READONLY": "store read-only (failover)",
}
# redis-py prefixes the error of a command in a pipeline with that command
_PIPELINE_ERROR = re.compile(r"of pipeline caused error: \(?['\"]?")
# AttributeError and TypeError: redis-py leaks these from a connection whose transport
# closed under it (see _domain_error); the others are Redis failures proper.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    rx.RedisError,
    *_UNAVAILABLE,
    AttributeError,
    TypeError,
)


# The error reply of a script that found data of SRM 0.x in its account (legacy_first in
# _account.lua): the store moves it (migrate.lua) and calls again.
LEGACY_FIRST = "SRMLEGACY"


class LegacyFirst(InternalError):
    """A script's account holds data of SRM 0.x; nothing was written."""


def failed(operation: str, error: SrmError) -> SrmError:
    metrics.store_error(operation, error.code)
    return error


# What an SRM-0008 answer says in X-SRM-Error-Detail: SRM's own words, never Redis's text
# (which is logged instead). Checked in order: subclasses before their bases.
_UNAVAILABLE_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (rx.BusyLoadingError, "store loading its data"),
    (rx.MaxConnectionsError, "no store connection free"),
    (rx.ReadOnlyError, "store read-only (failover)"),
    (rx.MasterDownError, "store primary down"),
    (rx.ClusterDownError, "store cluster down"),
    (rx.TryAgainError, "store resharding"),
    (rx.ClusterError, "store cluster unavailable"),
    (rx.TimeoutError, "store timed out"),
    (TimeoutError, "store timed out"),
    (rx.ConnectionError, "store unreachable"),
    (OSError, "store unreachable"),
)
CLOSED_CONNECTION = "store connection closed"
UNAVAILABLE_DETAILS = frozenset(
    {text for _, text in _UNAVAILABLE_BY_TYPE}
    | set(_UNAVAILABLE_BY_PREFIX.values())
    | {CLOSED_CONNECTION, "store unavailable"}
)
_LOG_UNAVAILABLE_EVERY = 10.0  # seconds between two log lines of one kind of failure
_unavailable_logged: dict[str, float] = {}


def _unavailable(
    operation: str,
    exc: BaseException,
    detail: str,
    error: type[StoreUnavailable] = StoreUnavailable,
) -> SrmError:
    """SRM-0008 (*error*) with SRM's *detail*; Redis's own text goes to the log, once per
    kind and :data:`_LOG_UNAVAILABLE_EVERY` (an outage fails every call)."""
    now = time.monotonic()
    if now - _unavailable_logged.get(detail, -_LOG_UNAVAILABLE_EVERY) >= _LOG_UNAVAILABLE_EVERY:
        _unavailable_logged[detail] = now
        log.warning(
            "store unavailable (%s) on %s: %s: %s", detail, operation, type(exc).__name__, exc
        )
    return failed(operation, error(detail))


def _redis_error_code(exc: BaseException) -> str:
    """The first word of Redis's error text (BUSY, LOADING...), in a pipeline's error too."""
    text = str(exc)
    annotated = _PIPELINE_ERROR.search(text)
    return text[annotated.end() if annotated else 0 :].partition(" ")[0]


def _unavailable_detail(exc: BaseException) -> str:
    for kind, text in _UNAVAILABLE_BY_TYPE:
        if isinstance(exc, kind):
            return text
    return _UNAVAILABLE_BY_PREFIX.get(_redis_error_code(exc), "store unavailable")


def _domain_error(operation: str, exc: BaseException) -> SrmError | None:
    """The domain error for a failed Redis call, counted under *operation*: unavailable
    (retry later) or a bug; None when *exc* is not a Redis failure (re-raise it)."""
    if isinstance(exc, NeverSent):  # failed before it was sent: the cause says why
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return _unavailable(operation, cause, _unavailable_detail(cause), StoreUnreached)
    if isinstance(exc, rx.ResponseError) and _redis_error_code(exc) == LEGACY_FIRST:
        return LegacyFirst(str(exc))
    if isinstance(exc, rx.ResponseError):
        # redis-py strips the prefix of the errors it types (ClusterDownError is "The
        # cluster is down"; TryAgainError, MasterDownError...): check the type as well
        if isinstance(exc, _UNAVAILABLE) or _redis_error_code(exc) in _UNAVAILABLE_BY_PREFIX:
            return _unavailable(operation, exc, _unavailable_detail(exc))
        log.error("redis rejected a call: %s", exc)
        return failed(operation, InternalError(str(exc)))
    if isinstance(exc, _UNAVAILABLE):
        return _unavailable(operation, exc, _unavailable_detail(exc))
    if isinstance(exc, rx.RedisError):
        log.error("redis error: %r", exc)
        return failed(operation, InternalError(repr(exc)))
    # AttributeError/TypeError from a connection whose transport closed under it (a peer
    # reset, or the cluster client closing connections while it re-reads the slot map;
    # redis/redis-py#4287): a connection error, not a bug of ours. Raised elsewhere: a bug.
    if not _raised_in_client(exc):
        return None
    return _unavailable(operation, exc, CLOSED_CONNECTION)


def raise_domain_error(operation: str, exc: BaseException) -> NoReturn:
    """Raise the domain error for *exc* (see _domain_error), or *exc* itself when it is not
    a Redis failure."""
    error = _domain_error(operation, exc)
    if error is None:
        raise exc
    raise error from exc


# Packages whose AttributeError/TypeError on a closed transport is a connection failure.
_CLIENT_PACKAGES = ("redis", "asyncio", "uvloop")


def _raised_in_client(exc: BaseException) -> bool:
    """Whether *exc* was raised inside redis-py or asyncio's transports (not in SRM code),
    judged by the module of the innermost frame, never by where its file sits on disk."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module.partition(".")[0] in _CLIENT_PACKAGES
