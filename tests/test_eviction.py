"""Redis eviction: `srm serve` refuses an evicting Redis unless allowed, and every call answers
cleanly when an account's data is partial (an account hash evicted whole, a record lost, a
value no reader knows)."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from srm.config import ConfigError
from srm.connection import check_eviction, connect
from srm.errors import LimitReached, SessionNotFound
from srm.model import EndReason, NewSession, State
from srm.store import EndOutcome, SessionStore
from tests.helpers import OPERATOR, SECRET, Clock, auth, redis_settings
from tests.processes import SrmProcess, srm_env, srm_serve, start_srm
from tests.redis_servers import RedisCluster, free_port, redis_process


def new(account: str = "acct-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, "dev-1", "100001V3D", "COD")


# -- the policy, checked at start ------------------------------------------------------------


@pytest.mark.slow
def test_serve_and_reaper_refuse_an_evicting_redis_unless_allowed(tmp_path: Path) -> None:
    with redis_process("--maxmemory-policy", "allkeys-lru") as redis:
        for command in ("serve", "reaper"):
            port = free_port()
            env = srm_env(
                SRM_PORT=str(port),
                SRM_AUTH_SECRET=SECRET,
                SRM_REDIS_URL=redis.url,
                SRM_REAPER_METRICS_PORT="0",
            )
            log = tmp_path / f"refused-{command}.log"
            srm = SrmProcess(start_srm([command], env, log), port, log)
            try:
                assert srm.proc.wait(30) == 2, srm.output()
            except subprocess.TimeoutExpired:
                srm.stop()
                raise
            assert "maxmemory-policy is allkeys-lru" in srm.output()
            assert "SRM_REDIS_ALLOW_EVICTION" in srm.output()
        with srm_serve(tmp_path, SRM_REDIS_URL=redis.url, SRM_REDIS_ALLOW_EVICTION="true") as ok:
            assert "REDIS MAY EVICT SRM'S KEYS" in ok.output()
            assert ok.stop() == 0


async def test_noeviction_passes_and_others_are_refused(real_redis: Any) -> None:
    client = connect(redis_settings(url=real_redis.url))
    try:
        await check_eviction(client, redis_settings())
        await client.config_set("maxmemory-policy", "volatile-lru")
        with pytest.raises(ConfigError, match="volatile-lru"):
            await check_eviction(client, redis_settings())
        await check_eviction(client, redis_settings(allow_eviction=True))
    finally:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.aclose()


async def test_every_master_of_a_cluster_is_checked(cluster_servers: RedisCluster) -> None:
    client = connect(redis_settings(url=cluster_servers.url))
    last = cluster_servers.nodes[-1].client()
    try:
        await check_eviction(client, redis_settings())
        last.config_set("maxmemory-policy", "allkeys-random")
        with pytest.raises(ConfigError, match="allkeys-random"):
            await check_eviction(client, redis_settings())
    finally:
        last.config_set("maxmemory-policy", "noeviction")
        last.close()
        await client.aclose()


async def test_a_redis_that_refuses_config_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with redis_process("--rename-command", "CONFIG", "") as redis:
        client = connect(redis_settings(url=redis.url))
        try:
            with caplog.at_level(logging.WARNING, logger="srm.connection"):
                await check_eviction(client, redis_settings())
        finally:
            await client.aclose()
    assert "could not check Redis's maxmemory-policy" in caplog.text


async def test_an_unreachable_redis_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    settings = redis_settings(url=f"redis://127.0.0.1:{free_port()}/0", request_deadline=1.0)
    client = connect(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="srm.connection"):
            await check_eviction(client, settings)
    finally:
        await client.aclose()
    assert "could not check" in caplog.text


# -- partial data ----------------------------------------------------------------------------


async def test_keep_alive_does_not_recreate_an_evicted_account(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    s = new()
    await store.setup(s)
    ak = store.keys.account(s.account_id)
    await redis_client.delete(ak.state)  # evicted: its records, counters and usage with it
    with pytest.raises(SessionNotFound):
        await store.keep_alive(s.account_id, s.session_id)
    with pytest.raises(SessionNotFound):
        await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    assert await redis_client.exists(ak.state) == 0
    # the sweep drops the due entry left behind, and the account's slots are all free
    clock.advance(121)
    swept = await store.sweep(ak.shard, 100)
    assert (swept.ended, swept.accounts, swept.moved) == (0, 1, 1)
    assert await redis_client.zscore(ak.due, s.account_id) is None
    assert await redis_client.exists(ak.state) == 0
    for _ in range(3):
        await store.setup(new())
    # the evicted hash's session is still in its shard's count (no script saw it go): only
    # counting the shard whole again takes it out
    assert await store.recount_active(ak.shard, force=True) == 3


async def test_a_lost_record_holds_its_slot_until_the_audit(
    store: SessionStore, redis_client: Any
) -> None:
    sessions = [new() for _ in range(3)]
    for s in sessions:
        await store.setup(s)
    ak = store.keys.account("acct-1")
    lost = sessions[0].session_id
    await redis_client.hdel(ak.state, lost)
    with pytest.raises(SessionNotFound):
        await store.keep_alive("acct-1", lost)
    assert not await redis_client.hexists(ak.state, lost)  # not recreated
    with pytest.raises(SessionNotFound):
        await store.end("acct-1", lost, EndReason.TEARDOWN)
    with pytest.raises(LimitReached):  # the counter still counts it...
        await store.setup(new())
    repairs = await store.audit(ak.shard, ["acct-1"])  # ...until the audit recounts
    assert [(r.account_id, r.counter, r.truth) for r in repairs] == [("acct-1", 3, 2)]
    await store.setup(new())
    assert (await store.account_sessions("acct-1")).active_count == 3


async def test_damaged_records_read_cleanly(
    client: Any, store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    """A record cut short is a session with the texts it still has; one that is no record
    at all (garbage, empty, an unknown end reason) is no session; neither is ever a 500."""
    await store.set_limit("acct-1", 10)
    sessions = [new() for _ in range(7)]
    for s in sessions:
        await store.setup(s)
    await store.end("acct-1", sessions[4].session_id, EndReason.TEARDOWN)
    ak = store.keys.account("acct-1")
    sid = [s.session_id for s in sessions]
    values = await redis_client.hgetall(ak.state)
    for cut in sid[0], sid[6]:
        await redis_client.hset(ak.state, cut, values[cut][: values[cut].index(";") + 4])
    await redis_client.hset(ak.state, sid[1], "garbage")
    await redis_client.hset(ak.state, sid[2], "")
    await redis_client.hdel(ak.state, sid[3])  # the whole record lost
    was = await redis_client.hget(ak.ended, sid[4])  # ENDED: in the account's ENDED hash
    ended = was.replace(",TEARDOWN;", ",NOSUCHREASON;")
    assert ended != was
    await redis_client.hset(ak.ended, sid[4], ended)
    listing = await client.get("/srm/sessions", headers=auth())
    assert listing.status == 200
    body = await listing.json()
    assert sorted(s["sessionId"] for s in body["sessions"]) == sorted([sid[0], sid[5], sid[6]])
    assert all(s["state"] == "ACTIVE" for s in body["sessions"])
    operator = await client.get("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
    assert operator.status == 200
    assert len((await operator.json())["sessions"]) == 3
    for s in sessions:
        resp = await client.get(f"/srm/sessions/{s.session_id}", headers=auth())
        assert resp.status == (200 if s.session_id in (sid[0], sid[5], sid[6]) else 404)
        if resp.status == 404:
            assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0004"
    got = await store.get("acct-1", sid[0])
    assert got.state is State.ACTIVE and "dev-1".startswith(got.device_id) and got.content_id == ""
    got = await store.get("acct-1", sid[5])
    assert got.state is State.ACTIVE and got.device_id == "dev-1"
    # a damaged session ends once, by teardown or by the sweep, like any other
    assert await store.end("acct-1", sid[0], EndReason.TEARDOWN) is EndOutcome.ENDED
    assert await store.end("acct-1", sid[0], EndReason.TEARDOWN) is EndOutcome.ALREADY_ENDED
    clock.advance(100)
    await store.keep_alive("acct-1", sid[5])
    clock.advance(21)
    assert (await store.sweep(ak.shard, 100)).ended == 1  # sid[6]; sid[5] was kept alive
    assert (await store.get("acct-1", sid[6])).end_reason is EndReason.TIMEOUT
    # the unreadable and the lost ones hold their slots until the audit recounts
    assert await redis_client.hget(ak.state, "n") == "4"
    repairs = await store.audit(ak.shard, ["acct-1"])
    assert [(r.counter, r.truth) for r in repairs] == [(4, 1)]
    await redis_client.flushall()  # broken on purpose: nothing for the invariants to check
