"""The options of `bench/run`, kept free of third-party imports so that `bench/run --help`
answers at once, before anything is installed (`python -m bench.options --help`)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Measure every performance target of SRM in one run: starts its own redis-server, "
    "`srm serve` and a bare-aiohttp ceiling on free ports, drives them with wrk, measures the "
    "store directly, prints each figure and a Markdown table of targets, and stops "
    "everything it started."
)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=DESCRIPTION)
    p.add_argument("--seconds", type=float, default=5, help="length of each wrk round")
    p.add_argument("--rounds", type=int, default=5, help="alternating ceiling/srm rounds")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", default="1,2", help="worker counts to compare")
    p.add_argument("--accounts", type=int, default=1000, help="accounts (tokens) wrk uses")
    p.add_argument("--memory-sessions", type=int, default=100_000)
    p.add_argument("--large", type=int, default=1_000_000, help="stored sessions, large case")
    p.add_argument("--small", type=int, default=1_000, help="stored sessions, small case")
    p.add_argument("--samples", type=int, default=3000, help="latency samples per case")
    p.add_argument("--backlog", type=int, default=100_000, help="reaper backlog")
    p.add_argument("--reap-batch", type=int, default=500, help="sessions per sweep/purge call")
    p.add_argument("--reap-parallel", type=int, default=4, help="shards reaped at once")
    p.add_argument("--rules-sessions", type=int, default=30_000, help="sessions, rules cost")
    p.add_argument("--cost-calls", type=int, default=5000, help="calls per script, cluster part")
    p.add_argument("--event-lifecycles", type=int, default=20_000, help="events: memory sample")
    p.add_argument(
        "--households-sessions", type=int, default=30_000, help="households: memory sample"
    )
    p.add_argument(
        "--licence-requests", type=int, default=3000, help="drm: requests per round and kind"
    )
    p.add_argument(
        "--licence-sessions", type=int, default=200, help="drm: sessions the requests cycle over"
    )
    p.add_argument(
        "--callgrind-setups",
        type=int,
        default=300,
        help="households and instructions: calls per configuration and phase counted in "
        "instructions under valgrind (0: not counted; bodies counts 2000 bodies unless 0)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="regression guard, under 2 minutes: throughput ratio (1 worker, 3 rounds of 3 s) "
        "and Redis commands per request",
    )
    p.add_argument(
        "--households",
        action="store_true",
        help="run the http and commands parts with the household settings of "
        "docs/households.md's worked examples on, setups passing X-Forwarded-For through a "
        "trusted proxy (127.0.0.1)",
    )
    p.add_argument(
        "--only",
        default="",
        help="comma list of parts: "
        "http,commands,memory,latency,reaper,rules,events,cluster,capacity,households,"
        "instructions,enforcement,drm,bodies",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    parse()
