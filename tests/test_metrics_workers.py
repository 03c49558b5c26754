"""/metrics of a real 2-worker `srm serve`: any worker's scrape counts every worker's requests."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import SrmProcess, metrics_dir_of, srm_serve, wait_until, workers_of
from tests.redis_servers import RedisProcess

pytestmark = pytest.mark.slow


def get(url: str) -> bytes:
    # a new connection per call, so SO_REUSEPORT spreads the calls over the workers
    request = urllib.request.Request(url, headers={"Connection": "close"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200
        return bytes(answer.read())


def answered(url: str) -> bool:
    """GET *url*: True once answered, False if the connection was refused."""
    try:
        get(url)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return False
        raise
    return True


def health_count(srm: SrmProcess) -> float:
    text = get(srm.base + "/metrics").decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "srm_http_requests_total" and s.labels.get("route") == "/health":
                total += s.value
    return total


def test_two_workers_share_their_metrics(real_redis: RedisProcess, tmp_path: Path) -> None:
    with srm_serve(tmp_path, SRM_REDIS_URL=real_redis.url, SRM_WORKERS="2") as srm:
        workers = workers_of(srm.proc.pid)
        assert len(workers) == 2
        shared = metrics_dir_of(workers[0])
        assert metrics_dir_of(workers[1]) == shared and shared.is_dir()
        assert not os.environ.get("PROMETHEUS_MULTIPROC_DIR")

        for _ in range(40):
            get(srm.base + "/health")
        # each worker folds its counts into the shared files within metrics.FLUSH_INTERVAL;
        # from then on every scrape, whichever worker answers it, sees all 40
        wait_until(lambda: health_count(srm) == 40.0)
        assert [health_count(srm) for _ in range(6)] == [40.0] * 6

        # a worker that dies is replaced; its counts stay (folded into the *_exited files),
        # its own files go
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(workers_of(srm.proc.pid)) == 2 and victim not in workers_of(srm.proc.pid)
        )
        wait_until(lambda: not list(shared.glob(f"*_{victim}.db")))
        assert (shared / "counter_exited.db").is_file()
        for _ in range(5):
            # a connection the kernel handed to the killed worker's socket as it closed is
            # refused (seen once on a loaded machine): it never reached SRM, so it is sent again
            wait_until(lambda: answered(srm.base + "/health"))
        wait_until(lambda: health_count(srm) == 45.0)

        assert srm.stop(signal.SIGTERM) == 0
    assert not shared.exists()  # the supervisor removed it on exit
