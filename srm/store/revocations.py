"""The revocation feed: sessions whose CDN token an edge must refuse before it expires.

The scripts that end a session append it to its shard's stream (``revoke`` in
srm/lua/_events.lua) when [cdn] is on and someone else than its own player ended it. A poll
reads each shard's stream from a position (a time on the Redis servers' clock, in ms) with
one XRANGE per shard, all in one pipeline, and leaves out entries whose token has expired.
The next position lies OVERLAP_MS before the servers' time of the poll, so an entry written
while the poll ran (or on a Cluster master whose clock is a little behind) comes in the
next one: an entry may be listed more than once, never missed. The reaper trims each stream
of the entries older than the longest a token lives (``trim_revocations``).
"""

from __future__ import annotations

from typing import Any

from srm.model import EndReason, Revocations, Revoked
from srm.store.base import StoreBase

# how far before the poll the next one starts again (ms): entries written during a poll, or
# stamped by a master whose clock is that much behind, are still read
OVERLAP_MS = 5000


class RevocationFeed(StoreBase):
    """Reads and trims the shards' revocation streams."""

    @property
    def revocation_lifetime_ms(self) -> int | None:
        """The longest a revocation matters (a token issued at a keep-alive lives the period
        plus the slack, rounded up to a second), None when the feed is off (no [cdn])."""
        feed = self.feeds.revocations
        return None if feed is None else self.policy.period_ms + (feed.slack_s + 1) * 1000

    async def revocations(self, since_ms: int | None, page: int) -> Revocations:
        """The revocations still valid written at or after *since_ms* (None: all of them),
        up to *page* per shard; ``next_ms`` is where the next poll starts.

        When a shard has more than *page*, the next poll starts at the last one read there
        (entries of other shards written after it come again)."""
        start = "-" if since_ms is None else str(since_ms)
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.keys.shards):
            pipe.xrange(self.keys.revoked(shard), start, "+", count=page)
        per_shard = await self._guard("revocations", pipe.execute())
        now = await self.now()  # the deadlines' clock (a test clock in tests)
        served = await self._server_clock.now()  # the clock of the stream ids
        revoked: list[Revoked] = []
        truncated: list[int] = []
        for entries in per_shard:
            if len(entries) >= page:
                truncated.append(_entry_ms(entries[-1][0]))
            revoked += [r for _id, fields in entries if (r := _revoked(fields, now)) is not None]
        floor = since_ms or 0
        # with a shard cut short: the earliest place one stopped (a whole page in one ms moves
        # on by one ms); else a little before the servers' time
        next_ms = max(min(truncated), floor + 1) if truncated else max(floor, served - OVERLAP_MS)
        return Revocations(revoked, next_ms)

    async def trim_revocations(self, shard: int, lifetime_ms: int) -> int:
        """Remove the shard's entries written more than *lifetime_ms* ago (the longest a
        token lives: the keep-alive period plus the slack), which have all expired; how many
        were removed. Others that expired stay until then (a poll leaves them out)."""
        served = await self._server_clock.now()
        removed = await self._guard(
            "revocations_trim",
            self.redis.xtrim(
                self.keys.revoked(shard), minid=served - lifetime_ms, approximate=False
            ),
        )
        return int(removed)


def _entry_ms(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.partition("-")[0])


def _revoked(fields: dict[Any, Any], now_ms: int) -> Revoked | None:
    """The entry *fields* as a Revoked, None when its token has expired or it is damaged."""
    try:
        f = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        until = int(f["u"])
        entry = Revoked(f["s"], int(f["e"]), EndReason(f["r"]), until)
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return entry if until * 1000 > now_ms else None
