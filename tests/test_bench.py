"""`bench/run --help` answers before anything is installed; the capacity model's arithmetic."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def test_the_capacity_model_from_measured_figures() -> None:
    """bench/capacity.py: 100k requests/s of 83% keep-alives; API cores at 60% busy, masters
    at half busy or by memory, whichever needs more."""
    from bench import capacity

    m = capacity.Measured(srm_us=48.0, redis_us=12.0, bytes_per_session=300.0, reaper_us=24.0)
    out = capacity.model(m)
    assert round(out.keepalives) == 83_333 and round(out.setups) == 8_333
    assert out.api_cpu == pytest.approx(4.8) and out.api_cores == 8  # 4.8 / 0.6
    assert out.redis_cpu == pytest.approx(1.2 + 8_333.33 * 24e-6)  # requests + the reaper
    assert out.masters_by_cpu == 3 and out.masters == 3 and out.met
    assert out.dominant() == "redis CPU"
    # memory: 10M x (300 + 34 x 21) bytes + ended records + streams, x 1.3
    assert out.memory_gb == pytest.approx((3.0 + 7.14 + 0.105 + 0.04) * 1.3, rel=0.01)
    big = capacity.model(capacity.Measured(48.0, 2.0, 5000.0, None))
    assert big.masters_by_memory == 3 and big.masters == 3 and big.dominant() == "memory"
    alone = capacity.Measured(48.0, 2.0, None, None)  # no memory nor reaper in the run
    text = capacity.describe(alone, capacity.model(alone))
    assert "memory not measured" in text and "the reaper not measured" in text


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
