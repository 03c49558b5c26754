"""What a session is, as the rest of SRM sees it (times are epoch milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from srm.network import Networks
from srm.rules import Rule

DEFAULT_DEVICE_TYPE = "unknown"

# With keep-alive disabled a session's deadline is this far after its last keep-alive: it
# never lapses, yet deadlines still order sessions by last keep-alive (for eviction).
NO_TIMEOUT_MS = 100 * 365 * 86400 * 1000
# With keep-alive disabled a setup first gets this deadline, cleared (moved to NO_TIMEOUT_MS)
# once its success is known; a setup whose outcome stays unknown lapses after it.
PROVISIONAL_MS = 60_000


class State(StrEnum):
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class EndReason(StrEnum):
    TEARDOWN = "TEARDOWN"
    TIMEOUT = "TIMEOUT"
    OPERATOR = "OPERATOR"
    EVICTED = "EVICTED"
    REPLACED = "REPLACED"


# not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building one per request cost several times more (2.9 vs 0.5 us for a NewSession)
@dataclass(slots=True)
class NewSession:
    """A session the API asks the store to create."""

    session_id: str
    account_id: str
    device_id: str
    content_id: str
    content_type: str
    device_type: str = DEFAULT_DEVICE_TYPE
    quality: str | None = None
    replaces: str | None = None  # the sessionId this setup ends (REPLACED) if it succeeds
    max_sessions: int | None = None  # the token's limit claim, when honoured
    address: bytes = b""  # the client address, packed (4 or 16 bytes; srm/network.py); b"": none
    playback_id: str | None = None  # joins the ACTIVE session of this device and playback


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    account_id: str
    device_id: str
    content_id: str
    content_type: str
    state: State
    created_at: int | None
    last_keep_alive_at: int | None
    expires_at: int | None
    ended_at: int | None
    end_reason: EndReason | None
    device_type: str = DEFAULT_DEVICE_TYPE
    quality: str | None = None
    network: str | None = None  # CIDR of the client's network at setup
    location: str | None = None  # "home" | "away" at setup; None: the account had no home
    flagged: tuple[str, ...] = ()  # the monitor rules that flagged its setup


@dataclass(slots=True)  # per request: not frozen, as NewSession
class Started:
    """What a setup did: created the session (or found it created by an earlier try of the
    same call), or joined the ACTIVE session of the same device and playbackId."""

    session_id: str
    active: int  # the account's ACTIVE sessions after it
    joined: bool = False
    flagged: tuple[str, ...] = ()  # the monitor rules that flagged it
    at_ms: int = 0  # the store's time of the setup
    deadline_ms: int = 0  # the session's deadline after it
    content_id: str | None = None  # a joined session's contentID (None: the setup's own)


@dataclass(slots=True)  # per request: not frozen, as NewSession
class Kept:
    """A keep-alive that moved a session's deadline, with what a token for it names."""

    at_ms: int  # the store's time of the keep-alive
    deadline_ms: int  # the new deadline
    content_id: str


@dataclass(frozen=True, slots=True)
class Device:
    """A device of an account's registry (times in ms)."""

    device_id: str
    device_type: str
    first_seen: int
    last_seen: int


@dataclass(frozen=True, slots=True)
class Devices:
    """An account's registered devices, its cap, and when the next removal is allowed
    (None: now)."""

    devices: list[Device]
    max: int
    next_removal_at: int | None


@dataclass(frozen=True, slots=True)
class Ended:
    """How a session that is not removed yet ended (told to its player's keep-alive)."""

    reason: EndReason
    ended_at: int
    by_device_id: str | None


@dataclass(frozen=True, slots=True)
class RuleLimit:
    max: int
    override: bool


@dataclass(frozen=True, slots=True)
class AccountSessions:
    """One page of an account's sessions; *next* is the cursor of the following page."""

    sessions: list[Session]
    active_count: int
    max_sessions: int
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Revoked:
    """A session whose CDN token an edge must refuse until *until_s* (the token's exp)."""

    session_id: str
    ended_at_ms: int
    reason: EndReason
    until_s: int


@dataclass(frozen=True, slots=True)
class Revocations:
    """One poll of the revocation feed; *next_ms* is where the following one starts."""

    revoked: list[Revoked]
    next_ms: int


@dataclass(frozen=True, slots=True)
class Limit:
    max_sessions: int
    override: bool
    rules: dict[str, RuleLimit] | None = None


# The end reasons a usage report counts, in the order of the packed usage value (_events.lua).
USAGE_REASONS = ("TEARDOWN", "TIMEOUT", "OPERATOR", "EVICTED", "REPLACED")
USAGE_DAYS = 35  # days of usage kept per account (also in _events.lua)
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class DayUsage:
    """One account's usage on one UTC day (days since the epoch)."""

    day: int
    started: int = 0
    denied: int = 0
    ended: tuple[int, ...] = (0,) * len(USAGE_REASONS)
    watched_ms: int = 0
    peak_active: int = 0
    registered: int = 0  # devices newly registered
    flagged: int = 0  # setups flagged by monitor rules


@dataclass(frozen=True, slots=True)
class RevocationFeed:
    """The revocation feed of [cdn]: a session's token outlives its deadline by *slack_s*;
    each shard's feed keeps about *maxlen* entries at most."""

    slack_s: int = 30
    maxlen: int = 1000


@dataclass(frozen=True, slots=True)
class EventPolicy:
    """The feeds the scripts write as they change sessions: the events (whether, and how
    their streams are trimmed), and the revocation feed (None: off, without [cdn])."""

    enabled: bool = True
    maxlen: int = 1000
    max_age_ms: int = 86_400_000
    revocations: RevocationFeed | None = None

    @property
    def argument(self) -> str:
        """The events ARGV of the scripts (see lua/_events.lua), the revocation feed's
        settings after a '|' when it is on."""
        events = f"{self.maxlen},{self.max_age_ms}" if self.enabled else ""
        if self.revocations is None:
            return events
        return f"{events}|{self.revocations.slack_s},{self.revocations.maxlen}"


@dataclass(frozen=True, slots=True)
class Households:
    """The [network] and [devices] settings the store applies."""

    networks: Networks = field(default_factory=Networks)
    learn_home: tuple[str, ...] = ()  # device types whose first session sets the home
    devices_max: int = 0  # 0: no device registry
    forget_after_ms: int = 90 * DAY_MS
    swap_cooldown_ms: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    """The session rules the store applies (from the [sessions] settings)."""

    timeout_ms: int
    max_sessions: int
    retention_ms: int
    evict: bool
    rules: tuple[Rule, ...] = ()
    households: Households = field(default_factory=Households)
    setups_per_minute: int = 0  # per account; 0: any number

    @property
    def period_ms(self) -> int:
        """How far past a keep-alive the session's deadline lies."""
        return self.timeout_ms if self.timeout_ms > 0 else NO_TIMEOUT_MS

    @property
    def setup_period_ms(self) -> int:
        """How far past a setup its deadline lies: provisional when keep-alive is disabled."""
        return self.timeout_ms if self.timeout_ms > 0 else PROVISIONAL_MS
