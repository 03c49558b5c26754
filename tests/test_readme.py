"""Commands the documentation gives a new user, run verbatim as they would paste them: the
README's "First calls" block in bash with curl against a live `srm serve` with the development
settings, the token command `scripts/run` prints in its banner, and the identity page's
snippet that turns a PEM public key into a JWKS document."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from srm.config import load
from tests.processes import ROOT, SrmProcess, srm_serve
from tests.redis_servers import RedisProcess

DEV_CONFIG = ROOT / "config" / "dev.toml"
# The README's commands name ./.venv and ./config; the test runs them in a directory where
# those are links to the interpreter running the tests (whichever venv it is) and to config/.
VENV = Path(sys.prefix)


def shell_block(document: Path, after: str) -> str:
    """The first sh block of *document* after the text *after*."""
    text = document.read_text()
    assert after in text, f"{document.name}: {after!r} is gone"
    found = re.search(r"^```sh\n(.*?)^```$", text.split(after, 1)[1], re.MULTILINE | re.DOTALL)
    assert found, f"{document.name}: no sh block after {after!r}"
    return found.group(1)


def first_calls() -> str:
    return shell_block(ROOT / "README.md", "\n## First calls\n")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    if not (VENV / "bin" / "srm").exists():
        pytest.fail(f"{VENV}/bin/srm is missing: install SRM into the test venv")
    here = tmp_path / "checkout"
    here.mkdir()
    (here / ".venv").symlink_to(VENV)
    (here / "config").symlink_to(ROOT / "config")
    return here


@pytest.fixture
def dev_srm(real_redis: RedisProcess, tmp_path: Path) -> Iterator[SrmProcess]:
    """`srm serve` as scripts/run starts it (config/dev.toml, its secret), on the test's Redis."""
    with srm_serve(
        tmp_path, auth_secret=None, SRM_CONFIG=str(DEV_CONFIG), SRM_REDIS_URL=real_redis.url
    ) as srm:
        yield srm


# Runs before the block: every curl call also writes its status line and headers to
# NN.head and its body to NN.body in $ANSWERS, the block's own output unchanged.
HARNESS = r"""
set -euo pipefail
curl() {
  local n
  n=$(printf %02d $(( $(find "$ANSWERS" -name '*.head' | wc -l) + 1 )))
  command curl -D "$ANSWERS/$n.head" "$@" | tee "$ANSWERS/$n.body"
}
"""


def _answers(folder: Path) -> list[tuple[int, str]]:
    found = []
    for head in sorted(folder.glob("*.head")):
        status = int(head.read_text().split()[1])
        found.append((status, head.with_suffix(".body").read_text()))
    return found


@pytest.mark.slow
def test_the_first_calls_run_verbatim_against_a_live_server(
    dev_srm: SrmProcess, workdir: Path, tmp_path: Path
) -> None:
    answers = tmp_path / "answers"
    answers.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRM_")}
    env.update(SRM_PORT=str(dev_srm.port), ANSWERS=str(answers))
    done = subprocess.run(
        ["bash", "-c", HARNESS + first_calls()],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr + dev_srm.output()

    (setup, setup_body), (alive, alive_body), (listed, listing), (ended, ended_body) = _answers(
        answers
    )
    assert setup == 200
    success = json.loads(setup_body)["successResponse"]
    sid = success["sessionId"]
    assert uuid.UUID(sid).version == 4 and success["timeout"] == 120
    assert done.stdout.startswith(setup_body + "\n")  # echo "$ANSWER" shows it
    assert (alive, alive_body) == (200, "")
    assert listed == 200
    sessions = json.loads(listing)["sessions"]
    assert [(s["sessionId"], s["state"], s["accountId"], s["deviceId"]) for s in sessions] == [
        (sid, "ACTIVE", "acct-42", "tv-1")
    ]
    assert (ended, ended_body) == (200, "")


def test_the_run_banner_prints_a_token_command_that_works(workdir: Path) -> None:
    """scripts/run prints how to mint a token; pasted into another shell (no SRM_CONFIG set
    there), that command must print a token the development server accepts."""
    script = (ROOT / "scripts" / "run").read_text()
    lines = [
        line
        for line in script.splitlines()
        if line.startswith("export SRM_CONFIG=") or line.startswith('echo "SRM on')
    ]
    assert len(lines) == 2, "scripts/run: the SRM_CONFIG default and the banner"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRM_")}
    banner = subprocess.run(
        ["bash", "-c", "\n".join(lines)], env=env, capture_output=True, text=True, check=True
    ).stdout
    command = re.search(r"\(token: (.*)\)$", banner.strip())
    assert command, banner
    pasted = command.group(1).replace(" A ", " acct-banner ").replace(" D", " dev-banner")
    minted = subprocess.run(
        ["bash", "-c", pasted], cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    assert minted.returncode == 0, minted.stderr
    secret = load(env={}, extra_file=DEV_CONFIG).auth.secret
    claims = jwt.decode(minted.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["accountId"], claims["deviceId"]) == ("acct-banner", "dev-banner")


def test_the_identity_pages_jwk_snippet_makes_a_document_srm_accepts(workdir: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from srm.jwks import parse_document

    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (workdir / "public.pem").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    snippet = shell_block(ROOT / "docs" / "identity.md", "To produce a JWK from a PEM public key")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRM_")}
    done = subprocess.run(
        ["bash", "-e", "-c", snippet],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    keys = parse_document((workdir / "jwks.json").read_bytes(), frozenset({"RS256"}))
    assert list(keys) == ["key-2026-12"]


def test_the_operations_page_lists_every_command() -> None:
    """docs/operations.md's command table names every subcommand `srm --help` offers."""
    import argparse

    from srm.cli import _parser

    (commands,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    page = (ROOT / "docs" / "operations.md").read_text()
    table = page.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `srm ([a-z-]+)", table, re.MULTILINE))
    assert set(commands.choices) <= listed
