"""Sessions: setup, keep-alive, every way a session ends, and reading an account's sessions."""

from __future__ import annotations

import contextlib
import uuid
from enum import Enum
from typing import Any

from srm import network, records
from srm.errors import (
    InternalError,
    LimitReached,
    SessionNotFound,
    SrmError,
    StoreUnavailable,
    StoreUnreached,
    TooSoon,
)
from srm.model import (
    DEFAULT_DEVICE_TYPE,
    EndReason,
    Kept,
    NewSession,
    Started,
)
from srm.rules import DEVICES_RULE, setup_text
from srm.store.households import END_ALL_MARKER_MS, Households, device, in_registration_order


class EndOutcome(Enum):
    ENDED = 1
    ALREADY_ENDED = 2


class Sessions(Households):
    """The client's and the operator's calls on sessions."""

    async def setup(self, new: NewSession) -> Started:
        """Create the session unless a limit refuses it, or join the ACTIVE session of the same
        device and playbackId.

        Raises LimitReached, naming the refusing limit and the sessions counted against it,
        when the account limit or a limit rule is reached (and evicting cannot make room), or
        the device registry is full; TooSoon when the account is over its setups per minute.
        Safe to retry with the same sessionId.
        """
        ak = self.keys.account(new.account_id)
        house = self.policy.households
        networks = house.networks
        address = network.parse_packed(new.address)
        net = networks.network_bytes(address)
        learned = b""
        if address is not None and new.device_type in house.learn_home:
            learned = network.pack_home([networks.network_of(address)])
        answer = await self._run(
            "setup",
            [
                ak.limit,
                ak.rule_limits,
                self.keys.denied(new.account_id, new.session_id),
                ak.home,
                ak.devices,
                ak.rate,
                *ak.lifecycle(),
            ],
            [
                self._clock_override(),
                new.session_id,
                new.account_id,
                new.device_id,
                new.content_id,
                new.content_type,
                self.policy.setup_period_ms,
                self.policy.max_sessions if new.max_sessions is None else new.max_sessions,
                self.policy.retention_ms,
                "evict" if self.policy.evict else "deny",
                "" if new.device_type == DEFAULT_DEVICE_TYPE else new.device_type,
                new.quality or "",
                new.replaces or "",
                self._events,
                new.address,
                net,
                learned,
                house.devices_max,
                house.forget_after_ms,
                new.playback_id or "",
                self.policy.setups_per_minute,
                self.policy.period_ms,
                *self._rule_args(new, net),
            ],
            account=new.account_id,
        )
        status = answer[0]
        if status in (1, 2, 3):
            started = Started(
                session_id=str(answer[3]),
                active=int(answer[1]),
                joined=status == 3,
                flagged=tuple(filter(None, str(answer[4]).split(","))) if status != 3 else (),
                at_ms=int(answer[5]),
                deadline_ms=int(answer[6]),
                content_id=str(answer[7]) if status == 3 else None,
            )
            if self.policy.timeout_ms == 0 and not started.joined:  # a join is no new session
                await self._confirm(new.account_id, started.session_id)
            return started
        if status == -2:
            raise TooSoon(
                "the account is over its setups per minute (limits.setups_per_minute)",
                -(-int(answer[1]) // 1000),
            )
        if status == 0:
            refusing = str(answer[3])
            if refusing == DEVICES_RULE:
                registered = in_registration_order(device(d, v) for d, v in answer[4:])
                if not registered:  # a retry answered from the denial's marker
                    registered = (await self.devices(new.account_id)).devices
                raise LimitReached(int(answer[1]), int(answer[2]), refusing, devices=registered)
            now = await self.now()
            counted = [
                session
                for sid, _deadline, value in answer[4:]
                if (session := records.session(sid, value, now, new.account_id, networks))
                is not None
            ]
            raise LimitReached(int(answer[1]), int(answer[2]), refusing, counted)
        # -1: abandoned by an earlier try of this very call
        raise InternalError(f"setup of {new.session_id} refused with status {status}")

    def _rule_args(self, new: NewSession, net: bytes) -> list[Any]:
        """setup.lua's ARGV from its 23rd (see its header): every rule in one text, then for
        each rule the new session matches its index in that text and its fields."""
        rules = self.policy.rules
        if rules is not self._rule_set[0]:  # made once per rule set (a new policy: again)
            self._rule_set = (rules, setup_text(rules), [str(i) for i in range(1, len(rules) + 1)])
        _, text, indexes = self._rule_set
        args: list[Any] = [text]
        for rule, index in zip(rules, indexes, strict=True):
            if rule.matches(new.quality, new.device_type, new.content_type):
                field, value_field = rule.fields(new.device_id, new.content_id, net)
                args += [index, field, value_field]
        return args

    async def _confirm(self, account_id: str, session_id: str) -> None:
        """Keep-alive disabled: replace the provisional deadline of a setup known to have run.

        Until then the session lapses after PROVISIONAL_MS, so a setup whose reply was lost
        and whose abort failed holds its slot for that long, not for ever.
        """
        try:
            await self.keep_alive(account_id, session_id, confirm=True)
        except SessionNotFound:
            pass  # ended meanwhile (evicted, ended by an operator): it holds no slot
        except StoreUnreached as exc:
            raise StoreUnavailable(str(exc)) from exc  # the setup itself did run

    async def keep_alive(self, account_id: str, session_id: str, *, confirm: bool = False) -> None:
        """Move the deadline of an ACTIVE session; SessionNotFound if ended, lapsed or unknown.

        *confirm*: a setup's confirmation, which leaves lastKeepAliveAt at the setup time.
        """
        await self._keep_alive(account_id, session_id, "1" if confirm else "0", "0")

    async def keep_alive_for_token(self, account_id: str, session_id: str) -> Kept:
        """A keep-alive (as keep_alive) that answers the new deadline and the session's
        contentID, which a token for the session (CDN, licence) names."""
        kept = await self._keep_alive(account_id, session_id, "0", "1")
        return Kept(int(kept[1]), int(kept[2]), str(kept[3]))

    async def _keep_alive(self, account_id: str, session_id: str, confirm: str, tell: str) -> Any:
        moved = await self._run(
            "keepalive",
            self.keys.account(account_id).kept(),
            [self._clock_override(), session_id, account_id, self.policy.period_ms, confirm, tell],
            account=account_id,
        )
        if moved == 1 or isinstance(moved, list):
            return moved
        if isinstance(moved, str | bytes) and moved:
            raise SessionNotFound(
                ended=records.ended_text(moved if isinstance(moved, str) else moved.decode())
            )
        raise SessionNotFound()

    async def end(self, account_id: str, session_id: str, reason: EndReason) -> EndOutcome:
        """End one session exactly once; ALREADY_ENDED on repeats, SessionNotFound if unknown."""
        status = await self._end(account_id, session_id, reason)
        if status == 0:
            raise SessionNotFound()
        return EndOutcome.ALREADY_ENDED if status == 2 else EndOutcome.ENDED

    async def _end(self, account_id: str, session_id: str, reason: EndReason) -> int:
        """end.lua's status: 1 ended with *reason*, 3 ended as TIMEOUT, 2 already, 0 unknown."""
        return int(
            await self._run(
                "end",
                self.keys.account(account_id).lifecycle(),
                [
                    self._clock_override(),
                    session_id,
                    account_id,
                    reason.value,
                    self.policy.retention_ms,
                    self._events,
                ],
                account=account_id,
            )
        )

    async def end_device(
        self, account_id: str, device_id: str, reason: EndReason, batch: int = 1000
    ) -> int:
        """End every ACTIVE session of one device of the account; how many *reason* ended.

        end_device.lua ends at most *batch* of them a call; like end-all, the calls share a
        marker counting what this call ended, so a call run twice (its reply lost, then
        resent) still reports the sessions its first run ended.
        """
        marker = self.keys.end_all_marker(account_id, str(uuid.uuid4()))
        return await self._end_device_batches(account_id, device_id, reason, marker, batch)

    async def abort_setup(self, account_id: str, session_id: str) -> int:
        """Undo a setup whose outcome is unknown (see abort.lua); returns the script status."""
        ak = self.keys.account(account_id)
        return int(
            await self._run(
                "abort",
                ak.lifecycle(),
                [
                    self._clock_override(),
                    session_id,
                    account_id,
                    self.policy.retention_ms,
                    self._events,
                ],
                account=account_id,
            )
        )

    async def end_all(self, account_id: str, reason: EndReason, batch: int = 1000) -> int:
        """End every ACTIVE session of the account (bounded batches); how many *reason* ended.

        The batches share a marker key counting what this call ended, so a batch run twice
        (its reply lost, then retried) still reports the sessions its first run ended.
        """
        ak = self.keys.account(account_id)
        marker = self.keys.end_all_marker(account_id, str(uuid.uuid4()))
        while True:
            _ended, _lapsed, remaining, total = await self._run(
                "end_all",
                [*ak.lifecycle(), marker],
                [
                    self._clock_override(),
                    account_id,
                    reason.value,
                    batch,
                    self.policy.retention_ms,
                    END_ALL_MARKER_MS,
                    self._events,
                ],
                account=account_id,
            )
            if int(remaining) == 0:
                break
        with contextlib.suppress(SrmError):  # else it expires by itself
            await self._guard("end_all_marker", self.redis.delete(marker))
        return int(total)
