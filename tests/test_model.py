"""Model-based test: random interleavings of every store operation against a real redis-server,
checked after each step against a plain-Python model of the SRM (limit rules, replaces and
joins of a playback included)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar
from unittest.mock import patch

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
from srm.errors import InternalError, LimitReached, SessionNotFound, StoreUnavailable
from srm.model import (
    DAY_MS,
    NO_TIMEOUT_MS,
    PROVISIONAL_MS,
    USAGE_REASONS,
    DayUsage,
    EndReason,
    NewSession,
    Policy,
    State,
)
from srm.rules import Rule
from srm.store import EndOutcome, SessionStore
from tests import invariants
from tests.redis_servers import RedisProcess

ACCOUNTS = ["acct-a", "acct-{b}", "acct:c"]
TIMEOUT_MS = 30_000
RETENTION_MS = 20_000
DEFAULT_LIMIT = 2
# 31 s before a UTC midnight: a session set up at T0 lapses a second before it and the clock
# often crosses it before that session is ended, so usage is counted on two days (an end on
# the day of its time: a TIMEOUT on its deadline's, not on the day it is found)
T0 = 20_834 * DAY_MS - 31_000
RULES = (
    Rule("uhd", 1, qualities=("UHD",)),
    Rule("tv", 1, device_types=("tv",), per="device", policy="evict"),
    Rule("title", 1, content_types=("LIVE",), per="content"),
)
DEVICES = {"tv1": "tv", "tv2": "tv", "ph": "phone"}
CONTENTS = [("c1", "COD"), ("c1", "LIVE"), ("c2", "LIVE")]
PLAYBACKS = [None, "p1", "p2"]


@dataclass
class ModelSession:
    sid: str
    account: str
    created: int
    ka: int
    deadline: int
    device: str = "dev"
    groups: tuple[bytes, ...] = ()
    quality: str | None = None
    playback: str | None = None
    joined: bool = False  # a later setup joined it (its playbackId)
    reason: EndReason | None = None
    ended_at: int | None = None
    purge_at: int | None = None
    by: str | None = None

    def lapsed(self, now: int) -> bool:
        return self.reason is None and self.deadline <= now

    def active(self, now: int) -> bool:
        return self.reason is None and self.deadline > now


@dataclass
class ModelDay:
    """One account's usage on one UTC day, as the model counts it (usage_add in _events.lua)."""

    started: int = 0
    denied: int = 0
    watched: int = 0
    peak: int = 0

    def __post_init__(self) -> None:
        self.ended = dict.fromkeys(USAGE_REASONS, 0)

    def report(self, day: int) -> DayUsage:
        ended = tuple(self.ended[r] for r in USAGE_REASONS)
        return DayUsage(day, self.started, self.denied, ended, self.watched, self.peak)


class SrmModel(RuleBasedStateMachine):
    """The SRM as a few lines of Python; the store must answer exactly as it does."""

    url: ClassVar[str] = ""
    evict: ClassVar[bool] = False
    # the keep-alive timeout; 0: keep-alive disabled (a setup's deadline is provisional,
    # PROVISIONAL_MS, until the store knows it ran and confirms it: then it never lapses)
    timeout: ClassVar[int] = TIMEOUT_MS
    sessions_bundle = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = T0
        # how far past a keep-alive (or a confirmed setup) a deadline lies, and past a setup
        # whose reply was lost (never confirmed): Policy.period_ms and setup_period_ms
        self.period = self.timeout or NO_TIMEOUT_MS
        self.setup_period = self.timeout or PROVISIONAL_MS
        self.redis = aioredis.Redis.from_url(
            self.url, decode_responses=True, encoding_errors="surrogateescape"
        )
        self.keys = k.Keys(shards=4)
        self.store = SessionStore(
            self.redis,
            self.keys,
            Policy(self.timeout, DEFAULT_LIMIT, RETENTION_MS, evict=self.evict, rules=RULES),
            clock=lambda: self.now,
        )
        self.run(self.redis.flushall())
        self.sessions: dict[str, ModelSession] = {}
        self.limits: dict[str, int] = {}
        self.rule_limits: dict[tuple[str, str], int] = {}
        # every session ever created, purged ones included: its end reason once ended (the
        # events must hold exactly one start and, once ended, exactly one end with it)
        self.history: dict[str, EndReason | None] = {}
        self.tombstones: dict[str, tuple[str, int]] = {}  # sid -> (account, purge time)
        self.denials = 0  # denied setups, each with one session.denied event
        self.usage: dict[str, dict[int, ModelDay]] = {}  # account -> UTC day -> its usage

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis.aclose())
        self.loop.close()

    @contextmanager
    def reply_lost(self, script: str, *, resent: bool) -> Iterator[None]:
        """Every call of *script* runs in Redis and its reply is lost: then it is *resent* as
        it was (redis-py's retry: the very same keys and arguments) and the second run's reply
        is the answer, or the caller gets SRM-0008 (StoreUnavailable: the outcome is unknown)."""
        real = self.store._run

        async def lossy(name: str, keys: Any, args: Any, **kwargs: Any) -> Any:
            if name != script:
                return await real(name, keys, args, **kwargs)
            await real(name, keys, args, **kwargs)  # it ran; its reply never arrives
            if not resent:
                raise StoreUnavailable(f"{name}: reply lost")
            return await real(name, keys, args, **kwargs)

        with patch.object(self.store, "_run", lossy):
            yield

    # -- the model's own transitions -----------------------------------------------------

    def count(self, account: str, at: int, what: str, watched: int, active: int) -> None:
        """Usage: one more *what* (started, denied, an end reason) on the day of *at*, with
        *watched* ms; *active*: the account's ACTIVE sessions just after a start, at a denial,
        or just before an end (a lapsed one not yet ended counts: it is still ACTIVE in Redis)."""
        day = self.usage.setdefault(account, {}).setdefault(at // DAY_MS, ModelDay())
        if what == "started":
            day.started += 1
        elif what == "denied":
            day.denied += 1
        else:
            day.ended[what] += 1
        day.watched += watched
        day.peak = max(day.peak, active)

    def end(self, s: ModelSession, reason: EndReason, at: int, by: str | None = None) -> None:
        active = sum(
            1 for x in self.sessions.values() if x.account == s.account and x.reason is None
        )
        self.count(s.account, at, reason.value, max(0, at - s.created), active)
        s.reason, s.ended_at, s.purge_at, s.by = reason, at, self.now + RETENTION_MS, by
        self.history[s.sid] = reason

    def end_lapsed(self, account: str | None = None, device: str | None = None) -> None:
        """End the lapsed sessions (of *account*, of *device*) as the scripts do: TIMEOUT at
        each deadline, earliest deadline first (the usage day and peak follow that order)."""
        lapsed = [
            s
            for s in self.sessions.values()
            if s.lapsed(self.now) and account in (None, s.account) and device in (None, s.device)
        ]
        for s in sorted(lapsed, key=lambda s: (s.deadline, s.sid)):
            self.end(s, EndReason.TIMEOUT, s.deadline)

    def live(self, account: str) -> list[ModelSession]:
        return [s for s in self.sessions.values() if s.account == account and s.active(self.now)]

    def limit(self, account: str, claim: int | None = None) -> int:
        """The operator's override, else the token's claim, else the default."""
        return self.limits.get(account, DEFAULT_LIMIT if claim is None else claim)

    # -- rules ---------------------------------------------------------------------------

    def checks(self, account: str, new: NewSession) -> list[tuple[str, bytes | None, int, str]]:
        """(name, group field or None for the account, max, policy) of each limit to fit."""
        checks: list[tuple[str, bytes | None, int, str]] = [
            (
                "account",
                None,
                self.limit(account, new.max_sessions),
                "evict" if self.evict else "deny",
            )
        ]
        for r in RULES:
            if r.matches(new.quality, new.device_type, new.content_type):
                field, _value = r.fields(new.device_id, new.content_id, b"")
                checks.append(
                    (r.name, field, self.rule_limits.get((account, r.name), r.max), r.policy)
                )
        return checks

    @rule(
        target=sessions_bundle,
        account=st.sampled_from(ACCOUNTS),
        device=st.sampled_from(sorted(DEVICES)),
        quality=st.sampled_from([None, "SD", "UHD"]),
        content=st.sampled_from(CONTENTS),
        replaces=st.one_of(st.none(), sessions_bundle),
        claim=st.one_of(st.none(), st.integers(0, 3)),
        reply=st.sampled_from(["answered", "lost", "resent"]),
        playback=st.sampled_from(PLAYBACKS),
    )
    def setup(
        self,
        account: str,
        device: str,
        quality: str | None,
        content: tuple[str, str],
        replaces: str | None,
        claim: int | None,
        reply: str,
        playback: str | None,
    ) -> str:
        """A setup. Its *reply* may be lost: the script ran, the caller gets SRM-0008 and the
        store never learns it ran, so with keep-alive disabled the session keeps its
        provisional deadline (abort_setup, setup_retried and advance take it from there); or
        resent, the second run answering as for a retry (the same denial without its
        sessions, or "created by an earlier try", then confirmed). With a *playback* that an
        ACTIVE session of the same account and device has, it joins that session instead."""
        sid = str(uuid.uuid4())
        new = NewSession(
            sid,
            account,
            device,
            *content,
            device_type=DEVICES[device],
            quality=quality,
            replaces=replaces,
            max_sessions=claim,
            playback_id=playback,
        )
        self.end_lapsed(account)
        joining = next(
            (
                s
                for s in self.live(account)
                if playback is not None and (s.device, s.playback) == (device, playback)
            ),
            None,
        )
        if joining is not None:
            self.join(new, joining, reply)
            return sid
        reply_lost = reply == "lost"
        live = sorted(self.live(account), key=lambda s: (s.deadline, s.sid))
        checks = self.checks(account, new)

        def counts(field: bytes | None, s: ModelSession) -> bool:
            return field is None or field in s.groups

        gone: list[ModelSession] = [s for s in live if s.sid == replaces]
        victims: list[ModelSession] = []

        def remaining(field: bytes | None) -> int:
            return sum(1 for s in live if counts(field, s) and s not in gone)

        # victims, jointly (setup.lua): oldest keep-alive first, each session an unmet evict
        # limit counts; then, newest first, each one every limit holds without
        need = {
            field: remaining(field) + 1 - limit
            for _name, field, limit, policy in checks
            if policy == "evict" and limit > 0
        }
        for s in live:
            if s not in gone and any(n > 0 and counts(f, s) for f, n in need.items()):
                gone.append(s)
                victims.append(s)
                for f in need:
                    need[f] -= counts(f, s)

        def fits(without: list[ModelSession]) -> bool:
            return all(
                sum(1 for s in live if counts(field, s) and s not in without) + 1 <= limit
                for _name, field, limit, _policy in checks
            )

        if fits(gone):
            for s in reversed(list(victims)):
                if fits([g for g in gone if g is not s]):
                    gone.remove(s)
                    victims.remove(s)
            # minimal: no victim could be kept without breaking a limit
            assert all(not fits([g for g in gone if g is not s]) for s in victims)
        refusing = next((c for c in checks if remaining(c[1]) + 1 > c[2]), None)
        denied: LimitReached | None = None
        active: int | None = None
        try:
            lossy = reply != "answered"
            with self.reply_lost("setup", resent=reply == "resent") if lossy else nullcontext():
                started = self.run(self.store.setup(new))
            assert not started.joined and started.session_id == sid
            active = started.active
        except LimitReached as exc:
            denied = exc
        except StoreUnavailable:
            assert reply_lost
        if reply_lost and refusing is not None:  # denied unknowingly: counted all the same
            self.denials += 1
            self.count(account, self.now, "denied", 0, len(live))
            return sid
        if denied is not None:
            assert refusing is not None, f"denied by {denied.rule}, expected to fit"
            name, field, limit, _policy = refusing
            counted = [s.sid for s in live if counts(field, s)]
            assert (denied.rule, denied.limit) == (name, limit)
            if reply == "answered":  # a resent one is answered from the denial's marker
                assert denied.active == len(counted)
                assert [x.session_id for x in denied.sessions] == counted
            self.denials += 1
            self.count(account, self.now, "denied", 0, len(live))
            # a retry of the very call (its reply lost) is answered the same, counted once
            with pytest.raises(LimitReached) as again:
                self.run(self.store.setup(new))
            assert (again.value.rule, again.value.limit) == (name, limit)
            return sid
        assert refusing is None, f"created, expected a denial by {refusing}"
        for s in gone:
            reason = EndReason.REPLACED if s.sid == replaces else EndReason.EVICTED
            self.end(s, reason, self.now, device)
        groups = tuple(c[1] for c in checks if c[1] is not None)
        # known to have run: confirmed (keep-alive disabled: it never lapses); else provisional
        deadline = self.now + (self.setup_period if reply_lost else self.period)
        self.sessions[sid] = ModelSession(
            sid, account, self.now, self.now, deadline, device, groups, quality, playback
        )
        self.history[sid] = None
        assert active == (None if reply_lost else len(self.live(account)))
        self.count(account, self.now, "started", 0, len(self.live(account)))
        return sid

    @precondition(
        lambda self: any(s.active(self.now) and s.playback for s in self.sessions.values())
    )
    @rule(
        pick=st.integers(0, 99),
        content=st.sampled_from(CONTENTS),
        replaces=st.one_of(st.none(), sessions_bundle),
        reply=st.sampled_from(["answered", "lost", "resent"]),
    )
    def setup_joining(
        self, pick: int, content: tuple[str, str], replaces: str | None, reply: str
    ) -> None:
        """A setup naming the playbackId of a live session of its device: a retry whose
        answer was lost, or another connection of the same player (the content it names and
        a replaces play no part: it joins). From the other rules few setups find one."""
        live = sorted(
            (s for s in self.sessions.values() if s.active(self.now) and s.playback),
            key=lambda s: s.sid,
        )
        s = live[pick % len(live)]
        self.setup(s.account, s.device, None, content, replaces, None, reply, s.playback)

    def join(self, new: NewSession, s: ModelSession, reply: str) -> None:
        """A setup with the playbackId of *s*, ACTIVE on the same device: answered with *s*,
        no slot, no usage, no event; its deadline moves as on a keep-alive (never provisional:
        it is no new session), its keep-alive time at least 1 ms past its creation. A lost
        reply leaves the caller SRM-0008 (the API then undoes the joining call's own
        sessionId: nothing)."""
        try:
            lossy = reply != "answered"
            with self.reply_lost("setup", resent=reply == "resent") if lossy else nullcontext():
                started = self.run(self.store.setup(new))
        except StoreUnavailable:
            assert reply == "lost"
        else:
            assert (started.session_id, started.joined, started.flagged) == (s.sid, True, ())
            assert started.active == len(self.live(s.account))
        s.ka = max(self.now, s.created + 1)
        s.deadline, s.joined = s.ka + self.period, True

    @rule(sid=sessions_bundle)
    def setup_retried(self, sid: str) -> None:
        s = self.sessions.get(sid)
        if s is None:
            return  # a denied or removed setup: a retry would be a new attempt
        # like any setup, the retry ends the account's lapsed sessions first (TIMEOUT)
        self.end_lapsed(s.account)
        self.run(self.store.setup(NewSession(sid, s.account, "dev", "c", "COD", quality="UHD")))
        if self.timeout == 0 and s.reason is None:
            # its answer arrived this time: the setup is confirmed (lastKeepAliveAt stays)
            s.deadline = self.now + NO_TIMEOUT_MS

    @precondition(lambda self: any(s.active(self.now) for s in self.sessions.values()))
    @rule(pick=st.integers(0, 99))
    def setup_retried_live(self, pick: int) -> None:
        """A retry of a live session's setup (with keep-alive disabled, one still provisional
        after a lost reply is confirmed by it; from the bundle, few retries find one)."""
        live = sorted(
            (s for s in self.sessions.values() if s.active(self.now)), key=lambda s: s.sid
        )
        self.setup_retried(live[pick % len(live)].sid)

    @rule(sid=st.one_of(sessions_bundle, st.uuids().map(str)))
    def abort_setup(self, sid: str) -> None:
        """The API gave up on a setup whose outcome it does not know: a session it created
        ends (TEARDOWN, or TIMEOUT once lapsed); an id no setup used yet is refused for ever
        (a tombstone until the reaper removes it)."""
        s = self.sessions.get(sid)
        if s is not None and s.active(self.now) and s.ka > s.created:
            # joined or kept alive since it was made: a player holds it, the undo leaves it
            assert self.run(self.store.abort_setup(s.account, sid)) == 4
            return
        account = s.account if s is not None else ACCOUNTS[0]
        if s is None and sid in self.tombstones:
            account = self.tombstones[sid][0]
        status = self.run(self.store.abort_setup(account, sid))
        if s is None:
            assert status == (2 if sid in self.tombstones else 3)
            self.tombstones.setdefault(sid, (account, self.now + RETENTION_MS))
            self.end_lapsed(account)  # the late setup still ends lapsed sessions first
            with pytest.raises(InternalError):  # a late copy of the setup creates nothing
                self.run(self.store.setup(NewSession(sid, account, "dev", "c1", "COD")))
        elif s.reason is not None:
            assert status == 2
        else:
            assert status == 1
            if s.lapsed(self.now):
                self.end(s, EndReason.TIMEOUT, s.deadline)
            else:
                self.end(s, EndReason.TEARDOWN, self.now)

    @rule(sid=sessions_bundle, same_account=st.booleans(), resent=st.booleans())
    def keep_alive(self, sid: str, same_account: bool, resent: bool) -> None:
        """A keep-alive; *resent*: its reply lost, it runs again and is answered the same."""
        s = self.sessions.get(sid)
        self._keep_alive(sid, self._caller(s, same_account), resent)

    @precondition(lambda self: any(s.active(self.now) for s in self.sessions.values()))
    @rule(pick=st.integers(0, 99), resent=st.booleans())
    def keep_alive_live(self, pick: int, resent: bool) -> None:
        """A keep-alive of a live session by its account (ids from the bundle are mostly
        ended, denied or lapsed ones: without this rule few keep-alives would succeed)."""
        live = sorted(
            (s for s in self.sessions.values() if s.active(self.now)), key=lambda s: s.sid
        )
        s = live[pick % len(live)]
        self._keep_alive(s.sid, s.account, resent)

    def _keep_alive(self, sid: str, account: str, resent: bool) -> None:
        s = self.sessions.get(sid)
        ok = s is not None and s.account == account and s.active(self.now)
        try:
            with self.reply_lost("keepalive", resent=True) if resent else nullcontext():
                self.run(self.store.keep_alive(account, sid))
        except SessionNotFound as gone:
            assert not ok
            told = gone.ended
            if s is None or s.account != account:
                assert told is None
            elif s.reason is None:  # lapsed, not processed yet
                assert told is not None
                assert (told.reason, told.ended_at, told.by_device_id) == (
                    EndReason.TIMEOUT,
                    s.deadline,
                    None,
                )
            else:
                assert told is not None
                assert (told.reason, told.ended_at, told.by_device_id) == (
                    s.reason,
                    s.ended_at,
                    s.by,
                )
            return
        assert ok and s is not None
        s.ka, s.deadline = self.now, self.now + self.period

    @rule(
        sid=sessions_bundle,
        same_account=st.booleans(),
        reason=st.sampled_from([EndReason.TEARDOWN, EndReason.OPERATOR]),
        retry=st.sampled_from(["none", "resent", "again"]),
    )
    def end_one(self, sid: str, same_account: bool, reason: EndReason, retry: str) -> None:
        """A teardown or operator end. *retry*: its reply lost, it is resent (the second run
        finds the session ended: ALREADY_ENDED), or the caller calls again after SRM-0008
        (ALREADY_ENDED); either way it ends once, counted once."""
        s = self.sessions.get(sid)
        account = self._caller(s, same_account)
        try:
            with self.reply_lost("end", resent=True) if retry == "resent" else nullcontext():
                outcome = self.run(self.store.end(account, sid, reason))
        except SessionNotFound:
            assert s is None or s.account != account
            if retry == "again":
                with pytest.raises(SessionNotFound):
                    self.run(self.store.end(account, sid, reason))
            return
        assert s is not None and s.account == account
        if s.reason is None:
            expected = EndOutcome.ALREADY_ENDED if retry == "resent" else EndOutcome.ENDED
            assert outcome is expected
            if s.lapsed(self.now):
                self.end(s, EndReason.TIMEOUT, s.deadline)
            else:
                self.end(s, reason, self.now)
        else:
            assert outcome is EndOutcome.ALREADY_ENDED
        if retry == "again":
            assert self.run(self.store.end(account, sid, reason)) is EndOutcome.ALREADY_ENDED

    @rule(
        account=st.sampled_from(ACCOUNTS),
        batch=st.sampled_from([1, 2, 1000]),
        resent=st.booleans(),
    )
    def end_all(self, account: str, batch: int, resent: bool) -> None:
        """End-all in batches of *batch*; *resent*: every batch's reply is lost and the batch
        runs again (ending the next ones): the call's marker still makes the total count
        each session it ended with OPERATOR once."""
        self.end_lapsed(account)
        live = self.live(account)
        for s in live:
            self.end(s, EndReason.OPERATOR, self.now)
        with self.reply_lost("end_all", resent=True) if resent else nullcontext():
            total = self.run(self.store.end_all(account, EndReason.OPERATOR, batch=batch))
        assert total == len(live)

    @rule(account=st.sampled_from(ACCOUNTS), value=st.integers(0, 3))
    def set_limit(self, account: str, value: int) -> None:
        self.run(self.store.set_limit(account, value))
        self.limits[account] = value

    @rule(
        account=st.sampled_from(ACCOUNTS),
        name=st.sampled_from([r.name for r in RULES]),
        value=st.one_of(st.none(), st.integers(0, 2)),
    )
    def set_rule_limit(self, account: str, name: str, value: int | None) -> None:
        self.run(self.store.set_limit(account, None, {name: value}))
        if value is None:
            self.rule_limits.pop((account, name), None)
        else:
            self.rule_limits[(account, name)] = value

    @rule(account=st.sampled_from(ACCOUNTS))
    def clear_limit(self, account: str) -> None:
        self.run(self.store.clear_limit(account))
        self.limits.pop(account, None)
        for key in [key for key in self.rule_limits if key[0] == account]:
            del self.rule_limits[key]

    @rule(account=st.sampled_from(ACCOUNTS), device=st.sampled_from(sorted(DEVICES)))
    def end_device(self, account: str, device: str) -> None:
        self.end_lapsed(account, device)
        live = [s for s in self.live(account) if s.device == device]
        for s in live:
            self.end(s, EndReason.OPERATOR, self.now)
        assert self.run(self.store.end_device(account, device, EndReason.OPERATOR)) == len(live)

    @rule(seconds=st.sampled_from([0.001, 1, 10, 19.999, 20, 29.999, 30, 45, 120]))
    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)

    @rule(batch=st.sampled_from([1, 2, 100]))
    def sweep(self, batch: int) -> None:
        self.end_lapsed()
        for shard in range(self.keys.shards):
            while self.run(self.store.sweep(shard, batch)).ended == batch:
                pass

    @rule(batch=st.sampled_from([1, 2, 100]))
    def purge(self, batch: int) -> None:
        for sid, s in list(self.sessions.items()):
            if s.purge_at is not None and s.purge_at <= self.now:
                del self.sessions[sid]
        for sid, (_account, purge_at) in list(self.tombstones.items()):
            if purge_at <= self.now:
                del self.tombstones[sid]
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
                assert (g.device_id, g.quality) == (m.device, m.quality)
                confirmed = m.deadline - m.ka >= NO_TIMEOUT_MS  # keep-alive disabled
                if confirmed:  # the clock never gets that far: it must never lapse
                    assert g.end_reason is not EndReason.TIMEOUT
                if m.active(self.now):
                    assert (g.state, g.expires_at, g.end_reason) == (
                        State.ACTIVE,
                        None if confirmed else m.deadline,
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

    @invariant()
    def usage_matches_model(self) -> None:
        """Each account's usage per UTC day: started, denied, ended by reason, watched ms and
        peak, exactly as the model counted them (nothing counted twice, nothing missed)."""
        for account in ACCOUNTS:
            expected = {
                day: counted.report(day) for day, counted in self.usage.get(account, {}).items()
            }
            assert self.run(self.store.usage(account)) == expected, account

    @invariant()
    def one_event_per_start_end_and_denial(self) -> None:
        started: dict[str, int] = {}
        ended: dict[str, list[str]] = {}
        denied = 0
        for shard in range(self.keys.shards):
            for _id, event in self.run(self.redis.xrange(self.keys.events(shard))):
                denied += event["t"] == "D"
                if event["t"] == "S":
                    started[event["s"]] = started.get(event["s"], 0) + 1
                elif event["t"] == "E":
                    ended.setdefault(event["s"], []).append(event["x"])
        assert started == dict.fromkeys(self.history, 1)
        assert ended == {sid: [r.value] for sid, r in self.history.items() if r is not None}
        assert denied == self.denials


# About 5 s alone; a loaded 2-core machine runs it several times slower, and a failure's
# shrinking can take minutes: the falsifying steps must be reported, not cut off at 120 s.
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("evict", "timeout"),
    [(False, TIMEOUT_MS), (True, TIMEOUT_MS), (True, 0)],
    ids=["deny", "evict", "evict-keepalive-disabled"],
)
def test_store_behaves_like_the_model(real_redis: RedisProcess, evict: bool, timeout: int) -> None:
    attributes = {"url": real_redis.url, "evict": evict, "timeout": timeout}
    machine = type("Machine", (SrmModel,), attributes)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=35,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
