"""The invariants that must hold after every test, checked directly in Redis."""

from __future__ import annotations

from typing import Any

from srm import keys as k


async def check(redis: Any, keyspace: k.Keys) -> None:
    """For every account: counter == ZCARD(active); every rule counter == the number of ACTIVE
    sessions whose recorded groups name it; every indexed session has its record."""
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
        await check_rules(redis, ak, {sid for sid, _ in active}, account_id)
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


def decode_groups(encoded: str) -> list[str]:
    """The rule counter fields a session counts in (as setup recorded them)."""
    out, raw = [], encoded.encode()
    while raw:
        length, _, rest = raw.partition(b":")
        n = int(length)
        out.append(rest[:n].decode())
        raw = rest[n:]
    return out


async def check_rules(redis: Any, ak: k.AccountKeys, active: set[str], account_id: str) -> None:
    fields = await redis.hgetall(ak.rules)
    counters = {f: int(v) for f, v in fields.items() if ":" in f}
    truth: dict[str, int] = {}
    for field, value in fields.items():
        if ":" in field:
            continue
        assert field in active, f"{account_id}/{field}: rule groups of a session not active"
        for group in decode_groups(value):
            truth[group] = truth.get(group, 0) + 1
    assert counters == truth, f"{account_id}: rule counters {counters} != counted {truth}"
