"""Reaper heartbeats: a key per reaper id with a TTL, for `srm reaper --check`."""

from __future__ import annotations

from srm.store.base import StoreBase


class Heartbeats(StoreBase):
    """Each reaper's heartbeat key."""

    async def write_heartbeat(self, reaper_id: str, value: str, ttl: int) -> None:
        await self._guard(
            "write_heartbeat", self.redis.set(self.keys.heartbeat(reaper_id), value, ex=ttl)
        )

    async def read_heartbeat(self, reaper_id: str) -> str | None:
        """The heartbeat of reaper *reaper_id*, or None once its TTL has run out."""
        value: str | None = await self._guard(
            "read_heartbeat", self.redis.get(self.keys.heartbeat(reaper_id))
        )
        return value

    async def clear_heartbeat(self, reaper_id: str) -> None:
        await self._guard("clear_heartbeat", self.redis.delete(self.keys.heartbeat(reaper_id)))
