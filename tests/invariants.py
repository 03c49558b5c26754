"""The invariants that must hold after every test, checked directly in Redis."""

from __future__ import annotations

import re
from typing import Any

from srm import keys as k
from srm import records

# the kinds of an account's keys (srm/keys.py); anything else under an account is a 0.x key
ACCOUNT_KEY_KINDS = ("state", "ended_records", "limit", "rlimit", "home", "devices", "swap", "rate")

REGISTRY_VALUE = re.compile(r"(\d+),(\d+),(.*)", re.DOTALL)


async def check(redis: Any, keyspace: k.Keys, *, devices_max: int | None = None) -> None:
    """For every account (one with a hash, an ENDED hash, or an entry in its shard's due index
    or purge queue): the counter is its number of ACTIVE records; every rule counter is the
    number of ACTIVE sessions whose groups name it, or for a rule counting distinct devices
    or networks the number of distinct values among them, each value's field counting its
    sessions; the due score is there exactly when a session is ACTIVE and is never later
    than its deadline; the account hash holds no ENDED record and the ENDED hash no ACTIVE
    one; every ENDED record and tombstone is queued for removal; no 0.x key is left. Every
    device registry holds well-formed entries (first seen <= last seen), at most
    *devices_max* of them when given. For every shard: its count of ACTIVE sessions is the
    sum of its accounts' ACTIVE sessions."""
    accounts: set[str] = set()
    registries: list[str] = []
    async for key in redis.scan_iter(match=f"{keyspace.prefix}:*", count=1000):
        parsed = keyspace.parse_account_key(key)
        if parsed is None:
            continue
        assert parsed[1] in ACCOUNT_KEY_KINDS, f"0.x key {key} left"
        if parsed[1] in ("state", "ended_records"):
            accounts.add(parsed[0])
        elif parsed[1] == "devices":
            registries.append(key)
    for key in registries:
        entries = await redis.hgetall(key)
        assert devices_max is None or len(entries) <= devices_max, (
            f"{key}: {len(entries)} registered devices, more than {devices_max}"
        )
        for device_id, value in entries.items():
            match = REGISTRY_VALUE.fullmatch(value)
            assert match is not None and int(match[1]) <= int(match[2]), (
                f"{key}: {device_id!r} -> {value!r}"
            )
    for shard in range(keyspace.shards):
        # the indexes name accounts too: one whose hash is gone must have no entry left
        accounts.update(await redis.zrange(keyspace.due(shard), 0, -1))
        for mbr in await redis.zrange(keyspace.reap(shard), 0, -1):
            accounts.add(k.parse_member(mbr)[0])
    active = [0] * keyspace.shards
    for account_id in accounts:
        active[keyspace.shard_of(account_id)] += await check_account(redis, keyspace, account_id)
    pipe = redis.pipeline(transaction=False)  # one round trip for every shard's count
    for shard in range(keyspace.shards):
        pipe.hget(keyspace.active(shard), records.COUNT_FIELD)
    for shard, count in enumerate(await pipe.execute()):
        assert int(count or 0) == active[shard], (
            f"shard {shard}: count {count} != {active[shard]} active"
        )


async def check_account(redis: Any, keyspace: k.Keys, account_id: str) -> int:
    """Checks one account (check); its ACTIVE sessions."""
    ak = keyspace.account(account_id)
    fields = await redis.hgetall(ak.state)
    ended = await redis.hgetall(ak.ended)
    active = {}
    for field, value in fields.items():
        if not records.is_session_field(field):
            continue
        record = records.parse(value)
        if record is None:  # damaged (a test's doing): no session, queued for removal
            queued = await redis.zscore(ak.reap, k.member(account_id, field))
            assert queued is not None, f"{account_id}/{field}: not queued for removal"
            continue
        assert record.reason is None, f"{account_id}/{field}: ENDED, in the account hash"
        active[field] = record
    for field, value in ended.items():
        record = records.parse(value)
        assert record is None or record.reason is not None, (
            f"{account_id}/{field}: ACTIVE, in the ENDED hash"
        )
        assert field not in active, f"{account_id}/{field}: both ACTIVE and ENDED"
        queued = await redis.zscore(ak.reap, k.member(account_id, field))
        assert queued is not None, f"{account_id}/{field}: not queued for removal"
    counter = int(fields.get(records.COUNT_FIELD, 0))
    assert counter == len(active), f"{account_id}: counter {counter} != {len(active)} active"
    counters = {f: int(v) for f, v in fields.items() if f.startswith("=")}
    truth: dict[str, int] = {}
    for record in active.values():
        for field, value_field in records.group_fields(record):
            if value_field is not None:
                truth[value_field] = truth.get(value_field, 0) + 1
                if truth[value_field] > 1:
                    continue  # a distinct count counts each device or network once
            truth[field] = truth.get(field, 0) + 1
    assert counters == truth, f"{account_id}: rule counters {counters} != counted {truth}"
    playbacks = {f: v for f, v in fields.items() if f.startswith(">")}
    playing = {
        f">{len(r.device_id.encode())}:{r.device_id}{r.playback_id}": sid
        for sid, r in active.items()
        if r.playback_id
    }
    assert playbacks == playing, f"{account_id}: playbacks {playbacks} != {playing}"
    score = await redis.zscore(ak.due, account_id)
    if not active:
        assert score is None, f"{account_id}: due with no ACTIVE session"
    else:
        earliest = min(r.deadline for r in active.values())
        assert score is not None and score <= earliest, (
            f"{account_id}: due {score} later than the earliest deadline {earliest}"
        )
    return len(active)
