"""The Redis client for a deployment, built from ``redis.url``: standalone, Sentinel or Cluster.

URL forms (documented in docs/configuration.md, "Redis URLs"):

- standalone: ``redis://[[user]:pw@]host:port/db``, ``rediss://...``, ``unix:///path.sock``
  (redis-py's own URL syntax);
- Sentinel: ``redis+sentinel://[[user]:pw@]h1:26379,h2:26379/<master name>[/db]`` with
  optional ``?sentinel_username=..&sentinel_password=..&min_other_sentinels=n``;
  ``rediss+sentinel://`` speaks TLS to the sentinels and the data nodes;
- Cluster: ``redis+cluster://[[user]:pw@]h1:7000,h2:7001`` (any reachable seed nodes);
  ``rediss+cluster://`` for TLS.

TLS forms take ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` and
``ssl_check_hostname`` in the query. The user and password of the URL are the data nodes';
Sentinel's own credentials come from the query because sentinels often have none.

Every form gets socket timeouts (``redis.socket_timeout``, ``redis.connect_timeout``) and a
short retry on connection errors: every SRM script is idempotent, so a retry after an
ambiguous failure is safe. Standalone and Sentinel pools block for ``redis.pool_timeout``
instead of raising "Too many connections". redis-py's cluster client has no blocking pool (a
node at ``max_connections`` raises at once); the store's in-flight gate keeps every node
below that bound (``srm.gate.InFlightGate``), and anything that still gets through is SRM-0008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from srm.config import ConfigError, RedisSettings

log = logging.getLogger(__name__)

SENTINEL_PORT = 26379
REDIS_PORT = 6379
_TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"}
)
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password", "min_other_sentinels"})
_CERT_REQS = frozenset({"none", "optional", "required"})


@dataclass(frozen=True)
class Target:
    """Where the store lives, parsed from a Sentinel or Cluster URL."""

    kind: str  # "sentinel" | "cluster"
    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    service: str = ""  # Sentinel master name
    db: int = 0
    options: Mapping[str, str] = field(default_factory=dict, repr=False)


def retry_policy() -> Retry:
    return Retry(ExponentialBackoff(cap=0.25, base=0.025), retries=2)


# Replies are decoded as UTF-8; the few values that hold bytes (networks and addresses,
# srm/network.py) come back as surrogate escapes, which network.to_bytes undoes exactly.
DECODE: dict[str, Any] = {"decode_responses": True, "encoding_errors": "surrogateescape"}


def common_options(settings: RedisSettings) -> dict[str, Any]:
    return {
        **DECODE,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": retry_policy(),
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": 30,
    }


def connect(settings: RedisSettings) -> Any:
    """A redis-py asyncio client for ``settings.url`` (see the module docstring for the forms)."""
    scheme = settings.url.split("://", 1)[0]
    if scheme in {"redis", "rediss", "unix"}:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url,
            max_connections=settings.pool_size,
            timeout=settings.pool_timeout,
            **common_options(settings),
        )
        return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its sockets
    target = parse_url(settings.url)
    if target.kind == "sentinel":
        return _sentinel_client(target, settings)
    return _cluster_client(target, settings)


async def warm_up(client: Any, settings: RedisSettings) -> None:
    """Read a cluster client's slot map before traffic arrives; a no-op for other clients.

    redis-py's cluster client reads the slot map lazily, on its first command, and a burst of
    first commands then fails a few calls on connections closed under them (seen with
    redis-py 8.1). Best effort: with the cluster unreachable now, the client still reads
    the map on first use later.
    """
    if not isinstance(client, RedisCluster):
        return
    try:
        async with asyncio.timeout(settings.request_deadline):
            await client.initialize()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("redis cluster not reachable at start (%r); connecting on first use", exc)
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()  # whatever half-initialized state it has, not kept


async def check_store(settings: RedisSettings) -> None:
    """The checks of the store made once at the start of a command (ConfigError: exit 2)."""
    client = connect(settings)
    try:
        await check_version(client, settings)
        await load_library(client, settings)
        await check_eviction(client, settings)
        await check_compact_hashes(client, settings)
    finally:
        await client.aclose()


async def check_server_version(settings: RedisSettings) -> None:
    """The version check of check_store and the library's load alone (`srm events`)."""
    client = connect(settings)
    try:
        await check_version(client, settings)
        await load_library(client, settings)
    finally:
        await client.aclose()


async def load_library(client: Any, settings: RedisSettings) -> None:
    """FUNCTION LOAD the scripts' library (srm/store/scripts.py) on the server, or on every
    master of a cluster, so that the first requests find it. Best effort: a server that
    lacks it later (restarted, failed over, a new master) gets it on the first call that
    finds it missing. Libraries of other SRM versions are left as they are: during a roll-out
    the old version still calls its own."""
    from srm.store.base import StoreBase, library

    try:
        async with asyncio.timeout(settings.request_deadline):
            await client.function_load(library(StoreBase.SCRIPTS).source, replace=True)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not load SRM's functions at start (%r); loaded on first use", exc)


# The oldest Redis SRM runs on: its scripts are a Redis Functions library (FUNCTION LOAD,
# FCALL), which Redis has since 7.0. Valkey (any version) reports redis_version 7.2.4.
MIN_VERSION = (7, 0)
MIN_VERSION_TEXT = "7.0"


def server_name(info: Mapping[str, Any]) -> str:
    """How INFO server names the server: "Redis 7.0.15", "Valkey 9.1.2"."""
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info.get('redis_version', '(version unknown)')}"


def version_of(text: object) -> tuple[int, ...]:
    """(7, 0, 15) of "7.0.15"; () when unreadable."""
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return ()


async def check_version(client: Any, settings: RedisSettings) -> None:
    """Refuse a server older than Redis 7.0 (ConfigError), on every master of a cluster. A
    server that cannot be asked now (not reachable yet, INFO refused) only warns: its first
    call then fails instead."""
    try:
        async with asyncio.timeout(settings.request_deadline):
            if isinstance(client, RedisCluster):
                replies = await client.info("server", target_nodes=RedisCluster.PRIMARIES)
                infos = list(replies.values()) if "redis_version" not in replies else [replies]
            else:
                infos = [await client.info("server")]
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "could not check the Redis version (%s); SRM needs Redis %s or later, or Valkey",
            type(exc).__name__,
            MIN_VERSION_TEXT,
        )
        return
    for info in infos:
        found = version_of(info.get("redis_version", ""))
        if found and found < MIN_VERSION:
            raise ConfigError(
                f"{server_name(info)} is too old: SRM needs Redis {MIN_VERSION_TEXT} or later "
                "(or Valkey), for Redis Functions"
            )


async def check_eviction(client: Any, settings: RedisSettings) -> None:
    """Refuse a Redis that may evict SRM's keys (ConfigError) unless ``redis.allow_eviction``.

    An evicted session record, counter or index breaks the counts SRM guarantees, so
    ``maxmemory-policy`` must be ``noeviction`` (on every master of a cluster). Where CONFIG
    is not allowed (managed Redis) or Redis is not reachable yet, this only warns.
    """
    try:
        async with asyncio.timeout(settings.request_deadline):
            policies = await _eviction_policies(client)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "could not check Redis's maxmemory-policy (%s); it must be noeviction",
            type(exc).__name__,
        )
        return
    evicting = sorted(set(policies) - {"noeviction"})
    if not policies:
        log.warning("could not check Redis's maxmemory-policy; it must be noeviction")
    elif not evicting:
        return
    elif settings.allow_eviction:
        log.warning(
            "REDIS MAY EVICT SRM'S KEYS: maxmemory-policy is %s, allowed by redis.allow_eviction; "
            "sessions and counts may be lost when Redis runs out of memory",
            ", ".join(evicting),
        )
    else:
        raise ConfigError(
            f"Redis maxmemory-policy is {', '.join(evicting)}: Redis may evict SRM's keys. "
            "Set it to noeviction, or set redis.allow_eviction (SRM_REDIS_ALLOW_EVICTION=true) "
            "to start anyway"
        )


# The least hash-max-listpack-value (hash-max-ziplist-value before Redis 7) that keeps an
# account hash compact with session records of long device and content ids; the embedded
# redis-server is started with it (docs/operations.md).
COMPACT_HASH_VALUE = 512


async def check_compact_hashes(client: Any, settings: RedisSettings) -> None:
    """Warn when Redis would store account hashes in their larger form: a session record
    longer than hash-max-listpack-value makes its account hash a hashtable, about twice the
    memory. Correctness does not depend on it, so this never stops SRM."""
    try:
        async with asyncio.timeout(settings.request_deadline):
            values = await _config_values(client, "hash-max-ziplist-value")
    except (RedisError, OSError, TimeoutError, ValueError):
        return  # CONFIG not allowed (managed Redis) or not reachable: the docs say it
    small = sorted({v for v in values if int(v) < COMPACT_HASH_VALUE})
    if small:
        log.warning(
            "Redis hash-max-listpack-value is %s: account hashes holding records longer than "
            "that take about twice the memory; %d is recommended (docs/operations.md)",
            ", ".join(small),
            COMPACT_HASH_VALUE,
        )


async def _eviction_policies(client: Any) -> list[str]:
    """maxmemory-policy of the server, or of every master of a cluster."""
    return await _config_values(client, "maxmemory-policy")


async def _config_values(client: Any, name: str) -> list[str]:
    """The value of config *name* on the server, or on every master of a cluster."""
    if isinstance(client, RedisCluster):
        replies = await client.config_get(name, target_nodes=RedisCluster.PRIMARIES)
        answers = list(replies.values()) if name not in replies else [replies]
    else:
        answers = [await client.config_get(name)]
    return [str(a[name]) for a in answers if isinstance(a, dict) and a]


def parse_url(url: str) -> Target:
    """The Sentinel or Cluster target of *url*; ConfigError naming what is wrong."""
    where = "redis.url (SRM_REDIS_URL)"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    tls = scheme.startswith("rediss+")
    kind = scheme.partition("+")[2]
    if scheme.partition("+")[0] not in {"redis", "rediss"} or kind not in {"sentinel", "cluster"}:
        raise ConfigError(f"{where}: unsupported scheme {parts.scheme!r}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    default_port = SENTINEL_PORT if kind == "sentinel" else REDIS_PORT
    nodes = tuple(_node(h.strip(), default_port, where) for h in hostlist.split(",") if h.strip())
    if not nodes:
        raise ConfigError(f"{where}: no {kind} hosts in {_redacted(url)}")
    path = [unquote(p) for p in parts.path.split("/") if p]
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    allowed = (_TLS_OPTIONS if tls else frozenset()) | (
        _SENTINEL_OPTIONS if kind == "sentinel" else frozenset()
    )
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)} for {scheme}:// "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    if options.get("ssl_cert_reqs", "required") not in _CERT_REQS:
        raise ConfigError(f"{where}: ssl_cert_reqs must be one of {sorted(_CERT_REQS)}")
    if kind == "sentinel":
        if not path or len(path) > 2:
            raise ConfigError(f"{where}: expected /<master name>[/<db>] after the sentinels")
        db = _int(path[1], "database number", where) if len(path) == 2 else 0
        _int(options.get("min_other_sentinels", "0"), "min_other_sentinels", where)
        service = path[0]
    else:
        if path not in ([], ["0"]):
            raise ConfigError(f"{where}: Redis Cluster has only database 0, got /{'/'.join(path)}")
        db, service = 0, ""
    return Target(kind, nodes, tls, username, password, service, db, options)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, pw = userinfo.partition(":")
    if not sep:  # "pw@host", the form redis-py also reads as a bare password
        return None, unquote(user) or None
    return unquote(user) or None, unquote(pw) or None


def _node(text: str, default_port: int, where: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ConfigError(f"{where}: empty host in {text!r}")
    number = _int(port, "port", where) if port else default_port
    if not 1 <= number <= 65535:
        raise ConfigError(f"{where}: port out of range in {text!r}")
    return host, number


def _int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{where}: {what} must be an integer, got {text!r}") from None


def _redacted(url: str) -> str:
    head, sep, tail = url.partition("@")
    return f"{head.split('://', 1)[0]}://***@{tail}" if sep else url


def _tls_options(target: Target) -> dict[str, Any]:
    if not target.tls:
        return {}
    opts: dict[str, Any] = {"ssl": True}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
        if name in target.options:
            opts[name] = target.options[name]
    if "ssl_check_hostname" in target.options:
        opts["ssl_check_hostname"] = target.options["ssl_check_hostname"].lower() in {
            "1",
            "true",
            "yes",
            "on",
        }
    return opts


# -- Sentinel -----------------------------------------------------------------------------


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (master discovery, reconnect on failover) that blocks when full.

    SentinelConnectionPool derives from the raising ConnectionPool; putting
    BlockingConnectionPool next in the MRO gives it the blocking get/release with a timeout
    while the Sentinel pool keeps its own connection class and master-address logic.
    """


class SentinelRedis(aioredis.Redis):
    """The master client; closing it also closes the clients of the sentinels it asks."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        manager = getattr(pool, "sentinel_manager", None)
        # each sentinel's client, closed one by one: Sentinel.aclose() is redis-py 8.1+
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def _sentinel_client(target: Target, settings: RedisSettings) -> Any:
    tls = _tls_options(target)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "decode_responses": True,
        "username": target.options.get("sentinel_username") or None,
        "password": target.options.get("sentinel_password") or None,
        **tls,
    }
    data = common_options(settings)
    # typed Any: redis-py 8 annotates Sentinel(), older releases do not
    sentinel: Any = cast(Any, Sentinel)(
        list(target.nodes),
        min_other_sentinels=int(target.options.get("min_other_sentinels", "0")),
        sentinel_kwargs=sentinel_kwargs,
    )
    return sentinel.master_for(
        target.service,
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelConnectionPool,
        max_connections=settings.pool_size,
        timeout=settings.pool_timeout,
        db=target.db,
        username=target.username,
        password=target.password,
        **data,
        **tls,
    )


# -- Cluster ------------------------------------------------------------------------------


class SrmCluster(RedisCluster):
    """redis-py's cluster client, routing an FCALL by its first key alone.

    Every SRM call's keys share one hash tag (srm/keys.py), and Redis refuses a call whose
    keys do not (CROSSSLOT): hashing every key (17 for a setup) to check what the server
    checks anyway only cost the API's CPU, and redis-py finds an FCALL's keys through the
    command's key specs, slower than the EVALSHA it special-cases.
    """

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command == "FCALL" and len(args) > 2 and int(args[1]) > 0:
            return int(self.keyslot(args[2]))
        return await super()._determine_slot(command, *args)


def _cluster_client(target: Target, settings: RedisSettings) -> RedisCluster:
    options = common_options(settings)
    cluster: RedisCluster = SrmCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        max_connections=settings.pool_size,
        username=target.username,
        password=target.password,
        **DECODE,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        health_check_interval=options["health_check_interval"],
        # retries of the cluster client re-read the slot map first: MOVED after a
        # failover or a lost node is followed to the new owner
        retry=retry_policy(),
        **_tls_options(target),
    )
    return cluster
