"""Contract points found in a black-box review of `srm serve` against API.md, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.helpers import OPERATOR, api_on, expect_error
from tests.redis_servers import free_port


@pytest.fixture
async def down(settings: Any) -> AsyncIterator[Any]:
    """The API on a Redis that is not there (nothing listens on its port)."""
    async with api_on(settings, f"redis://127.0.0.1:{free_port()}") as client:
        yield client


@pytest.mark.parametrize(
    "query",
    ["top=0", "top=1001", "top=abc", "date=2026-02-30", "date=abc", "date=", "date=2026-2-1"],
)
async def test_a_malformed_report_query_is_400_whether_or_not_the_store_answers(
    down: Any, query: str
) -> None:
    """Malformed input is SRM-0002 before the store is asked, as on every other endpoint."""
    for prefix in ("/srm", "/srm/v1"):
        resp = await down.get(f"{prefix}/reports/denials?{query}", headers=OPERATOR)
        await expect_error(resp, 400, "SRM-0002")


async def test_a_well_formed_report_query_on_a_store_that_is_down_is_503(
    down: Any,
) -> None:
    resp = await down.get("/srm/v1/reports/denials?top=5", headers=OPERATOR)
    await expect_error(resp, 503, "SRM-0008")
