"""The account hash as Python reads it: session records and usage days.

``srm/lua/_account.lua`` writes them and describes the layout; this module is its reader, so
the two change together (tests/test_records.py holds them to each other).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from srm.model import (
    DEFAULT_DEVICE_TYPE,
    NO_TIMEOUT_MS,
    USAGE_REASONS,
    DayUsage,
    Ended,
    EndReason,
    Session,
    State,
)
from srm.network import Networks

SESSION_ID_LENGTH = 36
COUNT_FIELD = "n"
_REASONS = frozenset(EndReason.__members__)
_NUMBERS = re.compile(r"(-?\d+),(-?\d+),(-?\d+)(?:,(-?\d+),([A-Z]+))?;", re.ASCII)
_LENGTH = re.compile(rb"(\d+):")  # a string's byte length, ASCII digits only
# usage fields in their packed order (USAGE in _events.lua); trailing zeros are left out
_USAGE_ORDER = ("started", "peak", "watched", "denied", *USAGE_REASONS, "registered", "flagged")
LOCATIONS = {"h": "home", "a": "away"}  # '-': the account had no home network


@dataclass(frozen=True, slots=True)
class Record:
    """A session record of the account hash (times in ms)."""

    created: int
    keep_alive: int
    deadline: int
    device_id: str
    content_id: str
    content_type: str
    device_type: str  # '' for the default
    quality: str
    groups: str
    ended_at: int | None = None
    reason: EndReason | None = None
    by_device_id: str = ""
    where: bytes = b""  # location at setup and network (_account.lua); b"": not known
    playback_id: str = ""
    flagged: str = ""  # the monitor rules that flagged its setup, comma-separated

    @property
    def network(self) -> bytes:
        """The network of the client at setup, as the store keeps it (srm/network.py)."""
        return self.where[1:]

    @property
    def location(self) -> str | None:
        """ "home" or "away" at setup; None when the account had no home network."""
        return LOCATIONS.get(chr(self.where[0])) if self.where else None

    @property
    def ended(self) -> Ended | None:
        if self.reason is None or self.ended_at is None:
            return None
        return Ended(self.reason, self.ended_at, self.by_device_id or None)


def is_session_field(field: str) -> bool:
    """Whether a field of the account hash is a session record (is_record in _account.lua):
    a rule counter ``=<rule>:<group>`` may be as long as a sessionId."""
    return len(field) == SESSION_ID_LENGTH and field[0] not in "=>"


def parse(value: str) -> Record | None:
    """The record *value* holds; None for a tombstone or an unreadable value
    (never an error: a partial or foreign value reads as no session)."""
    match = _NUMBERS.match(value)
    if match is None:
        return None
    created, ka_off, deadline_off, ended_off, reason_text = match.groups()
    raw = value.encode("utf-8", "surrogateescape")  # the bytes Redis holds (network.to_bytes)
    parts = _strings(raw, len(match.group(0).encode()))
    parts += [b""] * (10 - len(parts))  # a damaged or older record: '' for what it lacks
    strings = [part.decode(errors="replace") for part in parts[:7]]
    # an ENDED record has byDeviceId where an ACTIVE one has its extras (_account.lua)
    extras = parts[7:10] if reason_text is not None else parts[6:9]
    created_ms = int(created)
    ka = created_ms + int(ka_off)
    reason = None
    if reason_text is not None:
        try:
            reason = EndReason(reason_text)
        except ValueError:
            return None
    return Record(
        created=created_ms,
        keep_alive=ka,
        deadline=ka + int(deadline_off),
        device_id=strings[0],
        content_id=strings[1],
        content_type=strings[2],
        device_type=strings[3],
        quality=strings[4],
        groups=strings[5],
        ended_at=created_ms + int(ended_off) if ended_off is not None else None,
        reason=reason,
        by_device_id=strings[6] if reason is not None else "",
        where=extras[0],
        playback_id=extras[1].decode(errors="replace"),
        flagged=extras[2].decode(errors="replace"),
    )


def classify(value: str) -> tuple[int, bool] | None:
    """(deadline, ENDED) of a record, from its numbers alone (what a listing sorts by); None
    where parse() finds no session."""
    match = _NUMBERS.match(value)
    if match is None:
        return None
    created, ka_off, deadline_off, _ended_off, reason = match.groups()
    if reason is not None and reason not in _REASONS:
        return None
    return int(created) + int(ka_off) + int(deadline_off), reason is not None


def _strings(raw: bytes, pos: int) -> list[bytes]:
    """The length-prefixed strings of a record from byte *pos* on, up to the first damaged
    one (record_strings in _account.lua reads them the same way)."""
    out = []
    while (prefix := _LENGTH.match(raw, pos)) is not None:
        start = prefix.end()
        n = int(prefix.group(1))
        out.append(raw[start : start + n])
        pos = start + n
    return out


def session(
    session_id: str, value: str | None, now: int, account_id: str, networks: Networks
) -> Session | None:
    """The session as callers see it; None when *value* is no session (missing, a tombstone,
    a damaged one). A lapsed ACTIVE record reads as ENDED with TIMEOUT at its deadline.
    *networks* shows its network (with the configured prefix)."""
    record = parse(value) if value is not None else None
    return session_of(session_id, record, now, account_id, networks)


def session_of(
    session_id: str, record: Record | None, now: int, account_id: str, networks: Networks
) -> Session | None:
    """The session a parsed record stands for (see session)."""
    if record is None:
        return None
    state, reason, ended_at, expires_at = State.ACTIVE, None, None, None
    if record.reason is not None:
        state, reason, ended_at = State.ENDED, record.reason, record.ended_at
    elif record.deadline <= now:
        state, reason, ended_at = State.ENDED, EndReason.TIMEOUT, record.deadline
    elif record.deadline - record.keep_alive < NO_TIMEOUT_MS:
        expires_at = record.deadline
    return Session(
        session_id=session_id,
        account_id=account_id,
        device_id=record.device_id,
        content_id=record.content_id,
        content_type=record.content_type,
        state=state,
        created_at=record.created,
        last_keep_alive_at=record.keep_alive,
        expires_at=expires_at,
        ended_at=ended_at,
        end_reason=reason,
        device_type=record.device_type or DEFAULT_DEVICE_TYPE,
        quality=record.quality or None,
        network=networks.network_text(record.network),
        location=record.location,
        flagged=tuple(filter(None, record.flagged.split(","))),
    )


_REF = re.compile(r"([\w-]+)/?([dcn]?)\+?([dn]?)", re.ASCII)


def group_fields(record: Record) -> list[tuple[str, str | None]]:
    """The rule groups an ACTIVE record counts in, each as (counter field, value field or
    None), as group_fields in _account.lua builds them (byte strings shown as Redis replies
    decode them: UTF-8 with surrogateescape)."""
    out: list[tuple[str, str | None]] = []
    net = record.network
    for ref in filter(None, record.groups.split(",")):
        match = _REF.fullmatch(ref)
        if match is None:
            continue
        name, per, count = match.groups()
        group = {"d": record.device_id.encode(), "c": record.content_id.encode(), "n": net}.get(
            per, b""
        )
        if not count:
            out.append((_text(b"=" + name.encode() + b":" + group), None))
            continue
        kind = b"=" + name.encode() + b"+" + count.encode()
        value = record.device_id.encode() if count == "d" else net
        out.append((_text(kind + b":" + group), _text(kind + b"#%d:" % len(group) + group + value)))
    return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def ended_text(value: str) -> Ended:
    """keepalive.lua's answer for a session that ended: ``REASON|endedAtMs[|byDeviceId]``."""
    reason, _, rest = value.partition("|")
    at, sep, by = rest.partition("|")
    return Ended(EndReason(reason), int(float(at)), by if sep else None)


def is_day_field(field: str) -> bool:
    return field.isdigit() and field.isascii()


def day_usage(day: int, packed: str) -> DayUsage:
    """A usage day field's value (see usage_add in _events.lua)."""
    numbers = [int(part) for part in packed.split(",") if part]
    v = dict(zip(_USAGE_ORDER, numbers + [0] * (len(_USAGE_ORDER) - len(numbers)), strict=False))
    return DayUsage(
        day=day,
        started=v["started"],
        denied=v["denied"],
        ended=tuple(v[reason] for reason in USAGE_REASONS),
        watched_ms=v["watched"],
        peak_active=v["peak"],
        registered=v["registered"],
        flagged=v["flagged"],
    )
