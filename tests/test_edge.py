"""The reference edge (deploy/edge/): a real nginx with the shipped njs check and the
`srm edge` poller, against tokens the reference implementation (akamai-edgeauth) mints and a
fake revocation feed, then end to end: nginx, `srm edge` and `srm serve` on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import signal
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from srm.cdn import CdnTokens
from srm.config import CdnSettings, defaults
from srm.edge import (
    CursorRefused,
    Edge,
    Feed,
    FeedError,
    Reloader,
    Revocation,
    Revoked,
    keys_text,
    parse_feed,
    quoted,
    write_if_changed,
)
from tests.helpers import OPERATOR, OPERATOR_KEY, until
from tests.helpers import token as client_token
from tests.nginx import Nginx, build, running
from tests.processes import SrmProcess, srm_env, srm_serve, start_srm
from tests.redis_servers import RedisProcess, free_port

KEY = "52a152a152a152a152a152a152a152a1"
NEW_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef"
SEGMENT = b"\x47" * 188 * 4  # four MPEG-TS packets


def cdn(key: str = KEY, *keys: str, algorithm: str = "sha256") -> CdnSettings:
    return dataclasses.replace(defaults().cdn, key=key, keys=keys, algorithm=algorithm)


def mint(
    acl: str | list[str] = "/vod/100001V3D/*",
    *,
    key: str = KEY,
    sid: str | None = "8f0d6d63-2a64-4c55-9c3c-1f1e8c1d2a9b",
    exp: int | None = None,
    st: int | None = None,
    algorithm: str = "sha256",
) -> str:
    """A token as Akamai's reference implementation makes it (what SRM's must equal)."""
    tz = os.environ.get("TZ")
    from akamai.edgeauth import EdgeAuth  # sets TZ=GMT in os.environ when first imported

    if tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = tz
    now = int(time.time())
    auth = EdgeAuth(
        key=key,
        algorithm=algorithm,
        session_id=sid,
        start_time=now if st is None else st,
        end_time=now + 120 if exp is None else exp,
    )
    return str(auth.generate_acl_token(acl))


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def refused(self) -> str | None:
        return self.headers.get("x-srm-edge-refused")


async def get(
    base: str, target: str, headers: dict[str, str] | None = None, *, cookie: str | None = None
) -> Answer:
    """GET *target* exactly as written (no client normalises its path or quotes its query)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"GET {target} HTTP/1.0", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += [f"Cookie: {cookie}"] if cookie is not None else []
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return Answer(int(status_line.split()[1]), parsed, body)


def segments(root: Path) -> None:
    for content in ("100001V3D", "other", "a b", "x*y"):
        (root / "vod" / content).mkdir(parents=True)
        (root / "vod" / content / "seg1.ts").write_bytes(SEGMENT)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Nginx]:
    """nginx running deploy/edge/ with KEY, no revocation, over a few contents' segments."""
    server = build(tmp_path)
    segments(server.root)
    write_if_changed(server.keys_file, keys_text(cdn()), 0o600)
    write_if_changed(server.map_file, Revoked().map_text(), 0o644)
    with running(server):
        yield server


def reload(server: Nginx) -> None:
    """Have nginx read its files again, and wait until only new workers serve."""
    old = server.workers()
    assert server.proc is not None and old
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while (now := server.workers()) & old or not now:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def seg(content: str = "100001V3D") -> str:
    return f"/vod/{content}/seg1.ts"


# -- the njs check ---------------------------------------------------------------------------


async def test_a_fresh_token_opens_the_segments_of_its_acl(edge: Nginx) -> None:
    token = mint()
    answer = await get(edge.base, f"{seg()}?__token__={token}")
    assert (answer.status, answer.body, answer.refused) == (200, SEGMENT, None)
    # the cookie and the header named like the parameter carry it as well
    assert (await get(edge.base, seg(), cookie=f"__token__={token}")).status == 200
    assert (await get(edge.base, seg(), {"__token__": token})).status == 200
    # a player that percent-encoded the whole token (its ~ and = too)
    encoded = token.replace("=", "%3D").replace("~", "%7E").replace("/", "%2F")
    assert (await get(edge.base, f"{seg()}?a=1&__token__={encoded}&b=2")).status == 200


async def test_refusals_say_why(edge: Nginx) -> None:
    now = int(time.time())
    good = mint()
    digit = good[-1]
    tampered = good[:-1] + ("0" if digit != "0" else "1")
    other_acl = good.replace("acl=/vod/100001V3D/*", "acl=/vod/*")
    assert other_acl != good
    cases = {
        "no token": seg(),
        "malformed token": f"{seg()}?__token__=exp={now + 60}~acl=/*",
        "bad hmac": f"{seg()}?__token__={tampered}",
        "bad hmac ": f"{seg()}?__token__={other_acl}",
        "bad hmac  ": f"{seg()}?__token__={mint(key=NEW_KEY)}",
        "expired": f"{seg()}?__token__={mint(st=now - 300, exp=now - 1)}",
        "not yet valid": f"{seg()}?__token__={mint(st=now + 60, exp=now + 120)}",
        "path outside acl": f"{seg('other')}?__token__={good}",
        "path outside acl ": f"/vod/100001V3D/../other/seg1.ts?__token__={good}",
        "path outside acl  ": f"/vod/100001V3D%2F..%2Fother/seg1.ts?__token__={good}",
    }
    for reason, target in cases.items():
        answer = await get(edge.base, target)
        assert (answer.status, answer.refused) == (403, reason.strip()), target
        assert SEGMENT not in answer.body
    assert "52a152a1" not in edge.log()  # the key is never written out


async def test_acls_follow_akamai(edge: Nginx) -> None:
    # several ACLs separated by !, each with * matching any run of characters (/ too)
    token = mint(["/vod/other/*", "/vod/100001V3D/seg*.ts"])
    for content in ("other", "100001V3D"):
        assert (await get(edge.base, f"{seg(content)}?__token__={token}")).status == 200
    assert (await get(edge.base, f"{seg('a%20b')}?__token__={token}")).status == 403
    # SRM percent-encodes the values it fills in, their * included: a literal, no wildcard
    spaced = mint("/vod/a%20b/*")
    assert (await get(edge.base, f"{seg('a%20b')}?__token__={spaced}")).status == 200
    star = mint("/vod/x%2Ay/*")
    assert (await get(edge.base, f"{seg('x*y')}?__token__={star}")).status == 200
    assert (await get(edge.base, f"{seg('other')}?__token__={star}")).status == 403
    exact = mint("/vod/other/seg1.ts")
    assert (await get(edge.base, f"{seg('other')}?__token__={exact}")).status == 200
    assert (await get(edge.base, f"{seg('other')}x?__token__={exact}")).status == 403


async def test_a_second_key_is_accepted_during_a_rotation(edge: Nginx) -> None:
    old, new = mint(), mint(key=NEW_KEY)
    assert (await get(edge.base, f"{seg()}?__token__={new}")).refused == "bad hmac"
    write_if_changed(edge.keys_file, keys_text(cdn(NEW_KEY, KEY)), 0o600)
    reload(edge)
    for token in (old, new):
        assert (await get(edge.base, f"{seg()}?__token__={token}")).status == 200
    write_if_changed(edge.keys_file, keys_text(cdn(NEW_KEY)), 0o600)  # the old one dropped
    reload(edge)
    assert (await get(edge.base, f"{seg()}?__token__={old}")).refused == "bad hmac"
    assert (await get(edge.base, f"{seg()}?__token__={new}")).status == 200


@pytest.mark.parametrize("algorithm", ["sha1", "md5"])
async def test_the_other_algorithms_akamai_allows(edge: Nginx, algorithm: str) -> None:
    write_if_changed(edge.keys_file, keys_text(cdn(algorithm=algorithm)), 0o600)
    reload(edge)
    good = mint(algorithm=algorithm)
    assert (await get(edge.base, f"{seg()}?__token__={good}")).status == 200
    assert (await get(edge.base, f"{seg()}?__token__={mint()}")).refused == "bad hmac"


async def test_the_map_refuses_exactly_the_ids_written(edge: Nginx) -> None:
    # ids nginx's map would read as keywords or a regex, or that need escaping
    odd = ["default", "include", "hostnames", "volatile", '"quoted"', "back\\slash", "~."]
    revoked = Revoked()
    revoked.add(Revocation(sid, int(time.time()) + 600) for sid in [*odd, "plain"])
    write_if_changed(edge.map_file, revoked.map_text(), 0o644)
    reload(edge)
    for sid in [*odd, "plain"]:
        if sid != "~.":  # a token cannot carry ~, its field delimiter
            token = mint(sid=sid)
            assert (await get(edge.base, f"{seg()}?__token__={token}")).refused == "revoked", sid
    # "~." is an id, not a regex that would match every id
    for sid in ("other", "plaine", "defaults", str(uuid.uuid4())):
        assert (await get(edge.base, f"{seg()}?__token__={mint(sid=sid)}")).status == 200, sid
    assert Revoked.read(edge.map_file.read_text()) == revoked


# -- the poller's pieces ---------------------------------------------------------------------


def test_feed_answers_are_checked() -> None:
    good = {"sessionId": "s1", "endedAt": "x", "endReason": "EVICTED", "until": 1700000000.2}
    found, cursor = parse_feed(orjson.dumps({"revoked": [good], "next": "c2"}))
    assert (found, cursor) == ([Revocation("s1", 1700000001)], "c2")
    bad_entries = [
        {"sessionId": "a\nb", "until": 1},
        {"sessionId": "", "until": 1},
        {"sessionId": "x" * 257, "until": 1},
        {"sessionId": "s2", "until": "soon"},
        {"sessionId": "s3", "until": True},
        {"sessionId": 5, "until": 1},
        "s4",
    ]
    found, _ = parse_feed(orjson.dumps({"revoked": [*bad_entries, good], "next": "c"}))
    assert found == [Revocation("s1", 1700000001)]
    for body in (b"<html>", b"[]", b'{"revoked": []}', b'{"revoked": {}, "next": "c"}'):
        with pytest.raises(FeedError):
            parse_feed(body)


def test_map_lines_quote_and_read_back() -> None:
    assert quoted("abc") == '"\\\\abc"'
    assert quoted('a"b\\c') == '"\\\\a\\"b\\\\c"'
    revoked = Revoked({"a": 5, 'a"b\\c': 7, "default": 9})
    assert Revoked.read(revoked.map_text()) == revoked
    revoked.add([Revocation("a", 3), Revocation("b", 4)])  # an id keeps its latest until
    assert revoked.until == {"a": 5, 'a"b\\c': 7, "default": 9, "b": 4}
    revoked.expire(5)
    assert revoked.until == {'a"b\\c': 7, "default": 9}


def test_files_are_replaced_whole_and_only_when_changed(tmp_path: Path) -> None:
    keys = tmp_path / "keys.conf"
    assert write_if_changed(keys, keys_text(cdn(KEY, NEW_KEY)), 0o600)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert f'js_var $srm_edge_keys "{KEY} {NEW_KEY}";' in keys.read_text()
    inode = keys.stat().st_ino
    assert not write_if_changed(keys, keys_text(cdn(KEY, NEW_KEY)), 0o600)
    assert keys.stat().st_ino == inode
    keys.chmod(0o644)  # a mode loosened by hand is put back
    assert write_if_changed(keys, keys_text(cdn(KEY, NEW_KEY)), 0o600)
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert keys.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.conf"]  # no temporary left


# -- a fake revocation feed ------------------------------------------------------------------


@dataclass
class FakeFeed:
    """The revocation feed as the contract says, from a list of entries: a cursor is the
    generation and the index of the next entry; a new generation (an SRM restart with new
    cursor keys) refuses older cursors with 400 SRM-0002."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 1
    down: bool = False
    cursors: list[str | None] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revoke(self, sid: str, until: float) -> None:
        self.entries.append(
            {"sessionId": sid, "endedAt": "now", "endReason": "OPERATOR", "until": until}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/srm/v1/revocations", self._feed)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _feed(self, request: web.Request) -> web.Response:
        cursor = request.query.get("cursor")
        self.cursors.append(cursor)
        if request.headers.get("Authorization") != f"Bearer {OPERATOR_KEY}":
            return self._error(401, "SRM-0006")
        if self.down:
            return self._error(503, "SRM-0008")
        start = 0
        if cursor is not None:
            generation, _, index = cursor.partition(":")
            if generation != str(self.generation) or not index.isdigit():
                return self._error(400, "SRM-0002")
            start = int(index)
        now = time.time()
        live = [e for e in self.entries[start:] if e["until"] > now]
        answer = {"revoked": live, "next": f"{self.generation}:{len(self.entries)}"}
        return web.json_response(answer)

    @staticmethod
    def _error(status: int, code: str) -> web.Response:
        body = {"errorResponse": {"code": str(status), "status": "ERROR", "errorCode": code}}
        return web.json_response(body, status=status)


@pytest.fixture
async def feed() -> AsyncIterator[FakeFeed]:
    fake = FakeFeed()
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_feed_is_read_from_its_last_cursor_and_from_the_start_when_refused(
    feed: FakeFeed,
) -> None:
    later = time.time() + 600
    feed.revoke("s1", later)
    feed.revoke("gone", time.time() - 1)  # its token expired: no longer listed
    async with aiohttp.ClientSession() as http:
        reader = Feed(http, feed.url + "/", OPERATOR_KEY)
        assert await reader.read() == [Revocation("s1", int(later) + 1)]
        assert await reader.read() == []
        feed.revoke("s2", later)
        assert await reader.read() == [Revocation("s2", int(later) + 1)]
        feed.generation += 1  # SRM restarted with new cursor keys
        assert {r.session_id for r in await reader.read()} == {"s1", "s2"}
        assert feed.cursors == [None, "1:2", "1:2", "1:3", None]
        feed.down = True
        with pytest.raises(FeedError, match="503 SRM-0008"):
            await reader.read()
        feed.down = False
        wrong = Feed(http, feed.url, "not-the-key")
        with pytest.raises(FeedError, match="401 SRM-0006"):
            await wrong.read()
        await feed.stop()
        with pytest.raises(FeedError):
            await reader.read()
        assert not isinstance(FeedError(), CursorRefused)


class CountingReloader(Reloader):
    def __init__(self) -> None:
        super().__init__(None, None)
        self.count = 0

    async def reload(self) -> bool:
        self.count += 1
        return True


async def test_the_poller_keeps_the_map_through_outages_and_drops_expired_ids(
    feed: FakeFeed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="srm.edge")
    base = int(time.time())
    now = [base]
    map_path, keys_path = tmp_path / "revoked.map", tmp_path / "keys.conf"
    reloader = CountingReloader()
    async with aiohttp.ClientSession() as http:

        def poller() -> Edge:
            edge = Edge(cdn(), Feed(http, feed.url, OPERATOR_KEY), map_path, keys_path, reloader)
            edge.clock = lambda: now[0]
            return edge

        edge = poller()
        edge.start()
        assert map_path.exists() and keys_path.exists()
        assert await edge.poll()
        assert reloader.count == 1  # the new files, once
        assert await edge.poll()
        assert reloader.count == 1  # nothing changed: no reload
        feed.revoke("s1", base + 600)
        feed.revoke("s2", base + 1200)
        assert await edge.poll()
        assert reloader.count == 2
        assert Revoked.read(map_path.read_text()).until == {"s1": base + 600, "s2": base + 1200}
        feed.down = True
        for _ in range(3):
            assert not await edge.poll()
        assert reloader.count == 2
        assert caplog.text.count("revocation feed unreadable") == 1  # one line per outage
        now[0] = base + 900  # s1's tokens have expired: gone from the map, SRM down or not
        assert not await edge.poll()
        assert Revoked.read(map_path.read_text()).until == {"s2": base + 1200}
        assert reloader.count == 3
        # a poller started again while SRM is down keeps the map it finds
        restarted = poller()
        restarted.start()
        assert not await restarted.poll()
        assert Revoked.read(map_path.read_text()).until == {"s2": base + 1200}
        feed.down = False
        assert await restarted.poll()
        assert "revocation feed readable again" in caplog.text


# -- `srm edge` against nginx ----------------------------------------------------------------


def srm_edge(tmp: Path, server: Nginx, feed_url: str, *args: str, **env: str) -> SrmProcess:
    settings = {
        "SRM_CDN_KEY": KEY,
        "SRM_OPERATOR_KEYS": OPERATOR_KEY,
        "SRM_CDN_API_URL": feed_url,
        "SRM_CDN_POLL_INTERVAL": "0.2",
    }
    variables = srm_env(**{**settings, **env})
    log = tmp / "srm-edge.log"
    files = ["--map", str(server.map_file), "--keys", str(server.keys_file)]
    return SrmProcess(start_srm(["edge", *files, *args], variables, log), 0, log)


@pytest.mark.slow
def test_srm_edge_refuses_to_start_without_what_it_needs(tmp_path: Path) -> None:
    server = build(tmp_path)
    cases = [
        ({"SRM_CDN_KEY": ""}, ["--once"], "needs cdn.key (SRM_CDN_KEY)"),
        ({"SRM_OPERATOR_KEYS": ""}, ["--once"], "needs an operator key (SRM_OPERATOR_KEYS)"),
        ({}, [], "--reload COMMAND or --nginx-pid PATH"),
        ({}, ["--once", "--reload", "  "], "--reload: an empty command"),
        ({"SRM_CDN_API_URL": "ftp://x"}, ["--once"], "cdn.api_url (SRM_CDN_API_URL)"),
    ]
    for env, args, message in cases:
        proc = srm_edge(tmp_path, server, "http://127.0.0.1:1", *args, **env)
        assert proc.proc.wait(30) == 2
        lines = proc.output().strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.output()
    log = tmp_path / "away.log"
    env = srm_env(SRM_CDN_KEY=KEY, SRM_OPERATOR_KEYS=OPERATOR_KEY)
    away = start_srm(["edge", "--once", "--map", str(tmp_path / "no" / "x.map")], env, log)
    assert away.wait(30) == 2
    assert "srm edge: --map: no directory" in log.read_text()


@pytest.mark.slow
async def test_srm_edge_once_writes_the_files_nginx_starts_with(
    feed: FakeFeed, tmp_path: Path
) -> None:
    server = build(tmp_path)
    segments(server.root)
    feed.revoke("8f0d6d63-2a64-4c55-9c3c-1f1e8c1d2a9b", time.time() + 600)
    once = srm_edge(tmp_path, server, feed.url, "--once")
    assert await asyncio.to_thread(once.proc.wait, 60) == 0, once.output()
    assert stat.S_IMODE(server.keys_file.stat().st_mode) == 0o600
    assert KEY not in once.output()
    with running(server):
        assert (await get(server.base, f"{seg()}?__token__={mint()}")).refused == "revoked"
        other = mint(sid=str(uuid.uuid4()))
        assert (await get(server.base, f"{seg()}?__token__={other}")).status == 200
    await feed.stop()  # SRM down: --once says so by its exit code, the map stays
    again = srm_edge(tmp_path, server, feed.url, "--once")
    assert await asyncio.to_thread(again.proc.wait, 60) == 1
    assert "8f0d6d63" in server.map_file.read_text()


@pytest.mark.slow
async def test_srm_edge_refuses_a_revoked_session_within_a_poll_and_reloads_only_on_change(
    feed: FakeFeed, edge: Nginx, tmp_path: Path
) -> None:
    sid = str(uuid.uuid4())
    token, bystander = mint(sid=sid), mint(sid=str(uuid.uuid4()))
    poller = srm_edge(tmp_path, edge, feed.url, "--nginx-pid", str(edge.pid_file))
    try:
        await until(lambda: len(feed.cursors) >= 3, what="three polls")
        reloads = edge.reloads()
        assert (await get(edge.base, f"{seg()}?__token__={token}")).status == 200
        feed.revoke(sid, time.time() + 600)

        async def refused() -> bool:
            return (await get(edge.base, f"{seg()}?__token__={token}")).refused == "revoked"

        await until(refused, what="the revoked session refused")
        assert (await get(edge.base, f"{seg()}?__token__={bystander}")).status == 200
        polls = len(feed.cursors)
        await until(lambda: len(feed.cursors) >= polls + 5, what="five more polls")
        assert edge.reloads() == reloads + 1  # once for the change, never for the same set
        # SRM restarted with new cursor keys: the poller reads the feed from its start
        feed.generation += 1
        polls = len(feed.cursors)
        await until(lambda: None in feed.cursors[polls:], what="a read from the start")
        assert await refused()
        assert poller.proc.poll() is None
    finally:
        assert poller.stop() == 0  # SIGTERM: exit 0
    assert poller.output().count("SRM refused the cursor") == 1


async def test_a_key_that_is_not_hex_is_no_empty_key(edge: Nginx) -> None:
    # a keys file edited by hand: blanks doubled, a key that is not hex; neither may become
    # an empty key, with which anyone could sign
    edge.keys_file.write_text(edge.keys_file.read_text().replace(f'"{KEY}"', f'" zz  {KEY} xyz"'))
    reload(edge)
    assert (await get(edge.base, f"{seg()}?__token__={mint()}")).status == 200
    signed = mint().rpartition("~hmac=")[0]
    forged = f"{signed}~hmac={hmac.new(b'', signed.encode(), hashlib.sha256).hexdigest()}"
    assert (await get(edge.base, f"{seg()}?__token__={forged}")).refused == "bad hmac"


# -- end to end: nginx, `srm edge` and `srm serve` on a real Redis ---------------------------


@dataclass
class Viewer:
    """A player of one account and device, talking to a real `srm serve`."""

    http: aiohttp.ClientSession
    srm: SrmProcess
    account: str
    device: str

    async def setup(self, content: str = "100001V3D") -> tuple[str, str]:
        """(sessionId, cdnToken) of a new session."""
        async with self.http.post(
            f"{self.srm.base}/srm/v1/sessions",
            json={"content": {"contentID": content, "contentType": "COD"}},
            headers={"Client-Token": client_token(self.account, self.device)},
        ) as resp:
            assert resp.status == 200, await resp.text()
            answer = (await resp.json())["successResponse"]
        return answer["sessionId"], answer["cdnToken"]

    async def keep_alive(self, sid: str) -> str:
        async with self.http.put(
            f"{self.srm.base}/srm/v1/sessions/{sid}",
            headers={"Client-Token": client_token(self.account, self.device)},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["cdnToken"])


@pytest.mark.slow
async def test_end_to_end_tokens_from_srm_open_segments_until_srm_revokes_them(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    env = {
        "SRM_REDIS_URL": real_redis.url,
        "SRM_OPERATOR_KEYS": OPERATOR_KEY,
        "SRM_CDN_ACL": "/vod/{contentID}/*",
        "SRM_MAX_SESSIONS": "1",
        "SRM_SESSIONS_LIMIT_POLICY": "evict",
    }
    # a key rotation half done: this `srm serve` still signs with the old key (KEY), which
    # the edge has in cdn.keys beside its new cdn.key
    edge_keys = {"SRM_CDN_KEY": NEW_KEY, "SRM_CDN_KEYS": KEY, "SRM_CDN_POLL_INTERVAL": "0.5"}
    server = build(tmp_path)
    segments(server.root)
    with srm_serve(tmp_path, **env, SRM_CDN_KEY=KEY) as srm:
        once = srm_edge(tmp_path, server, srm.base, "--once", **env, **edge_keys)
        assert await asyncio.to_thread(once.proc.wait, 60) == 0, once.output()
        with running(server):
            poller = srm_edge(
                tmp_path, server, srm.base, "--nginx-pid", str(server.pid_file), **env, **edge_keys
            )
            try:
                async with aiohttp.ClientSession() as http:
                    revoked, kept = await _end_to_end(http, srm, server, poller)
                    # SRM down: the edge keeps refusing what was revoked, serving the rest
                    srm.stop()
                    await until(lambda: "feed unreadable" in poller.output(), what="the outage")
                    assert (
                        await get(server.base, f"{seg()}?__token__={revoked}")
                    ).refused == "revoked"
                    assert (await get(server.base, f"{seg()}?__token__={kept}")).status == 200
                assert poller.proc.poll() is None
            finally:
                assert poller.stop() == 0
    assert poller.output().count("feed unreadable") == 1
    assert KEY not in poller.output() and NEW_KEY not in poller.output()


async def _end_to_end(
    http: aiohttp.ClientSession, srm: SrmProcess, server: Nginx, poller: SrmProcess
) -> tuple[str, str]:
    """Tokens of SRM at the edge: served, refused, revoked; (an evicted session's token, a
    live one's)."""
    account = f"acct-{uuid.uuid4()}"
    viewer = Viewer(http, srm, account, "tv-1")
    sid, cdn_token = await viewer.setup()
    fresh = await get(server.base, f"{seg()}?__token__={cdn_token}")
    assert (fresh.status, fresh.body) == (200, SEGMENT)
    assert (
        await get(server.base, f"{seg()}?__token__={await viewer.keep_alive(sid)}")
    ).status == 200
    # a token of the edge's new key, as the API signs once the rotation is done
    assert (await get(server.base, f"{seg()}?__token__={mint(key=NEW_KEY, sid=sid)}")).status == 200

    # refused: no token, one hex digit of the hmac changed, the acl changed, a path outside
    # the acl, a token past its exp (SRM's own minter, with a deadline in the past)
    tampered = cdn_token[:-1] + ("0" if cdn_token[-1] != "0" else "1")
    other_acl = cdn_token.replace("acl=/vod/100001V3D/*", "acl=/vod/*")
    now_ms = int(time.time() * 1000)
    expired = CdnTokens(cdn()).token(sid, "100001V3D", now_ms - 300_000, now_ms - 60_000)
    refusals = {
        seg(): "no token",
        f"{seg()}?__token__={tampered}": "bad hmac",
        f"{seg()}?__token__={other_acl}": "bad hmac",
        f"{seg('other')}?__token__={cdn_token}": "path outside acl",
        f"{seg()}?__token__={expired}": "expired",
    }
    for target, reason in refusals.items():
        answer = await get(server.base, target)
        assert (answer.status, answer.refused) == (403, reason), target

    async def refused(cdn_token: str) -> bool:
        return (await get(server.base, f"{seg()}?__token__={cdn_token}")).refused == "revoked"

    # the operator ends the session: refused within about one poll
    async with http.delete(
        f"{srm.base}/srm/v1/accounts/{account}/sessions/{sid}", headers=OPERATOR
    ) as resp:
        assert resp.status == 200, await resp.text()
    await until(lambda: refused(cdn_token), what="the operator's end refused at the edge")

    # another device of the account evicts the session (max_sessions 1, evict)
    tv, phone = Viewer(http, srm, account, "tv-2"), Viewer(http, srm, account, "phone-1")
    _, evicted = await tv.setup()
    assert (await get(server.base, f"{seg()}?__token__={evicted}")).status == 200
    _, kept = await phone.setup()
    await until(lambda: refused(evicted), what="the evicted session refused at the edge")
    assert (await get(server.base, f"{seg()}?__token__={kept}")).status == 200
    assert poller.proc.poll() is None
    return evicted, kept
