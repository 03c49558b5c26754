"""Domain errors, each carrying its SRM error code. Only the HTTP layer turns them into responses.

SrmError
├── InternalError        SRM-0001
├── MalformedRequest     SRM-0002
├── Unauthenticated      SRM-0003
├── SessionNotFound      SRM-0004
├── LimitReached         SRM-0005
├── NotOperator          SRM-0006
├── MethodNotAllowed     SRM-0007
├── StoreUnavailable     SRM-0008
│   └── StoreUnreached   SRM-0008 (the call never reached Redis: nothing to undo)
├── KeysUnavailable      SRM-0008
├── TooLarge             SRM-0009
├── NoSuchPath           SRM-0010
├── TooSoon              SRM-0011
└── LicenceServerFailed  SRM-0012 (502; 504 when it did not answer in time)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SrmError(Exception):
    """Base of every error SRM reports to a caller."""

    code = "SRM-0001"
    message = "Internal error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail


class InternalError(SrmError):
    """Raised when something unexpected failed; the body never says what."""

    code = "SRM-0001"
    message = "Internal error"


class MalformedRequest(SrmError):
    """Raised when the request is malformed or mandatory parameters are missing."""

    code = "SRM-0002"
    message = "Malformed request or mandatory parameters missing from request"


class Unauthenticated(SrmError):
    """Raised when the Client-Token is missing, invalid, expired or lacks its claims."""

    code = "SRM-0003"
    message = "Missing or invalid Client-Token"


class SessionNotFound(SrmError):
    """Raised when the session does not exist for this account (or was removed)."""

    code = "SRM-0004"
    message = "Session not found"

    def __init__(self, detail: str | None = None, ended: Any = None) -> None:
        super().__init__(detail)
        self.ended = ended  # srm.model.Ended while an ended session is not removed yet


class LimitReached(SrmError):
    """Raised when a setup would exceed the account's limit or a limit rule's."""

    code = "SRM-0005"
    message = "Maximum number of concurrent sessions reached for this account"

    def __init__(
        self,
        active: int,
        limit: int,
        rule: str = "account",
        sessions: Sequence[Any] = (),
        devices: Sequence[Any] | None = None,
    ) -> None:
        if rule == "account":
            detail = f"the account allows at most {limit} active sessions"
        elif devices is not None:
            detail = f"the account allows at most {limit} registered devices"
        else:
            detail = f"limit rule {rule} allows at most {limit} of these sessions"
        super().__init__(detail)
        self.active = active  # the ACTIVE sessions (or devices) counted against the limit
        self.limit = limit
        self.rule = rule
        self.sessions = list(sessions)  # srm.model.Session of those, for the denial body
        # the registered devices (srm.model.Device) when the device registry refused
        self.devices = list(devices) if devices is not None else None


class NotOperator(SrmError):
    """Raised when an operator path is called without a valid operator key."""

    code = "SRM-0006"
    message = "Operator key missing or invalid"


class MethodNotAllowed(SrmError):
    """Raised when the path exists but not for this method."""

    code = "SRM-0007"
    message = "Method not allowed"


class StoreUnavailable(SrmError):
    """Raised when Redis is unreachable or did not answer in time."""

    code = "SRM-0008"
    message = "Session store unavailable, retry later"


class StoreUnreached(StoreUnavailable):
    """Raised when a store call failed before it was sent to Redis, so it changed nothing."""


class KeysUnavailable(SrmError):
    """Raised when client tokens cannot be checked yet: no JWKS document was fetched so far."""

    code = "SRM-0008"
    message = "Signing keys not available yet, retry later"


class TooLarge(SrmError):
    """Raised when the request body, request line or headers exceed their limits."""

    code = "SRM-0009"
    message = "Request too large"

    def __init__(self, detail: str | None = None, *, headers: bool = False) -> None:
        super().__init__(detail)
        self.headers = headers


class NoSuchPath(SrmError):
    """Raised when no route matches the path."""

    code = "SRM-0010"
    message = "No such path"


class TooSoon(SrmError):
    """Raised when a request comes sooner than allowed: a device removal within the swap
    cooldown (or, later, an account's setups over their rate)."""

    code = "SRM-0011"
    message = "Too many requests, retry later"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)  # whole seconds, for Retry-After


class LicenceServerFailed(SrmError):
    """Raised when the DRM licence server behind /srm/license failed: answered 5xx (or
    something else than a licence or a refusal), could not be reached, or (*timed_out*) did
    not answer within drm.timeout."""

    code = "SRM-0012"
    message = "The DRM licence server failed or did not answer in time"

    def __init__(self, detail: str | None = None, *, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out
