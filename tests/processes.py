"""Real `srm` processes for the tests, configured only by SRM_* variables as in production."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import SECRET
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def srm_env(**overrides: str) -> dict[str, str]:
    """The environment of an srm process: this one without SRM_*, plus *overrides*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRM_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(overrides)
    return env


@dataclass
class SrmProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_srm(
    args: list[str], env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "srm.cli", *args],
            env=dict(env),
            cwd=cwd or ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ready(proc: SrmProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"srm exited with {proc.proc.returncode}:\n{proc.output()}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(proc.base + "/ready", timeout=1) as answer,  # noqa: S310
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"srm did not become ready:\n{proc.output()}")


@contextlib.contextmanager
def srm_serve(tmp: Path, cwd: Path | None = None, **env: str) -> Iterator[SrmProcess]:
    """`srm serve` on a free port, ready; stopped with SIGTERM afterwards."""
    port = free_port()
    variables = srm_env(SRM_PORT=str(port), SRM_AUTH_SECRET=SECRET, **env)
    log = tmp / f"srm-serve-{port}.log"
    proc = SrmProcess(start_srm(["serve"], variables, log, cwd), port, log)
    try:
        wait_ready(proc)
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.stop()
