"""The reaper's passes over a shard: sweep lapsed sessions, purge ended ones, audit counters,
walk the accounts."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from srm import keys as k
from srm.store.legacy import Legacy

log = logging.getLogger(__name__)

# The key kinds whose accounts the audit walk checks: the account hash, and every 0.x key the
# move deletes (srm/lua/_legacy.lua)
ACCOUNT_KINDS = frozenset({"state", "ended_records", "active", "count", "ended", "rules", "usage"})


@dataclass(frozen=True, slots=True)
class SweepResult:
    ended: int
    accounts: int  # accounts visited
    moved: int = 0  # of those, accounts with nothing lapsed (their due score moved later)
    migrated: int = 0  # accounts of the 0.x index moved to the account hash first
    removed: int = 0  # of the ended, removed at once (retention 0), not queued for the purge


@dataclass(frozen=True, slots=True)
class Repair:
    account_id: str
    counter: int
    truth: int
    rules: int = 0  # rule counters (and stale group records) repaired

    @property
    def count(self) -> int:
        """How many counters this repair fixed."""
        return int(self.counter != self.truth) + self.rules


class ReaperPasses(Legacy):
    """The bounded batches `srm reaper` runs on each shard."""

    async def sweep(self, shard: int, batch: int) -> SweepResult:
        """End the lapsed sessions of up to *batch* accounts of one shard (TIMEOUT), first
        moving up to *batch* accounts of the shard's 0.x index, if any.

        The due accounts are picked on the estimated server time; the script decides each one
        on the server's own clock.
        """
        migrated = await self._migrate_indexed(shard, batch)
        now = await self.now()
        due = await self._guard(
            "sweep_due",
            self.redis.zrangebyscore(self.keys.due(shard), "-inf", now, start=0, num=batch),
        )
        if not due:
            return SweepResult(0, 0, 0, migrated)
        script_keys = self.keys.shard_keys(shard)
        for account_id in due:
            script_keys += self.keys.account(account_id).own()
        ended, moved, removed = await self._run(
            "sweep",
            script_keys,
            [self._clock_override(), self.policy.retention_ms, self._events, *due],
        )
        return SweepResult(int(ended), len(due), int(moved), migrated, int(removed))

    def shard_node(self, shard: int) -> str | None:
        """The master that holds *shard* on a Redis Cluster ("host:port"), as the client's
        slot map has it now; None on a standalone or Sentinel server, or while the map is
        not known."""
        find = getattr(self.redis, "get_node_from_key", None)
        if find is None:
            return None
        try:
            node = find(self.keys.due(shard))
        except Exception:  # no slot map yet (or a slot not covered): one group then
            return None
        return None if node is None else str(node.name)

    async def purge(self, shard: int, batch: int) -> int:
        """Remove up to *batch* ENDED sessions of one shard whose retention has passed."""
        now = await self.now()
        reap = self.keys.reap(shard)
        due = await self._guard(
            "purge_due", self.redis.zrangebyscore(reap, "-inf", now, start=0, num=batch)
        )
        if not due:
            return 0
        script_keys = self.keys.shard_keys(shard)
        for mbr in due:
            script_keys += self.keys.account(k.parse_member(mbr)[0]).own()
        removed, _skipped = await self._run("purge", script_keys, [self._clock_override(), *due])
        return int(removed)

    async def oldest_due(self, shard: int) -> int | None:
        """Age in ms of the oldest entry of the shard that is due for sweep or purge."""
        return (await self.shard_state(shard))[0]

    async def shard_state(self, shard: int) -> tuple[int | None, int | None]:
        """The shard's oldest_due, and its count of ACTIVE sessions (None until recount.lua
        has counted it whole: recount_active), in one round trip."""
        now = await self.now()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.due(shard), 0, 0, withscores=True)
        pipe.zrange(self.keys.reap(shard), 0, 0, withscores=True)
        pipe.zrange(self.keys.legacy_deadlines(shard), 0, 0, withscores=True)
        pipe.hmget(self.keys.active(shard), "n", "recounted")
        *heads, (active, recounted) = await self._guard("oldest_due", pipe.execute())
        due = [int(score) for head in heads for _m, score in head if score <= now]
        return (now - min(due) if due else None), (int(active or 0) if recounted else None)

    async def recount_active(self, shard: int, *, force: bool = False) -> int:
        """Count the shard's ACTIVE sessions whole, unless it was and not *force*
        (recount.lua); the count."""
        script_keys = [*self.keys.shard_keys(shard), self.keys.account_prefix(shard)]
        args = [self._clock_override(), "1" if force else "0"]
        return int(await self._run("recount", script_keys, args))

    async def audit(self, shard: int, accounts: Sequence[str]) -> list[Repair]:
        """Repair counters and due scores of *accounts* (all in *shard*) that differ from
        their sessions (moving 0.x data first)."""
        if not accounts:
            return []
        script_keys = self.keys.shard_keys(shard)
        for account_id in accounts:
            ak = self.keys.account(account_id)
            if ak.shard != shard:
                raise ValueError(f"account {account_id!r} is not in shard {shard}")
            script_keys += ak.own()
        flat = await self._run("audit", script_keys, list(accounts))
        return [
            Repair(accounts[int(flat[i]) - 1], int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]

    async def scan_accounts(self, count: int = 1000) -> AsyncGenerator[tuple[int, str], None]:
        """(shard, accountId) of every account with a hash (or 0.x data), by SCAN.

        For the audit only, never on a request path. One walk covers every shard (a walk per
        shard would read the whole keyspace once per shard); ``scan_iter`` works on a
        standalone and a Cluster client alike. An account may come twice. Each SCAN call is
        bounded by the deadline, the whole walk is not.
        """
        walk = self.redis.scan_iter(match=self.keys.all_accounts_pattern(), count=count)
        try:
            while True:
                try:
                    key: str = await self._guard("scan_accounts", anext(walk))
                except StopAsyncIteration:
                    return
                parsed = self.keys.parse_account_key(key)
                if parsed is None or parsed[1] not in ACCOUNT_KINDS:
                    continue
                shard = self.keys.shard_of(parsed[0])
                if key.startswith(self.keys.tag(shard) + ":"):
                    yield shard, parsed[0]
                else:  # only if redis.shards changed under live data, which it must not
                    log.error("account key %r is not in its account's shard %d", key, shard)
        finally:
            await walk.aclose()
