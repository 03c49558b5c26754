"""A real nginx running the reference edge of deploy/edge/, for the tests and bench/edge.py.

The prefix is built from the shipped files as they are: srm-edge.conf, srm-edge-check.conf
and srm_edge.js copied unchanged but for the state directory, nginx.conf with only what a
test cannot share changed (port, paths, the foreground master, the worker's user); every
change is checked to have happened, so the files tested are the files shipped.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.processes import alive
from tests.redis_servers import free_port

EDGE = Path(__file__).resolve().parent.parent / "deploy" / "edge"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STATE_DIR = "/var/lib/srm-edge/"  # where the shipped files expect `srm edge` to write


def _replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"deploy/edge: expected {old!r} once"
    return text.replace(old, new)


@dataclass
class Nginx:
    prefix: Path
    state: Path  # where keys.conf and revoked.map are
    root: Path  # the files served
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def keys_file(self) -> Path:
        return self.state / "keys.conf"

    @property
    def map_file(self) -> Path:
        return self.state / "revoked.map"

    def command(self, *args: str) -> list[str]:
        conf = str(self.prefix / "conf" / "nginx.conf")
        return [NGINX, "-p", str(self.prefix), "-c", conf, "-e", str(self.error_log), *args]

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nginx did not listen:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def workers(self) -> set[int]:
        """The pids of the master's worker processes."""
        assert self.proc is not None
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except FileNotFoundError:
            return set()
        return {int(c) for c in children if alive(int(c))}

    def reloads(self) -> int:
        """How many reloads the master has begun (SIGHUP or `nginx -s reload`)."""
        return self.log().count("signal 1 (SIGHUP) received")

    def log(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def build(base: Path, *, check: bool = True, port: int | None = None) -> Nginx:
    """A prefix under *base* running deploy/edge/ (the check left out with check=False, for
    the cost measurement: the same server without it)."""
    prefix, state, root = base / "nginx", base / "state", base / "segments"
    for d in (prefix / "conf", prefix / "tmp", state, root):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copy(EDGE / "srm_edge.js", prefix / "conf")
    shutil.copy(EDGE / "srm-edge-check.conf", prefix / "conf")
    http = (EDGE / "srm-edge.conf").read_text()
    assert http.count(STATE_DIR) == 2
    (prefix / "conf" / "srm-edge.conf").write_text(http.replace(STATE_DIR, f"{state}/"))
    server = Nginx(prefix, state, root, port or free_port())
    text = (EDGE / "nginx.conf").read_text()
    foreground = "daemon off;\n"
    if os.geteuid() == 0:  # the workers read files under the test's own directory
        foreground += f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
    text = _replace(text, "worker_processes auto;", f"{foreground}worker_processes 1;")
    text = _replace(text, "pid /run/srm-edge.pid;", f"pid {server.pid_file};")
    text = _replace(
        text,
        "error_log /var/log/nginx/srm-edge.error.log;",
        f"error_log {server.error_log} notice;",
    )
    text = _replace(
        text,
        "access_log /var/log/nginx/srm-edge.access.log;",
        "access_log off;\n"
        + "".join(
            f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    )
    text = _replace(text, "listen 8081;", f"listen 127.0.0.1:{server.port};")
    text = _replace(text, "root /srv/segments;", f"root {root};")
    if not check:
        text = _replace(text, "include srm-edge-check.conf;", "")
    (prefix / "conf" / "nginx.conf").write_text(text)
    return server


@contextlib.contextmanager
def running(server: Nginx) -> Iterator[Nginx]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
