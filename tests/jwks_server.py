"""A JWKS document server for the tests (aiohttp on a free loopback port), and signing keys."""

from __future__ import annotations

import functools
import ipaddress
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tests.redis_servers import free_port


@dataclass
class SigningKey:
    """A private key the test's identity service signs with, and its public JWK."""

    kid: str
    algorithm: str
    private: Any
    jwk: dict[str, Any]

    def sign(self, account: str = "acct-1", device: str = "dev-1", **claims: Any) -> str:
        """A fresh token (its own jti, so never a verified-token cache hit)."""
        payload = {
            "accountId": account,
            "deviceId": device,
            "exp": int(time.time()) + 600,
            "jti": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(
            payload, self.private, algorithm=self.algorithm, headers={"kid": self.kid}
        )


@functools.cache
def _private(kind: str, name: str) -> Any:
    if kind == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


_TO_JWK = {
    "RS256": jwt.algorithms.RSAAlgorithm.to_jwk,
    "ES256": jwt.algorithms.ECAlgorithm.to_jwk,
    "EdDSA": jwt.algorithms.OKPAlgorithm.to_jwk,
}


def signing_key(kid: str, algorithm: str = "RS256", **jwk: Any) -> SigningKey:
    """A key pair of *algorithm* (RS256, ES256 or EdDSA), the same for the same kid."""
    private = _private(algorithm, kid)
    public: dict[str, Any] = _TO_JWK[algorithm](private.public_key(), as_dict=True)
    public.update({"kid": kid, "use": "sig", **jwk})
    return SigningKey(kid, algorithm, private, public)


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 with a self-signed certificate, and that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srm test JWKS")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "jwks-cert.pem", directory / "jwks-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


@dataclass
class JwksServer:
    """Serves ``document`` at ``url``; counts requests; can be stopped and started again."""

    document: bytes = b'{"keys": []}'
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    requests: int = 0
    port: int = field(default_factory=free_port)
    tls: ssl.SSLContext | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/realms/tv/protocol/openid-connect/certs"

    def publish(self, *keys: SigningKey) -> None:
        self.document = orjson.dumps({"keys": [k.jwk for k in keys]})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/realms/tv/protocol/openid-connect/certs", self._certs)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _certs(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if not self.chunked:
            return web.Response(
                body=self.document,
                status=self.status,
                headers=self.headers,
                content_type="application/json",
            )
        response = web.StreamResponse(status=self.status, headers=self.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(self.document), 65536):
            await response.write(self.document[i : i + 65536])
        await response.write_eof()
        return response
