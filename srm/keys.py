"""Every Redis key SRM uses is built here, and nowhere else.

Keys are grouped in hash-tagged shards: shard ``k = crc32(accountId) mod N`` and every key of
that shard starts with ``srm:{s<k>}:``, so each Lua script touches one Redis Cluster slot. The
hash tag is the first ``{...}`` of the key, which is always the shard tag: an accountId
containing ``{``, ``}`` or ``:`` cannot move its keys to another slot or onto another account's
keys (each account key kind has its own fixed infix or suffix, so it is injective in ``id``).

| key | type | holds |
|---|---|---|
| ``srm:{s7}:a:<accountId>`` | hash | the account: its ACTIVE sessions, counters and usage (below) |
| ``srm:{s7}:ae:<accountId>`` | hash | the account's ENDED sessions (and tombstones) until removed |
| ``srm:{s7}:acct:<accountId>:limit`` | string | optional per-account limit override |
| ``srm:{s7}:acct:<accountId>:rlimit`` | hash | rule name -> per-account override of its max |
| ``srm:{s7}:acct:<accountId>:home`` | string | the account's home networks (packed) |
| ``srm:{s7}:acct:<accountId>:devices`` | hash | deviceId -> ``<first>,<last>,<type>`` (registry) |
| ``srm:{s7}:acct:<accountId>:swap`` | string | when the next device removal is allowed (ms) |
| ``srm:{s7}:acct:<accountId>:rate`` | string | the account's setups this and last minute (TTL'd) |
| ``srm:{s7}:due`` | zset | accountId -> earliest keep-alive deadline of its ACTIVE sessions |
| ``srm:{s7}:reap`` | zset | ``<accountId>/<sessionId>`` -> removal time, the purge queue |
| ``srm:{s7}:active`` | hash | ``n``: the shard's ACTIVE sessions; ``recounted``: its last recount |
| ``srm:{s7}:events`` | stream | the shard's session events, trimmed approximately |
| ``srm:{s7}:revoked`` | stream | sessions whose CDN token was revoked, each until it expires |
| ``srm:{s7}:denials:<day>`` | zset | accountId -> setups denied that UTC day (a TTL'd report) |
| ``srm:{s7}:denials:f<day>`` | zset | accountId -> setups flagged by monitor rules that day |
| ``srm:{s7}:denied:<sessionId>`` | string | a denied setup's rule and max, for retries (TTL'd) |
| ``srm:{s7}:endall:<callId>`` | string | sessions one end-all call has ended so far (TTL'd) |
| ``srm:reaper:heartbeat:<id>`` | string | a reaper's TTL'd heartbeat |

The account hash (``srm/lua/_account.lua`` writes it, ``srm/records.py`` reads it), one small
listpack for an account of a few sessions:

| field | value |
|---|---|
| ``n`` | ACTIVE sessions (absent at 0): the account counter |
| ``=<rule>:<group>`` | ACTIVE sessions counted in that rule group (absent at 0) |
| ``=<rule>+d:<group>`` | distinct devices (``+n``: networks) counted in that rule group |
| ``=<rule>+d#<len>:<group><value>`` | that device's (network's) ACTIVE sessions in the group |
| ``><len>:<deviceId><playbackId>`` | the sessionId of that device's ACTIVE playback |
| ``<day>`` (days since the epoch) | that UTC day's usage, packed |
| ``<sessionId>`` | an ACTIVE session's record: times, device, content, rule groups |

An ENDED record (and the tombstone of a setup given up on) moves to the account's ENDED hash,
``ae:``, under the same field, so no request that reads the account hash reads its history.

The ``due`` score is never later than the deadline of any ACTIVE session of the account (a
keep-alive or teardown may leave it earlier: the sweep then finds nothing lapsed and moves it).

The shard's ``active`` hash sums the account counters ``n`` of its accounts: every script that
changes an ``n`` changes it by the same amount (``active_add`` in _account.lua). Its
``recounted`` field is set by the one script that counts it whole (recount.lua, from the due
index): a shard without it (written by a version before the count, or never recounted) is
recounted by the reaper before its count is reported.

Scripts receive every key in KEYS. Three names a script completes itself, from a prefix that
arrives in KEYS (so the slot is declared): the denial ranking of the day of its own clock,
the day appended to ``srm:{s7}:denials:``; the account hashes the recount reads, the
accountId appended to ``srm:{s7}:a:``; and the keys of data written by SRM 0.x (below).

Data written before this layout (SRM 0.x: ``srm:{s7}:sess:<sessionId>`` records, per-account
``active``/``count``/``ended``/``rules``/``usage`` keys and the ``srm:{s7}:deadlines`` index)
is moved into it by ``_legacy.lua``: by any script that touches the account, first, and by the
reaper for accounts nobody touches (docs/operations.md, "Upgrading").
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass

PREFIX = "srm"
SESSION_ID_LENGTH = 36  # canonical UUID text; members end with it
# Memory for the key names of recent accounts, kept built for their next calls: about 30,000
# accounts with 36-character ids, 8,000 with 256-character ones.
ACCOUNT_CACHE_BYTES = 16 * 1024 * 1024
_DICT_ENTRY_BYTES = 104  # a dict's hash slot and entry per item, growth slack included


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """The keys of one account and of the shard it lives in."""

    shard: int
    state: str
    ended: str  # the account's ENDED records, apart from the ACTIVE ones of state
    limit: str
    rule_limits: str
    home: str  # the account's home networks
    devices: str  # the account's device registry
    swap: str  # the swap cooldown: when the next device removal is allowed
    rate: str  # the account's recent setups (limits.setups_per_minute)
    due: str
    reap: str
    events: str
    denials: str  # the shard's denial ranking prefix: denials + day is a ranking key
    legacy: str  # prefix of the account's 0.x keys: legacy + "active" and so on
    legacy_sessions: str  # the shard's 0.x record prefix: legacy_sessions + sessionId
    legacy_deadlines: str  # the shard's 0.x deadline index
    active: str  # the shard's count of ACTIVE sessions (a hash: n, recounted)
    revoked: str  # the shard's revocation feed ([cdn]: ended sessions whose token is valid)
    shard_list: tuple[str, ...]  # the eight above from due, in that order

    def lifecycle(self) -> list[str]:
        """The keys that changing the account's sessions touches (events, usage and the move
        of 0.x data included), in the order ``_account.lua`` reads them (``account_keys``):
        the account's own, then its shard's."""
        return [*self.own(), *self.shard_keys()]

    def kept(self) -> list[str]:
        """The keys a keep-alive touches: the account's own keys of lifecycle(), then its
        shard's due index (the first of the shard's; ``account_keys`` in _account.lua reads the
        others as absent). A key passed is one more string Redis takes in at every call."""
        return [self.state, self.legacy, self.ended, self.due]

    def own(self) -> list[str]:
        """The account's own keys of lifecycle(), for a script working on many accounts of
        one shard (``account_in_shard`` in _account.lua): the shard's come once."""
        return [self.state, self.legacy, self.ended]

    def shard_keys(self) -> list[str]:
        """The shard's keys of lifecycle(): due, reap, events, denials, legacy_sessions,
        legacy_deadlines, active, revoked (Keys builds the list, in that order)."""
        return list(self.shard_list)


class Keys:
    """Builds key names for a deployment with a fixed number of shards."""

    def __init__(self, shards: int, prefix: str = PREFIX) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain a hash tag")
        self.shards = shards
        self.prefix = prefix
        self._tags = [f"{prefix}:{{s{shard}}}" for shard in range(shards)]
        self._due = [f"{tag}:due" for tag in self._tags]
        self._reaps = [f"{tag}:reap" for tag in self._tags]
        self._events = [f"{tag}:events" for tag in self._tags]
        self._denial_prefixes = [f"{tag}:denials:" for tag in self._tags]
        self._legacy_sessions = [f"{tag}:sess:" for tag in self._tags]
        self._legacy_deadlines = [f"{tag}:deadlines" for tag in self._tags]
        self._active = [f"{tag}:active" for tag in self._tags]
        self._revoked = [f"{tag}:revoked" for tag in self._tags]
        self._shard_lists = [
            (
                self._due[shard],
                self._reaps[shard],
                self._events[shard],
                self._denial_prefixes[shard],
                self._legacy_sessions[shard],
                self._legacy_deadlines[shard],
                self._active[shard],
                self._revoked[shard],
            )
            for shard in range(shards)
        ]
        # An account's keys are built once and reused by its following calls (keep-alives,
        # teardown); the map is emptied when it would pass ACCOUNT_CACHE_BYTES, which bounds
        # it at no bookkeeping cost. Bytes, not entries: an id can be 256 characters of
        # 4-byte code points, and it is in the map key and in four key names.
        self._accounts: dict[str, AccountKeys] = {}
        self._accounts_bytes = 0

    def shard_of(self, account_id: str) -> int:
        return zlib.crc32(account_id.encode("utf-8")) % self.shards

    def tag(self, shard: int) -> str:
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is not in 0..{self.shards - 1}")
        return self._tags[shard]

    def account(self, account_id: str) -> AccountKeys:
        keys = self._accounts.get(account_id)
        if keys is None:
            keys = self._account(account_id)
            strings = (
                account_id,
                keys.state,
                keys.ended,
                keys.limit,
                keys.rule_limits,
                keys.legacy,
                keys.home,
                keys.devices,
                keys.swap,
            )
            size = _DICT_ENTRY_BYTES + sys.getsizeof(keys) + sum(map(sys.getsizeof, strings))
            if self._accounts_bytes + size > ACCOUNT_CACHE_BYTES:
                self._accounts.clear()
                self._accounts_bytes = 0
            self._accounts[account_id] = keys
            self._accounts_bytes += size
        return keys

    def _account(self, account_id: str) -> AccountKeys:
        shard = self.shard_of(account_id)
        tag = self._tags[shard]
        base = f"{tag}:acct:{account_id}:"
        return AccountKeys(
            shard=shard,
            state=f"{tag}:a:{account_id}",
            ended=f"{tag}:ae:{account_id}",
            limit=base + "limit",
            rule_limits=base + "rlimit",
            home=base + "home",
            devices=base + "devices",
            swap=base + "swap",
            rate=base + "rate",
            due=self._due[shard],
            reap=self._reaps[shard],
            events=self._events[shard],
            denials=self._denial_prefixes[shard],
            legacy=base,
            legacy_sessions=self._legacy_sessions[shard],
            legacy_deadlines=self._legacy_deadlines[shard],
            active=self._active[shard],
            revoked=self._revoked[shard],
            shard_list=self._shard_lists[shard],
        )

    def shard_keys(self, shard: int) -> list[str]:
        """The keys of *shard* in a script's KEYS (AccountKeys.shard_keys), a new list."""
        self.tag(shard)
        return list(self._shard_lists[shard])

    def due(self, shard: int) -> str:
        self.tag(shard)  # checks the range
        return self._due[shard]

    def reap(self, shard: int) -> str:
        return f"{self.tag(shard)}:reap"

    def events(self, shard: int) -> str:
        self.tag(shard)
        return self._events[shard]

    def revoked(self, shard: int) -> str:
        """The shard's revocation feed (a stream; GET /srm/v1/revocations reads it)."""
        self.tag(shard)
        return self._revoked[shard]

    def legacy_deadlines(self, shard: int) -> str:
        """The 0.x deadline index of *shard* (``<accountId>/<sessionId>`` members), emptied
        as its accounts are moved to the account hash."""
        self.tag(shard)
        return self._legacy_deadlines[shard]

    def active(self, shard: int) -> str:
        """The count of *shard*'s ACTIVE sessions: a hash, ``n`` the count (absent: 0) and
        ``recounted`` the time (ms) recount.lua last counted it whole."""
        self.tag(shard)
        return self._active[shard]

    def account_prefix(self, shard: int) -> str:
        """The account hashes of *shard* are this prefix and the accountId (recount.lua)."""
        return f"{self.tag(shard)}:a:"

    def denials(self, shard: int, day: int, *, flagged: bool = False) -> str:
        """The shard's denial ranking of UTC *day* (days since the epoch); *flagged*: its
        ranking of setups flagged by monitor rules."""
        return f"{self.tag(shard)}:denials:{'f' if flagged else ''}{day}"

    def denied(self, account_id: str, session_id: str) -> str:
        """The short-lived denial of one setup, in its account's shard (a retry of the call
        reads it)."""
        return f"{self._tags[self.account(account_id).shard]}:denied:{session_id}"

    def end_all_marker(self, account_id: str, call_id: str) -> str:
        """The count of one end-all or end-device call, in its account's shard (retries of a
        batch read it)."""
        return f"{self._tags[self.account(account_id).shard]}:endall:{call_id}"

    def heartbeat(self, reaper_id: str) -> str:
        return f"{self.prefix}:reaper:heartbeat:{reaper_id}"

    def all_accounts_pattern(self) -> str:
        """SCAN pattern of the account keys of every shard, 0.x ones included (audit only:
        one walk for all)."""
        return f"{self.prefix}:{{s*}}:a*"

    def parse_account_key(self, key: str) -> tuple[str, str] | None:
        """(accountId, kind) of an account key, or None for any other key: kind ``state`` for
        the account hash, ``ended_records`` for its ENDED hash, else the 0.x kind (``active``,
        ``limit``...)."""
        head, sep, rest = key.partition("}:")
        if not sep or not head.startswith(f"{self.prefix}:{{s"):
            return None
        if rest.startswith("a:"):
            return rest[2:], "state"
        if rest.startswith("ae:"):
            return rest[3:], "ended_records"
        if not rest.startswith("acct:"):
            return None
        account_id, sep, kind = rest[5:].rpartition(":")
        return (account_id, kind) if sep else None


def member(account_id: str, session_id: str) -> str:
    """The purge queue member naming one session: ``<accountId>/<sessionId>``."""
    return f"{account_id}/{session_id}"


def parse_member(value: str) -> tuple[str, str]:
    """(accountId, sessionId) of a purge queue member; the sessionId is its fixed-size tail."""
    return value[: -SESSION_ID_LENGTH - 1], value[-SESSION_ID_LENGTH:]
