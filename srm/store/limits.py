"""Limits: an account's overrides of the session limit and of the rules' limits."""

from __future__ import annotations

from typing import Any

from srm.model import (
    Limit,
    RuleLimit,
)
from srm.store.base import StoreBase


class Limits(StoreBase):
    """Read, set and clear an account's limit overrides."""

    async def get_limit(self, account_id: str) -> Limit:
        """The account limit and every configured rule's max, with whether each is overridden."""
        ak = self.keys.account(account_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(ak.limit)
        pipe.hgetall(ak.rule_limits)
        value, overrides = await self._guard("get_limit", pipe.execute())
        rules = {
            r.name: RuleLimit(int(overrides[r.name]), True)
            if r.name in overrides
            else RuleLimit(r.max, False)
            for r in self.policy.rules
        }
        if value is None:
            return Limit(max_sessions=self.policy.max_sessions, override=False, rules=rules)
        return Limit(max_sessions=int(value), override=True, rules=rules)

    async def set_limit(
        self,
        account_id: str,
        max_sessions: int | None,
        rules: dict[str, int | None] | None = None,
    ) -> Limit:
        """Set the account limit override (None: unchanged) and rule overrides (a value of
        None removes that rule's override), in one step. Rule names must be configured."""
        await self._limits(account_id, "" if max_sessions is None else max_sessions, rules or {})
        return await self.get_limit(account_id)

    async def clear_limit(self, account_id: str) -> Limit:
        """Remove every override of the account: the configured limits apply again."""
        await self._limits(account_id, "-", {}, clear_rules=True)
        return await self.get_limit(account_id)

    async def _limits(
        self,
        account_id: str,
        account_limit: int | str,
        rules: dict[str, int | None],
        *,
        clear_rules: bool = False,
    ) -> None:
        known = {r.name for r in self.policy.rules}
        unknown = sorted(set(rules) - known)
        if unknown:
            raise ValueError(f"unknown rule {unknown[0]!r}")
        ak = self.keys.account(account_id)
        pairs: list[Any] = []
        for name, value in sorted(rules.items()):
            pairs += [name, "" if value is None else value]
        await self._run(
            "limits",
            [ak.limit, ak.rule_limits, ak.events],
            [
                self._clock_override(),
                account_limit,
                "1" if clear_rules else "",
                self._events,
                account_id,
                *pairs,
            ],
        )
