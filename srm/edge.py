"""`srm edge`: keeps the reference edge of deploy/edge/ (nginx + njs) current.

nginx's njs 0.7 (Debian bookworm) has no timers and no shared memory, so the edge learns
what changes through files it includes: this process writes them and reloads nginx.

- the keys file (``--keys``, mode 0600): ``js_var`` lines with the keys the edge accepts
  (``cdn.key``, then ``cdn.keys``), ``cdn.algorithm`` and ``cdn.token_name``;
- the revocation map (``--map``): the body of nginx's ``map $srm_token_id $srm_revoked``,
  one line per revoked session id with the epoch second its tokens expire.

Every ``cdn.poll_interval`` seconds it reads ``GET /srm/v1/revocations?cursor=C`` with an
operator key, keeps the revoked ids until their ``until``, rewrites a file only when its
text changes (a temporary file renamed over it) and then reloads nginx. SRM down: one log
line, the last map stays, the next interval tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from srm.config import CdnSettings, Settings
from srm.process import install_stop_handlers, run_loop, wait_or_stop

log = logging.getLogger(__name__)

FEED_PATH = "/srm/v1/revocations"
FEED_TIMEOUT = 10.0  # seconds for one answer of the feed
RELOAD_TIMEOUT = 30.0  # seconds for a --reload command
MAX_ID_LENGTH = 256
# a line of the map: "\\<id, its " and \ escaped>" <until>;
_MAP_LINE = re.compile(r'"\\\\((?:[^"\\]|\\.)*)" ([0-9]+);')


class FeedError(Exception):
    """Raised when the revocation feed cannot be read (SRM down, an error answer, bad JSON)."""


class CursorRefused(FeedError):
    """Raised when SRM refuses the cursor (400 SRM-0002): the next poll starts over."""


@dataclass(frozen=True)
class Revocation:
    session_id: str
    until: int  # epoch seconds: the revoked session's last token expires then


def parse_feed(body: bytes) -> tuple[list[Revocation], str]:
    """The revocations and the next cursor of a feed answer, or FeedError.

    An entry whose id nginx's map cannot carry (control characters, too long) or whose
    ``until`` is not a number is left out, with a warning: the others still count.
    """
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FeedError("the feed's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise FeedError("the feed's answer is not a JSON object")
    entries, cursor = answer.get("revoked"), answer.get("next")
    if not isinstance(entries, list) or not isinstance(cursor, str):
        raise FeedError("the feed's answer lacks a revoked list or a next cursor")
    found: list[Revocation] = []
    for entry in entries:
        sid = entry.get("sessionId") if isinstance(entry, dict) else None
        until = entry.get("until") if isinstance(entry, dict) else None
        if (
            not isinstance(sid, str)
            or not is_map_key(sid)
            or isinstance(until, bool)
            or not isinstance(until, int | float)
            or not math.isfinite(until)
        ):
            log.warning("revocation feed: an entry left out: %.200r", entry)
            continue
        found.append(Revocation(sid, math.ceil(until)))
    return found, cursor


def is_map_key(text: str) -> bool:
    """Whether *text* can be written as a key of an nginx map (printable, one line)."""
    return 0 < len(text) <= MAX_ID_LENGTH and text.isprintable()


def quoted(text: str) -> str:
    """*text* as a literal key of an nginx map: quoted, ``"`` and ``\\`` escaped, led by the
    backslash the map reads as "not a keyword, not a regex" (so ``default`` or ``~x``)."""
    return '"\\\\' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Revoked:
    """The revoked session ids, each until the epoch second its tokens expire."""

    until: dict[str, int] = field(default_factory=dict)

    def add(self, revocations: Iterable[Revocation]) -> None:
        for r in revocations:
            self.until[r.session_id] = max(r.until, self.until.get(r.session_id, 0))

    def expire(self, now: float) -> None:
        self.until = {sid: t for sid, t in self.until.items() if t > now}

    @classmethod
    def read(cls, text: str) -> Revoked:
        """The ids of a map this process wrote (what a restart starts from)."""
        found = cls()
        for line in text.splitlines():
            entry = _MAP_LINE.fullmatch(line)
            if entry:
                sid = re.sub(r"\\(.)", r"\1", entry[1])
                found.until[sid] = int(entry[2])
        return found

    def map_text(self) -> str:
        lines = [f"{quoted(sid)} {t};\n" for sid, t in sorted(self.until.items())]
        return (
            "# written by `srm edge`: the session ids SRM revoked, each with the epoch second\n"
            "# its tokens expire (nginx: map $srm_token_id $srm_revoked { include this; })\n"
            + "".join(lines)
        )


def keys_text(cdn: CdnSettings) -> str:
    """The keys file: the nginx variables srm_edge.js reads, from SRM's [cdn] settings."""
    return (
        "# written by `srm edge` from SRM's [cdn] settings: a secret (mode 0600)\n"
        f'js_var $srm_edge_keys "{" ".join(cdn.edge_keys)}";\n'
        f'js_var $srm_edge_algorithm "{cdn.algorithm}";\n'
        f'js_var $srm_edge_token_name "{cdn.token_name}";\n'
    )


def write_if_changed(path: Path, text: str, mode: int) -> bool:
    """Replace *path* by *text* at once (a temporary file renamed over it), with *mode*;
    False, and nothing written, when it already holds *text*."""
    with contextlib.suppress(OSError):
        if path.read_text() == text and path.stat().st_mode & 0o777 == mode:
            return False
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return True


class Reloader:
    """Tells nginx to read its files again: a command (``--reload``), or SIGHUP to the
    master whose pid file is given (``--nginx-pid``), or nothing (``--once`` alone)."""

    def __init__(self, command: list[str] | None, pid_file: Path | None) -> None:
        self.command = command
        self.pid_file = pid_file

    @property
    def configured(self) -> bool:
        return self.command is not None or self.pid_file is not None

    async def reload(self) -> bool:
        """True once nginx was told (or there is no one to tell); False to try again."""
        if self.command is not None:
            return await self._run()
        if self.pid_file is not None:
            return self._signal(self.pid_file)
        return True

    async def _run(self) -> bool:
        assert self.command is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            log.error("reload: cannot run %s: %s", self.command[0], exc.strerror or exc)
            return False
        try:
            async with asyncio.timeout(RELOAD_TIMEOUT):
                output, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("reload: %s gave no answer in %.0f s", self.command[0], RELOAD_TIMEOUT)
            return False
        if proc.returncode != 0:
            last = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
            log.error("reload: %s exited with %d: %s", self.command[0], proc.returncode, last[0])
            return False
        return True

    @staticmethod
    def _signal(pid_file: Path) -> bool:
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            log.warning(
                "reload: no nginx to signal through %s (%s): it reads the files when it starts",
                pid_file,
                getattr(exc, "strerror", None) or exc,
            )
            return True  # nothing runs that could hold old files; nothing to try again
        return True


class Feed:
    """Reads SRM's revocation feed from where the last answer left off."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, operator_key: str) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + FEED_PATH
        self.headers = {"Authorization": f"Bearer {operator_key}"}
        self.cursor: str | None = None

    async def read(self) -> list[Revocation]:
        """The revocations since the last read (every one still valid on the first), or
        FeedError. A refused cursor (SRM restarted with new cursor keys, say) is dropped
        and the feed read again from its start."""
        try:
            return await self._read()
        except CursorRefused:
            if self.cursor is None:
                raise
            log.info("revocation feed: SRM refused the cursor; reading from the start")
            self.cursor = None
            return await self._read()

    async def _read(self) -> list[Revocation]:
        params = {} if self.cursor is None else {"cursor": self.cursor}
        try:
            async with self.session.get(
                self.url,
                params=params,
                headers=self.headers,
                timeout=aiohttp.ClientTimeout(total=FEED_TIMEOUT),
            ) as answer:
                body = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FeedError(f"{type(exc).__name__}: {exc}"[:300]) from None
        if status == 400 and self.cursor is not None and _error_code(body) == "SRM-0002":
            raise CursorRefused()
        if status != 200:
            code = _error_code(body)
            raise FeedError(f"answered {status}" + (f" {code}" if code else ""))
        revocations, self.cursor = parse_feed(body)
        return revocations


def _error_code(body: bytes) -> str | None:
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        code = orjson.loads(body)["errorResponse"]["errorCode"]
        return code if isinstance(code, str) else None
    return None


@dataclass
class Edge:
    """The poller's state: what it knows, what it wrote, whether nginx has seen it."""

    cdn: CdnSettings
    feed: Feed
    map_path: Path
    keys_path: Path
    reloader: Reloader
    clock: Callable[[], float] = time.time
    revoked: Revoked = field(default_factory=Revoked)
    reload_pending: bool = False
    failing: bool = False

    def start(self) -> None:
        """Write the keys file, and an empty map if there is none (nginx cannot start
        without both); a reload follows if the keys changed."""
        if write_if_changed(self.keys_path, keys_text(self.cdn), 0o600):
            self.reload_pending = True
        try:
            self.revoked = Revoked.read(self.map_path.read_text())
        except FileNotFoundError:
            write_if_changed(self.map_path, self.revoked.map_text(), 0o644)
            self.reload_pending = True

    async def poll(self) -> bool:
        """One poll: read the feed, drop expired ids, rewrite the map, reload nginx if it
        changed. False when the feed could not be read (the map then only loses expired ids)."""
        ok = True
        try:
            self.revoked.add(await self.feed.read())
        except FeedError as exc:
            ok = False
            if not self.failing:
                log.warning("revocation feed unreadable, the last map stays: %s", exc)
            self.failing = True
        else:
            if self.failing:
                log.info("revocation feed readable again")
            self.failing = False
        self.revoked.expire(self.clock())
        if write_if_changed(self.map_path, self.revoked.map_text(), 0o644):
            self.reload_pending = True
        if self.reload_pending:
            self.reload_pending = not await self.reloader.reload()
        return ok

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            if not await wait_or_stop(stop, self.cdn.poll_interval):
                return


def api_url(settings: Settings) -> str:
    return settings.cdn.api_url or f"http://127.0.0.1:{settings.server.port}"


def run(settings: Settings, args: Any) -> int:
    """Run `srm edge`; the exit code: 0 after SIGTERM (or --once with a readable feed),
    1 for --once with the feed unreadable, 2 for settings or options that cannot work."""
    problem = _problem(settings, args)
    if problem:
        print(f"srm edge: {problem}", file=sys.stderr)
        return 2
    reloader = Reloader(
        shlex.split(args.reload) if args.reload else None,
        Path(args.nginx_pid) if args.nginx_pid else None,
    )
    outcome: list[bool] = []
    run_loop(_main(settings, Path(args.map), Path(args.keys), reloader, args.once, outcome))
    return 0 if all(outcome) else 1


def _problem(settings: Settings, args: Any) -> str | None:
    if not settings.cdn.enabled:
        return "needs cdn.key (SRM_CDN_KEY): the edge checks tokens with SRM's keys"
    if not settings.operator.keys:
        return "needs an operator key (SRM_OPERATOR_KEYS) to read the revocation feed"
    if args.reload is not None and not shlex.split(args.reload):
        return "--reload: an empty command"
    if not args.once and args.reload is None and args.nginx_pid is None:
        return "--reload COMMAND or --nginx-pid PATH: how to tell nginx (or --once)"
    for option, path in (("--map", Path(args.map)), ("--keys", Path(args.keys))):
        if not path.parent.is_dir():
            return f"{option}: no directory {path.parent}"
    if Path(args.map).resolve() == Path(args.keys).resolve():
        return "--map and --keys: two different files"
    return None


async def _main(
    settings: Settings,
    map_path: Path,
    keys_path: Path,
    reloader: Reloader,
    once: bool,
    outcome: list[bool],
) -> None:
    stop = asyncio.Event()
    install_stop_handlers(stop)
    async with aiohttp.ClientSession() as session:
        feed = Feed(session, api_url(settings), settings.operator.keys[0])
        edge = Edge(settings.cdn, feed, map_path, keys_path, reloader)
        edge.start()
        if once:
            outcome.append(await edge.poll())
            return
        log.info(
            "srm edge: polling %s every %s s; map %s, keys %s",
            feed.url,
            settings.cdn.poll_interval,
            map_path,
            keys_path,
        )
        await edge.run(stop)
