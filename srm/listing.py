"""Where a paged listing of an account's sessions stands: the opaque ``cursor`` of the API.

A walk has three phases, in this order, each resumable from its cursor:

- ``a``: the ACTIVE sessions, by deadline then sessionId (``ZRANGEBYSCORE`` on the active set
  above now). A keep-alive only moves a deadline later, so a session ACTIVE during the whole
  walk is never passed over: it is either behind the cursor already (listed) or ahead of it.
- ``l``: sessions whose keep-alive lapsed and that no sweep has ended yet (deadline <= now),
  reported ENDED with endReason TIMEOUT.
- ``e``: the ENDED sessions awaiting removal (``HSCAN`` of the account's ended hash). A page
  that ends inside one HSCAN step keeps the step's cursor and COUNT and the last sessionId
  listed: the next page reads the same step again and lists the sessionIds after it.

A walk never misses a session that is ACTIVE from its first page to its last. Ended sessions
that end, or are removed, while a walk is under way may be listed twice or not at all; a
session may be listed twice (clients de-duplicate by sessionId).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from srm.errors import MalformedRequest

PHASES = ("a", "l", "e")
DEFAULT_LIMIT = 100
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a walk: its phase, the last sessionId listed, and where it was found."""

    phase: str = "a"
    score: int | None = None  # phases a, l: the deadline of the last session looked at
    sid: str = ""  # the last sessionId looked at ("" at the start of a phase or HSCAN step)
    scan: int = 0  # phase e: the HSCAN cursor of the current step
    count: int = 0  # phase e: the COUNT of the current step (0 at its start)

    def encode(self) -> str:
        if self.phase == "e":
            text = f"e:{self.scan}:{self.count}:{self.sid}"
        else:
            text = f"{self.phase}:{'' if self.score is None else self.score}:{self.sid}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """The cursor *value* stands for; SRM-0002 when it is not one this service made."""
        try:
            padded = value + "=" * (-len(value) % 4)
            phase, *fields = base64.urlsafe_b64decode(padded.encode("ascii")).decode().split(":")
            if phase == "e":
                scan, count, sid = fields
                cursor = cls("e", sid=sid, scan=int(scan), count=int(count))
                if (
                    cursor.scan < 0
                    or not 0 <= cursor.count <= MAX_PAGE
                    or (sid == "") != (cursor.count == 0)
                ):
                    raise ValueError(value)
            else:
                score, sid = fields
                if phase not in PHASES or (score == "") != (sid == ""):
                    raise ValueError(value)
                cursor = cls(phase, score=int(score) if score else None, sid=sid)
            if len(cursor.sid) > 64:
                raise ValueError(value)
            return cursor
        except (ValueError, UnicodeError, binascii.Error):
            raise MalformedRequest("cursor is not a cursor of this listing") from None
