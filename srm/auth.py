"""Who is calling: Client-Token JWTs for clients, bearer keys for operators.

Only the configured algorithm is accepted (so ``alg: none`` and HS/RS confusion are refused),
``exp`` is required, and the account and device come from the token alone. Verified tokens
are cached until they expire (a bounded map), which takes signature checks off the hot path.
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
from srm.errors import NotOperator, Unauthenticated

MAX_ID_LENGTH = 256
MAX_DEVICE_TYPE_LENGTH = 64
MAX_SESSIONS_CLAIM = 1_000_000
DEFAULT_DEVICE_TYPE = "unknown"


@dataclass(frozen=True, slots=True)
class Principal:
    """The account and device a client token speaks for."""

    account_id: str
    device_id: str
    tenant_id: str | None
    expires_at: float
    device_type: str = DEFAULT_DEVICE_TYPE
    max_sessions: int | None = None  # the maxSessions claim (honoured if auth.limit_claims)


class TokenVerifier:
    """Verifies Client-Tokens; raises Unauthenticated (SRM-0003) for anything not valid."""

    def __init__(self, settings: AuthSettings) -> None:
        self.algorithm = settings.algorithm
        if settings.algorithm in HMAC_ALGORITHMS:
            self._key: Any = settings.secret
        else:
            self._key = _public_key(settings.public_key)
        self._leeway = settings.leeway
        self._audience = settings.audience or None
        self._issuer = settings.issuer or None
        self._cache_size = settings.token_cache_size
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._options: Any = {"require": ["exp"], "verify_aud": self._audience is not None}

    def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            principal, not_before = cached
            if not_before <= now < principal.expires_at + self._leeway:
                return principal
            del self._cache[token]
        principal, not_before = self._decode(token)
        if self._cache_size:
            self._cache[token] = (principal, not_before)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        if not token.isascii():  # a JWT is base64url and dots; raw header bytes may be anything
            raise Unauthenticated("Client-Token invalid")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                options=self._options,
                leeway=self._leeway,
                audience=self._audience,
                issuer=self._issuer,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("Client-Token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("Client-Token not yet valid") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("Client-Token invalid") from None
        account = _identifier(claims.get("accountId"), "accountId")
        device = _identifier(claims.get("deviceId"), "deviceId")
        tenant = claims.get("tenantId")
        if tenant is not None and not isinstance(tenant, str):
            raise Unauthenticated("Client-Token tenantId must be a string")
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise Unauthenticated("Client-Token exp must be a number")
        nbf = claims.get("nbf", 0)
        not_before = float(nbf) - self._leeway if isinstance(nbf, int | float) else 0.0
        device_type = claims.get("deviceType", DEFAULT_DEVICE_TYPE)
        if (
            not isinstance(device_type, str)
            or not 1 <= len(device_type) <= MAX_DEVICE_TYPE_LENGTH
            or not device_type.strip()
        ):
            raise Unauthenticated("Client-Token deviceType must be a string of 1 to 64 characters")
        max_sessions = claims.get("maxSessions")
        if max_sessions is not None and (
            isinstance(max_sessions, bool)
            or not isinstance(max_sessions, int)
            or not 0 <= max_sessions <= MAX_SESSIONS_CLAIM
        ):
            raise Unauthenticated("Client-Token maxSessions must be an integer 0..1000000")
        principal = Principal(account, device, tenant, float(exp), device_type, max_sessions)
        return principal, not_before


def _identifier(value: Any, claim: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Unauthenticated(f"Client-Token has no {claim}")
    if len(value) > MAX_ID_LENGTH:
        raise Unauthenticated(f"Client-Token {claim} longer than {MAX_ID_LENGTH}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Unauthenticated(f"Client-Token {claim} is not valid text") from None
    return value


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
