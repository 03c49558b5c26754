"""What the reference edge's token check costs nginx per request (python -m bench.edge).

Starts two nginx servers from deploy/edge/ (tests/nginx.py builds them as the tests do), one
worker each, serving the same small file: one with the check (srm-edge-check.conf), one
without. wrk drives each in turn for a few rounds with the same URL (a valid token in the
query); the figures are the nginx worker's CPU time per request (utime + stime from /proc)
and wrk's requests per second and latency percentiles. A small file keeps what the check
adds visible: a real segment (hundreds of KB by sendfile) costs the same check.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from srm.config import defaults
from srm.edge import Revocation, Revoked, keys_text, write_if_changed
from tests.nginx import Nginx, build, running

KEY = "52a152a152a152a152a152a152a152a1"
ACL = "/vod/100001V3D/*"
PATH = "/vod/100001V3D/seg1.ts"
SIZE = 188 * 50  # bytes of the file served


@dataclass(frozen=True)
class Round:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # the nginx worker's CPU time per request


def token(key: str) -> str:
    from akamai.edgeauth import EdgeAuth

    now = int(time.time())
    auth = EdgeAuth(
        key=key,
        session_id="8f0d6d63-2a64-4c55-9c3c-1f1e8c1d2a9b",
        start_time=now,
        end_time=now + 3600,
    )
    return str(auth.generate_acl_token(ACL))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def drive(server: Nginx, url: str, connections: int, seconds: float) -> Round:
    (worker,) = server.workers()
    before = cpu_seconds(worker)
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    cpu = cpu_seconds(worker) - before
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw refusals:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return Round(rps, p50, p99, cpu / requests * 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--revoked", type=int, default=10_000, help="ids in the map")
    args = parser.parse_args(argv)
    cdn = dataclasses.replace(defaults().cdn, key=KEY)
    revoked = Revoked()
    revoked.add(Revocation(f"revoked-{i}", int(time.time()) + 3600) for i in range(args.revoked))
    with tempfile.TemporaryDirectory(prefix="srm-bench-edge-") as tmp:
        servers = {
            "with the check": build(Path(tmp) / "on"),
            "without": build(Path(tmp) / "off", check=False),
        }
        for server in servers.values():
            (server.root / "vod" / "100001V3D").mkdir(parents=True)
            (server.root / PATH.lstrip("/")).write_bytes(b"\x47" * SIZE)
            write_if_changed(server.keys_file, keys_text(cdn), 0o600)
            write_if_changed(server.map_file, revoked.map_text(), 0o644)
        url = f"{PATH}?__token__={token(KEY)}"
        results: dict[str, list[Round]] = {name: [] for name in servers}
        with running(servers["with the check"]), running(servers["without"]):
            for _ in range(args.rounds):
                for name, server in servers.items():
                    r = drive(server, server.base + url, args.connections, args.seconds)
                    results[name].append(r)
                    print(
                        f"{name}: {r.rps:.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                        f"p99 {r.p99_ms:.2f} ms, {r.cpu_us:.1f} us CPU/request",
                        flush=True,
                    )
    on, off = (
        statistics.median(r.cpu_us for r in results[n]) for n in ("with the check", "without")
    )
    rps_on, rps_off = (
        statistics.median(r.rps for r in results[n]) for n in ("with the check", "without")
    )
    print(
        f"median: {on:.1f} vs {off:.1f} us of nginx worker CPU per request "
        f"(the check: +{on - off:.1f} us); {rps_on:.0f} vs {rps_off:.0f} req/s "
        f"with {args.revoked} revoked ids in the map, {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
