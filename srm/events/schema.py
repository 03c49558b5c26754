"""A stream entry (see lua/_events.lua) as the event of the contract (API.md, "Events")."""

from __future__ import annotations

from typing import Any

from srm import network
from srm.api.bodies import iso
from srm.model import DEFAULT_DEVICE_TYPE
from srm.network import Networks
from srm.records import LOCATIONS

TYPES = {
    "S": "session.started",
    "E": "session.ended",
    "D": "session.denied",
    "L": "limit.changed",
    "R": "device.registered",
    "X": "device.removed",
    "H": "home.changed",
}
SESSION_TYPES = frozenset("SED")  # the events of a setup or a session: they say where it was
DEVICE_TYPES = frozenset("SEDRX")  # the events that name a device (with its type)
_DEFAULT_NETWORKS = Networks()


def event_id(shard: int, entry_id: str) -> str:
    """Unique per change and the same on every delivery: the shard and the entry's id."""
    return f"s{shard}-{entry_id}"


def _text(value: str | None) -> str | None:
    return value or None


def where(value: str | bytes | None, networks: Networks) -> tuple[str | None, str | None]:
    """(network, location) of an event's ``w``: a location byte (h home, a away, - no home
    network) then the network's 4 or 8 bytes, as records hold them; (None, None) for ''."""
    raw = network.to_bytes(value or b"")
    if not raw:
        return None, None
    return networks.network_text(raw[1:]), LOCATIONS.get(chr(raw[0]))


def event(
    shard: int, entry_id: str, f: dict[str, str], networks: Networks = _DEFAULT_NETWORKS
) -> dict[str, Any]:
    """The event of stream entry *entry_id* of *shard*, whose fields are *f*; *networks* (the
    [network] settings) shows a network with the configured prefix."""
    t = f.get("t", "")
    kind = TYPES.get(t, "unknown")
    body: dict[str, Any] = {
        "id": event_id(shard, entry_id),
        "type": kind,
        "at": iso(int(f["at"])) if f.get("at") else None,
        "accountId": _text(f.get("a")),
        "deviceId": _text(f.get("d")),
        # a session without a device type in its token has the default one
        "deviceType": (f.get("dt") or DEFAULT_DEVICE_TYPE) if t in DEVICE_TYPES else None,
        "sessionId": _text(f.get("s")),
        "contentID": _text(f.get("c")),
        "contentType": _text(f.get("ct")),
        "quality": _text(f.get("q")),
    }
    if t in SESSION_TYPES:
        body["network"], body["location"] = where(f.get("w"), networks)
    if kind == "session.started":
        # the monitor rules that would have denied or evicted for this setup (x: "r1,r2")
        body["flagged"] = [rule for rule in (f.get("x") or "").split(",") if rule]
    elif kind == "session.ended":
        body["endReason"] = f.get("x")
        body["durationSeconds"] = int(float(f.get("n") or 0)) / 1000
    elif kind == "session.denied":
        body["rule"] = f.get("x")
    elif kind == "limit.changed":
        body["rule"] = f.get("x")
        body["maxSessions"] = int(f["n"]) if f.get("n") else None
    elif kind == "device.removed":
        body["reason"] = f.get("x")
    elif kind == "home.changed":
        body["networks"] = network.unpack_home(network.to_bytes(f.get("w") or b""))
        body["reason"] = f.get("x")
    return body
