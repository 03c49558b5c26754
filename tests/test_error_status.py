"""The HTTP status of each SRM code: one table (srm.api.errors.STATUS), which the OpenAPI
document derives from and the API guide (docs/api.md) must agree with."""

from __future__ import annotations

import re

from srm.api.errors import HEADERS_TOO_LARGE, STATUS, http_status
from srm.config import defaults
from srm.errors import LimitReached, TooLarge
from tests.helpers import every_error_class
from tests.processes import ROOT


def test_every_code_but_the_denial_has_its_status_in_the_table() -> None:
    codes = {cls.code for cls in every_error_class()}
    assert set(STATUS) == codes - {LimitReached.code}
    assert http_status(LimitReached(3, 3), deny_status=409) == 409
    assert http_status(TooLarge(headers=True)) == HEADERS_TOO_LARGE


def test_the_api_guide_gives_each_code_its_status() -> None:
    guide = (ROOT / "docs" / "api.md").read_text()
    rows = dict(re.findall(r"^\| (SRM-\d{4}) \| ([^|]+) \|", guide, re.MULTILINE))
    first = {code: re.findall(r"\d{3}", cell)[0] for code, cell in rows.items()}
    assert first == {
        **{code: str(status) for code, status in STATUS.items()},
        LimitReached.code: str(defaults().sessions.deny_status),
    }
    assert str(HEADERS_TOO_LARGE) in rows[TooLarge.code]
