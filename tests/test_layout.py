"""The module structure the README describes: each process's code in its own package, the
plumbing they share in srm/process.py and srm/embedded.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_REPORT = "import importlib, json, sys; importlib.import_module(sys.argv[1]); print(json.dumps(sorted(sys.modules)))"


def modules_of(module: str) -> list[str]:
    """The srm modules a fresh interpreter has loaded after importing *module*."""
    done = subprocess.run(
        [sys.executable, "-c", _REPORT, module],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [name for name in json.loads(done.stdout) if name.split(".")[0] == "srm"]


@pytest.mark.parametrize("module", ["srm.events.main", "srm.server"])
def test_a_process_borrows_no_other_process_s_package(module: str) -> None:
    """`srm events` and `srm serve` run alone through srm.process.run_companion; neither
    imports the reaper's package to do so (srm serve's embedded reaper is passed in by the
    CLI)."""
    loaded = modules_of(module)
    assert "srm.process" in loaded
    assert [name for name in loaded if name.startswith("srm.reaper")] == []
