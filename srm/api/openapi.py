"""The OpenAPI 3 document of the HTTP contract (API.md), served at /srm/openapi.json.

It is built once per application from what it describes: the settings (content types, the
keep-alive period, the status of a denial), the HTTP status of each SRM code
(``srm.api.errors.STATUS``), the error classes and the request limits of ``bodies``.
Every client and operator path exists under both prefixes.
"""

from __future__ import annotations

from typing import Any

import orjson

from srm import __version__, listing
from srm.api import bodies, console, licence
from srm.api.errors import (
    CHALLENGE,
    HEADERS_TOO_LARGE,
    LICENCE_TIMEOUT,
    RETRY_AFTER,
    STATUS,
    http_status,
)
from srm.config import Settings
from srm.errors import (
    InternalError,
    LicenceServerFailed,
    LimitReached,
    MalformedRequest,
    MethodNotAllowed,
    NoSuchPath,
    NotOperator,
    SessionNotFound,
    SrmError,
    StoreUnavailable,
    TooLarge,
    TooSoon,
    Unauthenticated,
)
from srm.model import USAGE_DAYS, USAGE_REASONS
from srm.network import MAX_HOME_NETWORKS

JSON = "application/json"

Json = dict[str, Any]

# The error answers (components/responses) and an error each stands for: its status is
# http_status(error), so the document says what the error middleware sends.
_ERROR_ANSWERS: dict[str, SrmError] = {
    "Malformed": MalformedRequest(),
    "Unauthenticated": Unauthenticated(),
    "NotOperator": NotOperator(),
    "NotFound": SessionNotFound(),  # and NoSuchPath, the same status
    "MethodNotAllowed": MethodNotAllowed(),
    "BodyTooLarge": TooLarge(),
    "HeadersTooLarge": TooLarge(headers=True),
    "Internal": InternalError(),
    "Unavailable": StoreUnavailable(),
    "TooSoon": TooSoon("too soon", 1),
    "TooManySetups": TooSoon("too many setups", 1),
    "LicenceServerFailed": LicenceServerFailed(),
    "LicenceServerTimeout": LicenceServerFailed(timed_out=True),
}


def _error(name: str) -> tuple[str, str]:
    """(HTTP status, response name) of the error answer *name*."""
    return str(http_status(_ERROR_ANSWERS[name])), name


PAGE = ("Limit", "Cursor")  # the query parameters of a listing


def _ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def _nullable(schema: Json) -> Json:
    return {**schema, "nullable": True}


def _error_schema(
    codes: list[str], statuses: list[str], words: list[str], extensions: Json | None = None
) -> Json:
    return {
        "type": "object",
        "required": ["errorResponse", *(extensions or {})],
        "additionalProperties": False,
        "properties": {
            **(extensions or {}),
            "detail": {
                "type": "string",
                "description": "Extension: what exactly was wrong, in one sentence of SRM's "
                "own words (absent on SRM-0001)",
            },
            "errorResponse": {
                "type": "object",
                "required": ["code", "status", "errorCode", "errorMessage"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": statuses},
                    "status": {"type": "string", "enum": words},
                    "errorCode": {"type": "string", "enum": codes},
                    "errorMessage": {"type": "string"},
                },
            },
        },
    }


def _id_parameter(name: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": bodies.MAX_ACCOUNT_ID_LENGTH},
    }


def _subset(schema: Json, names: tuple[str, ...]) -> Json:
    """An object schema with only the properties *names* of *schema*, all required."""
    props = schema["properties"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(names),
        "properties": {name: props[name] for name in names},
    }


def _schemas(settings: Settings) -> Json:
    deny = str(settings.sessions.deny_status)
    time = _nullable({"type": "string", "format": "date-time"})
    count = {"type": "integer", "minimum": 0}
    qualities = list(settings.sessions.qualities)
    reasons = ["TEARDOWN", "TIMEOUT", "OPERATOR", "EVICTED", "REPLACED"]
    statuses = {str(s) for s in (*STATUS.values(), HEADERS_TOO_LARGE, LICENCE_TIMEOUT)} | {deny}
    generic = _error_schema(
        sorted({*STATUS, LimitReached.code}), sorted(statuses), ["ERROR", "DENIED"]
    )
    generic["properties"]["ended"] = _ref("schemas", "HowEnded")
    generic["properties"]["denial"] = _ref("schemas", "Denial")
    session: Json = {
        "type": "object",
        "additionalProperties": False,
        "required": list(bodies.SESSION_FIELDS),
        "properties": {
            "sessionId": {"type": "string", "format": "uuid"},
            "accountId": {"type": "string"},
            "deviceId": {"type": "string"},
            "contentID": {"type": "string"},
            "contentType": {"type": "string"},
            "state": {"type": "string", "enum": ["ACTIVE", "ENDED"]},
            "createdAt": time,
            "lastKeepAliveAt": time,
            "expiresAt": time,
            "endedAt": time,
            "endReason": _nullable({"type": "string", "enum": [*reasons, None]}),
            "deviceType": {"type": "string"},
            "quality": _nullable({"type": "string"}),
            "network": _nullable(
                {
                    "type": "string",
                    "description": "Extension: the client's network at setup, a CIDR "
                    "(network.ipv4_prefix or ipv6_prefix bits); null when not known",
                }
            ),
            "location": _nullable(
                {
                    "type": "string",
                    "enum": ["home", "away", None],
                    "description": "Extension: home when the client address lay in one of "
                    "the account's home networks at setup, else away; null when the account "
                    "had none",
                }
            ),
            "flagged": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Extension: the monitor rules (mode = monitor) that would have "
                "denied or evicted for this setup; empty when none",
            },
        },
    }
    return {
        "ErrorResponse": {
            **generic,
            "description": "Every error on every path; `code` is the HTTP status sent, "
            "`status` is DENIED for SRM-0005 and ERROR otherwise. Beside errorResponse: "
            "`denial` on SRM-0005, `ended` on SRM-0004 for an ended session not yet removed, "
            "`detail` (what exactly was wrong) on any error but SRM-0001.",
        },
        "Denied": _error_schema(
            [LimitReached.code], [deny], ["DENIED"], {"denial": _ref("schemas", "Denial")}
        ),
        "Denial": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rule", "max", "sessions"],
            "description": "The limit that refused the setup (`account`, or a limit rule's "
            "name) and the ACTIVE sessions counted against it (at most 100, oldest "
            "keep-alive first): stop one of these by setting up again with `replaces`. "
            "When the device registry refused (rule `devices`, devices.max), `sessions` is "
            "empty and `devices` lists the registered devices: remove one to make room.",
            "properties": {
                "rule": {"type": "string"},
                "max": {"type": "integer", "minimum": 0},
                "sessions": {
                    "type": "array",
                    "maxItems": 100,
                    "items": _subset(session, bodies.DENIED_SESSION_FIELDS),
                },
                "devices": {
                    "type": "array",
                    "description": "Extension, on the `devices` denial only: the account's "
                    "registered devices, first registered first",
                    "items": _ref("schemas", "Device"),
                },
            },
        },
        "HowEnded": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endReason", "endedAt", "byDeviceId"],
            "description": "How the session ended (keep-alive of an ended session that is "
            "not removed yet); byDeviceId: the device whose setup evicted or replaced it.",
            "properties": {
                "endReason": {"type": "string", "enum": reasons},
                "endedAt": {"type": "string", "format": "date-time"},
                "byDeviceId": _nullable({"type": "string"}),
            },
        },
        "SetupRequest": {
            "type": "object",
            "required": ["content"],
            "properties": {
                "content": {
                    "type": "object",
                    "required": ["contentID", "contentType"],
                    "properties": {
                        "contentID": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": bodies.MAX_CONTENT_ID_LENGTH,
                            "pattern": bodies.CONTENT_ID_PATTERN,
                            "description": "At least one character that is not blank "
                            "(the pattern lists the blank ones).",
                        },
                        "contentType": {
                            "type": "string",
                            "enum": list(settings.sessions.content_types),
                            "description": "One of the configured content types "
                            "(sessions.content_types).",
                        },
                    },
                },
                "quality": {
                    "type": "string",
                    "nullable": True,
                    "enum": [*qualities, None],
                    "description": "Extension: the stream's quality, for limit rules; "
                    "absent or null: none, which matches no quality rule.",
                },
                "replaces": {
                    "type": "string",
                    "nullable": True,
                    "format": "uuid",
                    "description": "Extension: a sessionId of the caller's account to end "
                    "(REPLACED) in the same step, only if this setup then succeeds; null: "
                    "as if absent.",
                },
                "playbackId": {
                    "type": "string",
                    "nullable": True,
                    "minLength": 1,
                    "maxLength": bodies.MAX_PLAYBACK_ID_LENGTH,
                    "description": "Extension: the player's id of this playback, fresh per "
                    "playback and the same on every retry. A setup naming the playbackId of "
                    "an ACTIVE session of the same account and device joins it: the answer "
                    "is that session's sessionId, no slot is counted, and its deadline moves "
                    "as on a keep-alive. null: as if absent.",
                },
            },
        },
        "SetupSuccess": _setup_success(settings.sessions.timeout, settings.cdn.enabled),
        "KeepAliveSuccess": {
            "type": "object",
            "required": ["cdnToken"],
            "additionalProperties": False,
            "properties": {"cdnToken": _CDN_TOKEN},
        },
        "Revocations": {
            "type": "object",
            "additionalProperties": False,
            "required": ["revoked", "next"],
            "properties": {
                "revoked": {
                    "type": "array",
                    "description": "Sessions ended by anyone but their own player (EVICTED, "
                    "REPLACED, OPERATOR, a device removal) while a token issued to them was "
                    "valid; an entry may come again in the next poll, never missed",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["sessionId", "endedAt", "endReason", "until"],
                        "properties": {
                            "sessionId": {"type": "string", "format": "uuid"},
                            "endedAt": {"type": "string", "format": "date-time"},
                            "endReason": {
                                "type": "string",
                                "enum": ["EVICTED", "REPLACED", "OPERATOR"],
                            },
                            "until": {
                                "type": "integer",
                                "description": "The token's exp (epoch seconds): refuse the "
                                "session's id until then",
                            },
                        },
                    },
                },
                "next": {
                    "type": "string",
                    "description": "The cursor of the next poll (opaque)",
                },
            },
        },
        "Session": session,
        "SessionList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["sessions", "activeCount", "maxSessions", "next"],
            "description": "One page of the account's sessions, ACTIVE ones first; "
            "activeCount and maxSessions are the account's.",
            "properties": {
                "sessions": {
                    "type": "array",
                    "maxItems": listing.MAX_PAGE,
                    "items": _ref("schemas", "Session"),
                },
                "activeCount": {"type": "integer", "minimum": 0},
                "maxSessions": {"type": "integer", "minimum": 0},
                "next": _nullable(
                    {
                        "type": "string",
                        "minLength": 1,
                        "description": "Pass as ?cursor= for the next page; null on the last",
                    }
                ),
            },
        },
        "LimitRequest": {
            "type": "object",
            "description": "maxSessions, rules, or both; a rule name that is not configured "
            "is SRM-0002 and changes nothing.",
            "anyOf": [{"required": ["maxSessions"]}, {"required": ["rules"]}],
            "properties": {
                "maxSessions": {"type": "integer", "minimum": 0, "maximum": bodies.MAX_LIMIT},
                "rules": {
                    "type": "object",
                    "description": "Configured rule name -> per-account max (null removes "
                    "the override)",
                    "additionalProperties": False,
                    "properties": {
                        rule.name: _nullable(
                            {"type": "integer", "minimum": 0, "maximum": bodies.MAX_LIMIT}
                        )
                        for rule in settings.sessions.rules
                    },
                },
            },
        },
        "Limit": {
            "type": "object",
            "additionalProperties": False,
            "required": ["maxSessions", "override", "rules"],
            "properties": {
                "maxSessions": {"type": "integer", "minimum": 0},
                "override": {"type": "boolean"},
                "rules": {
                    "type": "object",
                    "description": "Every configured limit rule: its max for this account",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["max", "override"],
                        "properties": {
                            "max": {"type": "integer", "minimum": 0},
                            "override": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "Usage": {
            "type": "object",
            "additionalProperties": False,
            "required": ["accountId", "days"],
            "properties": {
                "accountId": {"type": "string"},
                "days": {
                    "type": "array",
                    "description": "One entry per UTC day, newest first",
                    "items": _ref("schemas", "DayUsage"),
                },
            },
        },
        "DayUsage": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "date",
                "started",
                "denied",
                "ended",
                "watchedSeconds",
                "peakActive",
                "devicesRegistered",
                "flagged",
            ],
            "properties": {
                "date": {"type": "string", "format": "date"},
                "started": count,
                "denied": count,
                "ended": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": list(USAGE_REASONS),
                    "properties": {reason: count for reason in USAGE_REASONS},
                },
                "watchedSeconds": {
                    **count,
                    "description": "endedAt - createdAt of the sessions that ended that day",
                },
                "peakActive": {
                    **count,
                    "description": "The most sessions active at once seen by a change that day",
                },
                "devicesRegistered": {
                    **count,
                    "description": "Devices newly registered that day (devices.max)",
                },
                "flagged": {
                    **count,
                    "description": "Setups flagged by monitor rules that day",
                },
            },
        },
        "DenialReport": {
            "type": "object",
            "additionalProperties": False,
            "required": ["date", "accounts"],
            "properties": {
                "date": {"type": "string", "format": "date"},
                "accounts": {
                    "type": "array",
                    "description": "Most denied first (with flagged=true: most flagged "
                    "first, each entry then carrying `flagged` instead of `denied`)",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["accountId"],
                        "properties": {
                            "accountId": {"type": "string"},
                            "denied": count,
                            "flagged": count,
                        },
                    },
                },
            },
        },
        "Device": {
            "type": "object",
            "additionalProperties": False,
            "required": ["deviceId", "deviceType", "firstSeenAt", "lastSeenAt"],
            "description": "A registered device: its first and latest successful setup",
            "properties": {
                "deviceId": {"type": "string"},
                "deviceType": {"type": "string"},
                "firstSeenAt": {"type": "string", "format": "date-time"},
                "lastSeenAt": {"type": "string", "format": "date-time"},
            },
        },
        "Devices": {
            "type": "object",
            "additionalProperties": False,
            "required": ["devices", "max", "nextRemovalAt"],
            "properties": {
                "devices": {
                    "type": "array",
                    "description": "The registered devices, first registered first",
                    "items": _ref("schemas", "Device"),
                },
                "max": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "devices.max; 0: no device registry",
                },
                "nextRemovalAt": _nullable(
                    {
                        "type": "string",
                        "format": "date-time",
                        "description": "When the swap cooldown allows the next removal; null: now",
                    }
                ),
            },
        },
        "HomeRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["networks"],
            "description": "The account's home networks (an empty list clears them); anything "
            "else is SRM-0002 and changes nothing.",
            "properties": {"networks": _home_networks("CIDRs (host bits are cleared)")},
        },
        "Home": {
            "type": "object",
            "additionalProperties": False,
            "required": ["networks"],
            "properties": {"networks": _home_networks("The account's home networks")},
        },
        "Ended": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ended"],
            "properties": {"ended": {"type": "integer", "minimum": 0}},
        },
        "Status": {
            "type": "object",
            "additionalProperties": False,
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
        },
    }


def _home_networks(description: str) -> Json:
    return {
        "type": "array",
        "maxItems": MAX_HOME_NETWORKS,
        "description": description,
        "items": {"type": "string", "example": "203.0.113.0/24"},
    }


_CDN_TOKEN: Json = {
    "type": "string",
    "description": "An Akamai EdgeAuth (Token Auth 2.0) token bound to the session "
    "(`st~exp~acl~id~hmac`: id the sessionId, exp its deadline plus cdn.slack, acl from "
    "cdn.acl), for the CDN edge ([cdn] only)",
    "example": "st=1780000000~exp=1780000151~acl=/*~id=6f1c0b1e-0d1f-4a55-9a52-6c0ad9c1d6a1"
    "~hmac=8f1c...",
}


def _setup_success(timeout: int, cdn: bool) -> Json:
    """successResponse: the sessionId, the keep-alive period unless keep-alive is off, and
    with [cdn] the session's CDN token."""
    answer: Json = {"sessionId": {"type": "string", "format": "uuid"}}
    if timeout > 0:
        answer["timeout"] = {
            "type": "integer",
            "enum": [timeout],
            "description": "Keep-alive period in seconds (sessions.timeout); absent when "
            "keep-alive is disabled (timeout 0).",
        }
    if cdn:
        answer["cdnToken"] = _CDN_TOKEN
    return {
        "type": "object",
        "required": ["successResponse"],
        "additionalProperties": False,
        "properties": {
            "successResponse": {
                "type": "object",
                "required": sorted(answer),
                "additionalProperties": False,
                "properties": answer,
            }
        },
    }


_REQUEST_ID_HEADER = {"X-Request-ID": _ref("headers", "X-Request-ID")}
_ERROR_HEADERS = {**_REQUEST_ID_HEADER, "X-SRM-Error-Detail": _ref("headers", "X-SRM-Error-Detail")}


def _error_response(description: str, schema: Json | None = None) -> Json:
    return {
        "description": description,
        "headers": _ERROR_HEADERS,
        "content": {JSON: {"schema": schema or _ref("schemas", "ErrorResponse")}},
    }


def _responses() -> Json:
    return {
        "Malformed": _error_response(f"{MalformedRequest.code}: {MalformedRequest.message}"),
        "Unauthenticated": {
            **_error_response(f"{Unauthenticated.code}: {Unauthenticated.message}"),
            "headers": {**_ERROR_HEADERS, "WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
        },
        "NotOperator": _error_response(f"{NotOperator.code}: {NotOperator.message}"),
        "NotFound": _error_response(
            f"{SessionNotFound.code}: no such session for this account (unknown, another "
            f"account's, or removed); {NoSuchPath.code} for a path that does not exist"
        ),
        "MethodNotAllowed": {
            **_error_response(f"{MethodNotAllowed.code}: method not allowed on this path"),
            "headers": {**_ERROR_HEADERS, "Allow": _ref("headers", "Allow")},
        },
        "BodyTooLarge": _error_response(f"{TooLarge.code}: request body over the limit"),
        "HeadersTooLarge": _error_response(
            f"{TooLarge.code}: request line or header block over the limit"
        ),
        "Internal": _error_response(f"{InternalError.code}: unexpected internal error"),
        "TooSoon": {
            **_error_response(
                f"{TooSoon.code}: too soon: a device removal within the account's swap "
                "cooldown (devices.swap_cooldown_days); retry after Retry-After seconds"
            ),
            "headers": {**_ERROR_HEADERS, RETRY_AFTER: _ref("headers", RETRY_AFTER)},
        },
        "TooManySetups": {
            **_error_response(
                f"{TooSoon.code}: too many requests: the account's setups over "
                "limits.setups_per_minute (a sliding minute; denied and joined setups count); "
                "nothing was created or counted as denied; retry after Retry-After seconds"
            ),
            "headers": {**_ERROR_HEADERS, RETRY_AFTER: _ref("headers", RETRY_AFTER)},
        },
        "Unavailable": _error_response(
            f"{StoreUnavailable.code}: the session store is unreachable or did not answer "
            "in time, or (with a JWKS URL) no signing keys could be fetched yet; keep-alive "
            "and teardown are safe to retry"
        ),
        "LicenceServerFailed": _error_response(
            f"{LicenceServerFailed.code}: the DRM licence server answered 5xx (or a redirect, "
            "or an answer over 1 MiB) or could not be reached; the session was kept alive"
        ),
        "LicenceServerTimeout": _error_response(
            f"{LicenceServerFailed.code}: the DRM licence server did not answer within "
            "drm.timeout seconds; the session was kept alive"
        ),
    }


def _ok(description: str, schema: Json | None = None) -> Json:
    answer: Json = {"description": description, "headers": _REQUEST_ID_HEADER}
    if schema is not None:
        answer["content"] = {JSON: {"schema": schema}}
    return answer


def _operation(
    op_id: str,
    summary: str,
    tag: str,
    responses: Json,
    errors: list[tuple[str, str]],
    *,
    path_params: tuple[str, ...] = (),
    query_params: tuple[str, ...] = (),
    body: str | None = None,
) -> Json:
    params = [_ref("parameters", p) for p in (*path_params, *query_params)] + [
        _ref("parameters", "RequestId")
    ]
    security: list[Json] = {
        "client": [{"ClientToken": []}, {"ClientBearer": []}],
        "operator": [{"OperatorKey": []}],
        "service": [],
        "console": [],
    }[tag]
    standard = [_error("HeadersTooLarge"), _error("Internal")]
    op: Json = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "parameters": params,
        "responses": {
            **responses,
            **{status: _ref("responses", name) for status, name in errors + standard},
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _ref("schemas", body)}},
        }
    return op


def _client_paths(prefix: str, suffix: str, settings: Settings) -> Json:
    deny = settings.sessions.deny_status
    success = _ref("schemas", "SetupSuccess")
    denied = _ref("schemas", "Denied")
    setup_answers: Json
    if deny == 200:
        setup_answers = {
            "200": _ok(
                "Created (successResponse), or DENIED at the account's limit (SRM-0005 "
                "errorResponse): clients must check for successResponse",
                {"oneOf": [success, denied]},
            )
        }
    else:
        setup_answers = {
            "200": _ok("Created", success),
            str(deny): _ok("DENIED (SRM-0005): the account is at its limit", denied),
        }
    auth = [_error("Unauthenticated"), _error("Unavailable")]
    by_id = [_error("Malformed"), _error("NotFound"), *auth]
    sid = ("SessionId",)
    return {
        f"{prefix}/sessions": {
            "post": _operation(
                f"setup{suffix}",
                "Session setup: create a session unless the account is at its limit",
                "client",
                setup_answers,
                [_error("Malformed"), _error("BodyTooLarge"), _error("TooManySetups"), *auth],
                query_params=("ForwardedFor",),
                body="SetupRequest",
            ),
            "get": _operation(
                f"listOwnSessions{suffix}",
                "The caller's account's sessions, one page at a time (extension)",
                "client",
                {"200": _ok("A page of the account's sessions", _ref("schemas", "SessionList"))},
                [_error("Malformed"), *auth],
                query_params=PAGE,
            ),
        },
        f"{prefix}/devices": {
            "get": _operation(
                f"listOwnDevices{suffix}",
                "The caller's account's registered devices (extension)",
                "client",
                {"200": _ok("The device registry", _ref("schemas", "Devices"))},
                auth,
            ),
        },
        f"{prefix}/devices/{{deviceId}}": {
            "delete": _operation(
                f"removeOwnDevice{suffix}",
                "Unregister a device of the caller's account and end its active sessions "
                "(endReason OPERATOR), at most once per swap cooldown (extension)",
                "client",
                {"200": _ok("How many sessions this call ended", _ref("schemas", "Ended"))},
                [_error("Malformed"), _error("NotFound"), _error("TooSoon"), *auth],
                path_params=("DeviceId",),
            ),
        },
        f"{prefix}/sessions/{{sessionId}}": {
            "get": _operation(
                f"getOwnSession{suffix}",
                "One session of the caller's account (extension)",
                "client",
                {"200": _ok("The session", _ref("schemas", "Session"))},
                by_id,
                path_params=sid,
            ),
            "put": _operation(
                f"keepAlive{suffix}",
                "Keep-alive: the session's deadline becomes now + timeout",
                "client",
                {
                    "200": _ok(
                        "Kept alive, with the session's new CDN token",
                        _ref("schemas", "KeepAliveSuccess"),
                    )
                    if settings.cdn.enabled
                    else _ok("Kept alive (empty body)")
                },
                by_id,
                path_params=sid,
            ),
            "delete": _operation(
                f"teardown{suffix}",
                "Teardown: end the session (idempotent until it is removed)",
                "client",
                {"200": _ok("Ended (empty body)")},
                by_id,
                path_params=sid,
            ),
        },
    }


def _licence_paths(prefix: str, suffix: str, settings: Settings) -> Json:
    """POST {prefix}/license/{sessionId}: present only with [drm] configured."""
    passed_back = {
        "description": "The licence server's answer, passed back as it is: its status, body "
        "and Content-Type byte for byte",
        "headers": _REQUEST_ID_HEADER,
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in (licence.OCTET_STREAM, "*/*")
        },
    }
    refused = {
        **passed_back,
        "description": "The licence server refused the challenge (its 4xx, passed back as it "
        "is). SRM's own 4xx answers (400, 401, 404, 413) are errorResponses; a licence "
        "server's answer of the same status carries the licence server's body instead",
    }
    op = _operation(
        f"license{suffix}",
        "DRM licence: the session's keep-alive, then the CDM's licence challenge forwarded to "
        "the licence server with an upfront token naming the session (extension, with [drm])",
        "client",
        {"2XX": passed_back, "4XX": refused},
        [
            _error("Malformed"),
            _error("NotFound"),
            _error("BodyTooLarge"),
            _error("Unauthenticated"),
            _error("Unavailable"),
            _error("LicenceServerFailed"),
            _error("LicenceServerTimeout"),
        ],
        path_params=("SessionId",),
    )
    op["description"] = (
        "Moves the session's deadline exactly as a keep-alive does. Only when that succeeded "
        "is the body forwarded to drm.upstream_url, with the configured headers and a JWT in "
        f"the header {settings.drm.token_header} (signed with drm.token_key; claims sessionId, "
        f"accountId, deviceId, contentID, iat and exp, {licence.TOKEN_SECONDS} s later). An "
        "ended, lapsed, unknown or another account's session answers 404 SRM-0004 (with "
        "`ended` while an ended session is not removed yet) and nothing is forwarded."
    )
    op["requestBody"] = {
        "required": True,
        "description": "The CDM's licence challenge, opaque bytes (not empty); forwarded with "
        "its Content-Type",
        "content": {
            licence.OCTET_STREAM: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "minLength": 1,
                    "maxLength": settings.server.max_body_bytes,
                }
            }
        },
    }
    return {f"{prefix}/license/{{sessionId}}": {"post": op}}


def _operator_paths(prefix: str, suffix: str, settings: Settings) -> Json:
    errors = [_error("Malformed"), _error("NotOperator"), _error("Unavailable")]
    acct = ("AccountId",)
    limit = _ref("schemas", "Limit")
    home = _ref("schemas", "Home")
    paths: Json = {}
    if settings.cdn.enabled:
        paths[f"{prefix}/revocations"] = {
            "get": _operation(
                f"getRevocations{suffix}",
                "The revocation feed of CDN tokens: sessions an edge must refuse until their "
                "token expires ([cdn] only; without it 404)",
                "operator",
                {"200": _ok("One poll of the feed", _ref("schemas", "Revocations"))},
                errors,
                query_params=("RevocationCursor",),
            ),
        }
    return paths | {
        f"{prefix}/accounts/{{accountId}}/sessions": {
            "get": _operation(
                f"listAccountSessions{suffix}",
                "Any account's sessions, one page at a time",
                "operator",
                {"200": _ok("A page of the account's sessions", _ref("schemas", "SessionList"))},
                errors,
                path_params=acct,
                query_params=PAGE,
            ),
            "delete": _operation(
                f"endAccountSessions{suffix}",
                "End every active session of the account (endReason OPERATOR)",
                "operator",
                {"200": _ok("How many sessions this call ended", _ref("schemas", "Ended"))},
                errors,
                path_params=acct,
            ),
        },
        f"{prefix}/accounts/{{accountId}}/devices/{{deviceId}}/sessions": {
            "delete": _operation(
                f"endDeviceSessions{suffix}",
                "End every active session of one device of the account (endReason OPERATOR)",
                "operator",
                {"200": _ok("How many sessions this call ended", _ref("schemas", "Ended"))},
                errors,
                path_params=("AccountId", "DeviceId"),
            ),
        },
        f"{prefix}/accounts/{{accountId}}/devices": {
            "get": _operation(
                f"listAccountDevices{suffix}",
                "The account's registered devices",
                "operator",
                {"200": _ok("The device registry", _ref("schemas", "Devices"))},
                errors,
                path_params=acct,
            ),
        },
        f"{prefix}/accounts/{{accountId}}/devices/{{deviceId}}": {
            "delete": _operation(
                f"removeAccountDevice{suffix}",
                "Unregister a device of the account and end its active sessions (endReason "
                "OPERATOR); force=true skips the swap cooldown",
                "operator",
                {"200": _ok("How many sessions this call ended", _ref("schemas", "Ended"))},
                [*errors, _error("NotFound"), _error("TooSoon")],
                path_params=("AccountId", "DeviceId"),
                query_params=("Force",),
            ),
        },
        f"{prefix}/accounts/{{accountId}}/home": {
            "get": _operation(
                f"getHome{suffix}",
                "The account's home networks",
                "operator",
                {"200": _ok("The home networks", home)},
                errors,
                path_params=acct,
            ),
            "put": _operation(
                f"setHome{suffix}",
                f"Set the account's home networks (0 to {MAX_HOME_NETWORKS} CIDRs)",
                "operator",
                {"200": _ok("The new home networks", home)},
                [*errors, _error("BodyTooLarge")],
                path_params=acct,
                body="HomeRequest",
            ),
            "delete": _operation(
                f"clearHome{suffix}",
                "Clear the account's home networks: its sessions have no location",
                "operator",
                {"200": _ok("No home networks", home)},
                errors,
                path_params=acct,
            ),
        },
        f"{prefix}/accounts/{{accountId}}/sessions/{{sessionId}}": {
            "delete": _operation(
                f"endAccountSession{suffix}",
                "End one session of the account (endReason OPERATOR), idempotently",
                "operator",
                {"200": _ok("Ended (empty body)")},
                [*errors, _error("NotFound")],
                path_params=("AccountId", "SessionId"),
            ),
        },
        f"{prefix}/accounts/{{accountId}}/usage": {
            "get": _operation(
                f"getUsage{suffix}",
                "The account's usage per UTC day: started, denied, ended by reason, watched "
                "seconds, peak active",
                "operator",
                {"200": _ok("The usage report", _ref("schemas", "Usage"))},
                errors,
                path_params=acct,
                query_params=("Days",),
            ),
        },
        f"{prefix}/reports/denials": {
            "get": _operation(
                f"getDenials{suffix}",
                "The accounts most often denied at their limit on one UTC day (flagged=true: "
                "most often flagged by monitor rules)",
                "operator",
                {"200": _ok("The denial report", _ref("schemas", "DenialReport"))},
                errors,
                query_params=("Date", "Top", "Flagged"),
            ),
        },
        f"{prefix}/accounts/{{accountId}}/limit": {
            "get": _operation(
                f"getLimit{suffix}",
                "The account's session limit and whether it is an override",
                "operator",
                {"200": _ok("The limit", limit)},
                errors,
                path_params=acct,
            ),
            "put": _operation(
                f"setLimit{suffix}",
                "Set per-account overrides of the limit and of limit rules (0 allows none)",
                "operator",
                {"200": _ok("The new limit", limit)},
                [*errors, _error("BodyTooLarge")],
                path_params=acct,
                body="LimitRequest",
            ),
            "delete": _operation(
                f"clearLimit{suffix}",
                "Remove every override: the configured limits apply again",
                "operator",
                {"200": _ok("The default limit", limit)},
                errors,
                path_params=acct,
            ),
        },
    }


def _service_paths(prefixes: list[tuple[str, str]]) -> Json:
    status = _ref("schemas", "Status")
    text = {
        "description": "Prometheus text exposition format (metrics named srm_...)",
        "headers": _REQUEST_ID_HEADER,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    openapi = {
        "description": "This document",
        "headers": _REQUEST_ID_HEADER,
        "content": {JSON: {"schema": {"type": "object"}}},
    }
    paths: Json = {
        "/health": {
            "get": _operation(
                "health", "200 while the process is up", "service", {"200": _ok("Up", status)}, []
            )
        },
        "/ready": {
            "get": _operation(
                "ready",
                "200 when the store answers (and, with a JWKS URL, signing keys were fetched): "
                "the signal that the service can take traffic",
                "service",
                {"200": _ok("Ready", status)},
                [_error("Unavailable")],
            )
        },
        "/metrics": {
            "get": _operation("metrics", "Prometheus metrics", "service", {"200": text}, [])
        },
    }
    for prefix, suffix in prefixes:
        paths[f"{prefix}/openapi.json"] = {
            "get": _operation(
                f"openapi{suffix}", "This OpenAPI document", "service", {"200": openapi}, []
            )
        }
    return paths


def _console_paths(prefixes: list[tuple[str, str]]) -> Json:
    headers = {
        **_REQUEST_ID_HEADER,
        **{name: _ref("headers", name) for name in console.HEADERS},
    }
    files = [
        (path, f"{op_id}{suffix}", summary, media)
        for prefix, suffix in prefixes
        for path, (op_id, summary, media) in zip(
            console.paths(prefix),
            (
                ("consolePage", "The operator console (a web page)", "text/html"),
                ("consoleStylesheet", "The console's stylesheet", "text/css"),
                ("consoleScript", "The console's script", "text/javascript"),
            ),
            strict=True,
        )
    ]
    return {
        path: {
            "get": _operation(
                op_id,
                summary,
                "console",
                {
                    "200": {
                        "description": summary,
                        "headers": headers,
                        "content": {media: {"schema": {"type": "string"}}},
                    }
                },
                [],
            )
        }
        for path, op_id, summary, media in files
    }


def _console_headers() -> Json:
    return {
        name: {
            "description": "Served with every file of the console",
            "required": True,
            "schema": {"type": "string", "enum": [value]},
        }
        for name, value in console.HEADERS.items()
    }


def document(settings: Settings, prefixes: tuple[str, ...]) -> Json:
    """The OpenAPI 3.0 document of SRM as configured by *settings*, served on *prefixes*."""
    # operationIds must be unique: /srm/v1/... gets the suffix V1, the latest prefix none
    named = [(p, p.rpartition("/")[2].upper() if p.count("/") > 1 else "") for p in prefixes]
    paths: Json = {}
    for prefix, suffix in named:
        paths.update(_client_paths(prefix, suffix, settings))
        paths.update(_operator_paths(prefix, suffix, settings))
        if settings.drm.enabled:
            paths.update(_licence_paths(prefix, suffix, settings))
    paths.update(_service_paths(named))
    paths.update(_console_paths(named))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "SRM - Session Resource Manager",
            "version": __version__,
            "description": "Concurrent-stream limits for OTT video accounts. Every client "
            "path exists under /srm (latest) and /srm/v1. Every error, on every path, is an "
            "errorResponse; an unknown path answers 404 SRM-0010 and a method a path does "
            "not have answers 405 SRM-0007.",
        },
        "tags": [
            {"name": "client", "description": "OpenTV SRM client calls (Client-Token)"},
            {"name": "operator", "description": "Operator calls (extension)"},
            {"name": "service", "description": "Health, readiness, metrics (extension)"},
            {
                "name": "console",
                "description": "The operator console: a page calling the operator endpoints "
                "(extension)",
            },
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ClientToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Client-Token",
                    "description": "A JWT with accountId, deviceId and exp claims",
                },
                "ClientBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Alias of Client-Token: Authorization: Bearer <token>",
                },
                "OperatorKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An operator key (SRM_OPERATOR_KEYS); never a client token",
                },
            },
            "parameters": {
                "SessionId": {
                    "name": "sessionId",
                    "in": "path",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "format": "uuid",
                        "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        "[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                    },
                },
                "AccountId": _id_parameter("accountId"),
                "DeviceId": _id_parameter("deviceId"),
                "Days": {
                    "name": "days",
                    "in": "query",
                    "required": False,
                    "description": "How many UTC days, today included",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": USAGE_DAYS,
                        "default": bodies.DEFAULT_USAGE_DAYS,
                    },
                },
                "Date": {
                    "name": "date",
                    "in": "query",
                    "required": False,
                    "description": f"A UTC day of the last {USAGE_DAYS} (default today)",
                    "schema": {"type": "string", "format": "date"},
                },
                "Top": {
                    "name": "top",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": bodies.MAX_TOP,
                        "default": bodies.DEFAULT_TOP,
                    },
                },
                "Limit": {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "Sessions per page (default "
                    f"{listing.DEFAULT_LIMIT}); anything else than 1..{listing.MAX_PAGE} is "
                    "SRM-0002",
                    "schema": {"type": "integer", "minimum": 1, "maximum": listing.MAX_PAGE},
                },
                "Force": {
                    "name": "force",
                    "in": "query",
                    "required": False,
                    "description": "true: skip the swap cooldown (and start none); false (the "
                    "default): keep it; any other value is SRM-0002",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
                "RevocationCursor": {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "description": "The `next` of the previous poll (opaque); absent: every "
                    "revocation still valid. One that this service did not give out is SRM-0002",
                    "schema": {"type": "string", "minLength": 1},
                },
                "Flagged": {
                    "name": "flagged",
                    "in": "query",
                    "required": False,
                    "description": "true: rank accounts by setups flagged by monitor rules "
                    "(mode = monitor) instead of denied ones; false (the default): denied; any "
                    "other value is SRM-0002",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
                "Cursor": {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "description": "The `next` of the previous page (opaque); one that this "
                    "service did not make is SRM-0002",
                    "schema": {"type": "string", "minLength": 1},
                },
                "ForwardedFor": {
                    "name": "X-Forwarded-For",
                    "in": "header",
                    "required": False,
                    "description": "Extension: believed only from a peer in "
                    "network.trusted_proxies (SRM_TRUSTED_PROXIES), whose right-most address "
                    "that is not a trusted proxy is then the client's; ignored otherwise",
                    "schema": {"type": "string"},
                },
                "RequestId": {
                    "name": "X-Request-ID",
                    "in": "header",
                    "required": False,
                    "description": "Echoed back when at most 128 characters of "
                    "[A-Za-z0-9._:@+/=-]; otherwise a new id is generated",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "X-Request-ID": {
                    "description": "The request's id, as logged",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                "Allow": {
                    "description": "The methods the path has (on 405 SRM-0007)",
                    "schema": {"type": "string"},
                },
                "X-SRM-Error-Detail": {
                    "description": "A short, non-secret explanation of an error, the body's "
                    "`detail` in ASCII (extension)",
                    "schema": {"type": "string"},
                },
                RETRY_AFTER: {
                    "description": "Whole seconds before the request may succeed (on 429 SRM-0011)",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                },
                "WWW-Authenticate": {
                    "description": "The challenge of a 401 (RFC 9110)",
                    "required": True,
                    "schema": {"type": "string", "enum": [CHALLENGE]},
                },
                **_console_headers(),
            },
            "responses": _responses(),
            "schemas": _schemas(settings),
        },
    }


def document_bytes(settings: Settings, prefixes: tuple[str, ...]) -> bytes:
    return orjson.dumps(document(settings, prefixes))
