"""Browser tests of the console's side of monitor mode: a session whose setup a monitor rule
flagged shows a badge per rule, the denials panel switches to the ranking of flagged setups,
and the usage figures count them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import test_console
from tests.helpers import OPERATOR_KEY, token
from tests.processes import ROOT, SrmProcess, srm_serve
from tests.redis_servers import RedisProcess
from tests.test_console import Console

# the browser fixture of test_console
chrome = test_console.chrome

ACCOUNT = "acct-monitor"
MONITOR = """
[[sessions.rules]]
name = "uhd"
max = 1
qualities = ["UHD"]
mode = "monitor"
"""


def test_the_page_has_the_monitor_controls() -> None:
    page_text = (ROOT / "srm" / "console" / "index.html").read_text()
    script = (ROOT / "srm" / "console" / "console.js").read_text()
    docs = (ROOT / "docs" / "console.md").read_text()
    assert 'data-testid="denials-flagged"' in page_text
    assert "'data-testid': 'session-flagged'" in script
    for hook in ("denials-flagged", "session-flagged", "usage-flagged"):
        assert f"`{hook}`" in docs, f"docs/console.md does not name {hook}"


@pytest.fixture(scope="module")
def monitoring(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SrmProcess]:
    """A server with one monitor rule: at most one UHD stream per account, not enforced."""
    with redis_server.client() as c:
        c.flushall()
    tmp = tmp_path_factory.mktemp("monitor")
    config = tmp / "monitor.toml"
    config.write_text(MONITOR)
    with srm_serve(
        tmp,
        SRM_REDIS_URL=redis_server.url,
        SRM_OPERATOR_KEYS=OPERATOR_KEY,
        SRM_REDIS_SHARDS="16",
        SRM_CONFIG=str(config),
    ) as srm:
        yield srm


@pytest.fixture
def mpage(chrome: Any, monitoring: SrmProcess) -> Console:
    c = Console(chrome, monitoring)
    c.open()
    return c


def uhd_session(page: Console, device: str) -> str:
    body = {"content": {"contentID": "match", "contentType": "LIVE"}, "quality": "UHD"}
    answer = page.call("POST", "/srm/v1/sessions", body, {"Client-Token": token(ACCOUNT, device)})
    assert "successResponse" in answer, answer
    return str(answer["successResponse"]["sessionId"])


def flagged_rules(page: Console, session_id: str) -> list[str]:
    badges = page.row(session_id).find_elements("css selector", '[data-testid="session-flagged"]')
    return [b.get_attribute("data-rule") for b in badges]


@pytest.mark.slow
def test_flagged_sessions_carry_a_badge_and_the_report_ranks_them(mpage: Console) -> None:
    page = mpage
    first = uhd_session(page, "tv-1")
    second = uhd_session(page, "tv-2")  # over the rule's max 1: flagged, not refused

    page.signed_in()
    report = page.visible("denials-report")
    page.wait(lambda d: "No denials so far today." in report.text)
    page.look_up(ACCOUNT)
    page.wait_rows(lambda r: set(r) == {first, second})
    page.wait(lambda d: flagged_rules(page, second) == ["uhd"])
    assert flagged_rules(page, first) == []
    badge = page.row(second).find_element("css selector", '[data-testid="session-flagged"]')
    assert "uhd" in badge.text and "monitor rule uhd" in badge.get_attribute("title")

    toggle = page.find("denials-flagged")
    toggle.click()
    page.wait(lambda d: report.get_attribute("data-ranking") == "flagged")
    page.wait(lambda d: "1 flagged" in report.text)
    links = report.find_elements("css selector", '[data-testid="denials-account"]')
    assert [link.text for link in links] == [ACCOUNT]
    assert page.driver.find_element("id", "denials-heading").text == "Flagged today"
    page.screenshot("flagged")

    toggle.click()  # back to the denials, of which there are none
    page.wait(lambda d: report.get_attribute("data-ranking") == "denied")
    page.wait(lambda d: "No denials so far today." in report.text)

    chart = page.visible("usage-chart")
    page.wait(lambda d: chart.find_elements("css selector", '[data-testid="usage-flagged"]'))
    today = chart.find_elements("css selector", '[data-testid="usage-flagged"]')[0]
    assert today.get_attribute("textContent") == "1"
    assert page.errors() == []
