"""The module structure the README describes: each process's code in its own package, the
plumbing they share in srm/process.py and srm/embedded.py."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import srm.store
from srm.store import SessionStore

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


def test_the_store_is_split_by_concern_and_its_map_names_every_part() -> None:
    """srm/store/ holds one module per concern, each short enough to read at once, and the
    package's docstring names every one of them (a reader finds a method in one guess)."""
    package = Path(srm.store.__file__).parent
    parts = sorted(p.name for p in package.glob("*.py") if p.name != "__init__.py")
    assert len(parts) >= 6
    doc = srm.store.__doc__ or ""
    assert [p for p in parts if f"``{p}``" not in doc] == []
    for part in parts:
        lines = (package / part).read_text().count("\n")
        assert lines <= 300, f"srm/store/{part}: {lines} lines"
    # every public method lives in a concern's module, none in the assembled class itself
    for name, member in inspect.getmembers(SessionStore, inspect.isfunction):
        if not name.startswith("_"):
            assert member.__module__ != "srm.store", name
