"""Redis eviction: `srm serve` refuses an evicting Redis unless allowed, and every read answers
cleanly when a session record is partial (what eviction or a lost write leaves behind)."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from srm.config import ConfigError, RedisSettings
from srm.connection import check_eviction, connect
from srm.errors import SessionNotFound
from srm.model import EndReason, NewSession, State
from srm.store import SessionStore
from tests.conftest import OPERATOR, SECRET, Clock, auth
from tests.processes import SrmProcess, srm_env, srm_serve, start_srm
from tests.redis_servers import RedisCluster, free_port, redis_process

SETUP = {"content": {"contentID": "100001V3D", "contentType": "COD"}}


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
    client = connect(RedisSettings(url=real_redis.url))
    try:
        await check_eviction(client, RedisSettings())
        await client.config_set("maxmemory-policy", "volatile-lru")
        with pytest.raises(ConfigError, match="volatile-lru"):
            await check_eviction(client, RedisSettings())
        await check_eviction(client, RedisSettings(allow_eviction=True))
    finally:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.aclose()


async def test_every_master_of_a_cluster_is_checked(cluster_servers: RedisCluster) -> None:
    client = connect(RedisSettings(url=cluster_servers.url))
    last = cluster_servers.nodes[-1].client()
    try:
        await check_eviction(client, RedisSettings())
        last.config_set("maxmemory-policy", "allkeys-random")
        with pytest.raises(ConfigError, match="allkeys-random"):
            await check_eviction(client, RedisSettings())
    finally:
        last.config_set("maxmemory-policy", "noeviction")
        last.close()
        await client.aclose()


async def test_a_redis_that_refuses_config_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with redis_process("--rename-command", "CONFIG", "") as redis:
        client = connect(RedisSettings(url=redis.url))
        try:
            with caplog.at_level(logging.WARNING, logger="srm.connection"):
                await check_eviction(client, RedisSettings())
        finally:
            await client.aclose()
    assert "could not check Redis's maxmemory-policy" in caplog.text


async def test_an_unreachable_redis_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", request_deadline=1.0)
    client = connect(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="srm.connection"):
            await check_eviction(client, settings)
    finally:
        await client.aclose()
    assert "could not check" in caplog.text


# -- partial records -------------------------------------------------------------------------


async def test_keep_alive_does_not_recreate_an_evicted_record(
    store: SessionStore, redis_client: Any, clock: Clock
) -> None:
    s = new()
    await store.setup(s)
    record = store.keys.session(s.account_id, s.session_id)
    await redis_client.delete(record)  # evicted
    with pytest.raises(SessionNotFound):
        await store.keep_alive(s.account_id, s.session_id)
    assert await redis_client.exists(record) == 0
    # the slot is still freed by a teardown, and the reaper removes what is left
    await store.end(s.account_id, s.session_id, EndReason.TEARDOWN)
    clock.advance(61)
    assert await store.purge(store.keys.account(s.account_id).shard, 100) == 1


async def test_partial_records_read_cleanly(
    client: Any, store: SessionStore, redis_client: Any
) -> None:
    await store.set_limit("acct-1", 10)
    sessions = [new() for _ in range(5)]
    for s in sessions:
        await store.setup(s)
    await store.end("acct-1", sessions[4].session_id, EndReason.TEARDOWN)
    key = [store.keys.session("acct-1", s.session_id) for s in sessions]
    await redis_client.hdel(key[0], "dev", "cid", "ctype", "created")  # fields lost
    await redis_client.delete(key[1])
    await redis_client.hset(key[1], "ka", "1800000000000")  # what a keep-alive used to leave
    await redis_client.hset(key[2], mapping={"created": "garbage", "ka": ""})
    await redis_client.delete(key[3])  # the whole record lost
    ended = store.keys.account("acct-1").ended
    await redis_client.hset(ended, sessions[4].session_id, "NO-SUCH-REASON|later")
    listing = await client.get("/srm/sessions", headers=auth())
    assert listing.status == 200
    listed = {s["sessionId"]: s for s in (await listing.json())["sessions"]}
    assert set(listed) == {s.session_id for s in sessions} - {sessions[3].session_id}
    first = listed[sessions[0].session_id]
    assert (first["deviceId"], first["contentID"], first["createdAt"]) == ("", "", None)
    assert first["state"] == "ACTIVE" and first["lastKeepAliveAt"] is not None
    assert listed[sessions[1].session_id]["accountId"] == "acct-1"
    assert listed[sessions[2].session_id]["createdAt"] is None
    last = listed[sessions[4].session_id]
    assert (last["state"], last["endReason"], last["endedAt"]) == ("ENDED", None, None)
    operator = await client.get("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
    assert operator.status == 200
    for s in sessions:
        resp = await client.get(f"/srm/sessions/{s.session_id}", headers=auth())
        assert resp.status == (404 if s is sessions[3] else 200)
        if resp.status == 404:
            assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0004"
    got = await store.get("acct-1", sessions[1].session_id)
    assert got.state is State.ACTIVE and got.device_id == ""
    await redis_client.flushall()  # broken on purpose: nothing for the invariants to check
