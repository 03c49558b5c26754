"""Reading sessions: one session, and an account's listing page by page."""

from __future__ import annotations

from srm import listing, records
from srm.errors import SessionNotFound
from srm.listing import Cursor
from srm.model import AccountSessions, Session
from srm.store.base import StoreBase


class SessionReads(StoreBase):
    """The client's and the operator's reads of sessions."""

    async def get(self, account_id: str, session_id: str) -> Session:
        """One session of the account, ACTIVE or ENDED; SessionNotFound otherwise."""
        _limit, value = await self._read(account_id, session_id)
        now = await self.now()
        session = records.session(
            session_id, value, now, account_id, self.policy.households.networks
        )
        if session is None:
            raise SessionNotFound()
        return session

    async def account_sessions(
        self, account_id: str, limit: int = 100, cursor: str | None = None
    ) -> AccountSessions:
        """One page of the account's sessions not yet removed, ACTIVE ones first, with the
        account's active count and limit (see srm/listing.py for the walk): one round trip
        that reads the ACTIVE records and about one page of ENDED ones. MalformedRequest for a
        foreign *cursor*."""
        at = Cursor.decode(cursor) if cursor else Cursor()
        page = (at.position, at.sid if at.phase == "e" else "", limit + 1)
        override, flat, ended, rest = await self._read(account_id, ended=page)
        now = await self.now()
        walk = listing.Walk(now)
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            if records.is_session_field(field):
                walk.add(field, value)
        for i in range(0, len(ended), 3):
            walk.add_ended(int(ended[i]), ended[i + 1], ended[i + 2])
        walk.ended_rest(int(rest))
        picked, following = walk.page(at, limit)
        return AccountSessions(
            sessions=[
                session
                for sid, record in picked
                if (
                    session := records.session_of(
                        sid, record, now, account_id, self.policy.households.networks
                    )
                )
                is not None
            ],
            active_count=walk.active,
            max_sessions=int(override) if override is not None else self.policy.max_sessions,
            next=following.encode() if following is not None else None,
        )
