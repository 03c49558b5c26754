"""Helpers that tests import (fixtures stay in conftest.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from srm.config import ReaperSettings, RedisSettings, defaults


def redis_settings(**changes: Any) -> RedisSettings:
    """The default ``[redis]`` settings with *changes*."""
    return dataclasses.replace(defaults().redis, **changes)


def reaper_settings(**changes: Any) -> ReaperSettings:
    """The default ``[reaper]`` settings with *changes*."""
    return dataclasses.replace(defaults().reaper, **changes)
