"""Redis Sentinel failover and Redis Cluster sharding, on real processes the tests start.

The store and API tests already run on every topology (the ``redis_client`` parameter); here
are the things only a topology can show: a master killed under load, sessions spread over
every master and removed from every one, slots moving between masters.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

from srm import keys as k
from srm import records
from srm.connection import connect, warm_up
from srm.errors import LimitReached, StoreUnavailable
from srm.model import EndReason, NewSession, Policy, Started, State
from srm.store import EndOutcome, SessionStore
from tests import invariants
from tests.helpers import (
    SETUP,
    Clock,
    auth,
    drift_counter,
    harness_settings,
    reaper_for,
    redis_settings,
    sample,
)
from tests.players import LOAD_ENV, SHARDS, run_load, verify
from tests.processes import srm_serve
from tests.redis_servers import (
    RedisCluster,
    RedisProcess,
    SentinelGroup,
    redis_cluster,
    sentinel_group,
)

# a generous "did not hang" bound for a failover to be over, never a timing assertion
RECOVERY_BOUND = 30.0


@pytest.fixture
def own_sentinel_group() -> Iterator[SentinelGroup]:
    """A Sentinel group of this test alone: failing it over must not disturb other tests."""
    with sentinel_group() as group:
        yield group


async def first_setup_after(base: str, bound: float) -> float:
    """Seconds until a setup succeeds again; fails the test if that takes over *bound*."""
    start = time.monotonic()
    async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=10)) as http:
        while time.monotonic() - start < bound:
            async with http.post("/srm/sessions", json=SETUP, headers=auth("probe")) as answer:
                body = await answer.json(content_type=None)
            if "successResponse" in body:
                sid = body["successResponse"]["sessionId"]
                async with http.delete(f"/srm/sessions/{sid}", headers=auth("probe")) as answer:
                    assert answer.status == 200
                return time.monotonic() - start
            assert body["errorResponse"]["errorCode"] == "SRM-0008", body
            await asyncio.sleep(0.1)
    pytest.fail(f"no setup succeeded within {bound} s of the failover")


@pytest.mark.slow
def test_sentinel_failover_under_load(own_sentinel_group: SentinelGroup, tmp_path: Path) -> None:
    group = own_sentinel_group
    with srm_serve(
        tmp_path,
        SRM_REDIS_URL=group.url,
        SRM_REDIS_SHARDS=str(SHARDS),
        SRM_REDIS_REQUEST_DEADLINE="1.5",
        # a change counts once the replica has it, so the failover cannot lose it
        SRM_REDIS_REPLICA_ACKS="1",
        **LOAD_ENV,
    ) as srm:

        def fault() -> None:
            group.master.kill(signal.SIGKILL)
            deadline = time.monotonic() + RECOVERY_BOUND
            while group.master_port() != group.replica.port:  # the sentinel promoted it
                assert time.monotonic() < deadline, "the sentinel never failed over"
                time.sleep(0.1)
            # the old master comes back (empty: no persistence here) as the new master's
            # replica, as an orchestrator would bring it back; were it to come back as an empty
            # master, a second failover could pick it and replicate its emptiness
            group.master.args += ["--replicaof", "127.0.0.1", str(group.replica.port)]
            group.master.start()

        ledger = asyncio.run(run_load(srm.base, fault, after=1.0))
        assert ledger.unavailable > 0, "the failover was not observed"
        assert len(ledger.acked_setups) > 20
        # served again by the new master without an SRM restart
        asyncio.run(first_setup_after(srm.base, RECOVERY_BOUND))
        assert srm.stop() == 0
    asyncio.run(verify(group.url, ledger))


@pytest.mark.parametrize("redis_client", ["standalone", "sentinel", "cluster"], indirect=True)
async def test_replica_acks_make_unreplicated_changes_srm_0008(
    redis_client: Any, keyspace: k.Keys, policy: Policy, clock: Clock, request: Any
) -> None:
    replicated = request.node.callspec.params["redis_client"] == "sentinel"  # has a replica
    # a replica on a loaded machine may take more than 0.1 s to acknowledge
    store = SessionStore(
        redis_client,
        keyspace,
        policy,
        clock=clock,
        replica_acks=1,
        replica_ack_timeout=2.0 if replicated else 0.1,
    )
    s = new("acked")
    await redis_client.function_flush()  # the first call must load the library on the way
    if replicated:
        assert (await store.setup(s)).active == 1
        assert await store.end("acked", s.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED
    else:
        with pytest.raises(StoreUnavailable, match="0 of 1 replicas"):
            await store.setup(s)
        # it ran on the master all the same: the outcome of an SRM-0008 setup is unknown
        assert (await store.account_sessions("acked")).active_count == 1
        with pytest.raises(StoreUnavailable):
            await store.abort_setup("acked", s.session_id)
    await invariants.check(redis_client, keyspace)


@pytest.fixture
async def cluster_store(
    cluster_servers: RedisCluster, keyspace: k.Keys, policy: Policy, clock: Clock
) -> Any:
    """A store on the session's Redis Cluster, emptied; the invariants must hold after."""
    client = connect(harness_settings(cluster_servers.url))
    await client.flushall()
    yield SessionStore(client, keyspace, policy, clock=clock, max_in_flight=64)
    await invariants.check(client, keyspace)
    await client.aclose()


def new(account: str) -> NewSession:
    return NewSession(str(uuid.uuid4()), account, "dev-1", "100001V3D", "COD")


def session_keys(node: RedisProcess) -> list[str]:
    """The sessions *node* holds records of, as "<account hash>/<sessionId>" (ACTIVE ones in
    the account hash, ENDED ones in its ENDED hash)."""
    with node.client() as c:
        return [
            f"{key}/{field}"
            for pattern in ("srm:*:a:*", "srm:*:ae:*")
            for key in c.scan_iter(match=pattern, count=1000)
            for field in c.hkeys(key)
            if records.is_session_field(field)
        ]


async def test_cluster_spreads_accounts_over_every_master_and_the_reaper_covers_all(
    cluster_servers: RedisCluster, cluster_store: SessionStore, clock: Clock
) -> None:
    store = cluster_store
    registry = CollectorRegistry()
    reaper = reaper_for(store, registry)
    accounts = [f"spread-{i}" for i in range(48)]
    for account in accounts:
        first, second = new(account), new(account)
        await store.setup(first)
        await store.setup(second)
        await store.end(account, first.session_id, EndReason.TEARDOWN)
    per_master = {node.port: len(session_keys(node)) for node in cluster_servers.nodes}
    assert all(per_master.values()), f"a master holds no sessions: {per_master}"
    assert sum(per_master.values()) == 2 * len(accounts)

    # the audit's SCAN walks every master: drift injected on each one is found and repaired
    drifted = [
        next(a for a in accounts if owner_of(cluster_servers, store, a) is node)
        for node in cluster_servers.nodes
    ]
    for account in drifted:
        await drift_counter(store, account, 3)
    assert await reaper.audit() == len(cluster_servers.nodes)

    clock.advance(121)  # the kept sessions lapse: a pass ends them everywhere
    await reaper.reap_pass()
    assert sample(registry, "srm_reaper_sessions_expired_total") == len(accounts)
    clock.advance(61)  # and once their retention has passed, removes everything everywhere
    await reaper.reap_pass()
    assert sample(registry, "srm_reaper_sessions_purged_total") == 2 * len(accounts)
    assert {node.port: session_keys(node) for node in cluster_servers.nodes} == {
        node.port: [] for node in cluster_servers.nodes
    }


def node_id(node: RedisProcess) -> str:
    with node.client() as c:
        return str(c.execute_command("CLUSTER", "MYID"))


def move_slot(cluster: RedisCluster, slot: int, source: RedisProcess, target: RedisProcess) -> None:
    """Reshard one slot with its keys, the way redis-cli --cluster reshard does."""
    src_id, dst_id = node_id(source), node_id(target)
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for node in cluster.nodes:
            with node.client() as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def owner_of(cluster: RedisCluster, store: SessionStore, account: str) -> RedisProcess:
    return owner(cluster, key_slot(store.keys.tag(store.keys.shard_of(account)).encode()))


def owner(cluster: RedisCluster, slot: int) -> RedisProcess:
    with cluster.nodes[0].client() as c:
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == int(master[1]))
    raise AssertionError(f"slot {slot} has no owner")


async def test_cluster_follows_a_resharded_slot(
    cluster_servers: RedisCluster, cluster_store: SessionStore
) -> None:
    store = cluster_store
    s = new("moving")
    await store.setup(s)
    slot = key_slot(store.keys.tag(store.keys.shard_of("moving")).encode())
    source = owner_of(cluster_servers, store, "moving")
    target = next(n for n in cluster_servers.nodes if n is not source)
    try:
        await asyncio.to_thread(move_slot, cluster_servers, slot, source, target)
        # the client's slot map is stale: every call is redirected (MOVED) and answers right
        await store.keep_alive("moving", s.session_id)
        assert (await store.get("moving", s.session_id)).state is State.ACTIVE
        second = new("moving")
        assert (await store.setup(second)).active == 2
        assert (await store.account_sessions("moving")).active_count == 2
        await store.end("moving", s.session_id, EndReason.TEARDOWN)
        assert len(session_keys(target)) == 2 and session_keys(source) == []
    finally:
        await asyncio.to_thread(move_slot, cluster_servers, slot, target, source)


@pytest.mark.parametrize("gated", [True, False])
async def test_cluster_bursts_wait_at_the_gate_instead_of_overflowing_a_node(
    cluster_servers: RedisCluster, keyspace: k.Keys, policy: Policy, clock: Clock, gated: bool
) -> None:
    # two connections per node and a burst of 60 calls on one account (one node)
    client = connect(redis_settings(url=cluster_servers.url, pool_size=2))
    try:
        await client.flushall()
        store = SessionStore(
            client,
            keyspace,
            policy,
            clock=clock,
            max_in_flight=2 if gated else 0,
            in_flight_wait=10.0,  # generous: this is about waiting, not about speed
        )
        results = await asyncio.gather(
            *(store.keep_alive("burst", str(uuid.uuid4())) for _ in range(60)),
            return_exceptions=True,
        )
        kinds = {type(r).__name__ for r in results}
        if gated:
            assert kinds == {"SessionNotFound"}  # every call got its turn and a real answer
        else:
            # without the gate redis-py's cluster client may refuse at once ("Too many
            # connections"), which the store turns into SRM-0008, never SRM-0001 (the
            # autopipeline sends the burst as few pipelines, so it may not overflow at all)
            assert kinds <= {"StoreUnavailable", "SessionNotFound"}
    finally:
        await client.aclose()


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A Cluster of this test alone: losing a master must not disturb other tests."""
    with redis_cluster() as cluster:
        yield cluster


@pytest.mark.slow
async def test_cluster_master_lost_answers_srm_0008_then_recovers(
    own_cluster: RedisCluster, keyspace: k.Keys, policy: Policy
) -> None:
    settings = redis_settings(url=own_cluster.url, request_deadline=1.0)
    client = connect(settings)
    await warm_up(client, settings)  # as srm serve does: the first burst must not fail
    store = SessionStore(client, keyspace, policy, deadline=1.0, max_in_flight=64)
    accounts = [f"lost-{i}" for i in range(24)]
    victim = own_cluster.nodes[1]
    on_victim = {a for a in accounts if owner_of(own_cluster, store, a) is victim}
    assert on_victim and set(accounts) - on_victim

    async def calls() -> list[BaseException | int]:
        """One setup per account, each bounded: an answer or an exception, never a hang."""
        async with asyncio.timeout(15):
            got = await asyncio.gather(
                *(store.setup(new(a)) for a in accounts), return_exceptions=True
            )
        return got

    try:
        assert all(isinstance(r, Started) for r in await calls())
        victim.kill(signal.SIGKILL)
        outage = await calls()
        for account, result in zip(accounts, outage, strict=True):
            # never SRM-0001 and never a wrong answer: a session, or SRM-0008 (always for the
            # lost master's accounts; for the others until the cluster marks itself down)
            assert isinstance(result, Started | StoreUnavailable), (account, result)
            if account in on_victim:
                assert isinstance(result, StoreUnavailable), (account, result)
        victim.start()  # back with its node id and slots (and no data: no persistence here)
        deadline = time.monotonic() + RECOVERY_BOUND
        while True:
            results = await calls()
            # meanwhile the cluster may answer CLUSTERDOWN: SRM-0008 as well, never SRM-0001
            assert all(isinstance(r, Started | LimitReached | StoreUnavailable) for r in results)
            # served again: every account answered (a count, or its limit after the retries)
            if all(isinstance(r, Started | LimitReached) for r in results):
                break
            assert time.monotonic() < deadline, "the client never recovered"
            await asyncio.sleep(0.2)
        await invariants.check(client, keyspace)
    finally:
        await client.aclose()
