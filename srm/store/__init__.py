"""The session store: one atomic Lua script per state change, one typed method per script.

Every script is idempotent, so a retried call is always safe. :class:`SessionStore` is made
of one part per concern, each in its own module:

| module | what it holds |
|---|---|
| ``base.py`` | every call's path: scripts, autopipeline, gate, deadline, replica acks, clock |
| ``boundary.py`` | Redis failures turned into SRM-0008 or SRM-0001, the one place they are |
| ``scripts.py`` | each script's Lua text with the shared definitions it uses |
| ``sessions.py`` | setup, keep-alive, teardown, operator ends |
| ``reads.py`` | one session, an account's listing |
| ``households.py`` | an account's home networks and device registry |
| ``limits.py`` | an account's limit overrides |
| ``reports.py`` | usage per account and day, the denial report |
| ``events.py`` | the session event streams |
| ``revocations.py`` | the revocation feed of CDN tokens |
| ``reaper.py`` | the reaper's passes: sweep, purge, audit, the account walk |
| ``legacy.py`` | the move of SRM 0.x data |
| ``heartbeats.py`` | reaper heartbeats |
"""

from __future__ import annotations

from srm.store.base import EVENTS_ON, Clock, wall_clock_ms
from srm.store.boundary import UNAVAILABLE_DETAILS, LegacyFirst
from srm.store.events import EventLog
from srm.store.heartbeats import Heartbeats
from srm.store.households import END_ALL_MARKER_MS
from srm.store.limits import Limits
from srm.store.reads import SessionReads
from srm.store.reaper import ACCOUNT_KINDS, ReaperPasses, Repair, SweepResult
from srm.store.reports import Reports
from srm.store.revocations import RevocationFeed
from srm.store.scripts import build_library, load_script_source
from srm.store.sessions import EndOutcome, Sessions

__all__ = [
    "ACCOUNT_KINDS",
    "END_ALL_MARKER_MS",
    "EVENTS_ON",
    "UNAVAILABLE_DETAILS",
    "Clock",
    "EndOutcome",
    "LegacyFirst",
    "Repair",
    "SessionStore",
    "SweepResult",
    "build_library",
    "load_script_source",
    "wall_clock_ms",
]


class SessionStore(
    Sessions,
    SessionReads,
    Limits,
    Reports,
    EventLog,
    RevocationFeed,
    ReaperPasses,
    Heartbeats,
):
    """SRM's state in Redis, behind typed methods.

    Time is the Redis server's (see srm/clock.py). A *clock* (ms) replaces it, in tests only:
    its value reaches every script as the clock override.
    """
