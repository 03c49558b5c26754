"""Runs the setups of bench/households.py's ``off`` configuration with the SRM of another
commit: households.instructions_before() runs this file with that commit's tree first on
the path, against a redis-server under callgrind. It imports nothing of this tree, only
what SRM had before households (the store's setup and end, bench.storage's settings).

Usage: python households_before.py <redis url> <callgrind's pid> < sessions.json
({"warm": [...], "probes": [...]}, each session as the fields of a NewSession). The counts
are zeroed before the later setups of the probes (each device's second) and dumped after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import uuid
from typing import Any

from bench import storage  # the other commit's
from srm.connection import connect
from srm.model import EndReason, NewSession
from srm.process import make_store


def sessions(listed: list[dict[str, Any]]) -> list[NewSession]:
    """The sessions households.instructions_before made (households.sessions), by the fields
    the NewSession of that commit has."""
    return [NewSession(**fields) for fields in listed]


def control(pid: str, option: str) -> None:
    subprocess.run(["callgrind_control", option, pid], check=True, capture_output=True)


async def main(url: str, pid: str, listed: dict[str, list[dict[str, Any]]]) -> None:
    s = storage.settings(
        url, **storage.USER_ENV, SRM_REDIS_SOCKET_TIMEOUT="10", SRM_REDIS_REQUEST_DEADLINE="30"
    )
    store = make_store(s, connect(s.redis))
    try:
        await store.redis.flushall()
        for new in sessions(listed["warm"]):
            await store.setup(new)
        probes = sessions(listed["probes"])
        for new in probes:
            await store.setup(new)
        for new in probes:
            await store.end(new.account_id, new.session_id, EndReason.TEARDOWN)
        again = [dataclasses.replace(new, session_id=str(uuid.uuid4())) for new in probes]
        control(pid, "-z")
        for new in again:
            await store.setup(new)
        control(pid, "-d")
    finally:
        await store.redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.load(sys.stdin)))
