"""`srm token`: every claim the contract knows, verified as `srm serve` verifies them; the
development secret when nothing else is configured, or one clear line saying what is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from srm import cli
from srm.auth import TokenVerifier
from srm.config import Settings, load
from tests.helpers import SECRET
from tests.processes import ROOT, srm_env

DEV_CONFIG = ROOT / "config" / "dev.toml"


def srm_token(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`srm token ARGS` in *cwd*, with no SRM_* variable but *env*."""
    return subprocess.run(
        [sys.executable, "-m", "srm.cli", "token", *args],
        cwd=cwd,
        env=srm_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def verified(token: str, settings: Settings) -> object:
    return TokenVerifier(settings.auth).verify(token)


def test_a_token_carries_every_claim_and_verifies(tmp_path: Path) -> None:
    done = srm_token(
        "--account",
        "acct-42",
        "--device",
        "tv-1",
        "--device-type",
        "tv",
        "--max-sessions",
        "5",
        "--ttl",
        "600",
        cwd=tmp_path,
        SRM_AUTH_SECRET=SECRET,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    principal = TokenVerifier(load(env={"SRM_AUTH_SECRET": SECRET}).auth).verify(
        done.stdout.strip()
    )
    assert (principal.account_id, principal.device_id) == ("acct-42", "tv-1")
    assert (principal.device_type, principal.max_sessions) == ("tv", 5)


def test_without_the_optional_claims_the_defaults_apply(tmp_path: Path) -> None:
    done = srm_token("--account", "a", "--device", "d", cwd=tmp_path, SRM_AUTH_SECRET=SECRET)
    principal = TokenVerifier(load(env={"SRM_AUTH_SECRET": SECRET}).auth).verify(
        done.stdout.strip()
    )
    assert (principal.device_type, principal.max_sessions) == ("unknown", None)


def test_issuer_and_audience_of_the_configuration_are_claimed(tmp_path: Path) -> None:
    config = tmp_path / "srm.toml"
    config.write_text(
        f'[auth]\nsecret = "{SECRET}"\nissuer = "https://idp.example"\naudience = "srm"\n'
    )
    done = srm_token(
        "--account",
        "a",
        "--device",
        "d",
        "--max-sessions",
        "0",
        cwd=tmp_path,
        SRM_CONFIG=str(config),
    )
    assert done.returncode == 0, done.stderr
    principal = TokenVerifier(load(env={}, extra_file=config).auth).verify(done.stdout.strip())
    assert principal.max_sessions == 0


def test_with_no_configuration_it_signs_with_the_development_secret(tmp_path: Path) -> None:
    """As the README's readers run it: no SRM_CONFIG, no SRM_AUTH_SECRET (the checkout's
    config/dev.toml is found beside the package, wherever the command runs)."""
    done = srm_token("--account", "a", "--device", "d", "--device-type", "phone", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "config/dev.toml" in done.stderr and len(done.stderr.splitlines()) == 1
    principal = TokenVerifier(load(env={}, extra_file=DEV_CONFIG).auth).verify(done.stdout.strip())
    assert (principal.account_id, principal.device_type) == ("a", "phone")


def test_a_configured_secret_wins_over_the_development_one(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dev.toml").write_text('[auth]\nsecret = "not-this-one"\n')
    done = srm_token("--account", "a", "--device", "d", cwd=tmp_path, SRM_AUTH_SECRET=SECRET)
    verified(done.stdout.strip(), load(env={"SRM_AUTH_SECRET": SECRET}))


def test_the_working_directorys_dev_config_is_found_first(tmp_path: Path) -> None:
    other = "other-dev-secret-" + "x" * 32
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dev.toml").write_text(f'[auth]\nsecret = "{other}"\n')
    done = srm_token("--account", "a", "--device", "d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    verified(done.stdout.strip(), load(env={"SRM_AUTH_SECRET": other}))


def test_no_secret_anywhere_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SRM_CONFIG", raising=False)
    monkeypatch.setattr(cli, "dev_config", lambda: None)  # an installed package, no checkout
    args = cli._parser().parse_args(["token", "--account", "a", "--device", "d"])
    assert cli._token(args, load(env={})) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "SRM_AUTH_SECRET" in err


def test_an_asymmetric_configuration_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SRM_CONFIG", raising=False)
    args = cli._parser().parse_args(["token", "--account", "a", "--device", "d"])
    assert cli._token(args, load(env={"SRM_AUTH_ALGORITHM": "RS256"})) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "RS256" in err


@pytest.mark.parametrize(
    "bad",
    [
        ["--max-sessions", "-1"],
        ["--max-sessions", "1000001"],
        ["--max-sessions", "two"],
        ["--device-type", ""],
        ["--device-type", "t" * 65],
    ],
)
def test_claims_outside_the_contract_are_refused(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli._parser().parse_args(["token", "--account", "a", "--device", "d", *bad])
    assert exited.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_the_limits_of_the_claims_are_accepted() -> None:
    longest = ["--max-sessions", "1000000", "--device-type", "t" * 64]
    args = cli._parser().parse_args(["token", "--account", "a", "--device", "d", *longest])
    assert (args.max_sessions, args.device_type) == (1_000_000, "t" * 64)
