"""Browser tests of the console's account actions: one device's sessions, rule overrides,
and an account too big for one page of the listing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import test_console
from tests.helpers import OPERATOR, OPERATOR_KEY, token
from tests.processes import SrmProcess, srm_serve
from tests.redis_servers import RedisProcess
from tests.test_console import Console

# the browser fixtures of test_console
chrome = test_console.chrome
live = test_console.live
page = test_console.page

# -- one device's sessions -------------------------------------------------------------------


@pytest.mark.slow
def test_ending_one_device_ends_its_sessions_only(page: Console) -> None:
    phone = [page.session("acct-device", "dev-phone", f"title-{n}") for n in range(2)]
    tv = page.session("acct-device", "dev-tv")
    page.signed_in()
    page.look_up("acct-device")
    page.wait_rows(lambda r: len(r) == 3)

    page.click_in_row(phone[0], "end-device")
    rows = page.wait_rows(lambda r: all(r[s]["state"] == "ENDED" for s in phone))
    assert rows[tv]["state"] == "ACTIVE"
    assert all("OPERATOR" in rows[s]["text"] for s in phone)
    assert "Ended 2 sessions of device dev-phone" in page.wait_message("dev-phone")
    assert page.errors() == []


# -- rule overrides ----------------------------------------------------------------------------


@pytest.fixture
def rules_srm(redis_server: RedisProcess, tmp_path: Path) -> Iterator[SrmProcess]:
    with redis_server.client() as c:
        c.flushall()
    config = tmp_path / "rules.toml"
    config.write_text('[[sessions.rules]]\nname = "uhd"\nmax = 1\nqualities = ["UHD"]\n')
    with srm_serve(
        tmp_path,
        SRM_REDIS_URL=redis_server.url,
        SRM_OPERATOR_KEYS=OPERATOR_KEY,
        SRM_CONFIG=str(config),
    ) as srm:
        yield srm


def _uhd_setup(page: Console, account: str, device: str) -> Any:
    body = {"content": {"contentID": "film", "contentType": "COD"}, "quality": "UHD"}
    return page.call("POST", "/srm/v1/sessions", body, {"Client-Token": token(account, device)})


@pytest.mark.slow
def test_a_rule_override_set_in_the_console_applies(chrome: Any, rules_srm: SrmProcess) -> None:
    page = Console(chrome, rules_srm)
    page.open()
    page.signed_in()
    page.look_up("acct-rule")
    page.wait(
        lambda d: [r.get_attribute("data-rule") for r in page.find_all("rule-row")] == ["uhd"]
    )
    page.wait(lambda d: "1 (default)" in page.find("rule-state").text)

    field = page.find("rule-input")
    page.fill(field, "0")
    page.find("rule-save").click()
    page.wait(lambda d: "0 (override)" in page.find("rule-state").text)
    denied = _uhd_setup(page, "acct-rule", "dev-1")
    assert denied["errorResponse"]["errorCode"] == "SRM-0005"
    assert denied["denial"]["rule"] == "uhd"
    page.screenshot("rule-override")

    page.find("rule-remove").click()
    page.wait(lambda d: "1 (default)" in page.find("rule-state").text)
    assert "successResponse" in _uhd_setup(page, "acct-rule", "dev-1")
    assert page.errors() == []


# -- paging ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_big_account_is_walked_page_by_page(chrome: Any, live: SrmProcess) -> None:
    page = Console(chrome, live)
    page.open(query="?refresh=1&pageSize=2")
    page.call("PUT", "/srm/v1/accounts/acct-big/limit", {"maxSessions": 10}, OPERATOR)
    ids = [page.session("acct-big", f"dev-{n}") for n in range(5)]
    page.teardown("acct-big", "dev-0", ids[0])

    page.signed_in()
    page.look_up("acct-big")
    seen: list[dict[str, str]] = []
    while True:
        rows = page.wait_rows(lambda r: 0 < len(r) <= 2)
        seen += [{"id": s, **v} for s, v in rows.items()]
        if not page.find("next-page").is_enabled():
            break
        shown = set(rows)
        page.find("next-page").click()
        page.wait_rows(lambda r, before=shown: not set(r) & before)
    assert {s["id"] for s in seen} == set(ids)
    states = [s["state"] for s in seen]
    assert states == sorted(states)  # ACTIVE before ENDED, across pages
    assert page.find("first-page").is_enabled()
    page.find("first-page").click()
    page.wait(lambda d: page.driver.find_element("id", "page-info").text == "Page 1")
