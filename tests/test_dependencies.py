"""The private internals of aiohttp and redis-py that SRM relies on, checked by name.

SRM uses a few non-public parts of its two main libraries on purpose (see each test's
docstring for where and why). pyproject.toml bounds both to the major version these tests
pass on; when an upgrade changes one of these internals, the test names what changed and
which SRM module must follow, instead of SRM failing at run time.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import Any

import aiohttp
import hiredis
import pytest
import redis
from aiohttp import web, web_protocol, web_server
from aiohttp.web_request import BaseRequest
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry

from srm.api.protocol import SrmAppRunner, SrmRequestHandler, SrmServer
from srm.autopipeline import _hiredis_parser
from tests.redis_servers import RedisProcess

AIOHTTP = f"aiohttp {aiohttp.__version__}"
REDIS = f"redis-py {redis.__version__}"


def parameters(function: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)


def require(ok: bool, library: str, what: str, user: str) -> None:
    if not ok:
        pytest.fail(f"{library} changed {what}, which {user} relies on", pytrace=False)


# -- aiohttp: srm/api/protocol.py ------------------------------------------------------------


def test_aiohttp_runner_makes_its_server_in_a_method_we_can_override() -> None:
    """SrmAppRunner overrides AppRunner._make_server to swap the class of its Server."""
    make = getattr(web.AppRunner, "_make_server", None)
    require(
        make is not None and inspect.iscoroutinefunction(make),
        AIOHTTP,
        "AppRunner._make_server (an async method)",
        "srm/api/protocol.py (SrmAppRunner)",
    )


def test_aiohttp_request_handler_error_hook_keeps_its_signature() -> None:
    """SrmRequestHandler overrides RequestHandler.handle_error (malformed HTTP answers)."""
    params = parameters(web_protocol.RequestHandler.handle_error)
    require(
        list(params)[:5] == ["self", "request", "status", "exc", "message"],
        AIOHTTP,
        f"RequestHandler.handle_error{inspect.signature(web_protocol.RequestHandler.handle_error)}",
        "srm/api/protocol.py (SrmRequestHandler.handle_error)",
    )
    require(
        callable(getattr(web_protocol.RequestHandler, "log_exception", None)),
        AIOHTTP,
        "RequestHandler.log_exception",
        "srm/api/protocol.py",
    )
    require(
        "writer" in dir(BaseRequest),
        AIOHTTP,
        "BaseRequest.writer",
        "srm/api/protocol.py (no error body once a response started)",
    )


async def test_aiohttp_server_swap_builds_our_request_handlers() -> None:
    """The Server made by the runner becomes an SrmServer that builds SrmRequestHandlers
    from the Server's private _loop and _kwargs."""
    runner = SrmAppRunner(web.Application(), handle_signals=False)
    await runner.setup()
    try:
        server = runner.server
        require(
            isinstance(server, SrmServer) and type(server).__mro__[1] is web_server.Server,
            AIOHTTP,
            "the class AppRunner._make_server returns",
            "srm/api/protocol.py (server.__class__ = SrmServer)",
        )
        assert isinstance(server, SrmServer)
        for name in ("_loop", "_kwargs"):
            require(
                hasattr(server, name),
                AIOHTTP,
                f"web_server.Server.{name}",
                "srm/api/protocol.py (SrmServer.__call__)",
            )
        handler = server()
        require(
            isinstance(handler, SrmRequestHandler),
            AIOHTTP,
            "how web_server.Server builds its RequestHandler",
            "srm/api/protocol.py",
        )
        require(
            getattr(handler, "_request_handler", None) is server.request_handler,
            AIOHTTP,
            "RequestHandler taking its handler from Server.request_handler when made",
            "srm/api/protocol.py (json_http_exceptions)",
        )
        assert asyncio.get_running_loop() is server._loop
    finally:
        await runner.cleanup()


# -- redis-py: srm/autopipeline.py -----------------------------------------------------------


def test_redis_pool_hands_out_a_connection_without_a_command_name() -> None:
    """The autopipeline takes a connection from the pool itself: get_connection()."""
    params = parameters(ConnectionPool.get_connection)
    required = [
        name
        for name, p in params.items()
        if name != "self"
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    require(
        not required,
        REDIS,
        f"ConnectionPool.get_connection (now requires {required})",
        "srm/autopipeline.py (_pooled_roundtrip)",
    )
    require(
        callable(getattr(ConnectionPool, "release", None)),
        REDIS,
        "ConnectionPool.release",
        "srm/autopipeline.py (_pooled_roundtrip)",
    )


def test_redis_connection_sends_packed_commands_and_reads_replies_with_a_timeout() -> None:
    """The autopipeline writes hiredis-packed commands in one send_packed_command and reads
    each reply with read_response(timeout=...): the socket timeout for the first, math.inf
    (no timeout) for the rest; it retries through conn.retry.call_with_retry."""
    send = parameters(AbstractConnection.send_packed_command)
    require(
        "command" in send,
        REDIS,
        f"AbstractConnection.send_packed_command{inspect.signature(AbstractConnection.send_packed_command)}",
        "srm/autopipeline.py (_exchange)",
    )
    read = parameters(AbstractConnection.read_response)
    require(
        "timeout" in read and read["timeout"].default is None,
        REDIS,
        f"AbstractConnection.read_response{inspect.signature(AbstractConnection.read_response)} "
        "(timeout=None must mean the socket timeout)",
        "srm/autopipeline.py (_exchange)",
    )
    require(
        list(parameters(Retry.call_with_retry))[1:3] == ["do", "fail"],
        REDIS,
        f"Retry.call_with_retry{inspect.signature(Retry.call_with_retry)}",
        "srm/autopipeline.py (_pooled_roundtrip)",
    )
    require(
        callable(getattr(hiredis, "pack_command", None)),
        f"hiredis {getattr(hiredis, '__version__', '?')}",
        "pack_command",
        "srm/autopipeline.py (_exchange)",
    )


async def test_redis_read_timeouts_mean_what_the_autopipeline_expects(
    real_redis: RedisProcess,
) -> None:
    """read_response(timeout=None) waits the socket timeout; timeout=math.inf waits on."""
    client: Any = redis.asyncio.Redis.from_url(real_redis.url, socket_timeout=0.05)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        require(
            hasattr(conn, "retry") and hasattr(conn.retry, "call_with_retry"),
            REDIS,
            "Connection.retry",
            "srm/autopipeline.py (_pooled_roundtrip)",
        )
        await conn.send_packed_command(hiredis.pack_command(("BLPOP", "srm-test:none", "0.3")))
        require(
            await conn.read_response(timeout=math.inf) is None,
            REDIS,
            "read_response(timeout=math.inf) (no longer waits past the socket timeout)",
            "srm/autopipeline.py (_exchange)",
        )
        await conn.send_packed_command(hiredis.pack_command(("BLPOP", "srm-test:none", "1")))
        with pytest.raises(redis.exceptions.TimeoutError):
            await conn.read_response(timeout=None)  # the socket timeout applies
    finally:
        await conn.disconnect()
        await pool.release(conn)
        await client.aclose()


async def test_redis_hiredis_parser_hands_over_buffered_replies(real_redis: RedisProcess) -> None:
    """The autopipeline takes the replies of a batch that are already buffered straight from
    the connection's hiredis Reader (conn._parser._reader.gets, NOT_ENOUGH_DATA when none)."""
    client: Any = redis.asyncio.Redis.from_url(real_redis.url)
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        parser = _hiredis_parser(conn)
        require(
            parser is not None
            and parser._reader.gets() is NOT_ENOUGH_DATA
            and hasattr(parser, "_hiredis_PushNotificationType")
            and callable(getattr(parser, "handle_push_response", None)),
            REDIS,
            "the async hiredis parser (_AsyncHiredisParser._reader, _hiredis_PushNotificationType,"
            " handle_push_response, redis._parsers.hiredis.NOT_ENOUGH_DATA)",
            "srm/autopipeline.py (_exchange)",
        )
        gets = parser._reader.gets
        await conn.send_packed_command(
            [hiredis.pack_command(("ECHO", "one")), hiredis.pack_command(("ECHO", "two"))]
        )
        assert await conn.read_response() == b"one"
        second = gets()
        if second is NOT_ENOUGH_DATA:  # not in the first read: read_response reads it
            second = await conn.read_response()
        assert second == b"two"
    finally:
        await conn.disconnect()
        await pool.release(conn)
        await client.aclose()


async def test_redis_pipelines_and_cluster_routing_used_by_the_store() -> None:
    """srm/store/base.py and autopipeline.py load the library on every cluster primary, run
    pipelines with raise_on_error=False (errors as Redis sent them), route an FCALL by its
    first key (SrmCluster) and WAIT with RedisCluster.get_node_from_key."""
    determine = getattr(RedisCluster, "_determine_slot", None)
    require(
        inspect.iscoroutinefunction(determine)
        and list(parameters(determine)) == ["self", "command", "args"],
        REDIS,
        "async RedisCluster._determine_slot(command, *args)",
        "srm/connection.py (SrmCluster)",
    )
    require(
        RedisCluster.COMMAND_FLAGS.get("FUNCTION LOAD") == RedisCluster.PRIMARIES,
        REDIS,
        "RedisCluster sends FUNCTION LOAD to every primary",
        "srm/autopipeline.py (AutoPipeline.load), srm/connection.py (load_library)",
    )
    require(
        "raise_on_error" in parameters(ClusterPipeline.execute),
        REDIS,
        "ClusterPipeline.execute(raise_on_error=...)",
        "srm/autopipeline.py (_client_roundtrip)",
    )
    require(
        callable(getattr(RedisCluster, "get_node_from_key", None)),
        REDIS,
        "RedisCluster.get_node_from_key",
        "srm/store/base.py (_call_then_wait)",
    )
