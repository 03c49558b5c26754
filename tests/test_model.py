"""Model-based test: random interleavings of every store operation against a real redis-server,
checked after each step against a plain-Python model of the SRM."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from srm import keys as k
from srm.errors import LimitReached, SessionNotFound
from srm.model import EndReason, NewSession, Policy, State
from srm.store import EndOutcome, SessionStore
from tests import invariants
from tests.redis_servers import RedisProcess

ACCOUNTS = ["acct-a", "acct-{b}", "acct:c"]
TIMEOUT_MS = 30_000
RETENTION_MS = 20_000
DEFAULT_LIMIT = 2
T0 = 1_800_000_000_000


@dataclass
class ModelSession:
    sid: str
    account: str
    created: int
    ka: int
    deadline: int
    reason: EndReason | None = None
    ended_at: int | None = None
    purge_at: int | None = None

    def lapsed(self, now: int) -> bool:
        return self.reason is None and self.deadline <= now

    def active(self, now: int) -> bool:
        return self.reason is None and self.deadline > now


class SrmModel(RuleBasedStateMachine):
    """The SRM as a few lines of Python; the store must answer exactly as it does."""

    url: ClassVar[str] = ""
    evict: ClassVar[bool] = False
    sessions_bundle = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = T0
        self.redis = aioredis.Redis.from_url(self.url, decode_responses=True)
        self.keys = k.Keys(shards=4)
        self.store = SessionStore(
            self.redis,
            self.keys,
            Policy(TIMEOUT_MS, DEFAULT_LIMIT, RETENTION_MS, evict=self.evict),
            clock=lambda: self.now,
        )
        self.run(self.redis.flushall())
        self.sessions: dict[str, ModelSession] = {}
        self.limits: dict[str, int] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    # -- the model's own transitions -----------------------------------------------------

    def end(self, s: ModelSession, reason: EndReason, at: int) -> None:
        s.reason, s.ended_at, s.purge_at = reason, at, self.now + RETENTION_MS

    def end_lapsed(self, account: str) -> None:
        for s in self.sessions.values():
            if s.account == account and s.lapsed(self.now):
                self.end(s, EndReason.TIMEOUT, s.deadline)

    def live(self, account: str) -> list[ModelSession]:
        return [s for s in self.sessions.values() if s.account == account and s.active(self.now)]

    def limit(self, account: str) -> int:
        return self.limits.get(account, DEFAULT_LIMIT)

    # -- rules ---------------------------------------------------------------------------

    @rule(target=sessions_bundle, account=st.sampled_from(ACCOUNTS))
    def setup(self, account: str) -> str:
        sid = str(uuid.uuid4())
        self.end_lapsed(account)
        live = self.live(account)
        limit = self.limit(account)
        expect_denied = len(live) >= limit and not (self.evict and limit > 0)
        try:
            active = self.run(self.store.setup(NewSession(sid, account, "dev", "c", "COD")))
        except LimitReached as denied:
            assert expect_denied, f"denied with {len(live)} live of {limit}"
            assert (denied.active, denied.limit) == (len(live), limit)  # noqa: PT017
            return sid
        assert not expect_denied, f"created with {len(live)} live of {limit}"
        if len(live) >= limit:  # evict policy: the oldest keep-alive goes first
            for victim in sorted(live, key=lambda s: (s.deadline, s.sid))[: len(live) - limit + 1]:
                self.end(victim, EndReason.EVICTED, self.now)
        self.sessions[sid] = ModelSession(sid, account, self.now, self.now, self.now + TIMEOUT_MS)
        assert active == len(self.live(account))
        return sid

    @rule(sid=sessions_bundle)
    def setup_retried(self, sid: str) -> None:
        s = self.sessions.get(sid)
        if s is None:
            return  # a denied or removed setup: a retry would be a new attempt
        self.run(self.store.setup(NewSession(sid, s.account, "dev", "c", "COD")))

    @rule(sid=sessions_bundle, same_account=st.booleans())
    def keep_alive(self, sid: str, same_account: bool) -> None:
        s = self.sessions.get(sid)
        account = self._caller(s, same_account)
        ok = s is not None and s.account == account and s.active(self.now)
        try:
            self.run(self.store.keep_alive(account, sid))
        except SessionNotFound:
            assert not ok
            return
        assert ok and s is not None
        s.ka, s.deadline = self.now, self.now + TIMEOUT_MS

    @rule(
        sid=sessions_bundle,
        same_account=st.booleans(),
        reason=st.sampled_from([EndReason.TEARDOWN, EndReason.OPERATOR]),
    )
    def end_one(self, sid: str, same_account: bool, reason: EndReason) -> None:
        s = self.sessions.get(sid)
        account = self._caller(s, same_account)
        try:
            outcome = self.run(self.store.end(account, sid, reason))
        except SessionNotFound:
            assert s is None or s.account != account
            return
        assert s is not None and s.account == account
        if s.reason is None:
            assert outcome is EndOutcome.ENDED
            if s.lapsed(self.now):
                self.end(s, EndReason.TIMEOUT, s.deadline)
            else:
                self.end(s, reason, self.now)
        else:
            assert outcome is EndOutcome.ALREADY_ENDED

    @rule(account=st.sampled_from(ACCOUNTS))
    def end_all(self, account: str) -> None:
        self.end_lapsed(account)
        live = self.live(account)
        for s in live:
            self.end(s, EndReason.OPERATOR, self.now)
        assert self.run(self.store.end_all(account, EndReason.OPERATOR)) == len(live)

    @rule(account=st.sampled_from(ACCOUNTS), value=st.integers(0, 3))
    def set_limit(self, account: str, value: int) -> None:
        self.run(self.store.set_limit(account, value))
        self.limits[account] = value

    @rule(account=st.sampled_from(ACCOUNTS))
    def clear_limit(self, account: str) -> None:
        self.run(self.store.clear_limit(account))
        self.limits.pop(account, None)

    @rule(seconds=st.sampled_from([0.001, 1, 10, 19.999, 20, 29.999, 30, 45, 120]))
    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)

    @rule(batch=st.sampled_from([1, 2, 100]))
    def sweep(self, batch: int) -> None:
        for s in self.sessions.values():
            if s.lapsed(self.now):
                self.end(s, EndReason.TIMEOUT, s.deadline)
        for shard in range(self.keys.shards):
            while self.run(self.store.sweep(shard, batch)).ended == batch:
                pass

    @rule(batch=st.sampled_from([1, 2, 100]))
    def purge(self, batch: int) -> None:
        for sid, s in list(self.sessions.items()):
            if s.purge_at is not None and s.purge_at <= self.now:
                del self.sessions[sid]
        for shard in range(self.keys.shards):
            while self.run(self.store.purge(shard, batch)) == batch:
                pass

    @precondition(lambda self: self.sessions)
    @rule(sid=consumes(sessions_bundle))
    def forget(self, sid: str) -> None:
        """Let the bundle drop ids so rules keep picking sessions that still matter."""

    @rule()
    def audit(self) -> None:
        for shard in range(self.keys.shards):
            accounts = [a for a in ACCOUNTS if self.keys.shard_of(a) == shard]
            assert self.run(self.store.audit(shard, accounts)) == []

    def _caller(self, s: ModelSession | None, same_account: bool) -> str:
        if s is not None and same_account:
            return s.account
        owner = s.account if s is not None else ""
        return next(a for a in ACCOUNTS if a != owner)

    # -- after every step ----------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        for account in ACCOUNTS:
            listing = self.run(self.store.account_sessions(account))
            expected = {s.sid: s for s in self.sessions.values() if s.account == account}
            got = {s.session_id: s for s in listing.sessions}
            assert set(got) == set(expected), account
            assert listing.active_count == len(self.live(account))
            assert listing.max_sessions == self.limit(account)
            for sid, m in expected.items():
                g = got[sid]
                assert g.last_keep_alive_at == m.ka and g.created_at == m.created
                if m.active(self.now):
                    assert (g.state, g.expires_at, g.end_reason) == (
                        State.ACTIVE,
                        m.deadline,
                        None,
                    )
                elif m.reason is None:  # lapsed, not processed yet
                    assert (g.state, g.end_reason, g.ended_at) == (
                        State.ENDED,
                        EndReason.TIMEOUT,
                        m.deadline,
                    )
                else:
                    assert (g.state, g.end_reason, g.ended_at) == (
                        State.ENDED,
                        m.reason,
                        m.ended_at,
                    )
        self.run(invariants.check(self.redis, self.keys))


@pytest.mark.parametrize("evict", [False, True], ids=["deny", "evict"])
def test_store_behaves_like_the_model(real_redis: RedisProcess, evict: bool) -> None:
    machine = type("Machine", (SrmModel,), {"url": real_redis.url, "evict": evict})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=35,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
