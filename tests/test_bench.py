"""`bench/run --help` answers before anything is installed."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def test_the_options_need_nothing_beyond_the_standard_library() -> None:
    done = subprocess.run(
        [sys.executable, "-S", "-m", "bench.options", "--help"],  # -S: no site-packages
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bench/run")


def test_bench_run_help_prints_the_options_without_installing() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "run"), "--help"],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--only" in done.stdout
    assert "pip" not in done.stdout + done.stderr


def test_the_body_benchmark_compares_parsers_that_read_alike() -> None:
    """bench/bodies.py: the msgspec candidate reads the measured bodies as SRM does and refuses
    a bad one with SRM's words; a tiny run prints a figure for every body and way."""
    from bench import bodies

    bodies.check(bodies.parsers())
    ns = bodies.times(rounds=1, number=10)
    assert set(ns) == {(name, way) for name in bodies.BODIES for way in bodies.WAYS}
    assert "hand-written" in bodies.report(ns, None) and " vs " in bodies.row(ns, None)
    for today, _ in bodies.differences().values():  # SRM refuses each of them (SRM-0002)
        assert today != "accepted"
