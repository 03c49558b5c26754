"""Settings: packaged defaults, SRM_CONFIG file, SRM_* variables, and bad values named;
secrets masked by `srm config` and scrubbed from logs."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from srm import logs
from srm.config import ConfigError, Settings, defaults, load, masked, require_auth_key
from tests.processes import ROOT, srm_env


def test_the_defaults_come_from_the_packaged_file_alone() -> None:
    packaged = tomllib.loads(resources.files("srm").joinpath("defaults.toml").read_text())
    settings = defaults()
    assert {f.name for f in dataclasses.fields(Settings)} == set(packaged)
    for name, values in packaged.items():
        section = getattr(settings, name)
        for f in dataclasses.fields(section):
            # no second copy of a default in the dataclasses
            assert f.default is dataclasses.MISSING, f"{name}.{f.name} has a dataclass default"
            expected = values[f.name]
            assert getattr(section, f.name) == (
                tuple(expected) if isinstance(expected, list) else expected
            )


def test_contract_names_and_generic_names_set_settings() -> None:
    settings = load(
        env={
            "SRM_PORT": " 9000 ",
            "SRM_REDIS_URL": "redis://127.0.0.1:6380/1",
            "SRM_REDIS_SHARDS": "32",
            "SRM_REAPER_INTERVAL": "0.5",
            "SRM_SERVER_ACCESS_LOG": "yes",
            "SRM_EMBEDDED_APPENDONLY": "off",
            "SRM_OPERATOR_KEYS": "first-key-0123456789, second-key-0123456789,",
            "SRM_SESSIONS_CONTENT_TYPES": "COD,LIVE",
        }
    )
    assert settings.server.port == 9000
    assert settings.redis.url == "redis://127.0.0.1:6380/1"
    assert settings.redis.shards == 32
    assert settings.reaper.interval == 0.5
    assert settings.server.access_log is True
    assert settings.embedded.appendonly is False
    assert settings.operator.keys == ("first-key-0123456789", "second-key-0123456789")
    assert settings.sessions.content_types == ("COD", "LIVE")
    assert settings.sessions.max_sessions == defaults().sessions.max_sessions


def test_the_file_overrides_the_defaults_and_the_environment_overrides_the_file(
    tmp_path: Path,
) -> None:
    extra = tmp_path / "srm.toml"
    extra.write_text('[server]\nport = 9001\nhost = "0.0.0.0"\n[sessions]\ncontent_types = ["X"]\n')
    settings = load(env={"SRM_CONFIG": str(extra), "SRM_HOST": "127.0.0.2"})
    assert settings.server.port == 9001
    assert settings.server.host == "127.0.0.2"
    assert settings.sessions.content_types == ("X",)
    assert load(env={}, extra_file=extra).server.port == 9001


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[nowhere]\nx = 1\n", r"unknown section \[nowhere\]"),
        ("[server]\nnot_a_setting = 1\n", "unknown setting server.not_a_setting"),
        ("[server\n", "not valid TOML"),
        ("[server]\nport = true\n", r"server\.port \(from .*srm\.toml\): expected an integer"),
        ("[server]\nhost = 1\n", "server.host .*expected a string"),
        ("[operator]\nkeys = [1]\n", "operator.keys .*expected a list of strings"),
        ("[server]\naccess_log = 2\n", "server.access_log .*expected true or false"),
    ],
)
def test_a_bad_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, text: str, complaint: str
) -> None:
    extra = tmp_path / "srm.toml"
    extra.write_text(text)
    with pytest.raises(ConfigError, match=complaint):
        load(env={"SRM_CONFIG": str(extra)})


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SRM_PORT": "eighty"}, r"server\.port \(from SRM_PORT\): expected an integer"),
        ({"SRM_PORT": "0"}, "server.port"),
        ({"SRM_WORKERS": "257"}, "server.workers"),
        ({"SRM_SESSION_TIMEOUT": "-1"}, "sessions.timeout"),
        ({"SRM_MAX_SESSIONS": "3.5"}, "sessions.max_sessions"),
        ({"SRM_REAPER_INTERVAL": "nan"}, "reaper.interval .*finite"),
        ({"SRM_REAPER_INTERVAL": "inf"}, "reaper.interval .*finite"),
        ({"SRM_REAPER_INTERVAL": "soon"}, "reaper.interval .*expected a number"),
        ({"SRM_REDIS_URL": "http://x"}, "redis.url"),
        ({"SRM_REDIS_REPLICA_ACK_TIMEOUT": "5"}, "redis.replica_ack_timeout"),
        ({"SRM_SERVER_ACCESS_LOG": "maybe"}, "server.access_log .*expected true or false"),
        ({"SRM_SESSIONS_CONTENT_TYPES": " , "}, "sessions.content_types"),
        ({"SRM_SESSIONS_LIMIT_POLICY": "random"}, "sessions.limit_policy"),
        ({"SRM_AUTH_ALGORITHM": "none"}, "auth.algorithm"),
        ({"SRM_AUTH_JWKS_URL": "http://id.example.com/certs"}, "auth.jwks_url"),
        ({"SRM_LOGGING_LEVEL": "LOUD"}, "logging.level"),
        ({"SRM_CONFIG": "/nonexistent.toml"}, "SRM_CONFIG: cannot read"),
        ({"SRM_CDN_KEY": "not-hex"}, r"cdn\.key \(SRM_CDN_KEY\)"),
        ({"SRM_CDN_KEY": "abc"}, r"cdn\.key \(SRM_CDN_KEY\)"),  # odd: not whole bytes
        ({"SRM_CDN_KEYS": "abcd"}, r"cdn\.keys: needs cdn\.key"),
        ({"SRM_CDN_KEY": "ab", "SRM_SESSION_TIMEOUT": "0"}, "needs keep-alive"),
        ({"SRM_CDN_ALGORITHM": "sha512"}, "cdn.algorithm"),
        ({"SRM_CDN_ACL": "/{contentId}/*"}, "cdn.acl"),  # not a field: contentID
        ({"SRM_CDN_ACL": "/a~b"}, "cdn.acl"),
        ({"SRM_CDN_ACL": "*"}, "cdn.acl"),
        ({"SRM_CDN_TOKEN_NAME": "a b"}, "cdn.token_name"),
        ({"SRM_DRM_UPSTREAM_URL": "ftp://lic"}, r"drm\.upstream_url"),
        ({"SRM_DRM_UPSTREAM_URL": "http://lic:port"}, r"drm\.upstream_url .*valid URL"),
        ({"SRM_DRM_UPSTREAM_URL": "http://lic"}, r"drm\.token_key \(SRM_DRM_TOKEN_KEY\)"),
        ({"SRM_DRM_HEADERS": "[1]"}, r"drm\.headers .*table of strings"),
        ({"SRM_DRM_HEADERS": "{"}, r"drm\.headers .*JSON object"),
        ({"SRM_DRM_HEADERS": '{"a b": "1"}'}, r"drm\.headers: 'a b'"),
        ({"SRM_DRM_HEADERS": '{"x": "1\\r\\nY: 2"}'}, r"drm\.headers"),
        ({"SRM_DRM_TOKEN_HEADER": "x:y"}, "drm.token_header"),
        ({"SRM_DRM_TOKEN_ALGORITHM": "RS256"}, "drm.token_algorithm"),
        ({"SRM_DRM_TIMEOUT": "0"}, "drm.timeout"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(variables: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(env=variables)


def test_the_enforcement_sections_read_their_tables_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "srm.toml"
    path.write_text(
        '[cdn]\nkey = "0A1b"\nkeys = ["ffee", "0a1b"]\n'
        '[drm]\nupstream_url = "https://lic.example/acquire"\ntoken_key = "k"\n'
        '[drm.headers]\nx-api-key = "v-1"\n'
    )
    settings = load(env={"SRM_CONFIG": str(path)})
    assert settings.cdn.enabled and settings.cdn.edge_keys == ("0a1b", "ffee")
    assert settings.drm.enabled and settings.drm.headers == {"x-api-key": "v-1"}
    shown = masked(settings)
    assert shown["drm"]["headers"] == {"x-api-key": "***"} and shown["cdn"]["key"] == "***"
    from_env = load(env={"SRM_DRM_HEADERS": '{"x-api-key": "v-2"}'})
    assert from_env.drm.headers == {"x-api-key": "v-2"} and not from_env.drm.enabled
    assert not defaults().cdn.enabled and not defaults().drm.enabled


def test_serving_needs_the_key_of_the_configured_algorithm() -> None:
    with pytest.raises(ConfigError, match=r"auth\.secret \(SRM_AUTH_SECRET\)"):
        require_auth_key(load(env={"SRM_AUTH_SECRET": ""}))
    with pytest.raises(ConfigError, match=r"auth\.public_key"):
        require_auth_key(load(env={"SRM_AUTH_ALGORITHM": "RS256", "SRM_AUTH_SECRET": "x" * 40}))
    require_auth_key(load(env={"SRM_AUTH_SECRET": "x" * 40}))


def test_unknown_variables_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="srm.config"):
        settings = load(env={"SRM_NOT_A_SETTING": "1", "SRM_CONFIG_X": "2", "OTHER": "3"})
    assert settings == defaults()
    warned = caplog.text
    assert "SRM_NOT_A_SETTING" in warned and "SRM_CONFIG_X" in warned and "OTHER" not in warned


def test_a_configuration_error_exits_2_naming_the_setting(tmp_path: Path) -> None:
    """The one process-level case: the CLI turns ConfigError into exit code 2."""
    env = srm_env(SRM_PORT="eighty", SRM_AUTH_SECRET="x" * 40)
    done = subprocess.run(
        [sys.executable, "-m", "srm.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "server.port (from SRM_PORT)" in done.stderr


# -- secrets ----------------------------------------------------------------------------------

REDIS_PASSWORD = "redis-pass-Zq9"
SENTINEL_PASSWORD = "sentinel-pass-Xw4"
AUTH_SECRET = "auth-secret-Vb7"
OPERATOR_KEYS = ("operator-key-Aa1-0123456789", "operator-key-Bb2-0123456789")
SECRETS = (REDIS_PASSWORD, SENTINEL_PASSWORD, AUTH_SECRET, *OPERATOR_KEYS)
ENV = {
    "SRM_REDIS_URL": f"redis+sentinel://srm:{REDIS_PASSWORD}@h1:26379,h2:26379/main"
    f"?sentinel_password={SENTINEL_PASSWORD}&min_other_sentinels=1",
    "SRM_AUTH_SECRET": AUTH_SECRET,
    "SRM_OPERATOR_KEYS": ",".join(OPERATOR_KEYS),
}


def secret_fields() -> list[tuple[str, dataclasses.Field[object]]]:
    return [
        (section.name, f)
        for section in dataclasses.fields(Settings)
        for f in dataclasses.fields(getattr(defaults(), section.name))
        if f.metadata.get("secret")
    ]


def test_srm_config_masks_every_secret() -> None:
    """`srm config` as a process: no secret in its output, the rest as configured."""
    shown = subprocess.run(
        [sys.executable, "-m", "srm.cli", "config"],
        env=srm_env(**ENV),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for secret in SECRETS:
        assert secret not in shown
    printed = json.loads(shown)
    assert printed["redis"]["url"] == (
        "redis+sentinel://srm:***@h1:26379,h2:26379/main"
        "?sentinel_password=***&min_other_sentinels=1"
    )
    assert printed["auth"]["secret"] == "***"
    assert printed["operator"]["keys"] == ["***", "***"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw-1@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://pw-2@host:6379/0", "redis://***@host:6379/0"),  # a bare password
        ("rediss://user:p%40w-3@host", "rediss://user:***@host"),
        ("redis+cluster://h1,h2?sentinel_password=x-4&auth_token=t-5", None),
        ("unix:///tmp/redis.sock?password=pw-6", "unix:///tmp/redis.sock?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://u:r@redis:6379", "redis://u:***@redis:6379"),  # a password also in the host
        ("redis://s@redis/0?password=s", "redis://***@redis/0?password=***"),
    ],
)
def test_redis_url_credentials_are_masked(url: str, shown: str | None) -> None:
    settings = load(env={"SRM_REDIS_URL": url})
    text = masked(settings)["redis"]["url"]
    if shown is not None:
        assert text == shown
    assert not any(f"-{n}" in text for n in range(1, 7))
    assert f"{settings!r}".count("://") == 0  # not in repr either


def test_every_secret_setting_is_masked_and_scrubbed() -> None:
    """Whatever setting is declared secret (metadata SECRET or SECRET_URL) is covered."""
    fields = secret_fields()
    assert {(s, f.name) for s, f in fields} >= {
        ("redis", "url"),
        ("auth", "secret"),
        ("auth", "public_key"),
        ("operator", "keys"),
        ("cdn", "key"),
        ("cdn", "keys"),
        ("drm", "upstream_url"),
        ("drm", "token_key"),
        ("drm", "headers"),
    }
    settings = defaults()
    for section, f in fields:
        value: object = f"redis://:marker-{section}-{f.name}@h"
        if f.metadata["secret"] == "value":
            value = f"marker-{section}-{f.name}"
            if isinstance(getattr(settings, section).__dict__[f.name], tuple):
                value = (value,)
        elif f.metadata["secret"] == "mapping":
            value = {"x-name": f"marker-{section}-{f.name}"}
        settings = settings.replace(section, **{f.name: value})
    shown = json.dumps(masked(settings))
    assert "marker-" not in shown and "marker-" not in repr(settings)
    formatter = logs.JsonFormatter(logs.secrets_of(settings))
    for section, f in fields:
        record = logging.makeLogRecord({"msg": f"leaked marker-{section}-{f.name}"})
        assert "marker-" not in formatter.format(record)
