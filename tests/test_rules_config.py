"""[[sessions.rules]]: parsed at start; a bad rule stops srm with exit 2, naming the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from srm.config import ConfigError, load
from srm.rules import Rule
from tests.processes import srm_env, start_srm

GOOD = """
[sessions]
limit_policy = "evict"

[[sessions.rules]]
name = "uhd"
max = 1
qualities = ["UHD"]

[[sessions.rules]]
name = "tv-zapping"
max = 1
device_types = ["tv", "stb"]
content_types = ["LIVE"]
per = "device"
policy = "deny"
"""


def load_file(tmp_path: Path, text: str) -> object:
    path = tmp_path / "srm.toml"
    path.write_text(text)
    return load(env={}, extra_file=path)


def test_rules_are_parsed_with_their_defaults(tmp_path: Path) -> None:
    settings = load_file(tmp_path, GOOD)
    assert settings.sessions.rules == (  # type: ignore[attr-defined]
        Rule("uhd", 1, qualities=("UHD",), policy="evict"),
        Rule(
            "tv-zapping",
            1,
            device_types=("tv", "stb"),
            content_types=("LIVE",),
            per="device",
            policy="deny",
        ),
    )
    assert load(env={}).sessions.rules == ()


def rule(**fields: object) -> str:
    body = {"name": '"r1"', "max": "1", **{k: str(v) for k, v in fields.items()}}
    return "[[sessions.rules]]\n" + "\n".join(f"{k} = {v}" for k, v in body.items()) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rule(colour='"red"'), "unknown key 'colour'"),
        (rule(name='"UHD"'), "name must be"),
        (rule(name='"account"'), "name must be"),
        (rule(name='"' + "x" * 33 + '"'), "name must be"),
        (rule() + rule(), "duplicate rule name"),
        (rule(max="-1"), "max must be"),
        (rule(max="1000001"), "max must be"),
        (rule(max='"3"'), "max must be"),
        (rule(qualities='["8K"]'), "qualities has '8K'"),
        (rule(content_types='["MOVIE"]'), "content_types has 'MOVIE'"),
        (rule(device_types='[""]'), "device_types"),
        (rule(per='"household"'), "per must be"),
        (rule(policy='"kick"'), "policy must be"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"sessions\.rules") as refused:
        load_file(tmp_path, text)
    assert message in str(refused.value)


@pytest.mark.slow
def test_srm_serve_exits_2_naming_the_bad_rule(tmp_path: Path) -> None:
    path = tmp_path / "srm.toml"
    path.write_text(rule(name='"mobile"', qualities='["8K"]'))
    env = srm_env(
        SRM_AUTH_SECRET="x" * 40, SRM_REDIS_URL="redis://127.0.0.1:1", SRM_CONFIG=str(path)
    )
    proc = start_srm(["serve"], env, tmp_path / "log")
    assert proc.wait(30) == 2
    assert "'mobile'" in (tmp_path / "log").read_text()
