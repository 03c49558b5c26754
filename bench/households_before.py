"""Runs the setups of bench/households.py's ``off`` configuration with the SRM of another
commit: households.instructions_before() runs this file with that commit's tree first on
the path, against a redis-server under callgrind. It imports nothing of this tree, only
what SRM had before households (the store's setup and end, bench.storage's settings).

Usage: python households_before.py <redis url> <callgrind's pid> <setups>
The counts are zeroed before the later setups (each device's second) and dumped after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid

from bench import storage  # the other commit's
from srm.connection import connect
from srm.model import EndReason, NewSession
from srm.process import make_store

PER_ACCOUNT = 3


def sessions(count: int, tag: str) -> list[NewSession]:
    """As households.sessions without addresses: a TV in UHD, a phone in HD, a phone in HD."""
    out = []
    for i in range(count):
        account, kind = divmod(i, PER_ACCOUNT)
        out.append(
            NewSession(
                str(uuid.uuid4()),
                f"{tag}-account-{account:08d}",
                f"device-{kind}",
                "100001V3D",
                "COD",
                device_type="tv" if kind == 0 else "phone",
                quality="UHD" if kind == 0 else "HD",
            )
        )
    return out


def control(pid: str, option: str) -> None:
    subprocess.run(["callgrind_control", option, pid], check=True, capture_output=True)


async def main(url: str, pid: str, setups: int) -> None:
    s = storage.settings(
        url, **storage.USER_ENV, SRM_REDIS_SOCKET_TIMEOUT="10", SRM_REDIS_REQUEST_DEADLINE="30"
    )
    store = make_store(s, connect(s.redis))
    try:
        await store.redis.flushall()
        for new in sessions(60, "warm-before"):
            await store.setup(new)
        probes = sessions(setups, "cg-before")
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
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
