"""Client-token signing keys from a JWKS document, the public keys an identity service publishes.

Each worker process keeps its own copy, fetched in the background with aiohttp: at start
(retried after 0.5, 1, 2, 4, then every 5 s until it succeeds), then every
``auth.jwks_cache_seconds``, or the response's Cache-Control max-age when shorter (at least
1 s). A token whose ``kid`` the cached document lacks may cause one refetch: requests that
need one while a fetch is in flight wait for that fetch (bounded by ``auth.jwks_timeout``);
otherwise a fetch starts only if no unknown kid started one in the last
``auth.jwks_min_refresh`` seconds, else the token is refused at once. So forged kids cannot
cause more than one fetch per interval.

A document that cannot be used (unreachable, not 200, over ``auth.jwks_max_bytes``, not JSON,
no usable key) is logged and counted (``srm_jwks_fetches_total{result}``) and the last good
keys stay in use. A key is usable when it is a public signing key (``use`` absent or ``sig``)
with a ``kid``, of a type an accepted algorithm fits: RSA of 2048 bits or more for RS*/PS*,
EC for the ES* of its curve, OKP for EdDSA; a JWK's own ``alg`` narrows that to itself.
Symmetric (``oct``) keys are never taken from a JWKS. Redirects are not followed, and the
document is asked for and read uncompressed (so the size limit bounds memory).

``generation`` grows whenever a key is removed or changed, so whoever caches what a key
verified (srm/auth.py) can drop it at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from srm import metrics
from srm.config import AuthSettings

log = logging.getLogger("srm.jwks")

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
MIN_RSA_BITS = 2048
MAX_KID_LENGTH = 256
FIRST_RETRY = 0.5  # seconds before the first retry while no document was fetched yet
LAST_RETRY = 5.0  # the longest wait between those retries
MIN_MAX_AGE = 1.0  # a shorter Cache-Control max-age counts as this


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable key of the document: its public key and the algorithms it may verify."""

    kid: str
    key: Any
    algorithms: frozenset[str]
    jwk: bytes  # the JWK as canonical JSON: a key is "changed" when this differs


class Refused(Exception):
    """Raised when a fetched document cannot be used; *result* is its metric label."""

    def __init__(self, result: str, detail: str) -> None:
        super().__init__(detail)
        self.result = result


class JwksKeys:
    """The signing keys of one JWKS URL, refreshed in the background (see the module doc)."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = settings.jwks_url
        self.accepted = frozenset(settings.algorithms)
        self.clock = clock
        self.keys: dict[str, SigningKey] = {}
        self.generation = 0
        self._cache_seconds = settings.jwks_cache_seconds
        self._min_refresh = settings.jwks_min_refresh
        self._timeout = settings.jwks_timeout
        self._max_bytes = settings.jwks_max_bytes
        # https: certificate and host name checked, against the system's CAs or the file's
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=os.path.expanduser(settings.jwks_ca_file))
            if settings.jwks_ca_file
            else True
        )
        self._shown_url = str(URL(self.url).with_user(None))  # no credentials in logs
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._last_kid_fetch: float | None = None  # when an unknown kid last started a fetch
        self._next_due = float("-inf")
        self._failures = 0

    @property
    def ready(self) -> bool:
        """Whether a usable document was fetched (from then on, keys are never dropped)."""
        return bool(self.keys)

    def get(self, kid: str) -> SigningKey | None:
        return self.keys.get(kid)

    async def start(self) -> None:
        """Open the HTTP client and start the background refresh (the first fetch at once)."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._verify, limit=4),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            # the size limit counts the bytes received: nothing is decompressed
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
            auto_decompress=False,
        )
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        for task in (self._runner, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
        if self._session is not None:
            await self._session.close()

    async def refetch(self) -> bool:
        """After a token with an unknown kid: True once a fetch (shared) brought a document.

        False, at once, when no fetch is in flight and an unknown kid started one less than
        ``auth.jwks_min_refresh`` seconds ago; False when the fetch failed or took too long.
        """
        task = self._inflight if self._inflight is not None and not self._inflight.done() else None
        if task is None:
            now, last = self.clock(), self._last_kid_fetch
            if self._session is None or (last is not None and now - last < self._min_refresh):
                metrics.jwks_unknown_kid("rate_limited")
                return False
            metrics.jwks_unknown_kid("fetched")
            self._last_kid_fetch = now
            task = self._shared_fetch()
        else:
            metrics.jwks_unknown_kid("shared")
        try:
            async with asyncio.timeout(self._timeout + 1):  # the fetch's own bound, and parsing
                return await asyncio.shield(task)
        except TimeoutError:
            return False

    async def _run(self) -> None:
        while True:
            delay = self._next_due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # an unknown-kid fetch may have moved the due time meanwhile
            await asyncio.shield(self._shared_fetch())

    def _shared_fetch(self) -> asyncio.Task[bool]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
        return self._inflight

    async def _fetch(self) -> bool:
        started = self.clock()
        try:
            keys, max_age = await self._download()
        except Refused as exc:
            self._failed(started, exc.result, str(exc))
            return False
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._failed(started, "unreachable", f"{type(exc).__name__}: {exc}")
            return False
        except Exception as exc:  # a bug here must not stop the refresh or fail requests
            log.exception("JWKS fetch failed")
            self._failed(started, "error", type(exc).__name__)
            return False
        self._install(keys)
        self._failures = 0
        period = self._cache_seconds
        if max_age is not None:
            period = min(period, max(max_age, MIN_MAX_AGE))
        self._next_due = started + period
        metrics.jwks_fetch("ok", len(keys), time.time())
        return True

    async def _download(self) -> tuple[dict[str, SigningKey], float | None]:
        assert self._session is not None
        async with self._session.get(self.url, allow_redirects=False) as response:
            if response.status != 200:
                raise Refused("http_status", f"answered HTTP {response.status}")
            if response.content_length is not None and response.content_length > self._max_bytes:
                raise Refused("too_large", f"{response.content_length} bytes announced")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > self._max_bytes:
                    raise Refused("too_large", f"more than {self._max_bytes} bytes")
            max_age = cache_max_age(response.headers.get("Cache-Control"))
        # decoding JSON and building keys is CPU work: off the loop that answers requests
        return await asyncio.to_thread(parse_document, bytes(body), self.accepted), max_age

    def _install(self, keys: dict[str, SigningKey]) -> None:
        old = self.keys
        changed = any(kid not in keys or keys[kid].jwk != key.jwk for kid, key in old.items())
        if changed:
            self.generation += 1
        if changed or keys.keys() != old.keys():
            log.info("JWKS keys from %s: %s", self._shown_url, ", ".join(sorted(keys)))
        self.keys = keys

    def _failed(self, started: float, result: str, detail: str) -> None:
        metrics.jwks_fetch(result)
        self._failures += 1
        if self.keys:  # the cached keys work meanwhile
            retry = min(self._cache_seconds, self._min_refresh)
        else:  # not ready: try again soon
            retry = min(
                self._cache_seconds, LAST_RETRY, FIRST_RETRY * 2 ** min(self._failures - 1, 8)
            )
        self._next_due = started + retry
        log.warning(
            "JWKS fetch from %s failed (%s): %s; %s",
            self._shown_url,
            result,
            detail,
            f"keeping the {len(self.keys)} cached keys" if self.keys else "no keys yet",
            extra={"jwks_result": result},
        )


def parse_document(body: bytes, accepted: frozenset[str]) -> dict[str, SigningKey]:
    """The usable keys of a JWKS document by kid; Refused when it is not JSON or has none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused("not_json", "the document is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise Refused("no_usable_keys", 'the document has no "keys" list')
    keys: dict[str, SigningKey] = {}
    for entry in document["keys"]:
        key = signing_key(entry, accepted)
        if key is not None and key.kid not in keys:
            keys[key.kid] = key
    if not keys:
        raise Refused(
            "no_usable_keys",
            f"no public signing key with a kid for the algorithms {sorted(accepted)}",
        )
    return keys


def signing_key(entry: Any, accepted: frozenset[str]) -> SigningKey | None:
    """The key of one JWK, or None when it is not a public signing key SRM may use."""
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        return None
    if entry.get("use", "sig") != "sig" or "d" in entry:  # encryption, or a private key
        return None
    algorithms = _fitting_algorithms(entry) & accepted
    if not algorithms:
        return None
    try:
        parsed = jwt.PyJWK(entry, algorithm=min(algorithms))
        canonical = orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < MIN_RSA_BITS:
        return None
    return SigningKey(kid, parsed.key, frozenset(algorithms), canonical)


def _fitting_algorithms(entry: dict[str, Any]) -> frozenset[str]:
    kty, crv, alg = entry.get("kty"), entry.get("crv"), entry.get("alg")
    if kty == "RSA":
        fits = RSA_ALGORITHMS
    elif kty == "EC" and isinstance(crv, str) and crv in EC_ALGORITHMS:
        fits = frozenset({EC_ALGORITHMS[crv]})
    elif kty == "OKP":
        fits = frozenset({"EdDSA"})
    else:
        return frozenset()
    if alg is None:
        return fits
    return fits & {alg} if isinstance(alg, str) else frozenset()


def cache_max_age(header: str | None) -> float | None:
    """The max-age of a Cache-Control header, in seconds, or None.

    Other directives are ignored: identity services send ``no-cache`` out of habit, and
    keys are meant to be cached.
    """
    if not header:
        return None
    for directive in header.split(","):
        name, _, value = directive.strip().partition("=")
        if name.strip().lower() == "max-age":
            try:
                return float(max(0, int(value.strip().strip('"'))))
            except ValueError:
                return None
    return None
