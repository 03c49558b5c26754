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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from srm.connection import COMPACT_HASH_VALUE

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "0123456789abcdef" * 3


@dataclass(frozen=True)
class Server:
    """A started server: where it answers, and the process group that runs it."""

    url: str
    group: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every process of the group."""
        return group_cpu_seconds(self.group)


def group_cpu_seconds(group: int) -> float:
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[2]) == group:  # pgrp
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_info(client: redis.Redis, section: str) -> dict[str, Any]:
    """INFO *section* of a synchronous client (redis-py types the reply loosely in some
    releases)."""
    reply: Any = client.info(section)
    return cast(dict[str, Any], reply)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left."""
    groups = set()
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(p.pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            p.wait()


def spawn(
    cmd: Sequence[str], env: dict[str, str] | None = None, group: int | None = None
) -> subprocess.Popen[bytes]:
    """Start *cmd* in a new process group (or in *group*): workers it forks are counted and
    stopped with it."""
    return subprocess.Popen(
        list(cmd),
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0 if group is None else group,
    )


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[Server]:
    """A throwaway redis-server (no persistence) on a free port."""
    port = free_port()
    proc = spawn(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir),
         "--hash-max-ziplist-value", str(COMPACT_HASH_VALUE)]
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
        yield Server(url, proc.pid)
    finally:
        stop([proc])


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
def srm_serve(redis_url: str, workers: int, **env: str) -> Iterator[Server]:
    """`srm serve` with *workers* processes on a free port."""
    port = free_port()
    proc = spawn(
        [str(Path(sys.executable).parent / "srm"), "serve"],
        {
            "SRM_REDIS_URL": redis_url,
            "SRM_AUTH_SECRET": SECRET,
            "SRM_PORT": str(port),
            "SRM_WORKERS": str(workers),
            "SRM_LOGGING_LEVEL": "WARNING",
            # wrk cycles through its 1000 accounts back to back, far more setups per account
            # than players make (about 2 a second each at full load): the setup rate is
            # counted, so its cost is in every figure, but set high enough never to refuse
            "SRM_SETUPS_PER_MINUTE": "1000000",
            **env,
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield Server(url, proc.pid)
    finally:
        stop([proc])


@contextlib.contextmanager
def ceiling(workers: int) -> Iterator[Server]:
    """*workers* bare aiohttp processes sharing one port (SO_REUSEPORT), in one group."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "ceiling.py"), "127.0.0.1", str(port)]
    procs = [spawn(cmd)]
    procs += [spawn(cmd, group=procs[0].pid) for _ in range(workers - 1)]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        time.sleep(0.5)  # every worker bound, not only the first
        yield Server(url, procs[0].pid)
    finally:
        stop(procs)
