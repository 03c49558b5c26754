"""The session events: read, claimed, acknowledged and pruned per shard stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from srm.errors import InternalError
from srm.store.base import StoreBase


class EventLog(StoreBase):
    """The shard streams of session events, for `srm events`."""

    async def read_events(
        self, shard: int, group: str, consumer: str, count: int
    ) -> tuple[int, list[tuple[str, dict[str, str]]]]:
        """(events lost to trimming before the group read them, new events for *consumer*)
        of one shard's stream; creates the group at the oldest event kept if it is new."""
        lost, entries = await self._run(
            "events_read", [self.keys.events(shard)], ["", group, consumer, count]
        )
        return int(lost), _entries(entries)

    async def claim_events(
        self, shard: int, group: str, consumer: str, idle_ms: int, count: int, start: str = "0-0"
    ) -> tuple[list[tuple[str, dict[str, str]]], int, str]:
        """Events of the group pending for longer than *idle_ms* (a consumer died with them),
        from entry id *start* on, now *consumer*'s; how many of those were trimmed away
        before being claimed; and where the next call starts ("0-0": the whole pending list
        was seen). Redis 7 looks at no more than 10 x *count* pending entries per call."""
        reply = await self._guard(
            "events_claim",
            self.redis.xautoclaim(
                self.keys.events(shard), group, consumer, idle_ms, start, count=count
            ),
        )
        # Redis 7 lists the trimmed ones apart; 6.2 returns them with no fields
        claimed = _entries(reply[1])
        kept = [(entry_id, fields) for entry_id, fields in claimed if fields]
        deleted = (len(reply[2]) if len(reply) > 2 else 0) + len(claimed) - len(kept)
        return kept, deleted, str(reply[0])

    async def prune_consumers(self, shard: int, group: str, idle_ms: int, own: str = "") -> int:
        """Remove the group's consumers that hold no event and are idle longer than *idle_ms*
        (and *own*, if it holds none); how many were removed."""
        removed = await self._run(
            "events_prune", [self.keys.events(shard)], ["", group, idle_ms, own]
        )
        return int(removed)

    async def ack_events(self, shard: int, group: str, ids: Sequence[str]) -> None:
        if ids:
            await self._guard("events_ack", self.redis.xack(self.keys.events(shard), group, *ids))

    async def events_backlog(self, shard: int, group: str) -> tuple[int, int | None]:
        """(events delivered to the group but not acknowledged, age in ms of the oldest event
        not yet delivered, None when there is none) of one shard's stream."""
        stream = self.keys.events(shard)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xinfo_groups(stream)
        pipe.xinfo_stream(stream)
        try:
            groups, info = await self._guard("events_backlog", pipe.execute())
        except InternalError:  # no stream yet (a shard with no event)
            return 0, None
        found = [g for g in groups if _field(g, "name") == group]
        if not found:
            return 0, None
        last = str(_field(found[0], "last-delivered-id"))
        newest = _field(info, "last-entry")
        pending = int(_field(found[0], "pending") or 0)
        if not newest or _id_key(str(newest[0])) <= _id_key(last):
            return pending, None
        # the oldest event not yet delivered is the first one after the group's position
        first = await self._guard(
            "events_backlog", self.redis.xrange(stream, "(" + last, "+", count=1)
        )
        if not first:
            return pending, None
        return pending, max(0, await self.now() - _id_key(first[0][0])[0])


def _entries(raw: Any) -> list[tuple[str, dict[str, str]]]:
    """Stream entries as (id, fields); an entry trimmed while pending has no fields."""
    entries = []
    for entry_id, flat in raw or []:
        if not flat:
            fields: dict[str, str] = {}
        elif isinstance(flat, dict):
            fields = flat
        else:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
        entries.append((str(entry_id), fields))
    return entries


def _field(reply: Any, name: str) -> Any:
    """A field of an XINFO reply (a dict, or a flat list of names and values)."""
    if isinstance(reply, dict):
        return reply.get(name)
    items = list(reply)
    for i in range(0, len(items) - 1, 2):
        if items[i] == name:
            return items[i + 1]
    return None


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
