"""A paged listing of an account's sessions: the walk and its opaque ``cursor``.

Each page reads the account hash whole (its ACTIVE records, one round trip) and about one page
of the account's ENDED hash, and lists, from the cursor on, in this order:

- ``a``: the ACTIVE sessions, by deadline then sessionId. A keep-alive only moves a deadline
  later, so a session ACTIVE during the whole walk is never passed over: it is either behind
  the cursor already (listed) or ahead of it.
- ``l``: sessions whose keep-alive lapsed and that no sweep has ended yet (deadline <= now),
  reported ENDED with endReason TIMEOUT, by deadline then sessionId.
- ``e``: the ENDED sessions awaiting removal, in the order an HSCAN of the ENDED hash meets
  them (each batch by sessionId); the cursor holds the HSCAN position of the last one's batch.

A walk never misses a session that is ACTIVE from its first page to its last. Sessions that
end, or are removed, while a walk is under way may be listed twice or not at all (clients
de-duplicate by sessionId). A page costs the account's ACTIVE sessions and one page of its
ENDED ones, whatever its history.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from dataclasses import dataclass

from srm import records
from srm.errors import MalformedRequest
from srm.records import Record

PHASES = ("a", "l", "e")
DEFAULT_LIMIT = 100
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a walk: its phase and the last session listed in it."""

    phase: str = "a"
    # phases a, l: the deadline of the last session listed; e: the HSCAN position of its batch
    score: int | None = None
    sid: str = ""  # the last sessionId listed ("" at the start of a phase)

    def encode(self) -> str:
        text = f"{self.phase}:{'' if self.score is None else self.score}:{self.sid}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """The cursor *value* stands for; SRM-0002 when it is not one this service made.
        A phase-e cursor of SRM 0.x (``e:<scan>:<count>:<sid>``) reads as its sessionId."""
        try:
            padded = value + "=" * (-len(value) % 4)
            phase, *fields = base64.urlsafe_b64decode(padded.encode("ascii")).decode().split(":")
            if phase == "e" and len(fields) == 3:
                scan, count, sid = fields
                if (
                    int(scan) < 0
                    or not 0 <= int(count) <= MAX_PAGE
                    or (sid == "") != (count == "0")
                ):
                    raise ValueError(value)
                fields = ["", sid]
            score, sid = fields
            if phase not in PHASES:
                raise ValueError(value)
            if phase == "e" and score and not (score.isascii() and score.isdigit()):
                raise ValueError(value)
            if phase != "e" and (score == "") != (sid == ""):
                raise ValueError(value)
            cursor = cls(phase, score=int(score) if score else None, sid=sid)
            if len(cursor.sid) > 64:
                raise ValueError(value)
            return cursor
        except (ValueError, UnicodeError, binascii.Error):
            raise MalformedRequest("cursor is not a cursor of this listing") from None

    def key(self) -> tuple[int, int, str]:
        """Where the cursor stands in the walk's order (see Walk): the ENDED records a page
        gets all come after a phase-e cursor (the store reads them from its position on)."""
        if self.phase == "e":
            return (PHASES.index(self.phase), -1, "")
        return (PHASES.index(self.phase), self.score or 0, self.sid)

    @property
    def position(self) -> int:
        """Where the page's read of the ENDED hash starts (HSCAN), and the sessionId listed
        last from that batch."""
        return (self.score or 0) if self.phase == "e" else 0


class Walk:
    """The sessions of one account at *now*, in walk order, to cut into pages. Records are
    sorted by their numbers alone; only the page's are read whole."""

    def __init__(self, now: int) -> None:
        self.now = now
        self.active = 0
        self._items: list[tuple[tuple[int, int, str], str]] = []
        self._positions: list[int] = []  # the HSCAN position of each batch of ENDED records
        self._rest: int | None = None  # where the ENDED hash's read stopped (None: its end)

    def add_ended(self, position: int, session_id: str, value: str) -> None:
        """One record of the ENDED hash, read in the HSCAN batch at *position* (batches come
        in the order they were read)."""
        if not self._positions or self._positions[-1] != position:
            self._positions.append(position)
        if records.classify(value) is not None:
            self._items.append(((2, len(self._positions) - 1, session_id), value))

    def ended_rest(self, position: int) -> None:
        """Where the read of the ENDED hash stopped (0: at its end)."""
        self._rest = position or None

    def add(self, session_id: str, value: str) -> None:
        """One record of the account hash (a value that is no session is left out)."""
        seen = records.classify(value)
        if seen is None:
            return
        deadline, ended = seen
        if ended:  # left in the account hash by a version before the ENDED hash: with l
            key = (1, deadline, session_id)
        elif deadline > self.now:
            key = (0, deadline, session_id)
            self.active += 1
        else:
            key = (1, deadline, session_id)
        self._items.append((key, value))

    def page(self, at: Cursor, limit: int) -> tuple[list[tuple[str, Record]], Cursor | None]:
        """The sessions of the page after *at* and the cursor of the next page (None: this
        page lists the last session)."""
        start = at.key() if at.sid else (PHASES.index(at.phase), -1, "")
        after = (item for item in self._items if item[0] > start)
        taken = heapq.nsmallest(limit + 1, after, key=lambda item: item[0])
        following = None
        if len(taken) > limit:
            taken = taken[:limit]
            (phase, score, sid), _value = taken[-1]
            if phase == 2:
                position = self._positions[score]
                following = Cursor("e", score=position or None, sid=sid)
            else:
                following = Cursor(PHASES[phase], score=score, sid=sid)
        elif self._rest is not None:  # the page ends before the ENDED hash was read through
            following = Cursor("e", score=self._rest)
        page = [(key[2], records.parse(value)) for key, value in taken]
        return [(sid, record) for sid, record in page if record is not None], following
