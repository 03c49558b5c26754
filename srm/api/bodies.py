"""JSON shapes of the contract: request parsing and response bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from srm.errors import MalformedRequest
from srm.listing import DEFAULT_LIMIT, MAX_PAGE
from srm.model import AccountSessions, Limit, Session

MAX_CONTENT_ID_LENGTH = 256
MAX_ACCOUNT_ID_LENGTH = 256
MAX_LIMIT = 1_000_000
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def session_id(raw: str) -> str:
    """The canonical (lower-case) form of a sessionId path parameter; SRM-0002 if not a UUID."""
    if len(raw) != 36 or not _UUID.fullmatch(raw):
        raise MalformedRequest("sessionId is not a UUID")
    return raw.lower()


def account_id(raw: str) -> str:
    if not raw or len(raw) > MAX_ACCOUNT_ID_LENGTH:
        raise MalformedRequest("accountId must be 1 to 256 characters")
    return raw


def json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise MalformedRequest("request body is empty")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedRequest("request body is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedRequest("request body is not a JSON object")
    return value


def setup_request(body: bytes, content_types: tuple[str, ...]) -> tuple[str, str]:
    """(contentID, contentType) of a setup body; both are mandatory, as in the SRM."""
    content = json_object(body).get("content")
    if not isinstance(content, dict):
        raise MalformedRequest("content must be an object")
    content_id = content.get("contentID")
    if not isinstance(content_id, str) or not content_id.strip():
        raise MalformedRequest("content.contentID is missing or empty")
    if len(content_id) > MAX_CONTENT_ID_LENGTH:
        raise MalformedRequest("content.contentID is longer than 256 characters")
    content_type = content.get("contentType")
    if not isinstance(content_type, str) or content_type not in content_types:
        raise MalformedRequest(f"content.contentType must be one of {', '.join(content_types)}")
    return content_id, content_type


def limit_request(body: bytes) -> int:
    value = json_object(body).get("maxSessions")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise MalformedRequest(f"maxSessions must be an integer from 0 to {MAX_LIMIT}")
    return value


def page_query(query: Mapping[str, str]) -> tuple[int, str | None]:
    """(limit, cursor) of a listing's query: limit 1..1000 (default 100), cursor opaque."""
    raw = query.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not (
            0 < len(raw) <= 4 and raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_PAGE
        ):
            raise MalformedRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
        limit = int(raw)
    cursor = query.get("cursor")
    if cursor is not None and not cursor:
        raise MalformedRequest("cursor is empty")
    return limit, cursor


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def session(s: Session) -> dict[str, Any]:
    return {
        "sessionId": s.session_id,
        "accountId": s.account_id,
        "deviceId": s.device_id,
        "contentID": s.content_id,
        "contentType": s.content_type,
        "state": s.state.value,
        "createdAt": iso(s.created_at),
        "lastKeepAliveAt": iso(s.last_keep_alive_at),
        "expiresAt": iso(s.expires_at),
        "endedAt": iso(s.ended_at),
        "endReason": s.end_reason.value if s.end_reason else None,
    }


def session_list(listing: AccountSessions) -> bytes:
    return orjson.dumps(
        {
            "sessions": [session(s) for s in listing.sessions],
            "activeCount": listing.active_count,
            "maxSessions": listing.max_sessions,
            "next": listing.next,
        }
    )


def setup_success(sid: str, timeout: int) -> bytes:
    body: dict[str, Any] = {"sessionId": sid}
    if timeout > 0:
        body["timeout"] = timeout
    return orjson.dumps({"successResponse": body})


def limit(value: Limit) -> bytes:
    return orjson.dumps({"maxSessions": value.max_sessions, "override": value.override})
