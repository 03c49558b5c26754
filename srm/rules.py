"""Limit rules: which sessions a rule counts, in which group, and how the store records it.

A rule counts the ACTIVE sessions that match all its filters (quality, device type, content
type, location; an empty filter matches anything), per account, per (account, deviceId), per
(account, contentID) or per (account, network); it bounds their number, or the number of
distinct devices or networks among them (``count``). Setup decides the groups a new session
counts in and records them with it (in its record, see srm/lua/_account.lua), so ending it
decrements exactly those counters even if the configuration changed meanwhile. The location
filter is applied by setup.lua, which alone knows the account's home networks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ACCOUNT_RULE = "account"  # the name under which a denial by the account limit is reported
DEVICES_RULE = "devices"  # the name under which a denial by the device registry is reported
RESERVED = (ACCOUNT_RULE, DEVICES_RULE)
MAX_RULE_MAX = 1_000_000
PER = ("account", "device", "content", "network")
COUNTS = ("sessions", "devices", "networks")
LOCATIONS = ("home", "away")
POLICIES = ("deny", "evict")
RULE_NAME = re.compile(r"[a-z0-9-]{1,32}")
RULE_KEYS = frozenset(
    {
        "name",
        "max",
        "qualities",
        "device_types",
        "content_types",
        "locations",
        "per",
        "count",
        "policy",
        "mode",
    }
)
MODES = ("enforce", "monitor")
_PER_SUFFIX = {"device": "/d", "content": "/c", "network": "/n"}
_COUNT_SUFFIX = {"devices": "+d", "networks": "+n"}
MAX_DEVICE_TYPE_LENGTH = 64


class RuleError(ValueError):
    """Raised when a [[sessions.rules]] entry is malformed (the message names the rule)."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    max: int
    qualities: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()
    per: str = "account"
    policy: str = "deny"
    locations: tuple[str, ...] = ()  # "home", "away"; empty: anywhere
    count: str = "sessions"  # what max bounds: sessions, distinct devices or networks
    mode: str = "enforce"  # "monitor": never refuses nor evicts, flags the setup instead

    def matches(self, quality: str | None, device_type: str, content_type: str) -> bool:
        """Whether a session with these attributes counts against this rule."""
        if self.qualities and quality not in self.qualities:
            return False
        if self.device_types and device_type not in self.device_types:
            return False
        return not self.content_types or content_type in self.content_types

    @property
    def reference(self) -> str:
        """How a session's record names this rule among its groups (_account.lua):
        ``<rule>``, then ``/d`` per device, ``/c`` per content, ``/n`` per network, then
        ``+d`` or ``+n`` when it counts distinct devices or networks."""
        return self.name + _PER_SUFFIX.get(self.per, "") + _COUNT_SUFFIX.get(self.count, "")

    @property
    def where(self) -> str:
        """The location filter as setup.lua takes it: '' anywhere, 'h' home, 'a' away."""
        if len(set(self.locations)) == 1:
            return self.locations[0][0]
        return ""

    def _group(self, device_id: str, content_id: str, network: bytes) -> bytes:
        if self.per == "device":
            return device_id.encode()
        if self.per == "content":
            return content_id.encode()
        if self.per == "network":
            return network
        return b""

    def fields(self, device_id: str, content_id: str, network: bytes) -> tuple[bytes, bytes]:
        """The counter field of the group a matching session counts in, and the field
        counting its device or network in that group (b'' when the rule counts sessions),
        as group_fields in _account.lua builds them."""
        group = self._group(device_id, content_id, network)
        if self.count == "sessions":
            return b"=" + self.name.encode() + b":" + group, b""
        kind = b"=" + self.name.encode() + _COUNT_SUFFIX[self.count].encode()
        value = device_id.encode() if self.count == "devices" else network
        return kind + b":" + group, kind + b"#%d:" % len(group) + group + value


def setup_text(rules: Sequence[Rule]) -> str:
    """Every rule as setup.lua takes them in one argument (_rules.lua), the same at every
    setup of one configuration: per rule, separated by ';', its name, reference, max, policy,
    count, location ('-' anywhere, 'h' home, 'a' away) and mode. Setup then names each rule
    a session matches by its index in this text, from 1."""
    return ";".join(
        f"{r.name} {r.reference} {r.max} {r.policy} {r.count} {r.where or '-'} {r.mode}"
        for r in rules
    )


def parse(
    raw: Any, *, qualities: tuple[str, ...], content_types: tuple[str, ...], policy: str
) -> tuple[Rule, ...]:
    """The rules of ``sessions.rules`` (a list of tables); RuleError names the bad one."""
    if not isinstance(raw, list):
        raise RuleError("sessions.rules: expected a list of [[sessions.rules]] tables")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"sessions.rules[{i}]"
        if not isinstance(entry, Mapping):
            raise RuleError(f"{where}: expected a table")
        name = entry.get("name")
        if isinstance(name, str):
            where = f"{where} ({name!r})"
        unknown = sorted(set(entry) - RULE_KEYS)
        if unknown:
            raise RuleError(f"{where}: unknown key {unknown[0]!r}")
        if not isinstance(name, str) or not RULE_NAME.fullmatch(name) or name in RESERVED:
            raise RuleError(
                f"{where}: name must be 1..32 of a-z 0-9 - and not account or devices, got {name!r}"
            )
        if name in seen:
            raise RuleError(f"{where}: duplicate rule name")
        seen.add(name)
        limit = entry.get("max")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise RuleError(f"{where}: max must be an integer 0..{MAX_RULE_MAX}, got {limit!r}")
        if not 0 <= limit <= MAX_RULE_MAX:
            raise RuleError(f"{where}: max must be 0..{MAX_RULE_MAX}, got {limit}")
        per = entry.get("per", "account")
        if per not in PER:
            raise RuleError(f"{where}: per must be one of {', '.join(PER)}, got {per!r}")
        rule_policy = entry.get("policy", policy)
        if rule_policy not in POLICIES:
            raise RuleError(f"{where}: policy must be deny or evict, got {rule_policy!r}")
        mode = entry.get("mode", "enforce")
        if mode not in MODES:
            raise RuleError(f"{where}: mode must be enforce or monitor, got {mode!r}")
        count = entry.get("count", "sessions")
        if count not in COUNTS:
            raise RuleError(f"{where}: count must be one of {', '.join(COUNTS)}, got {count!r}")
        rules.append(
            Rule(
                name=name,
                max=limit,
                qualities=_names(entry, "qualities", qualities, where),
                device_types=_device_types(entry, where),
                content_types=_names(entry, "content_types", content_types, where),
                per=per,
                policy=rule_policy,
                locations=_names(entry, "locations", LOCATIONS, where),
                count=count,
                mode=mode,
            )
        )
    return tuple(rules)


def _strings(entry: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}: {key} must be a list of strings, got {value!r}")
    return value


def _names(
    entry: Mapping[str, Any], key: str, known: tuple[str, ...], where: str
) -> tuple[str, ...]:
    values = _strings(entry, key, where)
    for value in values:
        if value not in known:
            raise RuleError(
                f"{where}: {key} has {value!r}, not one of the configured {', '.join(known)}"
            )
    return tuple(values)


def _device_types(entry: Mapping[str, Any], where: str) -> tuple[str, ...]:
    values = _strings(entry, "device_types", where)
    for value in values:
        if not 1 <= len(value) <= MAX_DEVICE_TYPE_LENGTH:
            raise RuleError(f"{where}: device_types entries must be 1..64 characters")
    return tuple(values)
