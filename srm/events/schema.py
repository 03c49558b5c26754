"""A stream entry (see lua/_events.lua) as the event of the contract (API.md, "Events")."""

from __future__ import annotations

from typing import Any

from srm.api.bodies import iso
from srm.model import DEFAULT_DEVICE_TYPE

TYPES = {
    "S": "session.started",
    "E": "session.ended",
    "D": "session.denied",
    "L": "limit.changed",
}


def event_id(shard: int, entry_id: str) -> str:
    """Unique per change and the same on every delivery: the shard and the entry's id."""
    return f"s{shard}-{entry_id}"


def _text(value: str | None) -> str | None:
    return value or None


def event(shard: int, entry_id: str, f: dict[str, str]) -> dict[str, Any]:
    kind = TYPES.get(f.get("t", ""), "unknown")
    body: dict[str, Any] = {
        "id": event_id(shard, entry_id),
        "type": kind,
        "at": iso(int(f["at"])) if f.get("at") else None,
        "accountId": _text(f.get("a")),
        "deviceId": _text(f.get("d")),
        # a session without a device type in its token has the default one
        "deviceType": (f.get("dt") or DEFAULT_DEVICE_TYPE)
        if f.get("t") in ("S", "E", "D")
        else None,
        "sessionId": _text(f.get("s")),
        "contentID": _text(f.get("c")),
        "contentType": _text(f.get("ct")),
        "quality": _text(f.get("q")),
    }
    if kind == "session.ended":
        body["endReason"] = f.get("x")
        body["durationSeconds"] = int(float(f.get("n") or 0)) / 1000
    elif kind == "session.denied":
        body["rule"] = f.get("x")
    elif kind == "limit.changed":
        body["rule"] = f.get("x")
        body["maxSessions"] = int(f["n"]) if f.get("n") else None
    return body
