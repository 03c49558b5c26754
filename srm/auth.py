"""Who is calling: Client-Token JWTs for clients, bearer keys for operators.

Client tokens are checked with one kind of key per deployment: HS* secrets (``auth.secret``
and ``auth.secrets``, tried in turn, each compared in constant time by PyJWT), a configured
public key, or the keys of a JWKS document chosen by the token's ``kid`` (srm/jwks.py). Only
the configured algorithms are accepted (so ``alg: none`` and HS/RS confusion are refused), a
JWKS key only for the algorithms its type fits, ``exp`` is required, ``iss`` and ``aud`` must
match when configured, and the account and device come from the token alone. Verified tokens
are cached until they expire (a bounded map), which takes signature checks off the hot path;
an entry made before a JWKS key was removed or changed is not used again.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from srm.config import HMAC_ALGORITHMS, AuthSettings
from srm.errors import KeysUnavailable, NotOperator, Unauthenticated
from srm.jwks import JwksKeys

MAX_ID_LENGTH = 256
# ids no URL path can carry: browsers and proxies collapse them, even percent-encoded
DOT_SEGMENTS = frozenset({".", ".."})
MAX_DEVICE_TYPE_LENGTH = 64
MAX_SESSIONS_CLAIM = 1_000_000
DEFAULT_DEVICE_TYPE = "unknown"


@dataclass(frozen=True, slots=True)
class Principal:
    """The account and device a client token speaks for."""

    account_id: str
    device_id: str
    expires_at: float
    device_type: str = DEFAULT_DEVICE_TYPE
    max_sessions: int | None = None  # the maxSessions claim (honoured if auth.limit_claims)


class UnknownKey(Unauthenticated):
    """Raised when a token names a kid the cached JWKS lacks (a refetch may find it)."""


class TokenVerifier:
    """Verifies Client-Tokens; raises Unauthenticated (SRM-0003) for anything not valid, and
    KeysUnavailable (SRM-0008) while a JWKS deployment has no document yet."""

    def __init__(self, settings: AuthSettings) -> None:
        self.algorithms = list(settings.algorithms)
        self.jwks = JwksKeys(settings) if settings.jwks_url else None
        self._secrets: tuple[str, ...] = ()
        self._key: Any = None
        if self.jwks is None:
            if self.algorithms[0] in HMAC_ALGORITHMS:
                self._secrets = settings.hmac_secrets
            else:
                self._key = _public_key(settings.public_key)
        self._leeway = settings.leeway
        self._audience = settings.audience or None
        self._issuer = settings.issuer or None
        self._cache_size = settings.token_cache_size
        self._cache: OrderedDict[str, tuple[Principal, float, int]] = OrderedDict()
        self._options: Any = {"require": ["exp"], "verify_aud": self._audience is not None}

    @property
    def ready(self) -> bool:
        """False while tokens cannot be checked (a JWKS deployment before its first document)."""
        return self.jwks is None or self.jwks.ready

    async def authenticate(self, token: str) -> Principal:
        """:meth:`verify`, and for an unknown kid one JWKS refetch (shared, rate-limited)."""
        try:
            return self.verify(token)
        except UnknownKey:
            if self.jwks is None or not await self.jwks.refetch():
                raise
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        now = time.time()
        generation = self.jwks.generation if self.jwks is not None else 0
        cached = self._cache.get(token)
        if cached is not None:
            principal, not_before, verified_in = cached
            if (
                verified_in == generation
                and not_before <= now < principal.expires_at + self._leeway
            ):
                return principal
            del self._cache[token]
        principal, not_before = self._decode(token)
        if self._cache_size:
            self._cache[token] = (principal, not_before, generation)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        if not token.isascii():  # a JWT is base64url and dots; raw header bytes may be anything
            raise Unauthenticated("Client-Token invalid")
        try:
            claims = self._claims(token)
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("Client-Token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("Client-Token not yet valid") from None
        except jwt.PyJWTError:
            raise Unauthenticated("Client-Token invalid") from None
        account = _identifier(claims.get("accountId"), "accountId")
        device = _identifier(claims.get("deviceId"), "deviceId")
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise Unauthenticated("Client-Token exp must be a number")
        nbf = claims.get("nbf", 0)
        not_before = float(nbf) - self._leeway if isinstance(nbf, int | float) else 0.0
        device_type = claims.get("deviceType", DEFAULT_DEVICE_TYPE)
        if (
            not isinstance(device_type, str)
            or not 1 <= len(device_type) <= MAX_DEVICE_TYPE_LENGTH
            or not _is_text(device_type)
        ):
            raise Unauthenticated("Client-Token deviceType must be a string of 1 to 64 characters")
        max_sessions = claims.get("maxSessions")
        if max_sessions is not None and (
            isinstance(max_sessions, bool)
            or not isinstance(max_sessions, int)
            or not 0 <= max_sessions <= MAX_SESSIONS_CLAIM
        ):
            raise Unauthenticated("Client-Token maxSessions must be an integer 0..1000000")
        principal = Principal(account, device, float(exp), device_type, max_sessions)
        return principal, not_before

    def _claims(self, token: str) -> dict[str, Any]:
        if self.jwks is not None:
            key, algorithm = self._jwks_key(self.jwks, token)
            return self._checked(token, key, [algorithm])
        for secret in self._secrets[:-1]:
            try:
                return self._checked(token, secret, self.algorithms)
            except jwt.InvalidSignatureError:
                continue  # rotation: the next secret may have signed it
        return self._checked(
            token, self._secrets[-1] if self._secrets else self._key, self.algorithms
        )

    def _jwks_key(self, jwks: JwksKeys, token: str) -> tuple[Any, str]:
        if not jwks.ready:
            raise KeysUnavailable()
        header = jwt.get_unverified_header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self.algorithms:
            raise Unauthenticated("Client-Token algorithm not accepted")
        if not isinstance(kid, str):
            raise Unauthenticated("Client-Token has no kid")
        key = jwks.get(kid)
        if key is None:
            raise UnknownKey("Client-Token signed with an unknown key")
        if algorithm not in key.algorithms:
            raise Unauthenticated("Client-Token algorithm does not fit its key")
        return key.key, algorithm

    def _checked(self, token: str, key: Any, algorithms: list[str]) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            options=self._options,
            leeway=self._leeway,
            audience=self._audience,
            issuer=self._issuer,
        )
        return claims


def _identifier(value: Any, claim: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Unauthenticated(f"Client-Token has no {claim}")
    if len(value) > MAX_ID_LENGTH:
        raise Unauthenticated(f"Client-Token {claim} longer than {MAX_ID_LENGTH}")
    if not _is_text(value):
        raise Unauthenticated(f"Client-Token {claim} is not valid text")
    if value in DOT_SEGMENTS:
        raise Unauthenticated(f"Client-Token {claim} may not be . or .. (no URL path holds it)")
    return value


def _is_text(value: str) -> bool:
    """Whether *value* can be stored (no lone surrogates, which JSON may carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _public_key(text: str) -> str:
    if "-----BEGIN" in text:
        return text
    return Path(text).expanduser().read_text()


class OperatorKeys:
    """The configured operator keys, checked in constant time."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = [key.encode() for key in keys]

    def check(self, presented: str | None) -> None:
        if not presented or not self._keys:
            raise NotOperator()
        candidate = presented.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise NotOperator()


def mint(
    secret: str,
    account_id: str,
    device_id: str,
    *,
    ttl: int = 3600,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A Client-Token for development and tests (`srm token`)."""
    now = int(time.time())
    payload = {"accountId": account_id, "deviceId": device_id, "iat": now, "exp": now + ttl}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)
