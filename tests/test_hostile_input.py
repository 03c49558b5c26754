"""Hostile input on a real socket: each gets its contract error and nothing changes in Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from srm.api.app import create_app
from srm.api.protocol import SrmAppRunner
from srm.store import SessionStore
from tests.helpers import SECRET, SETUP, auth, open_backend, token
from tests.helpers import assert_error as contract_error


@pytest.fixture(params=["standalone"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Hostile input tests the HTTP layer: one real backend is enough."""
    async with open_backend(request, request.param) as client:
        yield client


SETUP_BYTES = orjson.dumps(SETUP)


async def snapshot(redis: Any) -> dict[str, Any]:
    """Every key with its type and value: equal snapshots mean nothing changed."""
    state: dict[str, Any] = {}
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        if kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            state[key] = await redis.xrange(key)
        else:
            state[key] = await redis.get(key)
    return state


class Live:
    """The API on a real TCP port, spoken to with raw HTTP."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def raw(self, data: bytes, *, timeout: float = 10) -> tuple[int, dict[str, Any] | None]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(timeout):
                response = await reader.read()
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, orjson.loads(body) if body else None

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, Any] | None]:
        lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        return await self.raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


async def start_live(settings: Any, store: SessionStore) -> tuple[Live, web.AppRunner]:
    runner = SrmAppRunner(create_app(settings, store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Live(port), runner


@pytest.fixture
async def live(settings: Any, store: SessionStore) -> AsyncIterator[Live]:
    settings = settings.replace("server", keepalive_timeout=0.5, body_timeout=0.5)
    server, runner = await start_live(settings, store)
    yield server
    await runner.cleanup()


def assert_error(answer: tuple[int, dict[str, Any] | None], status: int, code: str) -> None:
    got_status, body = answer
    assert got_status == status, body
    assert body is not None
    assert body["errorResponse"]["errorCode"] == code
    assert body["errorResponse"]["code"] == str(status)


@pytest.fixture
async def seeded(live: Live, store: SessionStore) -> tuple[str, dict[str, Any]]:
    """One session of acct-1 and the keyspace snapshot with it."""
    status, body = await live.request("POST", "/srm/sessions", auth(), SETUP_BYTES)
    assert status == 200 and body is not None
    return body["successResponse"]["sessionId"], await snapshot(store.redis)


CONTRACT = {"SRM-0002": 400, "SRM-0007": 405, "SRM-0010": 404}


@pytest.mark.parametrize(
    "path",
    [
        "/srm/sessions/..",
        "/srm/sessions/../sessions",
        "/srm/sessions/%2e%2e",
        "/srm/sessions/%2E%2E%2Fx",
        "/srm/sessions/a%2Fb",
        "/srm/sessions/%00",
        "/srm/sessions/%F0%9F%98%80",
        "/srm/sessions/%ff%fe",
        "/srm/sessions/" + "a" * 5000,
        "/srm/sessions/%EF%BC%91" * 36,
        "/srm//sessions",
        "/srm/sessions/%20",
        "/srm/sessions/\u0000",
    ],
)
async def test_path_tricks(
    live: Live, store: SessionStore, seeded: tuple[str, dict[str, Any]], path: str
) -> None:
    """Path tricks get a contract error (400, 404 or 405 as routing decides), never a change."""
    _, before = seeded
    for method in ("PUT", "DELETE", "GET"):
        status, body = await live.request(method, path, auth())
        assert body is not None, (method, path)
        code = body["errorResponse"]["errorCode"]
        assert CONTRACT.get(code) == status, (method, path, status, body)
    assert await snapshot(store.redis) == before


async def test_session_id_with_a_suffix_is_not_the_session(
    live: Live, store: SessionStore, seeded: tuple[str, dict[str, Any]]
) -> None:
    sid, before = seeded
    for path in (f"/srm/sessions/{sid}%2F..", f"/srm/sessions/{sid}x", f"/srm/sessions/{sid}/x"):
        status, body = await live.request("DELETE", path, auth())
        assert status in (400, 404) and body is not None, path
    assert await snapshot(store.redis) == before


async def test_huge_token_is_431(live: Live, seeded: tuple[str, dict[str, Any]]) -> None:
    assert_error(
        await live.request("POST", "/srm/sessions", {"Client-Token": "x" * 9000}, SETUP_BYTES),
        431,
        "SRM-0009",
    )
    big = token(padding="p" * 4000)
    status, _ = await live.request("GET", "/srm/sessions", {"Client-Token": big})
    assert status == 200  # a large but legal token still works


async def test_too_many_headers_is_431(live: Live) -> None:
    headers = {f"X-H{i}": "v" for i in range(200)}
    assert_error(await live.request("GET", "/srm/sessions", {**auth(), **headers}), 431, "SRM-0009")


async def test_binary_garbage_in_headers_and_body(
    live: Live, store: SessionStore, seeded: tuple[str, dict[str, Any]]
) -> None:
    _, before = seeded
    raw = (
        b"POST /srm/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Client-Token: \xff\xfe\xfd\r\nContent-Length: 4\r\n\r\n\xff\xfe\x00\x01"
    )
    status, body = await live.raw(raw)
    assert status in (400, 401) and body is not None
    ok = auth()["Client-Token"].encode()
    raw = (
        b"POST /srm/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nClient-Token: "
        + ok
        + b"\r\nContent-Length: 4\r\n\r\n\xff\xfe\x00\x01"
    )
    assert_error(await live.raw(raw), 400, "SRM-0002")
    status, body = await live.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    assert status == 400 and body is not None
    assert await snapshot(store.redis) == before


async def test_deeply_nested_json(live: Live, store: SessionStore) -> None:
    body = b'{"content": ' * 3000 + b"1" + b"}" * 3000
    assert_error(await live.request("POST", "/srm/sessions", auth(), body), 400, "SRM-0002")
    assert await snapshot(store.redis) == {}


async def test_slow_headers_are_cut_off(live: Live) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(b"GET /srm/sessions HTTP/1.1\r\nHost: x\r\n")  # never finishes
    await writer.drain()
    async with asyncio.timeout(15):
        assert await reader.read() == b""  # closed by the server (keepalive_timeout 0.5 s)
    writer.close()


async def test_slow_body_is_400(live: Live, store: SessionStore) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    head = f"POST /srm/sessions HTTP/1.1\r\nHost: x\r\nClient-Token: {token()}\r\n"
    writer.write(head.encode() + b'Content-Length: 100\r\n\r\n{"content"')
    await writer.drain()
    try:
        async with asyncio.timeout(15):  # the answer comes after body_timeout (0.5 s)
            response_head = await reader.readuntil(b"\r\n\r\n")
            length = int(response_head.lower().split(b"content-length:", 1)[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
    finally:
        writer.close()  # not waiting for the server to give up on the rest of the body
    assert response_head.split(b" ", 2)[1] == b"400"
    assert orjson.loads(body)["errorResponse"]["errorCode"] == "SRM-0002"
    assert await snapshot(store.redis) == {}


async def test_a_flood_of_idle_connections_does_not_stop_service(
    settings: Any, store: SessionStore
) -> None:
    server, runner = await start_live(settings, store)  # default keep-alive timeout
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
    try:
        status, body = await server.request("POST", "/srm/sessions", auth(), SETUP_BYTES)
        assert status == 200 and body is not None and "successResponse" in body
    finally:
        for _, writer in idle:
            writer.close()
        await runner.cleanup()


@pytest.mark.parametrize("account", ["{s0}", "a}b{", "victim:count", "*", "line\nbreak", "x" * 256])
async def test_hostile_account_ids_cannot_reach_other_accounts(
    live: Live, store: SessionStore, account: str
) -> None:
    for _ in range(3):
        status, _ = await live.request("POST", "/srm/sessions", auth("victim"), SETUP_BYTES)
        assert status == 200
    victim_keys = store.keys.account("victim")
    before = await snapshot(store.redis)
    headers = {"Client-Token": token(account)}
    for _ in range(4):
        await live.request("POST", "/srm/sessions", headers, SETUP_BYTES)
    await live.request("DELETE", "/srm/v1/sessions", headers)
    listing = await store.account_sessions(account)
    assert listing.active_count == 3
    after = await snapshot(store.redis)
    for key in (victim_keys.state, victim_keys.limit, victim_keys.rule_limits):
        assert after.get(key) == before.get(key)
    assert (await store.account_sessions("victim")).active_count == 3


async def test_too_long_account_id_is_401(live: Live, store: SessionStore) -> None:
    headers = {"Client-Token": token("x" * 257)}
    assert_error(await live.request("POST", "/srm/sessions", headers, SETUP_BYTES), 401, "SRM-0003")
    assert await snapshot(store.redis) == {}


async def test_rs256_refuses_none_and_hs_confusion(settings: Any, store: SessionStore) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = settings.replace("auth", algorithm="RS256", public_key=public.decode(), secret="")
    server, runner = await start_live(settings, store)
    claims = {"accountId": "a", "deviceId": "d", "exp": 9_999_999_999}
    try:
        good = jwt.encode(claims, key, algorithm="RS256")
        status, body = await server.request(
            "POST", "/srm/sessions", {"Client-Token": good}, SETUP_BYTES
        )
        assert status == 200, body
        before = await snapshot(store.redis)
        forged = [
            jwt.encode(claims, None, algorithm="none"),
            jwt.encode(claims, SECRET, algorithm="HS256"),
            _hs256_with_public_key(claims, public),
        ]
        for bad in forged:
            answer = await server.request(
                "POST", "/srm/sessions", {"Client-Token": bad}, SETUP_BYTES
            )
            assert_error(answer, 401, "SRM-0003")
        assert await snapshot(store.redis) == before
    finally:
        await runner.cleanup()


def _hs256_with_public_key(claims: dict[str, Any], public_pem: bytes) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the RSA public key."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    body = b64(orjson.dumps(claims))
    signature = hmac.new(public_pem, head + b"." + body, hashlib.sha256).digest()
    return (head + b"." + body + b"." + b64(signature)).decode()


async def test_unknown_session_of_a_uuid_shape_is_404(live: Live) -> None:
    assert_error(
        await live.request("PUT", f"/srm/sessions/{uuid.uuid4()}", auth()), 404, "SRM-0004"
    )


async def test_request_line_over_8_kib_is_431(live: Live, store: SessionStore) -> None:
    answer = await live.request("GET", "/srm/sessions/" + "a" * 9000, auth())
    assert_error(answer, 431, "SRM-0009")
    assert await snapshot(store.redis) == {}


@pytest.mark.parametrize("path", ["/srm/sessions", "/srm/v1/sessions", "/no/such/path"])
async def test_an_expectation_other_than_100_continue_answers_an_error_response(
    live: Live, store: SessionStore, path: str
) -> None:
    """aiohttp refuses it before any middleware runs; the answer is still the contract's JSON."""
    answer = await live.request("POST", path, {**auth(), "Expect": "teapot"}, SETUP_BYTES)
    status, body = answer
    assert body is not None
    contract_error(body, status, "SRM-0002")
    assert status == 400
    assert await snapshot(store.redis) == {}


@pytest.mark.parametrize(
    ("method", "status", "code"),
    [("PATCH", 405, "SRM-0007"), ("PROPFIND", 405, "SRM-0007"), ("FOO", 400, "SRM-0002")],
)
async def test_a_method_the_path_lacks_is_405_and_one_the_parser_lacks_is_400(
    live: Live, method: str, status: int, code: str
) -> None:
    """A method HTTP's parser knows but the path lacks is SRM-0007; one the parser refuses
    (before any route is known) is malformed HTTP, SRM-0002. Both in the contract's JSON."""
    got, body = await live.request(method, "/srm/sessions", auth())
    assert got == status and body is not None
    contract_error(body, status, code)
