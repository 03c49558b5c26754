"""Every Redis key SRM uses is built here, and nowhere else.

Keys are grouped in hash-tagged shards: shard ``k = crc32(accountId) mod N`` and every key of
that shard starts with ``srm:{s<k>}:``, so each Lua script touches one Redis Cluster slot. The
hash tag is the first ``{...}`` of the key, which is always the shard tag: an accountId
containing ``{``, ``}`` or ``:`` cannot move its keys to another slot or onto another account's
keys (each key kind ends in a fixed suffix, so ``acct:<id>:<kind>`` is injective in ``id``).

| key | type | holds |
|---|---|---|
| ``srm:{s7}:sess:<sessionId>`` | hash | record: acct, dev, dt, cid, ctype, q, created, ka |
| ``srm:{s7}:acct:<accountId>:active`` | zset | sessionId -> keep-alive deadline (ms): the truth |
| ``srm:{s7}:acct:<accountId>:count`` | string | active counter, always ZCARD of ``active`` |
| ``srm:{s7}:acct:<accountId>:limit`` | string | optional per-account limit override |
| ``srm:{s7}:acct:<accountId>:ended`` | hash | sessionId -> ``REASON|endedAt[|byDevice]`` |
| ``srm:{s7}:acct:<accountId>:rules`` | hash | ``<rule>:<group>`` -> ACTIVE count; sid -> groups |
| ``srm:{s7}:acct:<accountId>:rlimit`` | hash | rule name -> per-account override of its max |
| ``srm:{s7}:deadlines`` | zset | ``<accountId>/<sessionId>`` -> deadline, for the sweep |
| ``srm:{s7}:reap`` | zset | ``<accountId>/<sessionId>`` -> removal time, the purge queue |
| ``srm:{s7}:acct:<accountId>:usage`` | hash | UTC day (days since the epoch) -> packed usage |
| ``srm:{s7}:events`` | stream | the shard's session events, trimmed approximately |
| ``srm:{s7}:denials:<day>`` | zset | accountId -> setups denied that UTC day (a TTL'd report) |
| ``srm:{s7}:endall:<callId>`` | string | sessions one end-all call has ended so far (TTL'd) |
| ``srm:reaper:heartbeat:<id>`` | string | a reaper's TTL'd heartbeat |

Scripts receive every key in KEYS. Two names a script completes itself, from a prefix that
arrives in KEYS (so the slot is declared): the record of a session it finds on its own
(lapsed, evicted, ended in bulk), the sessionId appended to the shard's ``srm:{s7}:sess:``;
and the denial ranking of the day of its own clock, the day appended to ``srm:{s7}:denials:``.
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
    active: str
    count: str
    limit: str
    ended: str
    rules: str
    rule_limits: str
    deadlines: str
    reap: str
    usage: str
    events: str
    sessions: str  # the shard's session record prefix: sessions + sessionId is a record key
    denials: str  # the shard's denial ranking prefix: denials + day is a ranking key

    def lifecycle(self) -> list[str]:
        """The keys that ending a session touches (its event and usage included), in the
        order ``_end.lua`` reads them (``account_keys``): one list, so a new kind of key is
        added in two places only."""
        return [
            self.active,
            self.count,
            self.ended,
            self.rules,
            self.deadlines,
            self.reap,
            self.usage,
            self.events,
            self.sessions,
            self.denials,
        ]


class Keys:
    """Builds key names for a deployment with a fixed number of shards."""

    def __init__(self, shards: int, prefix: str = PREFIX) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain a hash tag")
        self.shards = shards
        self.prefix = prefix
        self._tags = [f"{prefix}:{{s{shard}}}" for shard in range(shards)]
        self._deadlines = [f"{tag}:deadlines" for tag in self._tags]
        self._reaps = [f"{tag}:reap" for tag in self._tags]
        self._events = [f"{tag}:events" for tag in self._tags]
        self._session_prefixes = [f"{tag}:sess:" for tag in self._tags]
        self._denial_prefixes = [f"{tag}:denials:" for tag in self._tags]
        # An account's keys are built once and reused by its following calls (keep-alives,
        # teardown); the map is emptied when it would pass ACCOUNT_CACHE_BYTES, which bounds
        # it at no bookkeeping cost. Bytes, not entries: an id can be 256 characters of
        # 4-byte code points, and it is in the map key and in seven key names.
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
            strings = (account_id, keys.limit, keys.rule_limits, keys.usage, *keys.lifecycle()[:4])
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
            active=base + "active",
            count=base + "count",
            limit=base + "limit",
            ended=base + "ended",
            rules=base + "rules",
            rule_limits=base + "rlimit",
            deadlines=self._deadlines[shard],
            reap=self._reaps[shard],
            usage=base + "usage",
            events=self._events[shard],
            sessions=self._session_prefixes[shard],
            denials=self._denial_prefixes[shard],
        )

    def session(self, account_id: str, session_id: str) -> str:
        return f"{self._tags[self.account(account_id).shard]}:sess:{session_id}"

    def deadlines(self, shard: int) -> str:
        return f"{self.tag(shard)}:deadlines"

    def reap(self, shard: int) -> str:
        return f"{self.tag(shard)}:reap"

    def events(self, shard: int) -> str:
        self.tag(shard)  # checks the range
        return self._events[shard]

    def session_prefix(self, shard: int) -> str:
        self.tag(shard)
        return self._session_prefixes[shard]

    def denials(self, shard: int, day: int) -> str:
        """The shard's denial ranking of UTC *day* (days since the epoch)."""
        return f"{self.tag(shard)}:denials:{day}"

    def end_all_marker(self, account_id: str, call_id: str) -> str:
        """The count of one end-all or end-device call, in its account's shard (retries of a
        batch read it)."""
        return f"{self._tags[self.account(account_id).shard]}:endall:{call_id}"

    def heartbeat(self, reaper_id: str) -> str:
        return f"{self.prefix}:reaper:heartbeat:{reaper_id}"

    def all_accounts_pattern(self) -> str:
        """SCAN pattern of the account keys of every shard (audit only: one walk for all)."""
        return f"{self.prefix}:{{s*}}:acct:*"

    def parse_account_key(self, key: str) -> tuple[str, str] | None:
        """(accountId, kind) of an account key, or None for any other key."""
        head, sep, rest = key.partition("}:acct:")
        if not sep or not head.startswith(f"{self.prefix}:{{s"):
            return None
        account_id, sep, kind = rest.rpartition(":")
        return (account_id, kind) if sep else None


def member(account_id: str, session_id: str) -> str:
    """The shard-index member naming one session: ``<accountId>/<sessionId>``."""
    return f"{account_id}/{session_id}"


def parse_member(value: str) -> tuple[str, str]:
    """(accountId, sessionId) of a shard-index member; the sessionId is its fixed-size tail."""
    return value[: -SESSION_ID_LENGTH - 1], value[-SESSION_ID_LENGTH:]
