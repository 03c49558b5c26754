"""What households cost (`bench/run --only households`): Redis time per setup and memory with
the worked examples of docs/households.md on, beside the same sessions without them.

Three configurations, each with the user's three rules (storage.USER_RULES) and events on:
- ``off``: no household settings, sessions without a client address (a setup while the API
  passes no address, or with households not configured);
- ``addresses``: no household settings, sessions with a client address (what recording the
  network alone costs);
- ``on``: the household settings of the three worked examples at once (EXAMPLES: their
  rules, learn_home, the device registry), sessions with a client address.
Under callgrind each example is also counted alone.
An account holds three sessions that the examples' rules count and none refuses: a TV in UHD
at home (it learns the home), a phone in HD at home, a phone in HD away. Each setup is timed
twice: as its device's first ("first": it registers the device, the TV learns the home),
and again once those sessions ended ("repeat": what a viewer's every later setup costs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, TypeVar

from bench import load, procs, storage
from srm.connection import COMPACT_HASH_VALUE, connect
from srm.errors import LimitReached
from srm.model import EndReason, NewSession
from srm.network import pack_address
from srm.process import make_store
from srm.store import SessionStore

# The household settings of the worked examples in docs/households.md: the rules each adds to
# the user's, and its [network] and [devices] settings as SRM_* variables
# (tests/test_households_docs.py checks that they are the examples').
EXAMPLES: dict[str, tuple[list[dict[str, Any]], dict[str, str]]] = {
    "home-and-away": (
        [{"name": "away", "max": 1, "locations": ["away"]}],
        {"SRM_NETWORK_LEARN_HOME": "tv"},
    ),
    "two-places": (
        [
            {"name": "two-places", "max": 2, "count": "networks", "policy": "evict"},
            {"name": "per-network", "max": 2, "per": "network"},
        ],
        {},
    ),
    "five-devices": ([], {"SRM_DEVICES_MAX": "5", "SRM_DEVICES_SWAP_COOLDOWN_DAYS": "30"}),
}
CONFIGS = ("off", "addresses", "on")  # timed; "on": every example at once
INSTRUCTION_CONFIGS = (*CONFIGS, *EXAMPLES)  # counted under callgrind
PHASES = ("first", "repeat")
PER_ACCOUNT = 3


def env(config: str) -> dict[str, str]:
    """The SRM_* settings of a configuration: the user's (storage.USER_ENV), with the
    household settings of one example, or of all of them ("on")."""
    names = list(EXAMPLES) if config == "on" else [config] if config in EXAMPLES else []
    rules = json.loads(storage.USER_RULES)
    out = dict(storage.USER_ENV)
    for name in names:
        more, settings = EXAMPLES[name]
        rules += more
        out |= settings
    out["SRM_SESSIONS_RULES"] = json.dumps(rules)
    return out


def sessions(count: int, tag: str, addresses: bool) -> Iterable[NewSession]:
    """*count* sessions, three to an account: a TV in UHD at home, a phone in HD at home, a
    phone in HD away (each account has its own home and away /24)."""
    for i in range(count):
        account, kind = divmod(i, PER_ACCOUNT)
        home = 0x0A000000 + ((account % 65536) << 8)  # 10.x.y.0/24
        address = (home + 7, home + 45, 0x0B000000 + ((account % 65536) << 8) + 20)[kind]
        yield NewSession(
            str(uuid.uuid4()),
            f"{tag}-account-{account:08d}",
            f"device-{kind}",
            "100001V3D",
            "COD",
            device_type="tv" if kind == 0 else "phone",
            quality="UHD" if kind == 0 else "HD",
            address=pack_address(IPv4Address(address)) if addresses else b"",
        )


async def lifecycles(store: SessionStore, probes: list[NewSession]) -> list[NewSession]:
    """End *probes* (teardown) and return the same setups again with new sessionIds."""
    for new in probes:
        await store.end(new.account_id, new.session_id, EndReason.TEARDOWN)
    return [dataclasses.replace(new, session_id=str(uuid.uuid4())) for new in probes]


@dataclass(frozen=True)
class Breakdown:
    """One account of three sessions, by key (MEMORY USAGE, samples 0) and by record."""

    account_hash: int
    devices_key: int  # the device registry (0: none)
    home_key: int  # the home networks (0: none)
    record: int  # HSTRLEN of its TV session's record
    counter_fields: int  # rule counter and distinct-count fields in the account hash
    counter_bytes: int  # their names and values


@dataclass(frozen=True)
class HouseholdsCost:
    # phase -> configuration -> the median of the rounds' usec_per_call of FCALL
    setup_us: dict[str, dict[str, float]]
    rounds_us: dict[str, dict[str, list[float]]]
    # the same for redis-server's main thread CPU time per setup (INFO cpu), which, unlike
    # the wall time of commandstats, does not grow while other processes hold the cores;
    # it includes reading the command and writing the reply
    cpu_us: dict[str, dict[str, float]]
    bytes_per_session: dict[str, float]  # used_memory growth per active session
    breakdown: dict[str, Breakdown]
    record_bytes: dict[str, int]  # HSTRLEN of one record: no address, IPv4, IPv6
    bytes_per_device: float  # MEMORY USAGE growth of a registry per device (36-char ids)
    commands: dict[str, int]  # commands clients sent for the setups counted, by name
    setups_counted: int

    def ratio(self, phase: str) -> float:
        """Redis time per setup with households on over off: the median of the rounds'
        ratios (on and off alternate within a round, so a round's load falls on both)."""
        return statistics.median(self.round_ratios(phase))

    def round_ratios(self, phase: str) -> list[float]:
        """The same ratio in each round (the configurations alternate within a round)."""
        by = self.rounds_us[phase]
        return [on / off for on, off in zip(by["on"], by["off"], strict=True)]

    @property
    def commands_per_setup(self) -> float:
        calls = sum(n for name, n in self.commands.items() if name not in NOT_PER_SETUP)
        return calls / self.setups_counted


# A new pooled connection says hello (and ping); the first denial of a process reads the
# server's clock (TIME, then at most every 10 s: srm/clock.py); the first call of a script
# after a server restart loads it. None of them is per setup.
NOT_PER_SETUP = frozenset({"hello", "ping", "client|setinfo", "auth", "select", "time", "script"})


async def households_cost(redis_url: str, count: int, samples: int, rounds: int) -> HouseholdsCost:
    """Memory (*count* sessions per configuration) and Redis time per setup (*samples*
    setups per configuration, phase and round, the configurations alternating in *rounds*)."""
    stores = {}
    try:
        for config in CONFIGS:
            s = storage.settings(redis_url, **env(config))
            stores[config] = make_store(s, connect(s.redis))
        memory: dict[str, float] = {}
        breakdown: dict[str, Breakdown] = {}
        for config in CONFIGS:
            # the session state alone: the event streams are a bounded buffer measured apart
            # (bench/events.py), as in storage.memory_per_session
            s = storage.settings(redis_url, **{**env(config), "SRM_EVENTS_ENABLED": "false"})
            store = make_store(s, connect(s.redis))
            try:
                await store.redis.flushall()
                await storage.fill(store, sessions(300, "warm", config != "off"))
                await store.redis.flushall()
                before = (await store.redis.info("memory"))["used_memory"]
                await storage.fill(store, sessions(count, f"mem-{config}", config != "off"))
                memory[config] = ((await storage.settled_memory(store.redis)) - before) / count
                breakdown[config] = await _breakdown(store, f"mem-{config}-account-00000000")
                if config == "on":
                    record_bytes = await _record_bytes(store)
                    per_device = await _bytes_per_device(store)
            finally:
                await store.redis.aclose()
        await stores["off"].redis.flushall()
        usec: dict[str, dict[str, list[float]]] = {p: {c: [] for c in CONFIGS} for p in PHASES}
        cpu: dict[str, dict[str, list[float]]] = {p: {c: [] for c in CONFIGS} for p in PHASES}
        for r in range(rounds):
            for config, store in stores.items():
                probes = list(sessions(samples, f"time{r}-{config}", config != "off"))
                for phase in PHASES:
                    await store.redis.config_resetstat()
                    cpu_before = await _cpu_us(store.redis)
                    for new in probes:
                        await store.setup(new)
                    cpu[phase][config].append((await _cpu_us(store.redis) - cpu_before) / samples)
                    cs = await store.redis.info("commandstats")
                    usec[phase][config].append(float(cs["cmdstat_fcall"]["usec_per_call"]))
                    probes = await lifecycles(store, probes)
            await stores["off"].redis.flushall()
        commands, counted = await _commands(redis_url, stores["on"])
        return HouseholdsCost(
            setup_us=_medians(usec),
            rounds_us=usec,
            cpu_us=_medians(cpu),
            bytes_per_session=memory,
            breakdown=breakdown,
            record_bytes=record_bytes,
            bytes_per_device=per_device,
            commands=commands,
            setups_counted=counted,
        )
    finally:
        for store in stores.values():
            await store.redis.aclose()


def _medians(by: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {p: {c: statistics.median(v) for c, v in per.items()} for p, per in by.items()}


async def _cpu_us(redis: Any) -> float:
    """CPU time redis-server's main thread has used, in microseconds."""
    cpu = await redis.info("cpu")
    return float(cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]) * 1e6


async def _breakdown(store: SessionStore, account: str) -> Breakdown:
    redis, ak = store.redis, store.keys.account(account)
    fields = await redis.hgetall(ak.state)
    tv = next(f for f, v in fields.items() if len(f) == 36 and "6:device" not in v[:40])
    counters = {f: v for f, v in fields.items() if f.startswith("=")}
    return Breakdown(
        account_hash=await redis.memory_usage(ak.state, samples=0),
        devices_key=await redis.memory_usage(ak.devices, samples=0) or 0,
        home_key=await redis.memory_usage(ak.home, samples=0) or 0,
        record=await redis.hstrlen(ak.state, tv),
        counter_fields=len(counters),
        counter_bytes=sum(
            len(f.encode("utf-8", "surrogateescape")) + len(v) for f, v in counters.items()
        ),
    )


async def _record_bytes(store: SessionStore) -> dict[str, int]:
    """The length of one session's record without a client address, from IPv4, from IPv6."""
    out = {}
    for name, address in (
        ("no address", b""),
        ("IPv4", pack_address(IPv4Address("203.0.113.7"))),
        ("IPv6", pack_address(IPv6Address("2001:db8:5:1::10"))),
    ):
        new = NewSession(
            str(uuid.uuid4()), f"record-{name}", "device-0", "100001V3D", "COD", address=address
        )
        await store.setup(new)
        key = store.keys.account(new.account_id).state
        out[name] = await store.redis.hstrlen(key, new.session_id)
    return out


async def _bytes_per_device(store: SessionStore) -> float:
    """MEMORY USAGE growth of one account's registry from 1 to 5 devices (deviceIds of 36
    characters, as UUIDs are), per device."""
    account = "registry-account"
    key = store.keys.account(account).devices
    sizes = []
    for _ in range(5):
        new = NewSession(str(uuid.uuid4()), account, str(uuid.uuid4()), "100001V3D", "COD")
        await store.setup(new)
        await store.end(account, new.session_id, EndReason.TEARDOWN)
        sizes.append(await store.redis.memory_usage(key, samples=0))
    return float(sizes[-1] - sizes[0]) / (len(sizes) - 1)


async def _commands(redis_url: str, store: SessionStore) -> tuple[dict[str, int], int]:
    """Commands clients sent, by name, for setups with households on (MONITOR, commands run
    inside Lua excluded), and how many setups: ones that succeed, and one denied."""
    probes = list(sessions(300, "monitor", True))
    over = NewSession(
        str(uuid.uuid4()),
        probes[0].account_id,
        "device-9",
        "100001V3D",
        "COD",
        address=pack_address(IPv4Address("10.0.0.99")),  # at home: nothing to evict
    )
    monitor = load.Monitor(redis_url)
    try:
        monitor.drain()
        for new in probes:
            await store.setup(new)
        try:
            await store.setup(over)
        except LimitReached:
            pass
        else:
            raise RuntimeError("a setup over the account limit was not denied")
        names = monitor.drain()
    finally:
        monitor.close()
    return names, len(probes) + 1


def callgrind_available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


class Callgrind:
    """A redis-server run under callgrind (valgrind) in *tmp*: zero its counts, run calls,
    dump them, and read the instructions executed inside a function from each dump."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        port = procs.free_port()
        self.proc = procs.spawn(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p",
             "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp),
             "--hash-max-ziplist-value", str(COMPACT_HASH_VALUE),
             # every call is some 50 times slower under valgrind: past the slow log's 10 ms,
             # each would pay for a slow log entry that it never pays in service
             "--slowlog-log-slower-than", "-1"]
        )  # fmt: skip
        self.url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for(self.url)
        except BaseException:
            self.stop()
            raise

    def control(self, option: str) -> None:
        """callgrind_control *option*: "-z" zeroes the counts, "-d" dumps them."""
        subprocess.run(
            ["callgrind_control", option, str(self.proc.pid)], check=True, capture_output=True
        )

    def stop(self) -> None:
        procs.stop([self.proc])

    def dumps(self) -> list[Path]:
        """The dumps written so far, in order (after stop: every one)."""
        pid = self.proc.pid
        return sorted(self.tmp.glob(f"cg.{pid}.*"), key=lambda p: int(p.suffix[1:]))


T = TypeVar("T")


@contextlib.contextmanager
def counted(run: Callable[[Callgrind], Coroutine[Any, Any, T]]) -> Iterator[tuple[T, list[Path]]]:
    """Runs *run* against a redis-server under callgrind in a temporary directory, stops the
    server, and yields what *run* returned with every dump written (readable until the with
    block ends)."""
    with tempfile.TemporaryDirectory(prefix="srm-callgrind-") as tmp:
        server = Callgrind(Path(tmp))
        try:
            result = asyncio.run(run(server))
        finally:
            server.stop()
        yield result, server.dumps()


def instructions(setups: int) -> dict[str, dict[str, float]]:
    """Thousands of instructions redis-server executes per setup inside FCALL (callgrind,
    user space), by phase and configuration: a count that, unlike time, does not move with
    the load of the machine. *setups* per configuration and phase."""
    out: dict[str, dict[str, float]] = {p: {} for p in PHASES}
    with counted(lambda server: _instructions_run(server, setups)) as (done, dumps):
        for (config, phase), dump in zip(done, dumps, strict=True):
            out[phase][config] = inclusive(dump, "fcallCommand") / setups / 1000
    return out


# main just before households began (848bd09): the setup whose Redis time issue 23's cost
# target starts from ("keeps its current Redis time within +20%")
BEFORE = "9ec700e"


def instructions_before(setups: int, commit: str = BEFORE) -> float | None:
    """Thousands of instructions redis-server executes per later setup (each device's second)
    of the ``off`` sessions with the SRM of *commit*, inside the one script call it makes
    (EVALSHA then; callgrind, user space): the setup as it was before households, counted
    in the same run as instructions(). None when this checkout lacks *commit* (a shallow
    clone)."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", commit],
                             capture_output=True)  # fmt: skip
    if archive.returncode != 0:
        return None
    with tempfile.TemporaryDirectory(prefix="srm-before-") as tree:
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)

        # the sessions of `off`, by the fields the NewSession of *commit* has
        fields = ("session_id", "account_id", "device_id", "content_id", "content_type",
                  "device_type", "quality")  # fmt: skip
        listed = {
            part: [{f: getattr(new, f) for f in fields} for new in sessions(n, tag, False)]
            for part, n, tag in (("warm", 60, "warm-before"), ("probes", setups, "cg-before"))
        }

        async def run(server: Callgrind) -> None:
            driver = Path(__file__).with_name("households_before.py")
            args = [sys.executable, str(driver), server.url, str(server.proc.pid)]
            env = {**os.environ, "PYTHONPATH": tree}
            child = await asyncio.create_subprocess_exec(
                *args, cwd=tree, env=env, stdin=asyncio.subprocess.PIPE
            )
            await child.communicate(json.dumps(listed).encode())
            if child.returncode != 0:
                raise RuntimeError(f"the setups of {commit} failed (exit {child.returncode})")

        with counted(run) as (_, dumps):
            return inclusive(dumps[0], "evalGenericCommand") / setups / 1000


def _wait_for(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server under valgrind did not start") from None
            time.sleep(0.1)
    client.close()


async def _instructions_run(server: Callgrind, setups: int) -> list[tuple[str, str]]:
    url, control = server.url, server.control
    done = []
    for config in INSTRUCTION_CONFIGS:
        # a script runs some 50 times slower under callgrind
        s = storage.settings(
            url, **env(config), SRM_REDIS_SOCKET_TIMEOUT="10", SRM_REDIS_REQUEST_DEADLINE="30"
        )
        store = make_store(s, connect(s.redis))
        try:
            await store.redis.flushall()
            for new in sessions(60, f"warm-{config}", config != "off"):
                await store.setup(new)
            probes = list(sessions(setups, f"cg-{config}", config != "off"))
            for phase in PHASES:
                control("-z")  # zero the counts
                for new in probes:
                    await store.setup(new)
                control("-d")  # dump them
                done.append((config, phase))
                probes = await lifecycles(store, probes)
        finally:
            await store.redis.aclose()
    return done


def inclusive(dump: Path, function: str) -> int:
    """Instructions executed in *function* and what it called, from a callgrind dump."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--auto=no", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(rf"^\s*([\d,]+) \([^)]*\)\s+\S*:{function} \[", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {function} in the callgrind profile {dump}")
    return int(match.group(1).replace(",", ""))
