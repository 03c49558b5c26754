"""Reports: an account's usage per day, and the day's most-denied accounts."""

from __future__ import annotations

from srm import records
from srm.model import DayUsage
from srm.store.base import StoreBase


class Reports(StoreBase):
    """Usage and denials, as counted by the scripts."""

    async def usage(self, account_id: str) -> dict[int, DayUsage]:
        """The account's usage per UTC day (days since the epoch), for the days kept."""
        _limit, flat, _ended, _rest = await self._read(account_id)
        return {
            int(field): records.day_usage(int(field), value)
            for field, value in zip(flat[::2], flat[1::2], strict=True)
            if records.is_day_field(field)
        }

    async def denials(self, day: int, top: int, *, flagged: bool = False) -> list[tuple[str, int]]:
        """The *top* accounts most often denied on UTC *day*, most denied first (*flagged*:
        most often flagged by monitor rules).

        Each shard keeps its own ranking; the top *top* of every shard are merged, so the work
        is bounded by shards x top whatever the number of accounts.
        """
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            key = self.keys.denials(shard, day, flagged=flagged)
            pipe.zrevrange(key, 0, top - 1, withscores=True)
        per_shard = await self._guard("denials", pipe.execute())
        merged = [(account, int(score)) for ranking in per_shard for account, score in ranking]
        merged.sort(key=lambda item: (-item[1], item[0]))
        return merged[:top]
