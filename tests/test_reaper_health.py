"""`srm reaper --check`: one GET of the heartbeat key, and a light import footprint."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from srm.config import defaults
from srm.keys import Keys
from srm.reaper.health import heartbeat_exists
from tests.processes import ROOT, srm_env
from tests.redis_servers import RedisProcess, free_port

# Runs the CLI's check path in a fresh interpreter, then reports what it imported.
CHECK_AND_LIST_MODULES = """
import json, sys
from srm.cli import main
code = main(["reaper", "--check"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_the_check_reads_the_heartbeat_key(real_redis: RedisProcess) -> None:
    settings = defaults().replace("redis", url=real_redis.url)
    with real_redis.client() as c:
        c.set(Keys(settings.redis.shards).heartbeat("alive"), "x", ex=60)
    assert asyncio.run(heartbeat_exists(settings, "alive"))
    assert not asyncio.run(heartbeat_exists(settings, "never-started"))
    unreachable = defaults().replace("redis", url=f"redis://127.0.0.1:{free_port()}/0")
    assert not asyncio.run(heartbeat_exists(unreachable, "alive"))


def test_the_check_imports_neither_aiohttp_nor_prometheus_client(real_redis: RedisProcess) -> None:
    with real_redis.client() as c:
        c.set(Keys(defaults().redis.shards).heartbeat("healthy"), "x", ex=60)
    done = subprocess.run(
        [sys.executable, "-c", CHECK_AND_LIST_MODULES],
        env=srm_env(SRM_REDIS_URL=real_redis.url, SRM_REAPER_ID="healthy"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["code"] == 0, done.stdout  # the path ran through to a live heartbeat
    roots = {name.split(".")[0] for name in report["modules"]}
    assert "aiohttp" not in roots
    assert "prometheus_client" not in roots
    assert "srm.store" not in report["modules"]  # no SessionStore, no script registration
