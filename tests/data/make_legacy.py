"""Writes tests/data/legacy-0.x.json: the Redis keys SRM 0.x (commit 1c0e617) leaves for a few
accounts, made with its own store (run with that version's code on PYTHONPATH)."""

import asyncio
import contextlib
import json
import sys
import uuid

import redis.asyncio as r

from srm.config import load
from srm.errors import LimitReached
from srm.model import EndReason, NewSession
from srm.process import make_store

RULES = (
    '[{"name": "uhd", "max": 1, "qualities": ["UHD"]},'
    ' {"name": "mobile", "max": 2, "device_types": ["phone", "tablet"]},'
    ' {"name": "one-per-tv", "max": 1, "device_types": ["tv", "stb"], "per": "device",'
    ' "policy": "evict"}]'
)
T0 = 1_800_000_000_000


async def main(port, out):
    c = r.Redis(port=port, decode_responses=True)
    await c.flushall()
    s = load(
        env={
            "SRM_REDIS_URL": f"redis://127.0.0.1:{port}",
            "SRM_AUTH_SECRET": "x" * 32,
            "SRM_SESSIONS_RULES": RULES,
            "SRM_REDIS_SHARDS": "16",
        }
    )
    now = [T0]
    st = make_store(s, c)
    st.clock = lambda: now[0]
    ids = {}

    def sid(name):
        ids[name] = str(uuid.UUID(int=len(ids) + 1, version=4))
        return ids[name]

    # alpha: three active sessions counted by rules (a TV in UHD, two phones in HD)
    await st.setup(
        NewSession(
            sid("alpha-tv"), "alpha", "tv-1", "movie-1", "COD", device_type="tv", quality="UHD"
        )
    )
    now[0] += 1000
    await st.setup(
        NewSession(
            sid("alpha-phone-1"),
            "alpha",
            "phone-1",
            "movie-2",
            "LIVE",
            device_type="phone",
            quality="HD",
        )
    )
    await st.setup(
        NewSession(
            sid("alpha-phone-2"),
            "alpha",
            "phone-2",
            "movie-3",
            "COD",
            device_type="phone",
            quality="HD",
        )
    )
    # beta: one active (kept alive), one torn down, one evicted by a zap on its TV
    await st.setup(NewSession(sid("beta-old"), "beta", "tv-9", "c1", "COD", device_type="tv"))
    await st.setup(NewSession(sid("beta-down"), "beta", "box", "c2", "COD"))
    await st.end("beta", ids["beta-down"], EndReason.TEARDOWN)
    now[0] += 1000
    await st.setup(NewSession(sid("beta-tv"), "beta", "tv-9", "c3", "COD", device_type="tv"))
    now[0] += 5000
    await st.keep_alive("beta", ids["beta-tv"])
    # gamma: a denied setup (the uhd rule), an override of its limit and of a rule
    await st.set_limit("gamma", 5, {"mobile": 3})
    await st.setup(
        NewSession(sid("gamma-uhd"), "gamma", "tv-2", "m", "COD", device_type="tv", quality="UHD")
    )
    with contextlib.suppress(LimitReached):
        await st.setup(
            NewSession(
                sid("gamma-denied"), "gamma", "tv-3", "m", "COD", device_type="tv", quality="UHD"
            )
        )
    # delta: usage only (its session ended and was removed long ago)
    await st.setup(NewSession(sid("delta-gone"), "delta", "d", "c", "COD"))
    await st.end("delta", ids["delta-gone"], EndReason.TEARDOWN)
    now[0] += 61_000
    await st.purge(st.keys.shard_of("delta"), 100)
    # epsilon: a setup given up on (tombstone) and a lapsed session no sweep has ended
    await st.abort_setup("epsilon", sid("epsilon-tomb"))
    await st.setup(NewSession(sid("epsilon-lapsing"), "epsilon", "e", "c", "COD"))
    dump = {}
    async for key in c.scan_iter(count=1000):
        kind = await c.type(key)
        if kind == "string":
            value: object = await c.get(key)
        elif kind == "hash":
            value = await c.hgetall(key)
        elif kind == "zset":
            value = await c.zrange(key, 0, -1, withscores=True)
        else:
            continue  # the event stream: the move leaves it as it is
        dump[key] = {"type": kind, "value": value, "pttl": await c.pttl(key)}
    made = {
        "made_by": "SRM 0.x at commit 1c0e617, tests/data/README.md",
        "shards": 16,
        "rules": json.loads(RULES),
        "now": now[0],
        "ids": ids,
        "keys": dict(sorted(dump.items())),
    }
    with open(out, "w") as f:
        json.dump(made, f, indent=1)


asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
