"""Setups and end-alls whose replies are lost, on a real redis-server behind a proxy that loses
replies: bounded background aborts, provisional deadlines, cancellation, exact counts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from srm import keys as k
from srm import records
from srm.aborts import Aborter
from srm.api.app import create_app
from srm.api.handlers import DEPS
from srm.config import RedisSettings
from srm.connection import connect
from srm.errors import LimitReached, StoreUnavailable, StoreUnreached
from srm.model import PROVISIONAL_MS, EndReason, NewSession, Policy, State
from srm.store import SessionStore
from tests.helpers import OPERATOR, SETUP, Clock, auth, redis_settings
from tests.lossy_proxy import LossyProxy, lossy_proxy
from tests.redis_servers import RedisProcess, free_port

DID_NOT_HANG = 20.0


def new(account: str = "acct-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, "dev-1", "100001V3D", "COD")


def aborts(outcome: str) -> float:
    return REGISTRY.get_sample_value("srm_setup_aborts_total", {"outcome": outcome}) or 0.0


def client_settings(url: str, **changes: Any) -> RedisSettings:
    """A production client with short bounds: a lost reply fails within about a second."""
    options = {"socket_timeout": 0.3, "request_deadline": 1.0, "pool_timeout": 0.2}
    return redis_settings(url=url, **{**options, **changes})


@pytest.fixture
async def proxy(real_redis: RedisProcess) -> AsyncIterator[LossyProxy]:
    async with lossy_proxy(real_redis.port) as p:
        yield p


@pytest.fixture
async def direct(real_redis: RedisProcess) -> AsyncIterator[Any]:
    """A client straight to the server, to look at what really happened."""
    client = connect(redis_settings(url=real_redis.url))
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def store_on(
    url: str, clock: Clock, policy: Policy | None = None, **settings: Any
) -> AsyncIterator[SessionStore]:
    redis_settings = client_settings(url, **settings)
    client = connect(redis_settings)
    store = SessionStore(
        client,
        k.Keys(16),
        policy or Policy(120_000, 3, 60_000, evict=False),
        clock=clock,
        deadline=redis_settings.request_deadline,
    )
    try:
        yield store
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def api_on(
    settings: Any, store: SessionStore, **runner: Any
) -> AsyncIterator[TestClient[Any, Any]]:
    server = TestServer(create_app(settings, store))
    await server.start_server(**runner)
    async with TestClient(server) as client:
        yield client


async def eventually(condition: Any) -> None:
    async with asyncio.timeout(DID_NOT_HANG):
        while not await condition():
            await asyncio.sleep(0.05)


# -- 4. bounded aborts, only of setups that may have run ------------------------------------


async def test_a_setup_that_never_left_the_process_is_not_aborted(
    settings: Any, clock: Clock
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # connection refused
    async with store_on(nobody, clock) as store:
        with pytest.raises(StoreUnreached):
            await store.setup(new())
        queued = aborts("queued")
        async with api_on(settings, store) as client:
            resp = await client.post("/srm/sessions", json=SETUP, headers=auth())
            assert resp.status == 503
            assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0008"
            assert client.app[DEPS].aborts.pending == 0
        assert aborts("queued") == queued


async def test_a_setup_waiting_for_a_pooled_connection_is_never_sent(
    proxy: LossyProxy, clock: Clock, direct: Any
) -> None:
    async with store_on(proxy.url, clock, pool_size=1, socket_timeout=1.5) as store:
        await store.ping()  # its one connection is open and ready
        proxy.lose_replies = True
        first = asyncio.create_task(store.setup(new()))  # holds the only connection
        await asyncio.sleep(0.1)
        waiting = new()
        with pytest.raises(StoreUnreached):
            await store.setup(waiting)
        with pytest.raises(StoreUnavailable) as lost:
            await first
        assert not isinstance(lost.value, StoreUnreached)  # it was sent: it may have run
        assert not await direct.hexists(store.keys.account("acct-1").state, waiting.session_id)


async def test_a_lost_setup_reply_is_aborted_once_redis_answers(
    settings: Any, proxy: LossyProxy, clock: Clock, direct: Any
) -> None:
    async with store_on(proxy.url, clock) as store, api_on(settings, store) as client:
        aborter = client.app[DEPS].aborts
        await store.setup(new("warm-up"))  # connected, and the script is loaded: it runs
        proxy.lose_replies = True
        resp = await client.post("/srm/sessions", json=SETUP, headers=auth())
        assert resp.status == 503
        assert aborter.pending == 1
        proxy.lose_replies = False

        async def undone() -> bool:
            return aborter.pending == 0

        await eventually(undone)
        listing = await store.account_sessions("acct-1")
        assert listing.active_count == 0
        assert [(s.state, s.end_reason) for s in listing.sessions] == [
            (State.ENDED, EndReason.TEARDOWN)
        ]


async def test_aborts_are_bounded_deduplicated_and_counted(clock: Clock) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    async with store_on(nobody, clock) as store:
        aborter = Aborter(store, capacity=3, workers=1, attempts=2, first_delay=0.01)
        before = {o: aborts(o) for o in ("queued", "dropped", "gave_up", "done")}
        sids = [str(uuid.uuid4()) for _ in range(10)]
        accepted = [aborter.submit("acct-1", sid) for sid in sids]
        assert accepted == [True] * 3 + [False] * 7
        assert aborter.submit("acct-1", sids[0]) is False  # already queued
        assert aborter.pending == 3
        async with asyncio.timeout(DID_NOT_HANG):
            await aborter.drain(within=DID_NOT_HANG)
        assert aborter.pending == 0
        after = {o: aborts(o) - before[o] for o in before}
        assert after == {"queued": 3, "dropped": 7, "gave_up": 3, "done": 0}


async def test_an_abort_that_hits_a_bug_does_not_stop_the_next_ones(
    real_redis: RedisProcess, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with store_on(real_redis.url, clock) as store:
        calls: list[str] = []
        real_abort = store.abort_setup

        async def abort_setup(account_id: str, session_id: str) -> int:
            calls.append(session_id)
            if len(calls) == 1:
                raise RuntimeError("a bug")
            return await real_abort(account_id, session_id)

        store.abort_setup = abort_setup  # type: ignore[method-assign]
        aborter = Aborter(store, workers=1)
        done = aborts("done")
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        aborter.submit("acct-1", first)
        aborter.submit("acct-1", second)
        async with asyncio.timeout(DID_NOT_HANG):
            await aborter.drain(within=DID_NOT_HANG)
        assert calls == [first, second]
        assert aborts("done") == done + 1
        assert "undoing setup" in caplog.text


async def test_the_last_attempt_does_not_sleep(clock: Clock) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    async with store_on(nobody, clock) as store:
        aborter = Aborter(store, attempts=1, first_delay=3600)
        gave_up = aborts("gave_up")
        aborter.submit("acct-1", str(uuid.uuid4()))
        async with asyncio.timeout(DID_NOT_HANG):  # it would sleep an hour
            await aborter.drain(within=3600)
        assert aborts("gave_up") == gave_up + 1


# -- 5. keep-alive disabled: an unknown outcome lapses after a provisional deadline -----------


async def test_keep_alive_disabled_lost_setup_lapses_when_its_abort_fails(
    proxy: LossyProxy, clock: Clock
) -> None:
    policy = Policy(timeout_ms=0, max_sessions=1, retention_ms=60_000, evict=False)
    async with store_on(proxy.url, clock, policy) as store:
        lost = new()
        await store.setup(new("warm-up"))
        proxy.lose_replies = True
        with pytest.raises(StoreUnavailable) as failure:
            await store.setup(lost)
        assert not isinstance(failure.value, StoreUnreached)
        proxy.lose_replies = False
        # no abort reaches Redis (every attempt failed): the setup ran and holds the slot
        held = await store.get("acct-1", lost.session_id)
        assert held.state is State.ACTIVE
        assert held.expires_at == clock.now + PROVISIONAL_MS
        with pytest.raises(LimitReached):
            await store.setup(new())
        clock.advance(PROVISIONAL_MS / 1000)
        fresh = new()
        assert (await store.setup(fresh)).active == 1  # the orphan lapsed: its slot is free
        assert (await store.get("acct-1", lost.session_id)).end_reason is EndReason.TIMEOUT
        # a setup whose answer arrived has no deadline: it never lapses
        kept = await store.get("acct-1", fresh.session_id)
        assert kept.state is State.ACTIVE and kept.expires_at is None
        clock.advance(10 * 365 * 86400)
        assert (await store.get("acct-1", fresh.session_id)).state is State.ACTIVE


# -- 6. cancellation, shutdown, and exact counts after retries ------------------------------


async def test_a_call_cancelled_while_queued_is_not_sent(
    real_redis: RedisProcess, clock: Clock, direct: Any
) -> None:
    async with store_on(real_redis.url, clock) as store:
        s = new()
        task = asyncio.create_task(store.setup(s))
        await asyncio.sleep(0)  # the call is queued, the pipeline not yet flushed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.setup(new("other"))  # a later batch goes out
        assert not await direct.hexists(store.keys.account("acct-1").state, s.session_id)


async def test_a_setup_cancelled_at_shutdown_is_aborted(
    settings: Any, proxy: LossyProxy, clock: Clock, direct: Any
) -> None:
    async with store_on(proxy.url, clock, socket_timeout=1.0, request_deadline=5.0) as store:
        server = TestServer(create_app(settings, store))
        await server.start_server(shutdown_timeout=0.3)
        client = TestClient(server)
        await client.start_server()
        aborter = client.app[DEPS].aborts
        await store.setup(new("warm-up"))
        proxy.lose_replies = True
        requests = proxy.requests
        post = asyncio.create_task(client.post("/srm/sessions", json=SETUP, headers=auth()))

        async def sent() -> bool:
            return proxy.requests > requests

        await eventually(sent)  # the setup is in flight: it runs, its reply is lost

        async def heal_once_queued() -> None:
            while aborter.pending == 0:
                await asyncio.sleep(0.01)
            proxy.lose_replies = False

        healing = asyncio.create_task(heal_once_queued())
        async with asyncio.timeout(DID_NOT_HANG):
            await server.close()  # cancels the handler after shutdown_timeout
            await healing
        with contextlib.suppress(Exception):
            await post
        await client.close()
        ak = store.keys.account("acct-1")
        fields = await direct.hgetall(ak.state)
        assert records.COUNT_FIELD not in fields
        assert not [f for f in fields if records.is_session_field(f)]  # none ACTIVE
        ended = await direct.hgetall(ak.ended)  # the aborted setup
        parsed = [records.parse(v) for v in ended.values()]
        assert parsed and all(r is None or r.reason is not None for r in parsed)
        assert await direct.zscore(ak.due, "acct-1") is None


async def test_end_all_counts_what_a_batch_with_a_lost_reply_ended(
    proxy: LossyProxy, clock: Clock, direct: Any
) -> None:
    async with store_on(proxy.url, clock) as store:
        for _ in range(3):
            await store.setup(new())
        await store.end_all("warm-up", EndReason.OPERATOR)  # the script is loaded: it runs
        proxy.lose_next_reply()  # the end_all batch runs, its reply is lost, it is resent
        assert await store.end_all("acct-1", EndReason.OPERATOR) == 3
        assert proxy.replies_to_lose == 0
        listing = await store.account_sessions("acct-1")
        assert listing.active_count == 0
        assert [s.end_reason for s in listing.sessions] == [EndReason.OPERATOR] * 3
        assert await direct.keys("*endall*") == []  # the call's marker is gone


async def test_end_device_counts_what_a_window_with_a_lost_reply_ended(
    proxy: LossyProxy, clock: Clock, direct: Any
) -> None:
    async with store_on(proxy.url, clock) as store:
        for device in ("tv", "tv", "phone"):
            await store.setup(NewSession(str(uuid.uuid4()), "acct-1", device, "c", "COD"))
        await store.end_device("warm-up", "tv", EndReason.OPERATOR)  # the script is loaded
        proxy.lose_next_reply()  # the window runs, its reply is lost, it is resent
        assert await store.end_device("acct-1", "tv", EndReason.OPERATOR) == 2
        assert proxy.replies_to_lose == 0
        listing = await store.account_sessions("acct-1")
        assert listing.active_count == 1
        assert {s.device_id for s in listing.sessions if s.state is State.ACTIVE} == {"phone"}
        assert await direct.keys("*endall*") == []


async def test_end_all_over_http_reports_every_session_ended(
    settings: Any, proxy: LossyProxy, clock: Clock
) -> None:
    async with store_on(proxy.url, clock) as store, api_on(settings, store) as client:
        for device in ("a", "b", "c"):
            resp = await client.post("/srm/sessions", json=SETUP, headers=auth("acct-1", device))
            assert resp.status == 200
        await store.end_all("warm-up", EndReason.OPERATOR)
        proxy.lose_next_reply()
        resp = await client.delete("/srm/v1/accounts/acct-1/sessions", headers=OPERATOR)
        assert await resp.json() == {"ended": 3}
        assert proxy.replies_to_lose == 0
