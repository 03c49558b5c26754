"""The move of SRM 0.x data to the account hash (srm/lua/migrate.lua)."""

from __future__ import annotations

from collections.abc import Sequence

from srm import keys as k
from srm.store.base import StoreBase


class Legacy(StoreBase):
    """Moves an account's 0.x keys when a script asks, and the reaper's drain of the 0.x
    deadline index."""

    async def _migrate_indexed(self, shard: int, batch: int) -> int:
        """Move accounts named by the shard's 0.x deadline index; how many had 0.x data."""
        members = await self._guard(
            "migrate_due",
            self.redis.zrange(self.keys.legacy_deadlines(shard), 0, batch - 1),
        )
        if not members:
            return 0
        accounts = list(dict.fromkeys(k.parse_member(m)[0] for m in members))
        moved = await self.migrate(accounts)
        # The move unindexed the sessions it found active; the members left name none (0.x
        # left such stale members, its sweep dropped them) and no 0.x process re-adds them:
        # its keep-alive finds the moved session gone.
        await self._guard(
            "migrate_due", self.redis.zrem(self.keys.legacy_deadlines(shard), *members)
        )
        return moved

    async def migrate(self, accounts: Sequence[str]) -> int:
        """Move the 0.x data of *accounts* (all of one shard) into their account hashes; how
        many had any."""
        if not accounts:
            return 0
        script_keys = self.keys.account(accounts[0]).shard_keys()
        for account_id in accounts:
            script_keys += self.keys.account(account_id).own()
        return int(await self._run("migrate", script_keys, list(accounts)))
