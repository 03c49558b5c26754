"""What a newcomer's machine and an operator's legal review see: scripts/run starts with no
package index once .venv is in place, the licence travels in the wheel, and the lock matches
pyproject.toml."""

from __future__ import annotations

import os
import signal
import subprocess
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.processes import kill_group, wait_until
from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
# an index nobody serves: any download attempt fails at once
NO_INDEX = "http://127.0.0.1:9/simple"


def lib(command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """*command* in bash at the repository root after sourcing scripts/lib.sh."""
    return subprocess.run(
        ["bash", "-c", f"source scripts/lib.sh && {command}"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def offline_env() -> dict[str, str]:
    return {
        "UV_INDEX_URL": NO_INDEX,
        "UV_DEFAULT_INDEX": NO_INDEX,
        "PIP_INDEX_URL": NO_INDEX,
        "UV_OFFLINE": "1",
        "PIP_NO_INDEX": "1",
    }


def test_the_lock_matches_pyproject() -> None:
    """`uv lock --check`: a dependency changed in pyproject.toml without the lock fails here
    (and `uv sync --locked` would refuse to install)."""
    done = lib('"$(uv_bin)" lock --check --offline')
    assert done.returncode == 0, done.stderr


def test_a_sync_is_skipped_while_lock_and_pyproject_are_unchanged(tmp_path: Path) -> None:
    """The fingerprint a sync is recorded under changes with the lock or pyproject.toml."""
    before = lib("sync_fingerprint").stdout.strip()
    assert len(before) == 64
    assert lib("sync_fingerprint").stdout.strip() == before
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("uv.lock", "pyproject.toml"):
        (copy / name).write_text((ROOT / name).read_text())
    (copy / "scripts").mkdir()
    (copy / "scripts" / "lib.sh").write_text((ROOT / "scripts" / "lib.sh").read_text())

    def fingerprint() -> str:
        return subprocess.run(
            ["bash", "-c", "source scripts/lib.sh && sync_fingerprint"],
            cwd=copy,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert fingerprint() == before
    with open(copy / "pyproject.toml", "a") as out:
        out.write("\n# changed\n")
    assert fingerprint() != before


@pytest.mark.slow
def test_a_second_start_needs_no_package_index(tmp_path: Path) -> None:
    """scripts/run, once .venv is synced, starts the service with every index unreachable."""
    synced = lib("sync_venv run")
    assert synced.returncode == 0, synced.stderr
    stamp = ROOT / ".venv" / ".srm-sync-run"
    synced_at = stamp.stat().st_mtime_ns
    port = free_port()
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["./scripts/run"],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("SRM_")},
                **offline_env(),
                "SRM_PORT": str(port),
                "SRM_EMBEDDED_DATA_DIR": str(tmp_path / "data"),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=60, what="scripts/run ready with no package index")
        os.killpg(proc.pid, signal.SIGTERM)  # srm serve stops its embedded Redis
        assert proc.wait(30) == 0, log.read_text()
    finally:
        kill_group(proc)
    assert stamp.stat().st_mtime_ns == synced_at, "scripts/run installed again"


@pytest.mark.slow
def test_the_wheel_carries_the_apache_licence(tmp_path: Path) -> None:
    """The SPDX expression and the licence text are in the wheel's metadata (PEP 639)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    built = lib(f'"$(uv_bin)" build --wheel --out-dir {tmp_path} .')
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("srm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert "Apache License" in archive.read(licence).decode()[:200]
    assert "License-Expression: Apache-2.0" in text
    assert "License-File: LICENSE" in text
