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
from collections.abc import Callable, Iterator, Mapping
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
    """An srm process leading its own process group (see :func:`kill_group`)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "srm.cli", *args],
            env=dict(env),
            cwd=cwd or ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the process group *proc* leads (its workers, say)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def pids_of(pattern: str) -> list[int]:
    """The processes whose command line contains *pattern* (pgrep -f)."""
    found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def kill_matching(pattern: str) -> None:
    """SIGKILL every process whose command line contains *pattern* (a test's strays)."""
    for pid in pids_of(pattern):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def workers_of(pid: int) -> list[int]:
    """The processes *pid* spawned with multiprocessing (not its resource tracker)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []  # exited
    return [int(c) for c in children if b"spawn_main" in _cmdline(int(c))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""  # exited meanwhile


def metrics_dir_of(pid: int) -> Path:
    """The PROMETHEUS_MULTIPROC_DIR of process *pid*."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError(f"process {pid} has no PROMETHEUS_MULTIPROC_DIR")


def alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout} s: {what}")
        time.sleep(0.1)


def wait_ready(proc: SrmProcess, timeout: float = 90) -> None:
    """Until *proc* answers /ready; a bound for a broken start, not a measure: a loaded
    2-core machine (two suites side by side) was seen to take over 30 s to start workers."""
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
def srm_serve(
    tmp: Path, cwd: Path | None = None, auth_secret: str | None = SECRET, **env: str
) -> Iterator[SrmProcess]:
    """`srm serve` on a free port, ready; stopped with SIGTERM afterwards. *auth_secret*:
    SRM_AUTH_SECRET, or None to leave the secret to the configuration file."""
    port = free_port()
    secret = {} if auth_secret is None else {"SRM_AUTH_SECRET": auth_secret}
    variables = srm_env(SRM_PORT=str(port), **secret, **env)
    log = tmp / f"srm-serve-{port}.log"
    proc = SrmProcess(start_srm(["serve"], variables, log, cwd), port, log)
    try:
        wait_ready(proc)
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.stop()
        kill_group(proc.proc)
