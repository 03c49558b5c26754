"""`srm serve` as a real process, configured only by SRM_* variables."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import auth
from tests.processes import pids_of, srm_env, srm_serve, start_srm
from tests.redis_servers import RedisProcess

SETUP = {"content": {"contentID": "100001V3D", "contentType": "COD"}}

pytestmark = pytest.mark.slow


async def lifecycle(base: str, account: str) -> None:
    async with aiohttp.ClientSession(base) as http:
        answers = await asyncio.gather(
            *(http.post("/srm/v1/sessions", json=SETUP, headers=auth(account)) for _ in range(60))
        )
        bodies = [await a.json() for a in answers]
        sids = [b["successResponse"]["sessionId"] for b in bodies if "successResponse" in b]
        assert len(sids) == 3
        assert sum(b.get("errorResponse", {}).get("status") == "DENIED" for b in bodies) == 57
        for sid in sids:
            assert (await http.put(f"/srm/sessions/{sid}", headers=auth(account))).status == 200
            assert (await http.delete(f"/srm/sessions/{sid}", headers=auth(account))).status == 200
        listing = await (await http.get("/srm/sessions", headers=auth(account))).json()
        assert listing["activeCount"] == 0
        missing = await http.get("/nowhere")
        assert (await missing.json())["errorResponse"]["errorCode"] == "SRM-0010"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_redis_url(real_redis: RedisProcess, tmp_path: Path, workers: str) -> None:
    with srm_serve(tmp_path, SRM_REDIS_URL=real_redis.url, SRM_WORKERS=workers) as srm:
        asyncio.run(lifecycle(srm.base, f"acct-{workers}"))
        assert srm.stop(signal.SIGTERM) == 0
    assert '"stopped"' in srm.output() or "stopped" in srm.output()


def test_embedded_default_starts_and_stops_its_own_redis(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with srm_serve(tmp_path, cwd=tmp_path, SRM_EMBEDDED_DATA_DIR=str(data)) as srm:
        asyncio.run(lifecycle(srm.base, "acct-embedded"))
        assert (data / "appendonlydir").is_dir()  # persistence is on
        assert srm.stop(signal.SIGINT) == 0
    assert not (data / "redis.sock").exists()
    # redis-server shows its socket, not its arguments, in its command line
    assert not pids_of(f"unixsocket:{data}/"), "the embedded redis-server outlived srm serve"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SRM_PORT": "eighty"}, "server.port"),
        ({"SRM_PORT": "0"}, "server.port"),
        ({"SRM_SESSION_TIMEOUT": "-1"}, "sessions.timeout"),
        ({"SRM_MAX_SESSIONS": "3.5"}, "sessions.max_sessions"),
        ({"SRM_REAPER_INTERVAL": "nan"}, "reaper.interval"),
        ({"SRM_REDIS_URL": "http://x"}, "redis.url"),
        ({"SRM_AUTH_SECRET": ""}, "auth.secret"),
        ({"SRM_AUTH_JWKS_URL": "http://id.example.com/certs"}, "auth.jwks_url"),
        ({"SRM_CONFIG": "/nonexistent.toml"}, "SRM_CONFIG"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_setting(
    tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    base = {"SRM_AUTH_SECRET": "x" * 40, "SRM_REDIS_URL": "redis://127.0.0.1:1"}
    env = srm_env(**{**base, **variables})
    proc = start_srm(["serve"], env, tmp_path / "log")
    assert proc.wait(30) == 2
    assert named in (tmp_path / "log").read_text()


def test_unknown_srm_variables_are_ignored(real_redis: RedisProcess, tmp_path: Path) -> None:
    with srm_serve(tmp_path, SRM_REDIS_URL=real_redis.url, SRM_NOT_A_SETTING="1") as srm:
        asyncio.run(lifecycle(srm.base, "acct-unknown-var"))
    assert "SRM_NOT_A_SETTING" in srm.output()
