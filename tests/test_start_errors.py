"""How the `srm` commands fail at start and at their output's end: one line
and exit 2 for a listen address in use, no traceback when stdout's reader has gone, one line
for a metrics port in use. Each runs the real command as a process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SECRET
from tests.processes import srm_env
from tests.redis_servers import RedisProcess

pytestmark = pytest.mark.slow

SRM = [sys.executable, "-m", "srm.cli"]


@contextlib.contextmanager
def taken_port(*, reuse_port: bool = False) -> Iterator[int]:
    """A port of 127.0.0.1 with a listening socket on it (sharing it like `srm serve`'s
    workers do when *reuse_port*)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("workers", "reuse_port"),
    [("1", False), ("2", False), ("2", True)],
    ids=["one-process", "workers", "workers-beside-workers"],
)
def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_2(
    real_redis: RedisProcess, workers: str, reuse_port: bool
) -> None:
    """A second `srm serve` on a taken port; *reuse_port*: the holder shares its port the way
    a `srm serve` with workers does, which workers of another one would silently join."""
    with taken_port(reuse_port=reuse_port) as port:
        result = subprocess.run(
            [*SRM, "serve"],
            env=srm_env(
                SRM_REDIS_URL=real_redis.url,
                SRM_AUTH_SECRET=SECRET,
                SRM_PORT=str(port),
                SRM_WORKERS=workers,
            ),
            capture_output=True,
            timeout=120,
            check=False,
        )
    lines = _lines(result.stderr)
    assert result.returncode == 2, lines
    assert not any("Traceback" in line for line in lines), lines
    said = [line for line in lines if "cannot listen on" in line]
    assert said == [
        "srm: configuration error: server.host, server.port (SRM_HOST, SRM_PORT): cannot "
        f"listen on 127.0.0.1:{port}: Address already in use"
    ], lines


def test_config_into_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    """`srm config | head -1` with a reader that has gone before anything was written (the
    read end of its stdout is closed before the process starts: every write fails)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*SRM, "config"],
            env=srm_env(SRM_AUTH_SECRET=SECRET),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == b""
    assert result.returncode == 0


def test_events_with_its_metrics_port_taken_says_so_in_one_line(
    real_redis: RedisProcess, tmp_path: Path
) -> None:
    err = tmp_path / "events.err"
    with taken_port() as port, err.open("wb") as log:
        proc = subprocess.Popen(
            [*SRM, "events"],
            env=srm_env(SRM_REDIS_URL=real_redis.url, SRM_EVENTS_METRICS_PORT=str(port)),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 60
            while "started" not in err.read_text() and proc.poll() is None:
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
            assert proc.poll() is None, err.read_text()  # it runs on without metrics
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    lines = _lines(err.read_bytes())
    assert code == 0, lines
    assert not any("Traceback" in line for line in lines), lines
    said = [line for line in lines if "metrics" in line]
    assert len(said) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port}" in said[0]
    assert "running on without them" in said[0]
    assert "SRM_EVENTS_METRICS_PORT" in said[0]


def test_serve_with_nothing_to_derive_the_cursor_key_from_says_so(real_redis: RedisProcess) -> None:
    """JWKS tokens and no operator key: no secret to derive the listing cursors' key from, so
    each `srm serve` makes its own and says that cursors then work on it alone (here it
    stops at once, on a taken port, once it has said so)."""
    with taken_port() as port:
        result = subprocess.run(
            [*SRM, "serve"],
            env=srm_env(
                SRM_REDIS_URL=real_redis.url,
                SRM_AUTH_JWKS_URL="http://127.0.0.1:9/certs",
                SRM_AUTH_ALGORITHM="RS256",
                SRM_PORT=str(port),
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )
    said = result.stderr.decode(errors="replace") + result.stdout.decode(errors="replace")
    assert "SRM_SERVER_CURSOR_KEY" in said, said
    assert result.returncode == 2, said
