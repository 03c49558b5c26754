"""Identity: JWKS-verified client tokens (kid lookup, rotation, refetch limits, outages,
garbage documents), issuer and audience, HS256 secret rotation, and their settings."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from srm import logs
from srm.api.app import create_app
from srm.api.handlers import DEPS
from srm.auth import TokenVerifier, mint
from srm.config import ConfigError, Settings, load, masked, require_auth_key
from srm.errors import Unauthenticated
from srm.jwks import JwksKeys, cache_max_age, parse_document
from srm.store import SessionStore
from tests.helpers import OPERATOR_KEY, SETUP, open_backend
from tests.jwks_server import JwksServer, SigningKey, self_signed_tls, signing_key
from tests.processes import ROOT, SrmProcess, srm_env, start_srm
from tests.redis_servers import RedisProcess, free_port

OLD_SECRET = "old-secret-" + "0123456789abcdef" * 3
NEW_SECRET = "new-secret-" + "fedcba9876543210" * 3
ISSUER = "https://id.example.com/realms/tv"


@pytest.fixture(params=["fakeredis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Identity does not depend on the store's topology: fakeredis is enough here."""
    async with open_backend(request, request.param) as client:
        yield client


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    yield server
    await server.stop()


class Monotonic:
    """The JWKS refresher's clock, moved by hand (its real sleeps are long: 300 s)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Api:
    http: TestClient[Any, Any]
    jwks: JwksKeys
    clock: Monotonic

    async def status(self, token: str) -> tuple[int, str]:
        return await status(self.http, token)

    async def refetch_after(self, seconds: float) -> bool:
        """Let *seconds* pass on the refresher's clock, then ask for a refetch."""
        self.clock.advance(seconds)
        return await self.jwks.refetch()


def jwks_settings(server: JwksServer, **env: str) -> Settings:
    return load(
        env={
            "SRM_AUTH_JWKS_URL": server.url,
            "SRM_AUTH_ALGORITHM": "RS256,ES256,EdDSA",
            "SRM_OPERATOR_KEYS": OPERATOR_KEY,
            "SRM_REDIS_SHARDS": "16",
            **env,
        }
    )


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, store: SessionStore, ready: bool = True, real_clock: bool = False
) -> AsyncIterator[Api]:
    """The API with JWKS keys whose clock the test moves (unless *real_clock*); waits for
    the first document unless not *ready*."""
    app = create_app(settings, store)
    jwks = app[DEPS].verifier.jwks
    assert jwks is not None
    clock = Monotonic()
    if not real_clock:
        jwks.clock = clock
    async with TestClient(TestServer(app)) as http:
        api = Api(http, jwks, clock)
        if ready:
            await until(lambda: jwks.ready)
        yield api


async def status(http: TestClient[Any, Any], token: str) -> tuple[int, str]:
    """The status and SRM error code ("" on success) of a client call with *token*."""
    answer = await http.get("/srm/sessions", headers={"Client-Token": token})
    body = await answer.json()
    return answer.status, body.get("errorResponse", {}).get("errorCode", "")


async def until(condition: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def fetches(result: str) -> float:
    return REGISTRY.get_sample_value("srm_jwks_fetches_total", {"result": result}) or 0.0


async def error_of(answer: Any) -> tuple[int, str]:
    body = await answer.json()
    return answer.status, body["errorResponse"]["errorCode"]


# -- algorithms and keys -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
async def test_tokens_are_verified_by_kid_with_each_key_type(
    jwks_server: JwksServer, store: SessionStore, algorithm: str
) -> None:
    key = signing_key(f"{algorithm}-1", algorithm)
    other = signing_key(f"{algorithm}-2", algorithm)
    jwks_server.publish(other, key)
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store) as api:
        answer = await api.http.post(
            "/srm/v1/sessions", json=SETUP, headers={"Client-Token": key.sign("acct-a")}
        )
        assert answer.status == 200, await answer.text()
        assert await api.status(other.sign("acct-a")) == (200, "")
        # the right key's kid on another key's signature
        forged = jwt.encode(
            {"accountId": "acct-a", "deviceId": "d", "exp": 9_999_999_999},
            signing_key(f"{algorithm}-x", algorithm).private,
            algorithm=algorithm,
            headers={"kid": key.kid},
        )
        assert await api.status(forged) == (401, "SRM-0003")


async def test_algorithm_confusion_and_foreign_algorithms_are_refused(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    key = signing_key("rsa-1")
    ec_key = signing_key("ec-1", "ES256")
    secret = b"a-symmetric-key-never-usable-from-a-jwks-0123456789"
    oct_jwk = {"kty": "oct", "kid": "hs-1", "k": base64.urlsafe_b64encode(secret).decode()}
    jwks_server.document = orjson.dumps({"keys": [key.jwk, ec_key.jwk, oct_jwk]})
    await jwks_server.start()
    attacker = signing_key("attacker")
    async with serving(jwks_settings(jwks_server), store) as api:
        claims = {"accountId": "a", "deviceId": "d", "exp": 9_999_999_999}
        pem = key.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        forged = [
            _hs256(claims, pem, kid=key.kid),  # HS256 keyed with the RSA public key
            _hs256(claims, orjson.dumps(key.jwk), kid=key.kid),
            _hs256(claims, secret, kid="hs-1"),  # a symmetric key published in the JWKS
            jwt.encode(claims, None, algorithm="none", headers={"kid": key.kid}),
            # ES256 under the RSA key's kid, RS256 under the EC key's kid
            jwt.encode(claims, ec_key.private, algorithm="ES256", headers={"kid": key.kid}),
            jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": ec_key.kid}),
            jwt.encode(claims, key.private, algorithm="RS256"),  # no kid
            jwt.encode(claims, key.private, algorithm="RS512", headers={"kid": key.kid}),
            # the attacker's own key embedded in, or linked from, the header is never used
            jwt.encode(
                claims,
                attacker.private,
                algorithm="RS256",
                headers={"kid": key.kid, "jwk": attacker.jwk, "jku": "http://127.0.0.1:1/"},
            ),
            "not-a-jwt",
        ]
        for token in forged:
            assert await api.status(token) == (401, "SRM-0003"), token
        assert await api.status(key.sign()) == (200, "")
        assert await api.status(ec_key.sign()) == (200, "")


def _hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}))
    body = b64(orjson.dumps(claims))
    signature = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64(signature)).decode()


# -- rotation, removal, refetch limits -----------------------------------------------------


async def test_keys_rotated_while_players_keep_calling(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    """Publish the next key, sign with it, retire the old one: no player ever sees a 401."""
    old, new = signing_key("rot-old"), signing_key("rot-new", "ES256")
    jwks_server.publish(old)
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store) as api:
        signer = [old]
        answered: dict[str, int] = {"rot-old": 0, "rot-new": 0}
        refused: list[tuple[str, int, str]] = []
        stop = asyncio.Event()

        async def player(n: int) -> None:
            while not stop.is_set():
                key = signer[0]
                status, code = await api.status(key.sign(f"acct-{n}", f"dev-{n}"))
                if status == 200:
                    answered[key.kid] += 1
                else:
                    refused.append((key.kid, status, code))

        players = [asyncio.create_task(player(n)) for n in range(4)]
        await until(lambda: answered["rot-old"] >= 20)
        # the identity service publishes its next key and signs with it from now on
        jwks_server.publish(old, new)
        api.clock.advance(30)
        signer[0] = new
        await until(lambda: answered["rot-new"] >= 20)
        # once the old key's tokens have expired, it leaves the document
        jwks_server.publish(new)
        assert await api.refetch_after(30)
        seen = answered["rot-new"]
        await until(lambda: answered["rot-new"] >= seen + 20)
        stop.set()
        await asyncio.gather(*players)
        assert refused == []
        assert await api.status(old.sign()) == (401, "SRM-0003")
        assert jwks_server.requests == 3  # at start, for the new kid, after the removal


async def test_a_removed_keys_tokens_are_refused_after_the_refetch(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    gone, kept = signing_key("rm-gone"), signing_key("rm-kept", "EdDSA")
    jwks_server.publish(gone, kept)
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store) as api:
        cached = gone.sign()
        assert await api.status(cached) == (200, "")
        assert await api.status(cached) == (200, "")  # now a verified-token cache hit
        added = signing_key("rm-added")
        jwks_server.publish(gone, kept, added)
        generation = api.jwks.generation
        assert await api.refetch_after(30)
        assert api.jwks.generation == generation  # an added key keeps the cache
        assert await api.status(cached) == (200, "")
        jwks_server.publish(kept, added)
        assert await api.refetch_after(30)
        assert await api.status(cached) == (401, "SRM-0003")
        assert await api.status(gone.sign()) == (401, "SRM-0003")
        assert await api.status(kept.sign()) == (200, "")
        assert await api.status(added.sign()) == (200, "")


async def test_a_key_replaced_under_the_same_kid_drops_its_cached_tokens(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    first, second = signing_key("same-kid-a"), signing_key("same-kid-b")
    second.jwk["kid"] = second.kid = first.kid
    jwks_server.publish(first)
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store) as api:
        cached = first.sign()
        assert await api.status(cached) == (200, "")
        jwks_server.publish(second)
        assert await api.refetch_after(30)
        assert await api.status(cached) == (401, "SRM-0003")
        assert await api.status(second.sign()) == (200, "")


async def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    key = signing_key("flood-key")
    jwks_server.publish(key)
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store) as api:
        assert jwks_server.requests == 1

        async def flood() -> list[tuple[int, str]]:
            forged = [
                jwt.encode(
                    {"accountId": "a", "deviceId": "d", "exp": 9_999_999_999},
                    key.private,
                    algorithm="RS256",
                    headers={"kid": str(uuid.uuid4())},
                )
                for _ in range(100)
            ]
            return await asyncio.gather(*(api.status(t) for t in forged))

        results = await asyncio.gather(flood(), api.status(key.sign()), flood())
        assert set(results[0]) | set(results[2]) == {(401, "SRM-0003")}
        assert results[1] == (200, "")
        assert jwks_server.requests == 2  # two floods, one fetch
        api.clock.advance(29)
        assert set(await flood()) == {(401, "SRM-0003")}
        assert jwks_server.requests == 2  # the last refetch was less than 30 s ago
        api.clock.advance(1)
        assert set(await flood()) == {(401, "SRM-0003")}
        assert jwks_server.requests == 3
        assert set(await flood()) == {(401, "SRM-0003")}
        assert jwks_server.requests == 3


# -- outages and garbage ---------------------------------------------------------------------


async def test_the_jwks_server_down_keeps_the_old_keys(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    key = signing_key("down-key", "ES256")
    jwks_server.publish(key)
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store) as api:
        await jwks_server.stop()
        before = fetches("unreachable")
        assert not await api.refetch_after(300)
        assert fetches("unreachable") == before + 1
        assert await api.status(key.sign()) == (200, "")
        assert (await api.http.get("/ready")).status == 200
        await jwks_server.start()
        assert await api.refetch_after(30)
        assert await api.status(key.sign()) == (200, "")


async def test_down_from_the_start_answers_503_until_the_first_document(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    key = signing_key("late-key")
    jwks_server.publish(key)
    settings = jwks_settings(jwks_server, SRM_AUTH_JWKS_MIN_REFRESH="1")
    before = fetches("unreachable")
    async with serving(settings, store, ready=False, real_clock=True) as api:
        await until(lambda: fetches("unreachable") >= before + 1)
        assert await error_of(await api.http.get("/ready")) == (503, "SRM-0008")
        headers = {"Client-Token": key.sign()}
        answer = await api.http.post("/srm/sessions", json=SETUP, headers=headers)
        assert await error_of(answer) == (503, "SRM-0008")
        assert await api.status(key.sign()) == (503, "SRM-0008")
        assert await api.status("garbage") == (503, "SRM-0008")
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        assert (await api.http.get("/srm/accounts/a/sessions", headers=operator)).status == 200
        assert (await api.http.get("/health")).status == 200
        await jwks_server.start()
        await until(lambda: api.jwks.ready)
        assert (await api.http.get("/ready")).status == 200
        answer = await api.http.post("/srm/sessions", json=SETUP, headers=headers)
        assert answer.status == 200, await answer.text()


async def test_https_certificates_are_verified(store: SessionStore, tmp_path: Path) -> None:
    tls, certificate = self_signed_tls(tmp_path)
    server = JwksServer(tls=tls)
    key = signing_key("tls-key", "ES256")
    server.publish(key)
    await server.start()
    try:
        before = fetches("unreachable")
        async with serving(jwks_settings(server), store, ready=False) as api:
            await until(lambda: fetches("unreachable") > before)
            assert not api.jwks.ready  # the self-signed certificate is not trusted
            assert server.requests == 0
        trusted = jwks_settings(server, SRM_AUTH_JWKS_CA_FILE=str(certificate))
        async with serving(trusted, store) as api:
            assert await api.status(key.sign()) == (200, "")
    finally:
        await server.stop()


def _oversized(key: SigningKey) -> bytes:
    return orjson.dumps({"keys": [key.jwk], "padding": "x" * (1 << 20)})


GARBAGE: dict[str, tuple[str, Callable[[JwksServer, SigningKey], None]]] = {
    "not json": ("not_json", lambda s, k: setattr(s, "document", b"<html>login</html>")),
    "truncated json": ("not_json", lambda s, k: setattr(s, "document", s.document[:-3])),
    "a list": ("no_usable_keys", lambda s, k: setattr(s, "document", b"[]")),
    "no keys": ("no_usable_keys", lambda s, k: setattr(s, "document", b'{"keys": []}')),
    "keys not a list": ("no_usable_keys", lambda s, k: setattr(s, "document", b'{"keys": 1}')),
    "symmetric key only": (
        "no_usable_keys",
        lambda s, k: setattr(
            s, "document", orjson.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]})
        ),
    ),
    "keys without kid": (
        "no_usable_keys",
        lambda s, k: setattr(
            s,
            "document",
            orjson.dumps({"keys": [{a: b for a, b in k.jwk.items() if a != "kid"}]}),
        ),
    ),
    "encryption keys only": (
        "no_usable_keys",
        lambda s, k: setattr(s, "document", orjson.dumps({"keys": [{**k.jwk, "use": "enc"}]})),
    ),
    "a key of another algorithm": (
        "no_usable_keys",
        lambda s, k: setattr(s, "document", orjson.dumps({"keys": [{**k.jwk, "alg": "RS384"}]})),
    ),
    "a broken key": (
        "no_usable_keys",
        lambda s, k: setattr(s, "document", orjson.dumps({"keys": [{**k.jwk, "n": "!!"}]})),
    ),
    "oversized": ("too_large", lambda s, k: setattr(s, "document", _oversized(k))),
    "oversized chunked": (
        "too_large",
        lambda s, k: (setattr(s, "document", _oversized(k)), setattr(s, "chunked", True)),
    ),
    "compressed anyway": (
        "not_json",
        lambda s, k: (
            setattr(s, "document", gzip.compress(s.document)),
            s.headers.update({"Content-Encoding": "gzip"}),
        ),
    ),
    "HTTP 500": ("http_status", lambda s, k: setattr(s, "status", 500)),
    "a redirect": (
        "http_status",
        lambda s, k: (setattr(s, "status", 302), s.headers.update(Location="http://127.0.0.1:1/")),
    ),
}


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_garbage_documents_are_refused_and_the_cached_keys_kept(
    jwks_server: JwksServer, store: SessionStore, case: str
) -> None:
    key = signing_key("garbage-key")
    jwks_server.publish(key)
    await jwks_server.start()
    settings = jwks_settings(jwks_server, SRM_AUTH_ALGORITHM="RS256")
    async with serving(settings, store) as api:
        cached = key.sign()
        assert await api.status(cached) == (200, "")
        result, spoil = GARBAGE[case]
        spoil(jwks_server, key)
        before = fetches(result)
        assert not await api.refetch_after(30)
        assert fetches(result) == before + 1
        assert jwks_server.requests == 2
        assert await api.status(cached) == (200, "")
        assert await api.status(key.sign()) == (200, "")
        assert api.jwks.get(key.kid) is not None


async def test_cache_control_max_age_shortens_the_refresh_period(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    jwks_server.publish(signing_key("max-age-key"))
    jwks_server.headers["Cache-Control"] = "public, max-age=1"
    await jwks_server.start()
    async with serving(jwks_settings(jwks_server), store, real_clock=True):
        await until(lambda: jwks_server.requests >= 3)  # the configured period is 300 s


async def test_a_short_cache_period_refreshes_whatever_the_refetch_limit(
    jwks_server: JwksServer, store: SessionStore
) -> None:
    old, new = signing_key("short-old"), signing_key("short-new", "EdDSA")
    jwks_server.publish(old)
    await jwks_server.start()
    settings = jwks_settings(jwks_server, SRM_AUTH_JWKS_CACHE_SECONDS="0.2")
    async with serving(settings, store, real_clock=True) as api:
        assert await api.status(old.sign()) == (200, "")
        jwks_server.publish(new)
        await until(lambda: api.jwks.get(old.kid) is None)
        assert await api.status(old.sign()) == (401, "SRM-0003")
        assert await api.status(new.sign()) == (200, "")


def test_one_unusable_entry_does_not_spoil_the_document() -> None:
    good = signing_key("good-key", "ES256")
    hostile: list[Any] = [
        "not an object",
        None,
        {**good.jwk, "kid": ["list"]},
        {**good.jwk, "kid": "k" * 300},
        {**good.jwk, "kid": "alg-list", "alg": ["ES256"]},
        {**good.jwk, "kid": "crv-dict", "crv": {"x": 1}},
        {**good.jwk, "kid": "crv-other", "crv": "secp256k1"},
        {**good.jwk, "kid": "no-x", "x": None},
        {**good.jwk, "kid": "private", "d": "AAAA"},
        {**signing_key("small-rsa").jwk, "kid": "short-n", "n": "AQAB"},
        {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": good.jwk["x"]},
        good.jwk,
        {**signing_key("dup", "EdDSA").jwk, "kid": "good-key"},  # a second key of the same kid
    ]
    keys = parse_document(orjson.dumps({"keys": hostile}), frozenset({"ES256", "EdDSA"}))
    assert list(keys) == ["good-key"]
    assert keys["good-key"].algorithms == {"ES256"}


def test_cache_control_parsing() -> None:
    assert cache_max_age(None) is None
    assert cache_max_age("public") is None
    assert cache_max_age("public, max-age=60, must-revalidate") == 60
    assert cache_max_age('max-age="30"') == 30
    assert cache_max_age("s-maxage=5") is None
    assert cache_max_age("no-cache") is None
    assert cache_max_age("no-store, max-age=60") == 60
    assert cache_max_age("max-age=soon") is None
    assert cache_max_age("max-age=-5") == 0


# -- issuer, audience, HS secrets ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["HS256", "JWKS"])
async def test_issuer_and_audience_must_match_when_set(
    jwks_server: JwksServer, store: SessionStore, mode: str
) -> None:
    key = signing_key("iss-key")
    jwks_server.publish(key)
    await jwks_server.start()
    env = {"SRM_AUTH_ISSUER": ISSUER, "SRM_AUTH_AUDIENCE": "srm"}
    bad_claims: list[dict[str, Any]] = [
        {"aud": "srm"},
        {"iss": ISSUER},
        {"iss": ISSUER + "-other", "aud": "srm"},
        {"iss": ISSUER, "aud": "other"},
        {"iss": ISSUER, "aud": ["account"]},
    ]
    async with contextlib.AsyncExitStack() as stack:
        if mode == "HS256":
            settings = load(env={"SRM_AUTH_SECRET": OLD_SECRET, **env})
            app = create_app(settings, store)
            http = await stack.enter_async_context(TestClient(TestServer(app)))

            def sign(**claims: Any) -> str:
                return mint(OLD_SECRET, "acct-1", "dev-1", **claims)

        else:
            http = (
                await stack.enter_async_context(serving(jwks_settings(jwks_server, **env), store))
            ).http
            sign = key.sign
        assert await status(http, sign(iss=ISSUER, aud="srm")) == (200, "")
        assert await status(http, sign(iss=ISSUER, aud=["account", "srm"])) == (200, "")
        for claims in bad_claims:
            assert await status(http, sign(**claims)) == (401, "SRM-0003"), claims


def _verifier(**env: str) -> TokenVerifier:
    return TokenVerifier(load(env=env).auth)


def _accepts(verifier: TokenVerifier, secret: str) -> bool:
    try:
        verifier.verify(mint(secret, "acct", "dev", jti=str(uuid.uuid4())))
    except Unauthenticated:
        return False
    return True


def test_hs256_secret_rotation_in_three_steps() -> None:
    """docs/identity.md: add the new secret, switch the issuer, remove the old secret."""
    today = _verifier(SRM_AUTH_SECRET=OLD_SECRET)
    assert _accepts(today, OLD_SECRET)
    assert not _accepts(today, NEW_SECRET)
    # 1. every SRM process accepts both (either spelling)
    for step_1 in (
        _verifier(SRM_AUTH_SECRET=OLD_SECRET, SRM_AUTH_SECRETS=NEW_SECRET),
        _verifier(SRM_AUTH_SECRETS=f"{OLD_SECRET},{NEW_SECRET}"),
    ):
        assert _accepts(step_1, OLD_SECRET)
        assert _accepts(step_1, NEW_SECRET)
        assert not _accepts(step_1, "other-secret-" + "0" * 40)
    # 2. the token issuer signs with the new secret (nothing changes in SRM)
    # 3. after the longest token lifetime, the old secret goes
    done = _verifier(SRM_AUTH_SECRETS=NEW_SECRET)
    assert _accepts(done, NEW_SECRET)
    assert not _accepts(done, OLD_SECRET)


def test_an_expired_token_is_refused_whichever_secret_signed_it() -> None:
    verifier = _verifier(SRM_AUTH_SECRETS=f"{OLD_SECRET},{NEW_SECRET}")
    for secret in (OLD_SECRET, NEW_SECRET):
        with pytest.raises(Unauthenticated, match="expired"):
            verifier.verify(mint(secret, "acct", "dev", ttl=-10))


@pytest.mark.parametrize(
    ("env", "signer"),
    [
        ({"SRM_AUTH_SECRETS": f"{NEW_SECRET},{OLD_SECRET}"}, NEW_SECRET),
        ({"SRM_AUTH_SECRET": OLD_SECRET, "SRM_AUTH_SECRETS": NEW_SECRET}, OLD_SECRET),
    ],
)
def test_srm_token_mints_with_the_first_secret(env: dict[str, str], signer: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "srm.cli", "token", "--account", "a", "--device", "d"],
        env=srm_env(**env),
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    token = done.stdout.decode().strip()
    assert jwt.decode(token, signer, algorithms=["HS256"])["accountId"] == "a"
    other = NEW_SECRET if signer == OLD_SECRET else OLD_SECRET
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["HS256"])


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SRM_AUTH_JWKS_URL": "ftp://127.0.0.1/certs"}, "auth.jwks_url"),
        ({"SRM_AUTH_JWKS_URL": "certs.json"}, "auth.jwks_url"),
        ({"SRM_AUTH_JWKS_URL": "https://"}, "auth.jwks_url"),
        ({"SRM_AUTH_JWKS_URL": "https://id.example.com:99999/certs"}, "auth.jwks_url"),
        ({"SRM_AUTH_JWKS_URL": "http://id.example.com/certs"}, "auth.jwks_url"),
        ({"SRM_AUTH_JWKS_URL": "http://10.0.0.1/certs"}, "auth.jwks_url"),
        (
            {"SRM_AUTH_JWKS_URL": "https://id.example.com/c", "SRM_AUTH_PUBLIC_KEY": "k.pem"},
            "auth.public_key",
        ),
        (
            {"SRM_AUTH_JWKS_URL": "https://id.example.com/c", "SRM_AUTH_ALGORITHM": "RS256,HS256"},
            "auth.algorithm",
        ),
        ({"SRM_AUTH_ALGORITHM": "HS256,RS256"}, "auth.algorithm"),
        ({"SRM_AUTH_ALGORITHM": "RS256,XS1"}, "auth.algorithm"),
        ({"SRM_AUTH_ALGORITHM": " , "}, "auth.algorithm"),
        ({"SRM_AUTH_JWKS_MIN_REFRESH": "0"}, "auth.jwks_min_refresh"),
        ({"SRM_AUTH_JWKS_CACHE_SECONDS": "-1"}, "auth.jwks_cache_seconds"),
        ({"SRM_AUTH_JWKS_TIMEOUT": "0"}, "auth.jwks_timeout"),
        ({"SRM_AUTH_JWKS_MAX_BYTES": "10"}, "auth.jwks_max_bytes"),
        ({"SRM_AUTH_JWKS_ALLOW_HTTP": "perhaps"}, "auth.jwks_allow_http"),
        ({"SRM_AUTH_JWKS_CA_FILE": "/nonexistent/ca.pem"}, "auth.jwks_ca_file"),
        ({"SRM_AUTH_JWKS_CA_FILE": str(ROOT / "pyproject.toml")}, "auth.jwks_ca_file"),
    ],
)
def test_bad_identity_settings_are_refused_naming_them(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(env=env)


def test_identity_settings() -> None:
    loopback = load(env={"SRM_AUTH_JWKS_URL": "http://localhost:8081/certs"}).auth
    assert loopback.algorithms == tuple(sorted(loopback.algorithms))
    assert "HS256" not in loopback.algorithms  # the HS256 default never applies to a JWKS
    assert {"RS256", "ES256", "EdDSA"} <= set(loopback.algorithms)
    assert load(env={"SRM_AUTH_JWKS_URL": "http://[::1]/certs"}).auth.jwks_url
    allowed = load(
        env={"SRM_AUTH_JWKS_URL": "http://id.internal/certs", "SRM_AUTH_JWKS_ALLOW_HTTP": "true"}
    )
    assert allowed.auth.jwks_allow_http
    chosen = load(
        env={"SRM_AUTH_JWKS_URL": "https://id.example.com/c", "SRM_AUTH_ALGORITHM": "ES256"}
    )
    assert chosen.auth.algorithms == ("ES256",)
    both = load(
        env={"SRM_AUTH_SECRET": OLD_SECRET, "SRM_AUTH_SECRETS": f"{NEW_SECRET},{OLD_SECRET}"}
    )
    assert both.auth.hmac_secrets == (OLD_SECRET, NEW_SECRET)
    assert OLD_SECRET not in repr(both) and NEW_SECRET not in repr(both)
    require_auth_key(load(env={"SRM_AUTH_SECRETS": NEW_SECRET}))
    require_auth_key(load(env={"SRM_AUTH_JWKS_URL": "https://id.example.com/c"}))
    with pytest.raises(ConfigError, match=r"auth\.secret"):
        require_auth_key(load(env={}))
    with pytest.raises(ConfigError, match=r"auth\.public_key"):
        require_auth_key(load(env={"SRM_AUTH_ALGORITHM": "ES256"}))
    shown = orjson.dumps(masked(both)).decode()
    assert OLD_SECRET not in shown and NEW_SECRET not in shown
    assert set(logs.secrets_of(both)) >= {OLD_SECRET, NEW_SECRET}
    basic = load(env={"SRM_AUTH_JWKS_URL": "https://srm:pa55word@id.example.com/certs"})
    assert masked(basic)["auth"]["jwks_url"] == "https://srm:***@id.example.com/certs"
    assert "pa55word" in logs.secrets_of(basic)


# -- a real `srm serve` ----------------------------------------------------------------------


async def _answer(http: ClientSession, method: str, path: str, token: str = "") -> tuple[int, str]:
    headers = {"Client-Token": token} if token else {}
    body = SETUP if method == "POST" else None
    async with http.request(method, path, json=body, headers=headers) as answer:
        data = await answer.json()
        return answer.status, data.get("errorResponse", {}).get("errorCode", "")


@pytest.mark.slow
async def test_srm_serve_verifies_with_a_jwks_url(
    real_redis: RedisProcess, tmp_path: Path, jwks_server: JwksServer
) -> None:
    """Down at start (503), then ready; rotation and removal over two worker processes."""
    old, new = signing_key("serve-old"), signing_key("serve-new", "EdDSA")
    jwks_server.publish(old)
    port = free_port()
    env = srm_env(
        SRM_PORT=str(port),
        SRM_REDIS_URL=real_redis.url,
        SRM_WORKERS="2",
        SRM_AUTH_JWKS_URL=jwks_server.url,
        SRM_AUTH_ALGORITHM="RS256,EdDSA",
        SRM_AUTH_JWKS_MIN_REFRESH="0.5",
        SRM_AUTH_JWKS_CACHE_SECONDS="1",
    )
    log = tmp_path / "srm.log"
    srm = SrmProcess(start_srm(["serve"], env, log), port, log)
    try:
        # a connection per request, so the kernel spreads them over both workers
        async with ClientSession(srm.base, connector=TCPConnector(force_close=True)) as http:
            await _until_answering(http, srm)
            assert await _answer(http, "GET", "/ready") == (503, "SRM-0008")
            assert await _answer(http, "POST", "/srm/sessions", old.sign()) == (503, "SRM-0008")
            await jwks_server.start()
            await _until_status(http, "/ready", 200)
            # whichever worker answers (each refetches on its own: with a 1 s cache, a loaded
            # machine was seen to have one answer 503 a moment after /ready)
            await _until_status(http, "/srm/sessions", 200, old.sign)
            assert await _answer(http, "POST", "/srm/sessions", old.sign()) == (200, "")
            jwks_server.publish(old, new)
            await _until_status(http, "/srm/sessions", 200, new.sign)
            jwks_server.publish(new)
            await _until_status(http, "/srm/sessions", 401, old.sign)
            await _until_status(http, "/srm/sessions", 200, new.sign)
            async with http.get("/metrics") as answer:
                assert 'srm_jwks_fetches_total{result="ok"}' in await answer.text()
        assert srm.stop() == 0
    finally:
        if srm.proc.poll() is None:
            srm.stop()


async def _until_answering(http: ClientSession, srm: SrmProcess) -> None:
    async with asyncio.timeout(30):
        while True:
            assert srm.proc.poll() is None, srm.output()
            with contextlib.suppress(OSError):
                async with http.get("/health") as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.1)


async def _until_status(
    http: ClientSession, path: str, status: int, token: Callable[[], str] | None = None
) -> None:
    """Until every one of 10 calls in a row answers *status* (both workers caught up)."""
    async with asyncio.timeout(30):
        while True:
            answers = [
                await _answer(http, "GET", path, token() if token else "") for _ in range(10)
            ]
            if all(s == status for s, _ in answers):
                return
            await asyncio.sleep(0.1)
