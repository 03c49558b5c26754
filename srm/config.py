"""Settings: the packaged defaults, then the TOML file named by SRM_CONFIG, then SRM_* variables.

Every setting has its default in ``srm/defaults.toml`` and nowhere else: the dataclasses
below declare each setting's name and type (the type says how a TOML value or an
environment string is read), :func:`load` fills them. Each one can be overridden by
``SRM_<SECTION>_<NAME>``; the contract names of API.md (``SRM_PORT``, ``SRM_REDIS_URL``, ...)
are aliases kept in :data:`ENV_ALIASES`. A bad value fails at start with a
:class:`ConfigError` naming the setting and where it came from.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import unquote, urlsplit

from srm import rules as limit_rules
from srm.rules import Rule

log = logging.getLogger(__name__)

MASK = "***"
# Query parameters of a URL setting whose values are secrets (sentinel_password, ...)
_SECRET_QUERY_WORDS = ("password", "secret", "token")

ENV_ALIASES: dict[str, tuple[str, str]] = {
    "SRM_REDIS_URL": ("redis", "url"),
    "SRM_HOST": ("server", "host"),
    "SRM_PORT": ("server", "port"),
    "SRM_WORKERS": ("server", "workers"),
    "SRM_AUTH_SECRET": ("auth", "secret"),
    "SRM_AUTH_JWKS_URL": ("auth", "jwks_url"),
    "SRM_OPERATOR_KEYS": ("operator", "keys"),
    "SRM_SESSION_TIMEOUT": ("sessions", "timeout"),
    "SRM_MAX_SESSIONS": ("sessions", "max_sessions"),
    "SRM_ENDED_RETENTION": ("sessions", "ended_retention"),
    "SRM_REAPER_INTERVAL": ("reaper", "interval"),
    "SRM_AUTH_LIMIT_CLAIMS": ("auth", "limit_claims"),
    "SRM_TRUSTED_PROXIES": ("network", "trusted_proxies"),
    "SRM_DEVICES_MAX": ("devices", "max"),
    "SRM_SETUPS_PER_MINUTE": ("limits", "setups_per_minute"),
}
# Variables that are not settings but are read elsewhere (not warned about).
ENV_OTHER = frozenset({"SRM_CONFIG"})

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
)


class ConfigError(ValueError):
    """Raised when a setting is missing, malformed or out of range."""


# Field metadata of the settings that are secrets, declared as
# ``name: str = field(repr=False, metadata=SECRET)``: left out of ``repr``, masked by
# `srm config` and scrubbed from every log line (see :func:`secret_values`). SECRET is a
# string or a tuple of them; SECRET_URL a URL whose password and secret query values are;
# SECRET_MAPPING a table whose values are.
SECRET = {"secret": "value"}
SECRET_URL = {"secret": "url"}
SECRET_MAPPING = {"secret": "mapping"}  # a table whose values are secrets (drm.headers)


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    workers: int
    max_body_bytes: int
    max_header_bytes: int
    access_log: bool
    shutdown_timeout: float
    keepalive_timeout: float
    body_timeout: float
    cursor_key: str = field(repr=False, metadata=SECRET)


@dataclass(frozen=True)
class RedisSettings:
    url: str = field(repr=False, metadata=SECRET_URL)
    shards: int
    pool_size: int
    pool_timeout: float
    socket_timeout: float
    connect_timeout: float
    request_deadline: float
    replica_acks: int
    replica_ack_timeout: float
    allow_eviction: bool


@dataclass(frozen=True)
class EmbeddedSettings:
    data_dir: str
    redis_server: str
    appendonly: bool


@dataclass(frozen=True)
class AuthSettings:
    algorithm: str
    secret: str = field(repr=False, metadata=SECRET)
    secrets: tuple[str, ...] = field(repr=False, metadata=SECRET)
    public_key: str = field(repr=False, metadata=SECRET)
    jwks_url: str = field(repr=False, metadata=SECRET_URL)
    jwks_cache_seconds: float
    jwks_min_refresh: float
    jwks_timeout: float
    jwks_max_bytes: int
    jwks_allow_http: bool
    jwks_ca_file: str
    leeway: int
    audience: str
    issuer: str
    token_cache_size: int
    limit_claims: bool

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms a client token may use (``algorithm`` is a comma-separated list).

        With a JWKS URL only asymmetric ones apply; when ``algorithm`` names none (the HS256
        default), every asymmetric algorithm is accepted, each bound to its key's type.
        """
        names = tuple(a.strip() for a in self.algorithm.split(",") if a.strip())
        if not self.jwks_url:
            return names
        asymmetric = tuple(a for a in names if a in KEY_ALGORITHMS)
        return asymmetric or tuple(sorted(KEY_ALGORITHMS))

    @property
    def hmac_secrets(self) -> tuple[str, ...]:
        """Every accepted HS secret, ``secret`` first; the first one mints `srm token`."""
        return tuple(dict.fromkeys(s for s in (self.secret, *self.secrets) if s))


@dataclass(frozen=True)
class OperatorSettings:
    keys: tuple[str, ...] = field(repr=False, metadata=SECRET)


@dataclass(frozen=True)
class SessionSettings:
    timeout: int
    max_sessions: int
    ended_retention: int
    content_types: tuple[str, ...]
    limit_policy: str
    deny_status: int
    qualities: tuple[str, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class NetworkSettings:
    trusted_proxies: tuple[str, ...]
    ipv4_prefix: int
    ipv6_prefix: int
    learn_home: tuple[str, ...]


@dataclass(frozen=True)
class DevicesSettings:
    max: int
    forget_after_days: int
    swap_cooldown_days: int


@dataclass(frozen=True)
class LimitsSettings:
    setups_per_minute: int


@dataclass(frozen=True)
class ReaperSettings:
    interval: float
    batch_size: int
    audit_interval: float
    heartbeat_ttl: int
    metrics_port: int
    metrics_host: str
    id: str
    max_batches: int


@dataclass(frozen=True)
class EventsSettings:
    enabled: bool
    maxlen: int
    max_age: int
    claim_idle: float
    batch_size: int
    poll_interval: float
    metrics_port: int
    metrics_host: str
    webhook_timeout: float
    retry_cap: float


@dataclass(frozen=True)
class CdnSettings:
    key: str = field(repr=False, metadata=SECRET)
    keys: tuple[str, ...] = field(repr=False, metadata=SECRET)
    algorithm: str
    slack: int
    acl: str
    token_name: str
    revocations_maxlen: int
    poll_interval: float
    api_url: str = field(repr=False, metadata=SECRET_URL)

    @property
    def enabled(self) -> bool:
        return bool(self.key)

    @property
    def edge_keys(self) -> tuple[str, ...]:
        """Every key an edge accepts: ``key`` (which signs) first, then ``keys``."""
        return tuple(dict.fromkeys(k.lower() for k in (self.key, *self.keys) if k))


@dataclass(frozen=True)
class DrmSettings:
    upstream_url: str = field(repr=False, metadata=SECRET_URL)
    token_key: str = field(repr=False, metadata=SECRET)
    token_algorithm: str
    token_header: str
    headers: dict[str, str] = field(repr=False, metadata=SECRET_MAPPING)
    timeout: float
    pool_size: int

    @property
    def enabled(self) -> bool:
        return bool(self.upstream_url)


@dataclass(frozen=True)
class LoggingSettings:
    level: str


@dataclass(frozen=True)
class Settings:
    server: ServerSettings
    redis: RedisSettings
    embedded: EmbeddedSettings
    auth: AuthSettings
    operator: OperatorSettings
    sessions: SessionSettings
    network: NetworkSettings
    devices: DevicesSettings
    limits: LimitsSettings
    reaper: ReaperSettings
    events: EventsSettings
    cdn: CdnSettings
    drm: DrmSettings
    logging: LoggingSettings

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some settings of one section changed (used by tests and the CLI)."""
        return dataclasses.replace(
            self, **{section: dataclasses.replace(getattr(self, section), **changes)}
        )


@functools.cache
def defaults() -> Settings:
    """The packaged defaults alone (no SRM_CONFIG, no environment)."""
    return load(env={})


def masked(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every setting by section, each secret masked (what `srm config` prints)."""
    return {
        section.name: {
            f.name: _mask(f.metadata.get("secret"), getattr(values, f.name))
            for f in dataclasses.fields(values)
        }
        for section in dataclasses.fields(Settings)
        for values in (getattr(settings, section.name),)
    }


def secret_values(settings: Settings) -> list[str]:
    """Every secret in *settings*, as configured and URL-decoded (to scrub from logs)."""
    found: list[str] = []
    for section in dataclasses.fields(Settings):
        values = getattr(settings, section.name)
        for f in dataclasses.fields(values):
            kind, value = f.metadata.get("secret"), getattr(values, f.name)
            if kind == "value":
                found += [value] if isinstance(value, str) else list(value)
            elif kind == "url":
                found += [form for raw in _url_secrets(value) for form in (raw, unquote(raw))]
            elif kind == "mapping":
                found += list(value.values())
    return [s for s in dict.fromkeys(found) if s]


def _mask(kind: str | None, value: Any) -> Any:
    if kind == "value":
        return (MASK if value else "") if isinstance(value, str) else [MASK] * len(value)
    if kind == "url":
        return mask_url(value)
    if kind == "mapping":
        return {name: MASK for name in value}
    return value


def mask_url(url: str) -> str:
    """*url* with its password and secret query values replaced by ``***`` where they stand
    (a password that also occurs elsewhere in the URL, ``p`` of ``http`` say, leaves the
    rest as it is)."""
    return _split_url_secrets(url, MASK)[0]


def _url_secrets(url: str) -> list[str]:
    """The password (or a bare ``secret@host`` userinfo) and secret query values of *url*,
    as written in it."""
    return _split_url_secrets(url, MASK)[1]


def _split_url_secrets(url: str, mask: str) -> tuple[str, list[str]]:
    """*url* with its secrets replaced by *mask*, and the secrets as written."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    found = [password if sep else user] if at else []
    if at and found[0]:
        userinfo = f"{user}:{mask}" if sep else mask
    query = []
    for pair in parts.query.split("&") if parts.query else []:
        name, eq, value = pair.partition("=")
        if value and any(word in unquote(name).lower() for word in _SECRET_QUERY_WORDS):
            found.append(value)
            value = mask
        query.append(f"{name}{eq}{value}")
    netloc = f"{userinfo}@{host}" if at else host
    shown = f"{parts.scheme}://{netloc}{parts.path}" if "://" in url else url.split("?")[0]
    shown += f"?{'&'.join(query)}" if "?" in url else ""
    shown += f"#{parts.fragment}" if "#" in url else ""
    return shown, [s for s in found if s]


def load(env: Mapping[str, str] | None = None, extra_file: str | Path | None = None) -> Settings:
    """Build the settings: packaged defaults, then SRM_CONFIG (or *extra_file*), then env."""
    env = os.environ if env is None else env
    raw = _read_toml(resources.files("srm").joinpath("defaults.toml").read_text(), "defaults")
    sources: dict[tuple[str, str], str] = {}
    extra = extra_file or env.get("SRM_CONFIG")
    if extra:
        path = Path(extra)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"SRM_CONFIG: cannot read {path}: {exc.strerror}") from exc
        for section, values in _read_toml(text, str(path)).items():
            if section not in raw or not isinstance(values, dict):
                raise ConfigError(f"{path}: unknown section [{section}]")
            for name, value in values.items():
                if name not in raw[section]:
                    raise ConfigError(f"{path}: unknown setting {section}.{name}")
                raw[section][name] = value
                sources[(section, name)] = str(path)
    for var, value in env.items():
        if not var.startswith("SRM_") or var in ENV_OTHER:
            continue
        target = ENV_ALIASES.get(var) or _generic_target(var, raw)
        if target is None:
            log.warning("ignoring unknown variable %s", var)
            continue
        raw[target[0]][target[1]] = value
        sources[target] = var
    sections = get_type_hints(Settings)
    _same_names("defaults.toml", set(raw), set(sections), "section")
    settings = Settings(
        **{name: _build(cls, name, raw[name], sources) for name, cls in sections.items()}
    )
    _validate(settings)
    return settings.replace(
        "sessions",
        rules=_rules(raw["sessions"]["rules"], settings, sources.get(("sessions", "rules"))),
    )


def _rules(value: Any, settings: Settings, where: str | None) -> tuple[Rule, ...]:
    """The limit rules of ``[[sessions.rules]]`` (or SRM_SESSIONS_RULES as a JSON list)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ConfigError(f"sessions.rules (from {where}): not a JSON list") from None
    try:
        return limit_rules.parse(
            value,
            qualities=settings.sessions.qualities,
            content_types=settings.sessions.content_types,
            policy=settings.sessions.limit_policy,
        )
    except limit_rules.RuleError as exc:
        raise ConfigError(f"{exc} (from {where or 'config'})") from None


def _read_toml(text: str, where: str) -> dict[str, dict[str, Any]]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc


def _generic_target(var: str, raw: Mapping[str, Mapping[str, Any]]) -> tuple[str, str] | None:
    rest = var[len("SRM_") :].lower()
    for section, values in raw.items():
        prefix = section + "_"
        if rest.startswith(prefix) and rest[len(prefix) :] in values:
            return section, rest[len(prefix) :]
    return None


def _same_names(where: str, found: set[str], declared: set[str], what: str) -> None:
    """The packaged defaults and the dataclasses must name the same settings."""
    if found != declared:
        raise AssertionError(
            f"{where}: {what}s without a dataclass field: {sorted(found - declared)}; "
            f"fields without a default: {sorted(declared - found)}"
        )


def _build(
    cls: Any, section: str, values: Mapping[str, Any], sources: Mapping[tuple[str, str], str]
) -> Any:
    types = get_type_hints(cls)
    _same_names(f"defaults.toml [{section}]", set(values), set(types), "setting")
    kwargs = {}
    for name, kind in types.items():
        where = sources.get((section, name), "config")
        coerce = _COERCIONS.get(kind)
        if coerce is None:
            raise AssertionError(f"no coercion to {kind} for {section}.{name}")
        kwargs[name] = coerce(values[name], f"{section}.{name} (from {where})")
    return cls(**kwargs)


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _to_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None


def _to_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: expected a finite number, got {value!r}")
    return number


def _to_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def _to_strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{name}: expected a list of strings, got {value!r}")


def _to_table(value: Any, name: str) -> dict[str, str]:
    """A TOML table of strings, or (from the environment) a JSON object of strings."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ConfigError(f"{name}: expected a JSON object of strings") from None
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    raise ConfigError(f"{name}: expected a table of strings, got {value!r}")


def _no_rules_yet(value: Any, name: str) -> tuple[Rule, ...]:
    return ()  # the rules are parsed once the rest is valid (_rules)


# How a TOML value or an SRM_* string becomes each type a setting may have.
_COERCIONS: dict[object, Callable[[Any, str], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    tuple[str, ...]: _to_strings,
    dict[str, str]: _to_table,
    tuple[Rule, ...]: _no_rules_yet,
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(s: Settings) -> None:
    _check(1 <= s.server.port <= 65535, f"server.port (SRM_PORT): 1..65535, got {s.server.port}")
    _check(
        1 <= s.server.workers <= 256,
        f"server.workers (SRM_WORKERS): 1..256, got {s.server.workers}",
    )
    _check(s.server.max_body_bytes >= 1024, "server.max_body_bytes: at least 1024")
    _check(s.server.max_header_bytes >= 1024, "server.max_header_bytes: at least 1024")
    _check(s.server.shutdown_timeout >= 0, "server.shutdown_timeout: must not be negative")
    _check(s.server.keepalive_timeout > 0, "server.keepalive_timeout: must be positive")
    _check(s.server.body_timeout > 0, "server.body_timeout: must be positive")
    _check(
        s.redis.url == "" or s.redis.url.split("://", 1)[0] in _REDIS_SCHEMES,
        f"redis.url (SRM_REDIS_URL): scheme must be one of {sorted(_REDIS_SCHEMES)}",
    )
    _check(1 <= s.redis.shards <= 16384, f"redis.shards: 1..16384, got {s.redis.shards}")
    _check(s.redis.pool_size >= 1, "redis.pool_size: at least 1")
    _check(0 <= s.redis.replica_acks <= 16, "redis.replica_acks: 0..16")
    _check(
        0 < s.redis.replica_ack_timeout < s.redis.request_deadline,
        "redis.replica_ack_timeout: positive and below redis.request_deadline",
    )
    for name in ("pool_timeout", "socket_timeout", "connect_timeout", "request_deadline"):
        _check(getattr(s.redis, name) > 0, f"redis.{name}: must be positive")
    _validate_auth(s.auth)
    _check(all(s.operator.keys), "operator.keys (SRM_OPERATOR_KEYS): empty key")
    if any(len(k) < 16 for k in s.operator.keys):
        # weak but valid: deployments (and test rigs) choose their keys; warn, do not refuse
        log.warning("operator.keys (SRM_OPERATOR_KEYS): a key shorter than 16 characters is weak")
    _check(
        0 <= s.sessions.timeout <= 86400 * 365,
        f"sessions.timeout (SRM_SESSION_TIMEOUT): 0..31536000, got {s.sessions.timeout}",
    )
    _check(
        0 <= s.sessions.max_sessions <= 1_000_000,
        f"sessions.max_sessions (SRM_MAX_SESSIONS): 0..1000000, got {s.sessions.max_sessions}",
    )
    _check(
        0 <= s.sessions.ended_retention <= 86400 * 30,
        "sessions.ended_retention (SRM_ENDED_RETENTION): 0..2592000, "
        f"got {s.sessions.ended_retention}",
    )
    _check(bool(s.sessions.content_types), "sessions.content_types: at least one type")
    _check(
        bool(s.sessions.qualities)
        and all(0 < len(q) <= 32 for q in s.sessions.qualities)
        and len(set(s.sessions.qualities)) == len(s.sessions.qualities),
        f"sessions.qualities: 1..32 characters each, no duplicates, got {s.sessions.qualities}",
    )
    _check(
        s.sessions.limit_policy in {"deny", "evict"},
        f"sessions.limit_policy: deny or evict, got {s.sessions.limit_policy!r}",
    )
    _check(
        200 <= s.sessions.deny_status <= 599,
        f"sessions.deny_status: an HTTP status 200..599, got {s.sessions.deny_status}",
    )
    _validate_households(s.network, s.devices)
    _check(
        0 <= s.limits.setups_per_minute <= 1_000_000,
        "limits.setups_per_minute (SRM_SETUPS_PER_MINUTE): 0..1000000, "
        f"got {s.limits.setups_per_minute}",
    )
    _check(
        0.01 <= s.reaper.interval <= 3600,
        f"reaper.interval (SRM_REAPER_INTERVAL): 0.01..3600, got {s.reaper.interval}",
    )
    _check(1 <= s.reaper.batch_size <= 5000, "reaper.batch_size: 1..5000")
    _check(s.reaper.audit_interval > 0, "reaper.audit_interval: must be positive")
    _check(s.reaper.heartbeat_ttl >= 1, "reaper.heartbeat_ttl: at least 1")
    _check(0 <= s.reaper.metrics_port <= 65535, "reaper.metrics_port: 0..65535")
    _check(1 <= s.reaper.max_batches <= 1000, "reaper.max_batches: 1..1000")
    _check(
        s.reaper.id == s.reaper.id.strip() and "*" not in s.reaper.id,
        f"reaper.id (SRM_REAPER_ID): no surrounding blanks or '*', got {s.reaper.id!r}",
    )
    _check(
        0 <= s.events.maxlen <= 10_000_000,
        f"events.maxlen: 0..10000000 events per shard stream, got {s.events.maxlen}",
    )
    _check(
        0 <= s.events.max_age <= 86400 * 365,
        f"events.max_age: 0..31536000 seconds, got {s.events.max_age}",
    )
    _check(
        s.events.maxlen > 0 or s.events.max_age > 0,
        "events.maxlen and events.max_age: at least one must bound the streams",
    )
    _check(
        0.1 <= s.events.claim_idle <= 86400,
        f"events.claim_idle (SRM_EVENTS_CLAIM_IDLE): 0.1..86400, got {s.events.claim_idle}",
    )
    _check(1 <= s.events.batch_size <= 10000, "events.batch_size: 1..10000")
    _check(0.01 <= s.events.poll_interval <= 60, "events.poll_interval: 0.01..60")
    _check(0 <= s.events.metrics_port <= 65535, "events.metrics_port: 0..65535")
    _check(s.events.webhook_timeout > 0, "events.webhook_timeout: must be positive")
    _check(s.events.retry_cap >= 0.1, "events.retry_cap: at least 0.1")
    _validate_enforcement(s)
    _check(
        s.logging.level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"},
        f"logging.level: DEBUG, INFO, WARNING, ERROR or CRITICAL, got {s.logging.level!r}",
    )


def _validate_households(n: NetworkSettings, d: DevicesSettings) -> None:
    for cidr in n.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"network.trusted_proxies (SRM_TRUSTED_PROXIES): {cidr!r} is not a CIDR"
            ) from None
    _check(8 <= n.ipv4_prefix <= 32, f"network.ipv4_prefix: 8..32, got {n.ipv4_prefix}")
    # a network is stored as the first 8 bytes of the address (srm/network.py)
    _check(16 <= n.ipv6_prefix <= 64, f"network.ipv6_prefix: 16..64, got {n.ipv6_prefix}")
    _check(
        all(1 <= len(t) <= 64 for t in n.learn_home),
        "network.learn_home: device types of 1..64 characters",
    )
    _check(0 <= d.max <= 1000, f"devices.max (SRM_DEVICES_MAX): 0..1000, got {d.max}")
    _check(
        1 <= d.forget_after_days <= 3650,
        f"devices.forget_after_days: 1..3650, got {d.forget_after_days}",
    )
    _check(
        0 <= d.swap_cooldown_days <= 365,
        f"devices.swap_cooldown_days: 0..365, got {d.swap_cooldown_days}",
    )


CDN_ALGORITHMS = frozenset({"sha256", "sha1", "md5"})
# what a cdn.acl template may name; each value is percent-encoded when filled in
CDN_ACL_FIELDS = frozenset({"contentID", "sessionId"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an RFC 9110 token


def _is_hex_key(key: str) -> bool:
    return len(key) >= 2 and len(key) % 2 == 0 and all(c in string.hexdigits for c in key)


def _check_http_url(url: str, name: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name}: not a valid URL") from None
    _check(
        parts.scheme in {"http", "https"} and bool(parts.hostname),
        f"{name}: an http:// or https:// URL with a host",
    )


def _validate_enforcement(s: Settings) -> None:
    c, d = s.cdn, s.drm
    for key in (c.key, *c.keys):
        _check(
            _is_hex_key(key) if key else key is c.key,
            "cdn.key (SRM_CDN_KEY) and cdn.keys: hex keys (an even number of hex digits)",
        )
    _check(not c.keys or c.enabled, "cdn.keys: needs cdn.key (SRM_CDN_KEY), the signing key")
    _check(
        c.algorithm in CDN_ALGORITHMS,
        f"cdn.algorithm: one of {sorted(CDN_ALGORITHMS)}, got {c.algorithm!r}",
    )
    _check(0 <= c.slack <= 3600, f"cdn.slack: 0..3600 seconds, got {c.slack}")
    fields = set(re.findall(r"{(\w*)}", c.acl))
    _check(
        c.acl.startswith("/") and fields <= CDN_ACL_FIELDS and "~" not in c.acl,
        f"cdn.acl: a path starting with '/' (no '~'), whose only placeholders are "
        f"{{contentID}} and {{sessionId}}, got {c.acl!r}",
    )
    _check(
        bool(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", c.token_name)),
        f"cdn.token_name: 1..64 of A-Z a-z 0-9 _ -, got {c.token_name!r}",
    )
    _check(
        1 <= c.revocations_maxlen <= 10_000_000,
        f"cdn.revocations_maxlen: 1..10000000 per shard, got {c.revocations_maxlen}",
    )
    _check(0.1 <= c.poll_interval <= 60, f"cdn.poll_interval: 0.1..60, got {c.poll_interval}")
    if c.api_url:
        _check_http_url(c.api_url, "cdn.api_url (SRM_CDN_API_URL)")
    _check(
        not c.enabled or s.sessions.timeout > 0,
        "cdn.key (SRM_CDN_KEY): CDN tokens expire at a session's deadline plus cdn.slack, "
        "which needs keep-alive (sessions.timeout > 0)",
    )
    if d.upstream_url:
        _check_http_url(d.upstream_url, "drm.upstream_url (SRM_DRM_UPSTREAM_URL)")
        _check(
            bool(d.token_key),
            "drm.token_key (SRM_DRM_TOKEN_KEY): required with drm.upstream_url (it signs the "
            "upfront token the licence server checks)",
        )
    _check(
        d.token_algorithm in HMAC_ALGORITHMS,
        f"drm.token_algorithm: one of {sorted(HMAC_ALGORITHMS)}, got {d.token_algorithm!r}",
    )
    _check(
        bool(_HEADER_NAME.match(d.token_header)),
        f"drm.token_header: a header name, got {d.token_header!r}",
    )
    for name, value in d.headers.items():
        _check(
            bool(_HEADER_NAME.match(name)) and "\r" not in value and "\n" not in value,
            f"drm.headers: {name!r} is not a header name, or its value spans lines",
        )
    _check(0 < d.timeout <= 60, f"drm.timeout: 0 < seconds <= 60, got {d.timeout}")
    _check(1 <= d.pool_size <= 10000, f"drm.pool_size: 1..10000, got {d.pool_size}")


def _validate_auth(a: AuthSettings) -> None:
    names = [n.strip() for n in a.algorithm.split(",") if n.strip()]
    known = HMAC_ALGORITHMS | KEY_ALGORITHMS
    _check(
        bool(names) and all(n in known for n in names),
        f"auth.algorithm (SRM_AUTH_ALGORITHM): one or more of {sorted(known)}, "
        f"comma-separated, got {a.algorithm!r}",
    )
    if not a.jwks_url:
        # one key kind per deployment: a secret next to a public key invites alg confusion
        _check(
            all(n in HMAC_ALGORITHMS for n in names) or all(n in KEY_ALGORITHMS for n in names),
            f"auth.algorithm (SRM_AUTH_ALGORITHM): HS* and asymmetric algorithms cannot be "
            f"mixed, got {a.algorithm!r}",
        )
    elif any(n in KEY_ALGORITHMS for n in names):
        _check(
            not any(n in HMAC_ALGORITHMS for n in names),
            f"auth.algorithm (SRM_AUTH_ALGORITHM): HS* algorithms never apply to a JWKS, "
            f"got {a.algorithm!r}",
        )
    _check(all(a.secrets), "auth.secrets (SRM_AUTH_SECRETS): empty secret")
    if any(len(x.encode()) < 32 for x in a.hmac_secrets):
        log.warning("auth.secret/auth.secrets: a secret shorter than 32 bytes is weak for HS256")
    _check(a.leeway >= 0, "auth.leeway: must not be negative")
    _check(a.token_cache_size >= 0, "auth.token_cache_size: must not be negative")
    if a.jwks_url:
        _check_jwks_url(a.jwks_url, a.jwks_allow_http)
        _check(
            not a.public_key,
            "auth.public_key (SRM_AUTH_PUBLIC_KEY): cannot be combined with auth.jwks_url",
        )
    if a.jwks_ca_file:
        try:
            ssl.create_default_context(cafile=os.path.expanduser(a.jwks_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"auth.jwks_ca_file: cannot load {a.jwks_ca_file!r}: {exc}") from None
    _check(a.jwks_cache_seconds > 0, "auth.jwks_cache_seconds: must be positive")
    _check(a.jwks_min_refresh > 0, "auth.jwks_min_refresh: must be positive")
    _check(0 < a.jwks_timeout <= 60, f"auth.jwks_timeout: 0 < seconds <= 60, got {a.jwks_timeout}")
    _check(
        1024 <= a.jwks_max_bytes <= 16 * 1048576,
        f"auth.jwks_max_bytes: 1024..16777216, got {a.jwks_max_bytes}",
    )


def _check_jwks_url(url: str, allow_http: bool) -> None:
    name = "auth.jwks_url (SRM_AUTH_JWKS_URL)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name}: not a valid URL: {url!r}") from None
    _check(
        parts.scheme in {"http", "https"} and bool(host),
        f"{name}: an https:// (or loopback http://) URL with a host, got {url!r}",
    )
    _check(
        parts.scheme == "https" or allow_http or _is_loopback(host or ""),
        f"{name}: http:// only for a loopback host unless auth.jwks_allow_http is true "
        f"(use https), got {url!r}",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_auth_key(s: Settings) -> None:
    """Fail unless the configured algorithm has its secret or public key (needed to serve)."""
    if s.auth.jwks_url:
        return
    if s.auth.algorithms[0] in HMAC_ALGORITHMS:
        _check(
            bool(s.auth.hmac_secrets),
            f"auth.secret (SRM_AUTH_SECRET): required for {s.auth.algorithm}; "
            "the production config has none (use config/dev.toml for local runs)",
        )
    else:
        _check(
            bool(s.auth.public_key),
            f"auth.public_key (SRM_AUTH_PUBLIC_KEY) or auth.jwks_url (SRM_AUTH_JWKS_URL): "
            f"required for {s.auth.algorithm}",
        )


_REDIS_SCHEMES = frozenset(
    {
        "redis",
        "rediss",
        "unix",
        "redis+sentinel",
        "rediss+sentinel",
        "redis+cluster",
        "rediss+cluster",
    }
)
