"""Browser tests of the console's usage chart and denials report."""

from __future__ import annotations

import pytest

from tests import test_console
from tests.helpers import OPERATOR
from tests.test_console import XSS, Console

# the browser fixtures of test_console
chrome = test_console.chrome
live = test_console.live
page = test_console.page


# -- usage chart -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_usage_chart_shows_todays_sessions(page: Console) -> None:
    sid = page.session("acct-usage", "dev-1")
    page.session("acct-usage", "dev-2")
    page.teardown("acct-usage", "dev-1", sid)
    page.call("PUT", "/srm/v1/accounts/acct-usage/limit", {"maxSessions": 1}, OPERATOR)
    assert page.setup("acct-usage", "dev-3")["errorResponse"]["errorCode"] == "SRM-0005"

    page.signed_in()
    page.look_up("acct-usage")
    chart = page.visible("usage-chart")
    page.wait(lambda d: len(chart.find_elements("css selector", "rect.bar-started")) == 14)
    bars = chart.find_elements("css selector", "rect.bar-started title, rect.bar-denied title")
    titles = [b.get_attribute("textContent") for b in bars]
    assert any(t.endswith(": 2 started") for t in titles)
    assert any(t.endswith(": 1 denied") for t in titles)

    from selenium.webdriver.support.ui import Select

    Select(page.find("usage-days")).select_by_value("7")
    page.wait(lambda d: len(chart.find_elements("css selector", "rect.bar-started")) == 7)
    page.screenshot("usage")
    assert page.errors() == []


# -- denials report ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_denials_report_links_each_account_to_its_view(page: Console) -> None:
    for account in ("acct-denied", XSS):
        page.call("PUT", f"/srm/v1/accounts/{_path(account)}/limit", {"maxSessions": 0}, OPERATOR)
        assert page.setup(account, "dev-1")["errorResponse"]["errorCode"] == "SRM-0005"
    assert page.setup("acct-denied", "dev-2")["errorResponse"]["errorCode"] == "SRM-0005"

    page.signed_in()
    report = page.visible("denials-report")
    page.wait(lambda d: len(report.find_elements("css selector", "a")) >= 2)
    links = report.find_elements("css selector", '[data-testid="denials-account"]')
    assert links[0].text == "acct-denied"  # the most denied first
    assert "2 denied" in report.text
    shown = {link.text: link for link in links}
    assert XSS in shown
    assert report.find_elements("css selector", "img") == []
    page.screenshot("denials")

    shown[XSS].click()
    page.wait(lambda d: d.find_element("id", "account-name").text == XSS)
    assert page.find("account-input").get_attribute("value") == XSS
    assert page.errors() == []


def _path(account: str) -> str:
    from urllib.parse import quote

    return quote(account, safe="")
