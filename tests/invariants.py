"""The invariants that must hold after every test, checked directly in Redis."""

from __future__ import annotations

from typing import Any

from srm import keys as k


async def check(redis: Any, keyspace: k.Keys) -> None:
    """For every account: counter == ZCARD(active); every indexed session has its record."""
    accounts: dict[str, dict[str, str]] = {}
    async for key in redis.scan_iter(match=f"{keyspace.prefix}:*", count=1000):
        parsed = keyspace.parse_account_key(key)
        if parsed:
            accounts.setdefault(parsed[0], {})[parsed[1]] = key
    for account_id in accounts:
        ak = keyspace.account(account_id)
        active = await redis.zrange(ak.active, 0, -1, withscores=True)
        counter = int(await redis.get(ak.count) or 0)
        assert counter == len(active), f"{account_id}: counter {counter} != {len(active)} active"
        ended = await redis.hgetall(ak.ended)
        for sid, deadline in active:
            assert sid not in ended, f"{account_id}/{sid} is both active and ended"
            record = await redis.hgetall(keyspace.session(account_id, sid))
            assert record.get("acct") == account_id, f"active {sid} has no record of its own"
            assert "tomb" not in record
            indexed = await redis.zscore(ak.deadlines, k.member(account_id, sid))
            assert indexed == deadline, f"{account_id}/{sid}: deadline index out of step"
        for sid in ended:
            record = await redis.hgetall(keyspace.session(account_id, sid))
            assert record.get("acct") == account_id, f"ended {sid} has no record"
            assert await redis.zscore(ak.reap, k.member(account_id, sid)) is not None, (
                f"ended {sid} is not queued for removal"
            )
