"""Limit rules: which sessions a rule counts, in which group, and how the store records it.

A rule counts the ACTIVE sessions that match all its filters (quality, device type, content
type; an empty filter matches anything), per account, per (account, deviceId) or per
(account, contentID). Setup decides the groups a new session counts in and records them with
it (in the account's rules hash, see srm/keys.py), so ending it decrements exactly those
counters even if the configuration changed meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ACCOUNT_RULE = "account"  # the name under which a denial by the account limit is reported
MAX_RULE_MAX = 1_000_000
PER = ("account", "device", "content")
POLICIES = ("deny", "evict")
RULE_NAME = re.compile(r"[a-z0-9-]{1,32}")
RULE_KEYS = frozenset(
    {"name", "max", "qualities", "device_types", "content_types", "per", "policy"}
)
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
        ``<rule>``, ``<rule>/d`` per device, ``<rule>/c`` per content."""
        return self.name + {"device": "/d", "content": "/c"}.get(self.per, "")

    def group(self, device_id: str, content_id: str) -> str:
        """The counter field of the group a matching session counts in: ``<rule>:<group>``."""
        if self.per == "device":
            return f"{self.name}:{device_id}"
        if self.per == "content":
            return f"{self.name}:{content_id}"
        return f"{self.name}:"


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
        if not isinstance(name, str) or not RULE_NAME.fullmatch(name) or name == ACCOUNT_RULE:
            raise RuleError(
                f"{where}: name must be 1..32 of a-z 0-9 - and not {ACCOUNT_RULE!r}, got {name!r}"
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
        rules.append(
            Rule(
                name=name,
                max=limit,
                qualities=_names(entry, "qualities", qualities, where),
                device_types=_device_types(entry, where),
                content_types=_names(entry, "content_types", content_types, where),
                per=per,
                policy=rule_policy,
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
