"""JSON shapes of the contract: request parsing and response bodies."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from srm import network
from srm.auth import DOT_SEGMENTS
from srm.errors import MalformedRequest
from srm.listing import DEFAULT_LIMIT, MAX_PAGE
from srm.model import (
    USAGE_DAYS,
    USAGE_REASONS,
    AccountSessions,
    DayUsage,
    Device,
    Devices,
    Ended,
    Limit,
    Revocations,
    Session,
    State,
)

MAX_CONTENT_ID_LENGTH = 256
MAX_PLAYBACK_ID_LENGTH = 128
# A contentID must hold a character that is not blank. "Blank" is spelled out, one list of
# code points, because regex engines disagree on \s: Python's counts U+001C..U+001F and U+0085,
# ECMAScript's (OpenAPI validators, browsers) U+FEFF instead. The list is every character
# either calls blank; the server's check and the OpenAPI document's pattern are this one text.
CONTENT_ID_PATTERN = (
    r"[^\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000\ufeff]"
)
_CONTENT_ID = re.compile(CONTENT_ID_PATTERN)
MAX_ACCOUNT_ID_LENGTH = 256
MAX_LIMIT = 1_000_000
DEFAULT_USAGE_DAYS = 7
DEFAULT_TOP = 50
MAX_TOP = 1000
_EPOCH = date(1970, 1, 1)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def new_session_id() -> str:
    """A random (version 4) UUID in its canonical text form: what ``str(uuid.uuid4())`` gives,
    at a third of its cost (122 random bits, the version and variant bits set)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"  # the RFC 4122 variant: the two high bits of the 17th hex digit are 10


def session_id(raw: str) -> str:
    """The canonical (lower-case) form of a sessionId path parameter; SRM-0002 if not a UUID."""
    if len(raw) != 36 or not _UUID.fullmatch(raw):
        raise MalformedRequest("sessionId is not a UUID")
    return raw.lower()


def account_id(raw: str) -> str:
    """The accountId of an operator path; SRM-0002 for one that no token can carry."""
    return _path_id(raw, "accountId")


def device_id(raw: str) -> str:
    """The deviceId of an operator path; SRM-0002 for one that no token can carry."""
    return _path_id(raw, "deviceId")


def _path_id(raw: str, name: str) -> str:
    if not raw or len(raw) > MAX_ACCOUNT_ID_LENGTH:
        raise MalformedRequest(f"{name} must be 1 to {MAX_ACCOUNT_ID_LENGTH} characters")
    if raw in DOT_SEGMENTS:
        raise MalformedRequest(f"{name} may not be . or ..")
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


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and building this
# one took 8.5k instructions, a third of a setup body's parse (bench/README.md, Request bodies)
@dataclass(slots=True)
class SetupRequest:
    content_id: str
    content_type: str
    quality: str | None
    replaces: str | None
    playback_id: str | None = None


def setup_request(
    body: bytes, content_types: tuple[str, ...], qualities: tuple[str, ...]
) -> SetupRequest:
    """A setup body: contentID and contentType are mandatory, as in the SRM; quality,
    replaces and playbackId are optional extensions."""
    request = json_object(body)
    content = request.get("content")
    if not isinstance(content, dict):
        raise MalformedRequest("content must be an object")
    content_id = content.get("contentID")
    if not isinstance(content_id, str) or not _CONTENT_ID.search(content_id):
        raise MalformedRequest("content.contentID is missing, empty or blank")
    if len(content_id) > MAX_CONTENT_ID_LENGTH:
        raise MalformedRequest("content.contentID is longer than 256 characters")
    content_type = content.get("contentType")
    if not isinstance(content_type, str) or content_type not in content_types:
        raise MalformedRequest(f"content.contentType must be one of {', '.join(content_types)}")
    quality = request.get("quality")
    if quality is not None and (not isinstance(quality, str) or quality not in qualities):
        raise MalformedRequest(f"quality must be one of {', '.join(qualities)}")
    replaces = request.get("replaces")
    if replaces is not None:
        if not isinstance(replaces, str) or len(replaces) != 36 or not _UUID.fullmatch(replaces):
            raise MalformedRequest("replaces is not a sessionId (UUID)")
        replaces = replaces.lower()
    playback = request.get("playbackId")
    if playback is not None and (
        not isinstance(playback, str) or not 1 <= len(playback) <= MAX_PLAYBACK_ID_LENGTH
    ):
        raise MalformedRequest(
            f"playbackId must be a string of 1 to {MAX_PLAYBACK_ID_LENGTH} characters"
        )
    return SetupRequest(content_id, content_type, quality, replaces, playback)


def _limit_value(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise MalformedRequest(f"{what} must be an integer from 0 to {MAX_LIMIT}")
    return value


def _bounded_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 7 or not low <= int(raw) <= high:
        raise MalformedRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def usage_days(raw: str | None) -> int:
    """The ``days`` query parameter of a usage report: 1..35, default 7."""
    return _bounded_int(raw, "days", DEFAULT_USAGE_DAYS, 1, USAGE_DAYS)


def flag(raw: str | None, name: str) -> bool:
    """A boolean query parameter: absent or ``false`` is False, ``true`` True."""
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise MalformedRequest(f"{name} must be true or false")


def denials_query(raw_date: str | None, raw_top: str | None) -> tuple[int | None, int]:
    """(UTC day or None for today, top) of a denials report query: YYYY-MM-DD, 1..1000."""
    top = _bounded_int(raw_top, "top", DEFAULT_TOP, 1, MAX_TOP)
    if raw_date is None:
        return None, top
    try:
        if not _DATE.fullmatch(raw_date):
            raise ValueError(raw_date)
        return (date.fromisoformat(raw_date) - _EPOCH).days, top
    except ValueError:
        raise MalformedRequest("date must be YYYY-MM-DD") from None


def report_day(day: int | None, today: int) -> int:
    """The day of a denials report: *day* if it is one of the days kept, else SRM-0002."""
    if day is None:
        return today
    if not today - USAGE_DAYS < day <= today:
        raise MalformedRequest(f"date must be one of the last {USAGE_DAYS} days (UTC)")
    return day


def day_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).isoformat()


def usage(account: str, kept: dict[int, DayUsage], today: int, days: int) -> bytes:
    """The usage report: one entry per UTC day, newest first, days without activity too."""
    entries = []
    for day in range(today, today - days, -1):
        u = kept.get(day) or DayUsage(day)
        entries.append(
            {
                "date": day_text(day),
                "started": u.started,
                "denied": u.denied,
                "ended": dict(zip(USAGE_REASONS, u.ended, strict=True)),
                "watchedSeconds": u.watched_ms // 1000,
                "peakActive": u.peak_active,
                "devicesRegistered": u.registered,
                "flagged": u.flagged,
            }
        )
    return orjson.dumps({"accountId": account, "days": entries})


def denial_report(day: int, ranking: list[tuple[str, int]], *, flagged: bool = False) -> bytes:
    """The denials report; *flagged*: the ranking of setups flagged by monitor rules."""
    what = "flagged" if flagged else "denied"
    return orjson.dumps(
        {
            "date": day_text(day),
            "accounts": [{"accountId": a, what: n} for a, n in ranking],
        }
    )


def limit_request(
    body: bytes, rule_names: Collection[str]
) -> tuple[int | None, dict[str, int | None]]:
    """(maxSessions or None, {rule: max or None}) of a limit body; at least one is given,
    every rule name is configured."""
    request = json_object(body)
    if "maxSessions" not in request and "rules" not in request:
        raise MalformedRequest("maxSessions or rules is required")
    max_sessions = None
    if "maxSessions" in request:
        max_sessions = _limit_value(request["maxSessions"], "maxSessions")
    raw = request.get("rules", {})
    if not isinstance(raw, dict):
        raise MalformedRequest("rules must be an object of rule name -> max or null")
    rules: dict[str, int | None] = {}
    for name, value in raw.items():
        if name not in rule_names:
            raise MalformedRequest(f"no limit rule named {name[:64]!r}")
        rules[name] = None if value is None else _limit_value(value, f"rules.{name}")
    return max_sessions, rules


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
        "deviceType": s.device_type,
        "quality": s.quality,
        "network": s.network,
        "location": s.location,
        "flagged": list(s.flagged),
    }


SESSION_FIELDS = (
    "sessionId",
    "accountId",
    "deviceId",
    "contentID",
    "contentType",
    "state",
    "createdAt",
    "lastKeepAliveAt",
    "expiresAt",
    "endedAt",
    "endReason",
    "deviceType",
    "quality",
    "network",
    "location",
    "flagged",
)
DENIED_SESSION_FIELDS = (
    "sessionId",
    "deviceId",
    "deviceType",
    "contentID",
    "contentType",
    "quality",
    "createdAt",
    "lastKeepAliveAt",
    "network",
    "location",
)


def denied_session(s: Session) -> dict[str, Any]:
    """A session counted against the limit that refused a setup (``denial.sessions``)."""
    full = session(s)
    return {name: full[name] for name in DENIED_SESSION_FIELDS}


def denial(
    rule: str, limit: int, sessions: list[Session], devices: list[Device] | None = None
) -> dict[str, Any]:
    """The ``denial`` of an SRM-0005; a denial of the device registry (rule ``devices``) lists
    the registered devices, beside an empty ``sessions``."""
    body: dict[str, Any] = {
        "rule": rule,
        "max": limit,
        "sessions": [denied_session(s) for s in sessions if s.state is State.ACTIVE],
    }
    if devices is not None:  # first registered first, as the registry's listing
        body["devices"] = [device(d) for d in sorted(devices, key=_registered_order)]
    return body


def ended(how: Ended) -> dict[str, Any]:
    return {
        "endReason": how.reason.value,
        "endedAt": iso(how.ended_at),
        "byDeviceId": how.by_device_id,
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


def setup_success(sid: str, timeout: int, cdn_token: str | None = None) -> bytes:
    body: dict[str, Any] = {"sessionId": sid}
    if timeout > 0:
        body["timeout"] = timeout
    if cdn_token is not None:
        body["cdnToken"] = cdn_token
    return orjson.dumps({"successResponse": body})


def keep_alive_success(cdn_token: str) -> bytes:
    return orjson.dumps({"cdnToken": cdn_token})


def revocations(feed: Revocations, cursor: str) -> bytes:
    """The revocation feed's answer; *cursor*: the signed position of the next poll."""
    revoked = [
        {
            "sessionId": r.session_id,
            "endedAt": iso(r.ended_at_ms),
            "endReason": r.reason.value,
            "until": r.until_s,
        }
        for r in feed.revoked
    ]
    return orjson.dumps({"revoked": revoked, "next": cursor})


def revocation_cursor(value: str) -> int:
    """The position inside a revocation cursor the API signed (a time in ms)."""
    if not value.isascii() or not value.isdigit() or len(value) > 15:
        raise MalformedRequest("cursor is not one the revocation feed gave out")
    return int(value)


def limit(value: Limit) -> bytes:
    rules = value.rules or {}
    return orjson.dumps(
        {
            "maxSessions": value.max_sessions,
            "override": value.override,
            "rules": {name: {"max": r.max, "override": r.override} for name, r in rules.items()},
        }
    )


# -- households -----------------------------------------------------------------------------


def home_request(body: bytes) -> list[network.Network]:
    """The home networks of an operator's ``{"networks": [...]}``: 0..4 CIDRs, no other key."""
    request = json_object(body)
    if "networks" not in request:
        raise MalformedRequest("networks is required")
    unknown = sorted(set(request) - {"networks"})
    if unknown:
        raise MalformedRequest(f"unknown key {unknown[0][:64]!r}: the body holds networks only")
    try:
        return network.parse_home(request["networks"])
    except ValueError as exc:
        raise MalformedRequest(str(exc)) from None


def home(networks: list[str]) -> bytes:
    return orjson.dumps({"networks": networks})


def _registered_order(d: Device) -> tuple[int, str]:
    return d.first_seen, d.device_id


def device(d: Device) -> dict[str, Any]:
    return {
        "deviceId": d.device_id,
        "deviceType": d.device_type,
        "firstSeenAt": iso(d.first_seen),
        "lastSeenAt": iso(d.last_seen),
    }


def devices(registry: Devices) -> bytes:
    return orjson.dumps(
        {
            "devices": [device(d) for d in registry.devices],
            "max": registry.max,
            "nextRemovalAt": iso(registry.next_removal_at),
        }
    )


def force_query(raw: str | None) -> bool:
    """The ``force`` query parameter of an operator's device removal (see flag)."""
    return flag(raw, "force")
