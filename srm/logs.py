"""Structured logs: one JSON object per line on stderr. Secrets are never passed to loggers.

A line written while a request is handled carries that request's id (``request_id``, also
sent back in ``X-Request-ID``). As a second line of defence, the configured secrets and
anything shaped like a JWT are masked in every line before it is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from srm.config import Settings

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
MASK = "***"
# A JWT: base64url header starting with '{"' , then payload and (possibly empty) signature.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")

REQUEST_ID: ContextVar[str | None] = ContextVar("srm_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # as written in a JSON string too; longest first, so one containing another goes whole
        forms = {form for s in secrets if s for form in (s, orjson.dumps(s).decode()[1:-1])}
        self._secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.mask(orjson.dumps(entry, default=str).decode())

    def mask(self, line: str) -> str:
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        return _JWT.sub(MASK, line) if "eyJ" in line else line


def setup(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Log JSON lines to stderr at *level*, masking *secrets* (keys, HMAC secrets)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)


def secrets_of(settings: Settings) -> list[str]:
    """The configured values that must never reach a log line."""
    from srm.config import secret_values

    return secret_values(settings)
