"""The operator console (GET /srm/console): its headers, and its use in a real browser.

The browser tests drive Debian's headless Chromium through its chromedriver (never a
downloaded one) against a real `srm serve` on a real Redis. Screenshots of the main views
go to ``artifacts/console/`` (``SRM_TEST_ARTIFACTS`` moves it), for people to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from aiohttp.test_utils import TestClient, TestServer

from srm import keys as k
from srm.api import console
from srm.api.app import create_app
from srm.model import Policy
from srm.store import SessionStore
from tests.helpers import OPERATOR_KEY, token
from tests.processes import ROOT, SrmProcess, srm_serve
from tests.redis_servers import RedisProcess, redis_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REFRESH = 1  # seconds between refreshes of the session table in these tests
WAIT = 15  # seconds an explicit wait gives the page (a loaded machine is slow)
ARTIFACTS = Path(os.environ.get("SRM_TEST_ARTIFACTS", ROOT / "artifacts")) / "console"
XSS = "<img src=x onerror=alert(1)>"
PAGES = (*console.paths("/srm"), *console.paths("/srm/v1"))


# -- the served files (no browser) -----------------------------------------------------------


@contextlib.asynccontextmanager
async def _console_client(settings: Any) -> Any:
    store = SessionStore(
        fakeredis.FakeAsyncRedis(decode_responses=True, encoding_errors="surrogateescape"),
        k.Keys(shards=16),
        Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False),
    )
    async with TestClient(TestServer(create_app(settings, store))) as c:
        yield c


@pytest.mark.parametrize("path", PAGES)
async def test_console_files_carry_the_security_headers(settings: Any, path: str) -> None:
    async with _console_client(settings) as c:
        resp = await c.get(path)
        assert resp.status == 200
        csp = resp.headers["Content-Security-Policy"]
        directives = dict(d.strip().partition(" ")[::2] for d in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"


async def test_the_page_needs_nothing_inline_and_nothing_external(settings: Any) -> None:
    async with _console_client(settings) as c:
        page = await (await c.get(console.PATH)).text()
        script = await (await c.get(console.SCRIPT)).text()
        style = await (await c.get(console.STYLESHEET)).text()
    # each file named relative to the page, so that /srm/v1/console loads /srm/v1/console/...
    assert re.findall(r"<script\b[^>]*>", page) == ['<script src="console/console.js" defer>']
    assert re.findall(r"<link\b[^>]*stylesheet[^>]*>", page) == [
        '<link rel="stylesheet" href="console/console.css">'
    ]
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handler
    for text in (page, script, style):
        # the only absolute URL is the SVG namespace name, which is never fetched
        assert set(re.findall(r"https?://[^\s'\"<>)]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert (
        "innerHTML" not in script and "eval(" not in script and "insertAdjacentHTML" not in script
    )
    for hook in (
        "key-input",
        "sign-in",
        "account-input",
        "account-search",
        "end-all",
        "limit-input",
        "limit-save",
        "usage-chart",
        "denials-report",
    ):
        assert f'data-testid="{hook}"' in page
    for hook in ("session-row", "end-session"):
        assert f"'data-testid': '{hook}'" in script


async def test_the_page_says_whether_operator_keys_are_configured(settings: Any) -> None:
    async with _console_client(settings) as c:
        assert 'data-operator-keys="configured"' in await (await c.get(console.PATH)).text()
    async with _console_client(settings.replace("operator", keys=())) as c:
        assert 'data-operator-keys="none"' in await (await c.get(console.PATH)).text()


async def test_the_console_is_under_both_prefixes_and_nowhere_else(settings: Any) -> None:
    """Every path under /srm/ also exists under /srm/v1/: the console and its files too."""
    async with _console_client(settings) as c:
        for latest, v1 in zip(console.paths("/srm"), console.paths("/srm/v1"), strict=True):
            assert v1 == latest.replace("/srm/", "/srm/v1/", 1)
            first, second = await c.get(latest), await c.get(v1)
            assert first.status == second.status == 200
            assert await first.read() == await second.read()
            assert first.content_type == second.content_type
        for path in (
            "/srm/console/",
            "/srm/v1/console/",
            "/srm/console/index.html",
            "/srm/v2/console",
            "/srm/v1/v1/console",
        ):
            resp = await c.get(path)
            assert resp.status == 404
            assert (await resp.json())["errorResponse"]["errorCode"] == "SRM-0010"
        for path in (console.PATH, "/srm/v1/console"):
            resp = await c.post(path)
            assert resp.status == 405


# -- a real server and a real browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def live(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with redis_server.client() as c:
        c.flushall()
    with srm_serve(
        tmp_path_factory.mktemp("console"),
        SRM_REDIS_URL=redis_server.url,
        SRM_OPERATOR_KEYS=OPERATOR_KEY,
        SRM_REDIS_SHARDS="16",
    ) as srm:
        yield srm


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with browser(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@contextlib.contextmanager
def browser(profile: Path) -> Iterator[Any]:
    """Headless Chromium from the system packages, with its console and network logs."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (Debian: chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The console page in the browser, and the API beside it."""

    def __init__(self, driver: Any, srm: SrmProcess) -> None:
        self.driver = driver
        self.srm = srm

    # navigation and waiting

    def open(self, query: str = f"?refresh={REFRESH}", fragment: str = "") -> None:
        """The console, signed out, at 1280x800, with the logs read so far dropped."""
        self.driver.set_window_size(1280, 800)
        self.driver.get(self.srm.base + console.PATH)
        self.driver.execute_script("window.sessionStorage.clear()")
        self.driver.get(self.srm.base + console.PATH + query + fragment)
        self.driver.get_log("browser")
        self.driver.get_log("performance")

    def wait(self, condition: Callable[[Any], Any], timeout: float = WAIT) -> Any:
        """Wait until *condition* holds. The page re-renders its tables (each refresh, each
        answer), so an element found by one check may be gone by the next: that is retried."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(
            self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition)

    def find(self, testid: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def find_all(self, testid: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]'))

    def visible(self, testid: str) -> Any:
        return self.wait(lambda d: self.find(testid) if self.find(testid).is_displayed() else None)

    def message(self) -> str:
        return str(self.visible("message").text)

    def wait_message(self, *words: str) -> str:
        def shown(_: Any) -> str | None:
            box = self.find("message")
            text = str(box.text)
            return text if box.is_displayed() and all(w in text for w in words) else None

        return str(self.wait(shown))

    # actions

    def fill(self, field: Any, text: str) -> None:
        """Replace what *field* holds with *text*, as a user would: select all, delete,
        type, with the focus kept on the field throughout. (WebDriver's clear() blurs the
        field, and a refresh in that moment refills an empty field that has no focus.)"""
        from selenium.webdriver.common.keys import Keys

        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE, text)

    def sign_in(self, key: str = OPERATOR_KEY) -> None:
        field = self.visible("key-input")
        self.fill(field, key)
        self.find("sign-in").click()

    def signed_in(self) -> None:
        self.sign_in()
        self.visible("account-input")

    def look_up(self, account: str) -> None:
        field = self.visible("account-input")
        self.fill(field, account)
        self.find("account-search").click()

    # the session table

    def rows(self) -> dict[str, dict[str, str]]:
        """session id -> {state, text} of the rows shown."""
        return {
            r.get_attribute("data-session-id"): {
                "state": r.get_attribute("data-state"),
                "text": r.text,
            }
            for r in self.find_all("session-row")
        }

    def wait_rows(
        self, predicate: Callable[[dict[str, dict[str, str]]], bool], timeout: float = WAIT
    ) -> Any:
        def check(_: Any) -> dict[str, dict[str, str]] | None:
            from selenium.common.exceptions import StaleElementReferenceException

            try:
                rows = self.rows()
            except StaleElementReferenceException:
                return None  # replaced by a refresh while read
            return rows if predicate(rows) else None

        return self.wait(check, timeout)

    def next_refresh(self) -> None:
        """Wait until the session table was refreshed once more."""
        status = self.find("refresh-status")
        before = status.text
        self.wait(lambda d: status.text != before, timeout=WAIT + REFRESH)

    def row(self, session_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(
            By.CSS_SELECTOR, f'[data-testid="session-row"][data-session-id="{session_id}"]'
        )

    def click_in_row(self, session_id: str, testid: str) -> None:
        """Click the *testid* button of *session_id*'s row. The table is redrawn on every
        refresh: a row found just before one is gone when clicked (a stale element, and no
        click made), so the row is found again."""
        from selenium.common.exceptions import StaleElementReferenceException

        def clicked(_: Any) -> bool:
            try:
                self.row(session_id).find_element(
                    "css selector", f'[data-testid="{testid}"]'
                ).click()
            except StaleElementReferenceException:
                return False
            return True

        self.wait(clicked)

    # evidence

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def errors(self) -> list[dict[str, Any]]:
        """Console entries of level SEVERE or WARNING, except 404 answers of API paths the
        server does not have yet (the page degrades on them, by design)."""
        missing = self.missing_paths()
        found = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] not in ("SEVERE", "WARNING"):
                continue
            if entry.get("source") == "network" and " 404 " in entry["message"]:
                url = entry["message"].split(" ", 1)[0]
                if any(m.search(url) for m in missing):
                    continue
            found.append(entry)
        return found

    def missing_paths(self) -> list[re.Pattern[str]]:
        """Operator paths the console uses that this server's OpenAPI document lacks."""
        with urllib.request.urlopen(self.srm.base + "/srm/openapi.json", timeout=10) as answer:  # noqa: S310
            documented = set(json.load(answer)["paths"])
        wanted = (
            "/srm/v1/accounts/{accountId}/usage",
            "/srm/v1/reports/denials",
            "/srm/v1/accounts/{accountId}/devices/{deviceId}/sessions",
            "/srm/v1/accounts/{accountId}/devices",
            "/srm/v1/accounts/{accountId}/home",
        )
        return [
            re.compile(
                re.escape(p).replace(r"\{accountId\}", "[^/]+").replace(r"\{deviceId\}", "[^/]+")
                + r"(?:\?|$)"  # the whole path, with or without a query
            )
            for p in wanted
            if p not in documented
        ]

    def requests(self) -> list[dict[str, Any]]:
        """The requests the page sent since the last call (Chrome's performance log)."""
        sent = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                sent.append(message["params"]["request"])
        return sent

    # the API, as a player and as an operator

    def setup(
        self, account: str, device: str, content: str = "100001V3D", **claims: Any
    ) -> dict[str, Any]:
        body = {"content": {"contentID": content, "contentType": "COD"}}
        return self.call(
            "POST",
            "/srm/v1/sessions",
            body,
            {"Client-Token": token(account, device, **claims)},
        )

    def session(self, account: str, device: str, content: str = "100001V3D") -> str:
        answer = self.setup(account, device, content)
        return str(answer["successResponse"]["sessionId"])

    def teardown(self, account: str, device: str, session_id: str) -> None:
        self.call(
            "DELETE",
            f"/srm/v1/sessions/{session_id}",
            None,
            {"Client-Token": token(account, device)},
        )

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310
            self.srm.base + path, data=data, method=method, headers=headers or {}
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                raw = answer.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
        return json.loads(raw) if raw else None


@pytest.fixture
def page(chrome: Any, live: SrmProcess) -> Console:
    c = Console(chrome, live)
    c.open()
    return c


def _no_dialog(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert  # noqa: B018
    except NoAlertPresentException:
        return True
    return False


@pytest.mark.slow
def test_the_live_console_is_served_with_its_headers(live: SrmProcess) -> None:
    for path in PAGES:
        with urllib.request.urlopen(live.base + path, timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
            for name, value in console.HEADERS.items():
                assert answer.headers[name] == value
            assert answer.headers["X-Request-ID"]


@pytest.mark.slow
def test_the_console_works_under_srm_v1_with_its_own_files(page: Console) -> None:
    sid = page.session("acct-v1", "dev-1")
    page.driver.get(page.srm.base + "/srm/v1/console?refresh=1#account=acct-v1")
    page.signed_in()
    page.wait_rows(lambda r: sid in r)
    assert (
        page.driver.execute_script(
            "return getComputedStyle(document.querySelector('.topbar')).display"
        )
        == "flex"
    ), "the stylesheet was not applied"
    fetched = {r["url"].removeprefix(page.srm.base) for r in page.requests()}
    assert {"/srm/v1/console/console.css", "/srm/v1/console/console.js"} <= fetched
    assert not any(u.startswith("/srm/console") for u in fetched)
    assert page.errors() == []


@pytest.mark.slow
def test_a_wrong_key_is_refused_readably_and_a_right_one_signs_in(page: Console) -> None:
    page.sign_in("not-the-key")
    assert "not accepted" in page.wait_message("403")
    assert page.find("key-input").is_displayed()
    assert not page.find("account-input").is_displayed()
    page.screenshot("sign-in-refused")

    page.sign_in()
    page.visible("account-input")
    assert (
        page.driver.execute_script(
            "return window.sessionStorage.getItem('srm.console.operatorKey')"
        )
        == OPERATOR_KEY
    )
    assert page.driver.execute_script("return window.localStorage.length") == 0
    assert OPERATOR_KEY not in page.driver.current_url

    page.find("sign-out").click()
    page.visible("key-input")
    assert page.driver.execute_script("return window.sessionStorage.length") == 0
    assert page.find("key-input").get_attribute("value") == ""
    # the refused key's answer is the only thing the browser complains about
    assert all(e["source"] == "network" and " 403 " in e["message"] for e in page.errors())


@pytest.mark.slow
def test_an_account_with_three_sessions_is_listed_active_first(page: Console) -> None:
    ended = page.session("acct-three", "dev-old", "title-old")
    page.teardown("acct-three", "dev-old", ended)
    a, b, c = (page.session("acct-three", f"dev-{n}", f"title-{n}") for n in "abc")

    page.signed_in()
    page.look_up("acct-three")
    rows = page.wait_rows(lambda r: len(r) == 4)
    states = page.wait(
        lambda d: [r.get_attribute("data-state") for r in page.find_all("session-row")]
    )
    assert states == ["ACTIVE", "ACTIVE", "ACTIVE", "ENDED"]
    assert {rows[s]["state"] for s in (a, b, c)} == {"ACTIVE"}
    assert rows[ended]["state"] == "ENDED" and "TEARDOWN" in rows[ended]["text"]
    assert "dev-b" in rows[b]["text"] and "title-b" in rows[b]["text"]
    assert "3 active of 3 allowed" in page.find("account-summary").text
    assert "#account=acct-three" in page.driver.current_url
    assert page.driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth"
    )  # nothing wider than the 1280x800 window
    page.screenshot("account")


@pytest.mark.slow
def test_ending_one_session_shows_it_ended_within_the_refresh(page: Console) -> None:
    first, second, third = (page.session("acct-end-one", f"dev-{n}") for n in range(3))
    page.signed_in()
    page.look_up("acct-end-one")
    page.wait_rows(lambda r: len(r) == 3)

    page.click_in_row(first, "end-session")
    page.wait_rows(lambda r: r[first]["state"] == "ENDED" and "OPERATOR" in r[first]["text"])
    assert "ended" in page.wait_message("dev-0")

    # a change made elsewhere shows at the next refresh, without touching the page
    page.teardown("acct-end-one", "dev-1", second)
    rows = page.wait_rows(lambda r: r[second]["state"] == "ENDED", timeout=REFRESH * 5 + 5)
    assert rows[third]["state"] == "ACTIVE"
    assert "1 active of 3" in page.find("account-summary").text


@pytest.mark.slow
def test_ending_all_sessions_asks_first(page: Console) -> None:
    ids = [page.session("acct-end-all", f"dev-{n}") for n in range(3)]
    page.signed_in()
    page.look_up("acct-end-all")
    page.wait_rows(lambda r: len(r) == 3)

    page.find("end-all").click()
    question = page.visible("end-all-confirm")
    assert "End all 3 active sessions" in page.driver.find_element("id", "end-all-question").text
    page.screenshot("end-all-confirm")
    page.find("end-all-cancel").click()
    page.wait(lambda d: not question.is_displayed())
    page.wait_rows(lambda r: all(row["state"] == "ACTIVE" for row in r.values()))

    page.find("end-all").click()
    page.visible("end-all-confirm").click()
    page.wait_rows(lambda r: all(r[s]["state"] == "ENDED" for s in ids))
    assert "Ended 3 sessions" in page.wait_message("Ended")
    assert "0 active" in page.find("account-summary").text
    assert not page.find("end-all").is_enabled()


@pytest.mark.slow
def test_a_limit_override_set_in_the_console_denies_a_setup(page: Console) -> None:
    page.session("acct-limit", "dev-1")
    page.signed_in()
    page.look_up("acct-limit")
    page.wait(lambda d: "(default)" in page.find("limit-state").text)
    assert not page.find("limit-remove").is_enabled()

    field = page.find("limit-input")
    page.fill(field, "1")
    page.find("limit-save").click()
    page.wait(lambda d: "1 (override" in page.find("limit-state").text)
    assert "Limit override set to 1" in page.message()
    denied = page.setup("acct-limit", "dev-2")
    assert denied["errorResponse"]["errorCode"] == "SRM-0005"
    page.wait(lambda d: "1 active of 1 allowed" in page.find("account-summary").text)
    page.screenshot("limit-override")

    page.fill(field, "lots")
    page.find("limit-save").click()
    page.wait(lambda d: "whole number" in page.driver.find_element("id", "limits-error").text)

    page.find("limit-remove").click()
    page.wait(lambda d: "3 (default)" in page.find("limit-state").text)
    assert "successResponse" in page.setup("acct-limit", "dev-2")


@pytest.mark.slow
def test_player_strings_are_shown_as_text_and_run_nothing(page: Console) -> None:
    account = "<b>acct</b>&amp;"
    device = '"><svg onload=alert(2)>'
    sid = page.session(account, device, XSS)
    page.signed_in()
    page.look_up(account)
    page.wait_rows(lambda r: sid in r)

    row = page.row(sid)
    assert XSS in row.text and device in row.text
    assert row.find_elements("css selector", "img, svg, script") == []
    assert account in page.driver.find_element("id", "account-name").text
    assert page.driver.find_elements("css selector", "main img, main b, main script") == []
    page.next_refresh()
    assert _no_dialog(page.driver)
    assert page.errors() == []
    assert not any(r["url"].endswith("/x") for r in page.requests()), "the onerror image was loaded"
    page.screenshot("player-strings-as-text")


@pytest.mark.slow
def test_the_key_travels_in_the_authorization_header_only(page: Console) -> None:
    page.session("acct-key", "dev-1")
    page.signed_in()
    page.look_up("acct-key")
    (only,) = page.wait_rows(lambda r: len(r) == 1)
    page.click_in_row(only, "end-session")
    page.wait_rows(lambda r: all(v["state"] == "ENDED" for v in r.values()))

    sent = page.requests()
    api = [r for r in sent if "/srm/v1/" in r["url"]]
    assert {r["method"] for r in api} >= {"GET", "DELETE"}
    for request in sent:
        assert OPERATOR_KEY not in request["url"]
        assert OPERATOR_KEY not in request.get("postData", "")
    for request in api:
        assert request["headers"].get("Authorization") == f"Bearer {OPERATOR_KEY}"
    assert OPERATOR_KEY not in page.srm.output()


@pytest.mark.slow
def test_a_phone_sized_window_shows_every_column(page: Console) -> None:
    sid = page.session("acct-phone", "dev-phone", "a-rather-long-content-identifier-0123456789")
    page.driver.set_window_size(390, 844)
    page.signed_in()
    page.look_up("acct-phone")
    page.wait_rows(lambda r: sid in r)
    row = page.row(sid)
    # one card per session: the column names move into the cells
    labels = page.driver.execute_script(
        "return Array.from(arguments[0].cells, c => getComputedStyle(c, '::before').content)",
        row,
    )
    for label in ("Device", "Content", "State", "Created", "Expires"):
        assert f'"{label}"' in labels
    assert not page.driver.find_element("css selector", "table.sessions thead").is_displayed()
    width = page.driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width[0] <= width[1]
    assert row.find_element("css selector", '[data-testid="end-session"]').is_displayed()
    page.screenshot("phone")


@pytest.mark.slow
def test_the_controls_work_from_the_keyboard(page: Console) -> None:
    from selenium.webdriver.common.keys import Keys

    sid = page.session("acct-keys", "dev-1")
    active = page.driver.switch_to.active_element
    assert active.get_attribute("data-testid") == "key-input"
    active.send_keys(OPERATOR_KEY + Keys.ENTER)
    page.wait(lambda d: d.switch_to.active_element.get_attribute("data-testid") == "account-input")
    page.driver.switch_to.active_element.send_keys("acct-keys" + Keys.ENTER)
    page.wait_rows(lambda r: sid in r)

    # every control has a name a screen reader can say
    unnamed = page.driver.execute_script(
        """
        return Array.from(document.querySelectorAll('input, select, button'))
          .filter(e => e.offsetParent !== null)
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.textContent.trim())
          .map(e => e.outerHTML);
        """
    )
    assert unnamed == []
    # and Tab reaches the row's buttons (sent to whatever has the focus: a refresh may
    # replace the row, and the page puts the focus back on the same button)
    from selenium.webdriver.common.action_chains import ActionChains

    reached = set()
    for _ in range(40):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        reached.add(page.driver.execute_script("return document.activeElement.dataset.testid"))
    assert {"end-all", "end-session", "limit-input", "limit-save"} <= reached


@pytest.mark.slow
def test_without_operator_keys_the_page_says_so(
    chrome: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    with srm_serve(tmp_path, SRM_REDIS_URL=redis_server.url, SRM_OPERATOR_KEYS="") as srm:
        page = Console(chrome, srm)
        page.open()
        notice = page.visible("no-operator-keys")
        assert "No operator key is configured" in notice.text
        assert not page.find("key-input").is_displayed()
        page.screenshot("no-operator-keys")
        assert page.errors() == []


@pytest.mark.slow
def test_store_and_network_failures_are_readable(chrome: Any, tmp_path: Path) -> None:
    with (
        redis_process() as redis,
        srm_serve(tmp_path, SRM_REDIS_URL=redis.url, SRM_OPERATOR_KEYS=OPERATOR_KEY) as srm,
    ):
        page = Console(chrome, srm)
        page.open()
        sid = page.session("acct-down", "dev-1")
        page.signed_in()
        page.look_up("acct-down")
        page.wait_rows(lambda r: sid in r)

        redis.kill()
        error = page.driver.find_element("id", "sessions-error")
        page.wait(lambda d: "session store is unavailable" in error.text)
        assert "503" in error.text
        page.screenshot("store-down")

        srm.stop()
        page.wait(lambda d: "cannot be reached" in error.text)
        assert page.find_all("session-row")  # the last rows stay on screen
        assert "{" not in error.text  # a sentence, not a JSON body


def test_docs_screenshot_exists() -> None:
    """docs/console.md shows the console; the picture must be there."""
    assert (ROOT / "docs" / "console.png").stat().st_size > 10_000
    assert "console.png" in (ROOT / "docs" / "console.md").read_text()
