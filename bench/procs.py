"""The processes a benchmark run starts (redis-server, `srm serve`, the ceiling) and stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "0123456789abcdef" * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _spawn(cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(cmd),
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group, so workers it forks are stopped with it
    )


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free port; yields its URL."""
    port = free_port()
    proc = _spawn(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)]
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        _stop([proc])


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become ready")
        time.sleep(0.1)


@contextlib.contextmanager
def srm_serve(redis_url: str, workers: int, **env: str) -> Iterator[str]:
    """`srm serve` with *workers* processes on a free port; yields its base URL."""
    port = free_port()
    proc = _spawn(
        [str(Path(sys.executable).parent / "srm"), "serve"],
        {
            "SRM_REDIS_URL": redis_url,
            "SRM_AUTH_SECRET": SECRET,
            "SRM_PORT": str(port),
            "SRM_WORKERS": str(workers),
            "SRM_LOGGING_LEVEL": "WARNING",
            **env,
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        _stop([proc])


@contextlib.contextmanager
def ceiling(workers: int) -> Iterator[str]:
    """*workers* bare aiohttp processes sharing one port (SO_REUSEPORT); yields the base URL."""
    port = free_port()
    procs = [
        _spawn([sys.executable, str(ROOT / "bench" / "ceiling.py"), "127.0.0.1", str(port)])
        for _ in range(workers)
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        time.sleep(0.5)  # every worker bound, not only the first
        yield url
    finally:
        _stop(procs)
