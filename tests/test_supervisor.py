"""The supervisor of a real multi-worker `srm serve`: it keeps every child, fails fast when
one cannot start, and restarts a child that keeps dying ever more slowly."""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import SECRET
from tests.processes import (
    SrmProcess,
    kill_group,
    kill_matching,
    metrics_dir_of,
    pids_of,
    srm_env,
    srm_serve,
    start_srm,
    wait_until,
    workers_of,
)
from tests.redis_servers import RedisProcess

pytestmark = pytest.mark.slow


def metric(srm: SrmProcess, name: str) -> float:
    """The sum of every sample *name* in a scrape of /metrics; -1 while none answers."""
    try:
        with urllib.request.urlopen(srm.base + "/metrics", timeout=5) as answer:  # noqa: S310
            text = answer.read().decode()
    except OSError:
        return -1.0
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_every_child_of_an_embedded_srm_serve_is_restarted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    try:
        with srm_serve(
            tmp_path,
            cwd=tmp_path,
            SRM_WORKERS="2",
            SRM_EMBEDDED_DATA_DIR=str(data),
            SRM_REAPER_INTERVAL="0.1",
        ) as srm:
            children = workers_of(srm.proc.pid)
            assert len(children) == 3  # two workers and the reaper
            wait_until(lambda: metric(srm, "srm_reaper_passes_total") > 0, what="a reaper pass")
            shared = metrics_dir_of(children[0])
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: len(set(workers_of(srm.proc.pid)) - set(children)) == 3,
                what="three new children",
            )
            before = metric(srm, "srm_reaper_passes_total")
            wait_until(
                lambda: metric(srm, "srm_reaper_passes_total") > before,
                what="the restarted reaper passes again",
            )
            # the dead children's counts were folded into the *_exited files, theirs removed
            assert (shared / "counter_exited.db").is_file()
            assert not [
                f for f in shared.iterdir() if f.stem.rpartition("_")[2] in map(str, children)
            ]
            assert srm.stop() == 0
        assert "reaper (pid" in srm.output()
    finally:
        kill_matching(f"unixsocket:{data}/")
    assert not pids_of(f"unixsocket:{data}/")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_fails_srm_serve_before_any_worker_starts(
    real_redis: RedisProcess, tmp_path: Path, workers: str
) -> None:
    """Exit 2 and one line (tests/test_start_errors.py), with no worker started at all."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = srm_env(
            SRM_PORT=str(port),
            SRM_AUTH_SECRET=SECRET,
            SRM_REDIS_URL=real_redis.url,
            SRM_WORKERS=workers,
        )
        log = tmp_path / "srm.log"
        proc = start_srm(["serve"], env, log)
        try:
            assert proc.wait(60) == 2
        finally:
            kill_group(proc)
    output = log.read_text()
    assert "address already in use" in output.lower()
    assert "failed to start" not in output
    assert "restarting" not in output


def test_a_worker_that_keeps_dying_is_restarted_ever_more_slowly(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    with srm_serve(tmp_path, SRM_REDIS_URL=real_redis.url, SRM_WORKERS="2") as srm:
        # a worker logs "listening on" once ready: one killed before is a start failure
        wait_until(lambda: srm.output().count("listening on") == 2, what="both workers ready")
        known = set(workers_of(srm.proc.pid))
        victim = min(known)
        for restarts in range(1, 5):
            os.kill(victim, signal.SIGKILL)
            wait_until(
                lambda n=restarts: srm.output().count("listening on") == 2 + n,
                what="a replacement worker listens",
            )
            [victim] = set(workers_of(srm.proc.pid)) - known
            known.add(victim)
        assert srm.stop() == 0
    delays = re.findall(
        r"worker \d \(pid \d+\) exited with -9; restarting in ([\d.]+) s", srm.output()
    )
    assert [float(d) for d in delays] == [0.5, 1.0, 2.0, 4.0]
