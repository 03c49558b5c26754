"""/metrics of a real 2-worker `srm serve`: any worker's scrape counts every worker's requests."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import SrmProcess, srm_serve
from tests.redis_servers import RedisProcess

pytestmark = pytest.mark.slow


def get(url: str) -> bytes:
    # a new connection per call, so SO_REUSEPORT spreads the calls over the workers
    request = urllib.request.Request(url, headers={"Connection": "close"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
        return bytes(answer.read())


def health_count(srm: SrmProcess) -> float:
    text = get(srm.base + "/metrics").decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "srm_http_requests_total" and s.labels.get("route") == "/health":
                total += s.value
    return total


def workers_of(pid: int) -> list[int]:
    """The worker processes of the supervisor *pid* (not multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if b"spawn_main" in _cmdline(c)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""  # exited meanwhile


def metrics_dir_of(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError(f"worker {pid} has no PROMETHEUS_MULTIPROC_DIR")


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_two_workers_share_their_metrics(real_redis: RedisProcess, tmp_path: Path) -> None:
    with srm_serve(tmp_path, SRM_REDIS_URL=real_redis.url, SRM_WORKERS="2") as srm:
        workers = workers_of(srm.proc.pid)
        assert len(workers) == 2
        shared = metrics_dir_of(workers[0])
        assert metrics_dir_of(workers[1]) == shared and shared.is_dir()
        assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR")

        for _ in range(40):
            get(srm.base + "/health")
        # every scrape, whichever worker answers it, sees all 40
        assert [health_count(srm) for _ in range(6)] == [40.0] * 6

        # a worker that dies is replaced; its counts stay, its live gauge goes
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(workers_of(srm.proc.pid)) == 2 and victim not in workers_of(srm.proc.pid)
        )
        wait_for(lambda: not list(shared.glob(f"gauge_livesum_{victim}.db")))
        assert list(shared.glob(f"counter_{victim}.db"))
        for _ in range(5):
            get(srm.base + "/health")
        assert health_count(srm) == 45.0

        assert srm.stop(signal.SIGTERM) == 0
    assert not shared.exists()  # the supervisor removed it on exit
