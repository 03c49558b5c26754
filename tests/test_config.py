"""Secrets in the settings: every one is masked by `srm config` and scrubbed from logs."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest

from srm import logs
from srm.config import Settings, load, masked
from tests.processes import srm_env

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
        for f in dataclasses.fields(getattr(Settings(), section.name))
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
    """Whatever setting is declared secret (secret_field, secret_url_field) is covered."""
    fields = secret_fields()
    assert {(s, f.name) for s, f in fields} >= {
        ("redis", "url"),
        ("auth", "secret"),
        ("auth", "public_key"),
        ("operator", "keys"),
    }
    settings = Settings()
    for section, f in fields:
        value: object = f"redis://:marker-{section}-{f.name}@h"
        if f.metadata["secret"] == "value":
            value = f"marker-{section}-{f.name}"
            if isinstance(getattr(settings, section).__dict__[f.name], tuple):
                value = (value,)
        settings = settings.replace(section, **{f.name: value})
    shown = json.dumps(masked(settings))
    assert "marker-" not in shown and "marker-" not in repr(settings)
    formatter = logs.JsonFormatter(logs.secrets_of(settings))
    for section, f in fields:
        record = logging.makeLogRecord({"msg": f"leaked marker-{section}-{f.name}"})
        assert "marker-" not in formatter.format(record)
