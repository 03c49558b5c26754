"""Browser tests of the console's households: an account's registered devices (listed, removed
with their sessions, the swap cooldown's 429 and the operator's force), its home networks
(shown, set, cleared, a bad CIDR explained), each session's network and location, and device
ids that are hard to put in a path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio

from srm import keys as k
from srm.api import console
from srm.model import Households, NewSession, Policy
from srm.store import SessionStore
from tests import test_console
from tests.helpers import OPERATOR, OPERATOR_KEY, token
from tests.processes import ROOT, SrmProcess, srm_serve
from tests.redis_servers import RedisProcess
from tests.test_console import Console
from tests.test_console_ids import HOSTILE, REFUSED, _encoded

# the browser fixtures of test_console
chrome = test_console.chrome
live = test_console.live
page = test_console.page

MAX_DEVICES = 3
COOLDOWN_DAYS = 30
SHARDS = 16
HOOKS = (
    "devices-table",
    "devices-summary",
    "remove-device-confirm",
    "remove-device-force",
    "remove-device-cancel",
    "home-networks",
    "home-input",
    "home-save",
    "home-clear",
    "home-error",
)
ROW_HOOKS = ("device-row", "remove-device", "session-network", "session-location")


# -- the page (no browser) ------------------------------------------------------------------


def test_the_page_has_the_household_controls() -> None:
    """The new controls carry their data-testid, and every earlier one is still there."""
    page_text = (ROOT / "srm" / "console" / "index.html").read_text()
    script = (ROOT / "srm" / "console" / "console.js").read_text()
    for hook in HOOKS:
        assert f'data-testid="{hook}"' in page_text
    for hook in ROW_HOOKS:
        assert f"'data-testid': '{hook}'" in script
    docs = (ROOT / "docs" / "console.md").read_text()
    for hook in HOOKS + ROW_HOOKS:
        assert f"`{hook}`" in docs, f"docs/console.md does not name {hook}"


# -- a server with a device registry, a swap cooldown, and a trusted proxy ------------------


@pytest.fixture(scope="module")
def house(redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with redis_server.client() as c:
        c.flushall()
    tmp = tmp_path_factory.mktemp("households")
    config = tmp / "households.toml"
    config.write_text(
        f"[devices]\nmax = {MAX_DEVICES}\nswap_cooldown_days = {COOLDOWN_DAYS}\n"
        "[sessions]\nmax_sessions = 10\n"
    )
    with srm_serve(
        tmp,
        SRM_REDIS_URL=redis_server.url,
        SRM_OPERATOR_KEYS=OPERATOR_KEY,
        SRM_REDIS_SHARDS=str(SHARDS),
        SRM_CONFIG=str(config),
        # the tests are the load balancer: X-Forwarded-For picks a session's network
        SRM_TRUSTED_PROXIES="127.0.0.0/8",
    ) as srm:
        yield srm


@pytest.fixture
def hpage(chrome: Any, house: SrmProcess) -> Console:
    c = Console(chrome, house)
    c.open()
    return c


def _session(
    page: Console, account: str, device: str, address: str | None = None, **claims: Any
) -> str:
    """A session set up as a player (from *address*, through the trusted proxy, if given)."""
    headers = {"Client-Token": token(account, device, **claims)}
    if address:
        headers["X-Forwarded-For"] = address
    body = {"content": {"contentID": "film", "contentType": "COD"}}
    answer = page.call("POST", "/srm/v1/sessions", body, headers)
    assert "successResponse" in answer, answer
    return str(answer["successResponse"]["sessionId"])


def _operator(page: Console, method: str, path: str, body: Any = None) -> Any:
    return page.call(method, path, body, OPERATOR)


def _device_rows(page: Console) -> dict[str, str]:
    """device id -> row text of the device table."""
    return {r.get_attribute("data-device-id"): r.text for r in page.find_all("device-row")}


def _wait_devices(page: Console, want: set[str]) -> dict[str, str]:
    """Wait until the device table lists exactly *want*; its rows."""

    def listed(_: Any) -> dict[str, str] | None:
        rows = _device_rows(page)
        return rows if set(rows) == want else None

    return dict(page.wait(listed))


def _click_remove(page: Console, device: str) -> None:
    """Click Remove in *device*'s row (found again if a refresh replaced it)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def clicked(_: Any) -> bool:
        try:
            for row in page.find_all("device-row"):
                if row.get_attribute("data-device-id") == device:
                    row.find_element("css selector", '[data-testid="remove-device"]').click()
                    return True
        except StaleElementReferenceException:
            pass
        return False

    page.wait(clicked)


def _question(page: Console) -> str:
    return str(page.visible("device-question").text)


def _api_requests(page: Console) -> list[dict[str, Any]]:
    return [r for r in page.requests() if "/srm/" in r["url"] and r["method"] != "OPTIONS"]


def _cells(page: Console, session_id: str) -> tuple[str, str]:
    """The network and location shown for *session_id*."""
    row = page.row(session_id)
    network = row.find_element("css selector", '[data-testid="session-network"]').text
    location = row.find_element("css selector", '[data-testid="session-location"]').text
    return str(network), str(location)


def _wait_cells(page: Console, want: dict[str, tuple[str, str]]) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def shown(_: Any) -> bool:
        try:
            return all(_cells(page, s) == cells for s, cells in want.items())
        except (StaleElementReferenceException, NoSuchElementException):
            return False

    page.wait(shown)


# -- devices ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_removing_a_device_unregisters_it_and_ends_its_sessions(hpage: Console) -> None:
    page = hpage
    account = "acct-devices"
    phone = [_session(page, account, "dev-phone", deviceType="phone") for _ in range(2)]
    tv = _session(page, account, "dev-tv", deviceType="tv")
    page.signed_in()
    page.look_up(account)
    page.wait_rows(lambda r: len(r) == 3)
    rows = _wait_devices(page, {"dev-phone", "dev-tv"})
    assert "phone" in rows["dev-phone"] and "tv" in rows["dev-tv"]
    assert list(rows) == ["dev-phone", "dev-tv"]  # first registered first
    summary = page.find("devices-summary").text
    assert f"2 of {MAX_DEVICES} devices registered" in summary
    assert "A device can be removed now" in summary

    # asked first; Cancel sends nothing
    page.requests()
    _click_remove(page, "dev-phone")
    question = _question(page)
    assert "Remove device dev-phone from account acct-devices?" in question
    assert "active sessions end now" in question
    assert not page.find("remove-device-force").is_displayed()
    page.screenshot("device-remove-confirm")
    page.find("remove-device-cancel").click()
    page.wait(lambda d: not page.find("device-box").is_displayed())
    assert not [r for r in _api_requests(page) if r["method"] == "DELETE"]

    _click_remove(page, "dev-phone")
    page.visible("remove-device-confirm").click()
    assert "Device dev-phone removed: ended 2 sessions." in page.wait_message("removed")
    rows = page.wait_rows(lambda r: all(r[s]["state"] == "ENDED" for s in phone))
    assert all("OPERATOR" in rows[s]["text"] for s in phone)
    assert rows[tv]["state"] == "ACTIVE"
    _wait_devices(page, {"dev-tv"})
    page.wait(lambda d: "Swap cooldown" in page.find("devices-summary").text)
    deletes = [r["url"] for r in _api_requests(page) if r["method"] == "DELETE"]
    assert deletes == [f"{page.srm.base}/srm/v1/accounts/{account}/devices/dev-phone"]

    listing = _operator(page, "GET", f"/srm/v1/accounts/{account}/devices")
    assert [d["deviceId"] for d in listing["devices"]] == ["dev-tv"]
    assert listing["nextRemovalAt"]
    page.screenshot("device-removed")
    assert page.errors() == []


@pytest.mark.slow
def test_a_removal_inside_the_swap_cooldown_can_be_forced(hpage: Console) -> None:
    page = hpage
    account = "acct-cooldown"
    for device in ("dev-a", "dev-b"):
        _session(page, account, device)
    c = _session(page, account, "dev-c")
    assert _operator(page, "DELETE", f"/srm/v1/accounts/{account}/devices/dev-a") == {"ended": 1}
    before = _operator(page, "GET", f"/srm/v1/accounts/{account}/devices")["nextRemovalAt"]
    assert before

    page.signed_in()
    page.look_up(account)
    _wait_devices(page, {"dev-b", "dev-c"})
    assert "Swap cooldown" in page.find("devices-summary").text

    page.requests()
    _click_remove(page, "dev-c")
    page.visible("remove-device-confirm").click()
    page.wait(lambda d: "429 SRM-0011" in _question(page))
    question = _question(page)
    assert "Device dev-c was not removed" in question
    assert f"about {COOLDOWN_DAYS} days" in question
    assert "remove it anyway" in question and "does not restart the cooldown" in question
    force = page.visible("remove-device-force")
    assert not page.find("remove-device-confirm").is_displayed()
    page.screenshot("device-cooldown-force")
    # nothing changed so far
    _wait_devices(page, {"dev-b", "dev-c"})
    page.wait_rows(lambda r: r[c]["state"] == "ACTIVE")

    force.click()
    message = page.wait_message("removed")
    assert "Device dev-c removed (swap cooldown skipped): ended 1 session." in message
    page.wait_rows(lambda r: r[c]["state"] == "ENDED")
    _wait_devices(page, {"dev-b"})
    deletes = [r["url"] for r in _api_requests(page) if r["method"] == "DELETE"]
    base = f"{page.srm.base}/srm/v1/accounts/{account}/devices/dev-c"
    assert deletes == [base, f"{base}?force=true"]
    # a forced removal starts no new cooldown
    after = _operator(page, "GET", f"/srm/v1/accounts/{account}/devices")["nextRemovalAt"]
    assert after == before

    # Escape (or Cancel) after a 429 leaves the device registered
    from selenium.webdriver.common.keys import Keys

    _click_remove(page, "dev-b")
    page.visible("remove-device-confirm").click()
    page.wait(lambda d: "429 SRM-0011" in _question(page))
    focused = page.driver.switch_to.active_element
    assert focused.get_attribute("data-testid") == "remove-device-force"
    focused.send_keys(Keys.ESCAPE)
    page.wait(lambda d: not page.find("device-box").is_displayed())
    page.next_refresh()
    _wait_devices(page, {"dev-b"})
    # the two 429 answers are the only ones the browser complains about
    assert all(e["source"] == "network" and " 429 " in e["message"] for e in page.errors())


@pytest.mark.slow
def test_a_device_removed_elsewhere_is_reported_not_registered(
    chrome: Any, house: SrmProcess
) -> None:
    page = Console(chrome, house)
    page.open(query="?refresh=300")  # no refresh redraws the table meanwhile
    account = "acct-gone"
    _session(page, account, "dev-1")
    _session(page, account, "dev-2")
    page.signed_in()
    page.look_up(account)
    _wait_devices(page, {"dev-1", "dev-2"})
    _operator(page, "DELETE", f"/srm/v1/accounts/{account}/devices/dev-1")

    _click_remove(page, "dev-1")
    page.visible("remove-device-confirm").click()
    error = page.visible("devices-error")
    page.wait(lambda d: "404 SRM-0004" in error.text)
    assert "Device dev-1 is not registered to this account" in error.text
    _wait_devices(page, {"dev-2"})  # the list is read again
    assert all(" 404 " in e["message"] for e in page.errors())


@pytest.mark.slow
def test_without_a_registry_the_devices_panel_says_so(page: Console) -> None:
    """The default configuration (devices.max = 0) registers nothing."""
    sid = page.session("acct-no-registry", "dev-1")
    page.signed_in()
    page.look_up("acct-no-registry")
    page.wait_rows(lambda r: sid in r)
    page.wait(lambda d: "No device registry" in page.find("devices-summary").text)
    assert "devices.max is 0" in page.find("devices-summary").text
    assert page.find_all("device-row") == []
    assert not page.find("devices-table").is_displayed()
    _wait_cells(page, {sid: ("127.0.0.0/24", "—")})
    assert page.errors() == []


# -- home networks, and each session's network and location ----------------------------------


@pytest.mark.slow
def test_home_networks_are_set_and_cleared_and_sessions_show_where_they_are(
    hpage: Console,
) -> None:
    page = hpage
    account = "acct-home"
    here = _session(page, account, "dev-here")  # the TCP peer: 127.0.0.1
    away = _session(page, account, "dev-away", address="203.0.113.7")
    v6 = _session(page, account, "dev-v6", address="2001:db8:5:7::1")
    page.signed_in()
    page.look_up(account)
    page.wait_rows(lambda r: len(r) == 3)
    page.wait(lambda d: page.find_all("home-none"))
    assert "No home network is set" in page.find("home-networks").text
    assert not page.find("home-clear").is_enabled()
    _wait_cells(
        page,
        {
            here: ("127.0.0.0/24", "—"),
            away: ("203.0.113.0/24", "—"),
            v6: ("2001:db8:5::/56", "—"),
        },
    )

    field = page.find("home-input")
    page.fill(field, "127.0.0.0/24, 2001:db8:5::/56")
    page.find("home-save").click()
    assert "Home networks set: 127.0.0.0/24, 2001:db8:5::/56." in page.wait_message("set")
    page.wait(
        lambda d: (
            [e.text for e in page.find_all("home-network")] == ["127.0.0.0/24", "2001:db8:5::/56"]
        )
    )
    # a session keeps the location of its setup; the ones set up now are home or away
    here2 = _session(page, account, "dev-here")
    away2 = _session(page, account, "dev-away", address="203.0.113.9")
    v6b = _session(page, account, "dev-v6", address="2001:db8:5:ff::2")
    _wait_cells(
        page,
        {
            here: ("127.0.0.0/24", "—"),
            here2: ("127.0.0.0/24", "home"),
            away2: ("203.0.113.0/24", "away"),
            v6b: ("2001:db8:5::/56", "home"),
        },
    )
    page.wait(lambda d: page.row(away2).find_element("css selector", '[data-location="away"]'))
    assert _operator(page, "GET", f"/srm/v1/accounts/{account}/home") == {
        "networks": ["127.0.0.0/24", "2001:db8:5::/56"]
    }
    page.screenshot("home-networks")

    # a bad CIDR: the server's own sentence, and nothing changed
    error = page.find("home-error")
    for bad in ("10.0.0.0/33", "nonsense", "1.0.0.0/8 2.0.0.0/8 3.0.0.0/8 4.0.0.0/8 5.0.0.0/8"):
        field = page.find("home-input")
        page.fill(field, bad)
        page.find("home-save").click()
        networks = bad.split()
        refused = _operator(page, "PUT", f"/srm/v1/accounts/{account}/home", {"networks": networks})
        assert refused["errorResponse"]["errorCode"] == "SRM-0002"
        detail = refused["detail"]
        page.wait(lambda d, want=detail: error.is_displayed() and want in error.text)
        assert "not changed (400 SRM-0002)" in error.text
    page.screenshot("home-bad-cidr")
    assert _operator(page, "GET", f"/srm/v1/accounts/{account}/home")["networks"] == [
        "127.0.0.0/24",
        "2001:db8:5::/56",
    ]

    page.find("home-clear").click()
    assert "Home networks cleared" in page.wait_message("cleared")
    page.wait(lambda d: page.find_all("home-none"))
    assert not page.find("home-error").is_displayed()
    assert page.find("home-input").get_attribute("value") == ""
    assert _operator(page, "GET", f"/srm/v1/accounts/{account}/home") == {"networks": []}
    here3 = _session(page, account, "dev-here")
    _wait_cells(page, {here2: ("127.0.0.0/24", "home"), here3: ("127.0.0.0/24", "—")})

    # and a home set elsewhere shows at the next refresh
    _operator(page, "PUT", f"/srm/v1/accounts/{account}/home", {"networks": ["203.0.113.0/24"]})
    page.wait(lambda d: [e.text for e in page.find_all("home-network")] == ["203.0.113.0/24"])
    here4 = _session(page, account, "dev-here")
    away4 = _session(page, account, "dev-away", address="203.0.113.7")
    _wait_cells(page, {here4: ("127.0.0.0/24", "away"), away4: ("203.0.113.0/24", "home")})
    page.wait_rows(lambda r: len(r) == 9)
    # the refused PUTs are the only answers the browser complains about
    assert all(e["source"] == "network" and " 400 " in e["message"] for e in page.errors())


@pytest.mark.slow
def test_the_new_columns_fit_a_phone(hpage: Console) -> None:
    page = hpage
    sid = _session(page, "acct-phone-house", "dev-phone")
    page.driver.set_window_size(390, 844)
    page.signed_in()
    page.look_up("acct-phone-house")
    page.wait_rows(lambda r: sid in r)
    _wait_devices(page, {"dev-phone"})
    # one card per row: the column names move into the cells (read in one script: the
    # tables are redrawn every second)
    labels = """
        return Array.from(document.querySelector(arguments[0]).cells,
                          c => getComputedStyle(c, '::before').content)
    """
    assert '"Network, location"' in page.driver.execute_script(
        labels, '[data-testid="session-row"]'
    )
    device = page.driver.execute_script(labels, '[data-testid="device-row"]')
    assert '"First seen"' in device and '"Last seen"' in device
    width = page.driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width[0] <= width[1]
    page.screenshot("households-phone")


# -- device ids that are hard to address -------------------------------------------------------


@pytest.mark.slow
def test_hostile_device_ids_are_removed_as_one_segment_each(hpage: Console) -> None:
    page = hpage
    page.signed_in()
    for n, hostile in enumerate([*HOSTILE, test_console.XSS]):
        account = f"acct-hostile-{n}"
        mine = _session(page, account, hostile)
        other = _session(page, account, f"other-{n}")
        page.look_up(account)
        page.wait_rows(lambda r, want={mine, other}: set(r) == want)
        rows = _wait_devices(page, {hostile, f"other-{n}"})
        assert hostile in rows[hostile]  # shown as text

        page.requests()
        _click_remove(page, hostile)
        assert hostile in _question(page)
        page.visible("remove-device-confirm").click()
        assert "ended 1 session" in page.wait_message(hostile, "removed")
        rows = page.wait_rows(lambda r, s=mine: r[s]["state"] == "ENDED")
        assert rows[other]["state"] == "ACTIVE", f"removing {hostile!r} ended another device"
        _wait_devices(page, {f"other-{n}"})

        deletes = [r["url"] for r in _api_requests(page) if r["method"] == "DELETE"]
        base = f"{page.srm.base}/srm/v1/accounts/{account}"
        assert deletes == [f"{base}/devices/{_encoded(hostile)}"]
    assert page.driver.find_elements("css selector", "main img, main script") == []
    assert page.errors() == []


def _registered(redis_server: RedisProcess, account: str, device: str) -> str:
    """A session, and its device registered, written by the store itself: ids such as ".."
    may exist from before the service refused them in tokens."""

    async def create() -> str:
        client = redis.asyncio.Redis.from_url(
            redis_server.url, decode_responses=True, encoding_errors="surrogateescape"
        )
        try:
            store = SessionStore(
                client,
                k.Keys(shards=SHARDS),
                Policy(
                    timeout_ms=120_000,
                    max_sessions=10,
                    retention_ms=60_000,
                    evict=False,
                    households=Households(devices_max=MAX_DEVICES),
                ),
            )
            sid = str(uuid.uuid4())
            await store.setup(NewSession(sid, account, device, "film", "COD"))
            return sid
        finally:
            await client.aclose()

    return asyncio.run(create())


@pytest.mark.slow
def test_a_device_no_path_can_name_is_refused_and_nothing_is_sent(
    hpage: Console, redis_server: RedisProcess
) -> None:
    page = hpage
    page.signed_in()
    error = page.find("devices-error")
    for device in ("..", "."):
        account = f"acct-dots-device-{len(device)}"
        dots = _registered(redis_server, account, device)
        keep = _session(page, account, "dev-keep")
        page.look_up(account)
        page.wait_rows(lambda r, want={dots, keep}: set(r) == want)
        _wait_devices(page, {device, "dev-keep"})

        page.requests()
        _click_remove(page, device)
        page.visible("remove-device-confirm").click()
        page.wait(lambda d: error.is_displayed() and REFUSED in error.text)
        assert f'device id "{device}"' in error.text
        page.next_refresh()
        rows = page.wait_rows(lambda r, want={dots, keep}: set(r) == want)
        assert {s: v["state"] for s, v in rows.items()} == {dots: "ACTIVE", keep: "ACTIVE"}
        _wait_devices(page, {device, "dev-keep"})
        assert {r["method"] for r in _api_requests(page)} == {"GET"}, "a DELETE was sent"
    page.screenshot("device-dots-refused")
    assert page.errors() == []


def test_docs_describe_the_households_part() -> None:
    """docs/console.md describes the households part of the page it documents."""
    docs = (ROOT / "docs" / "console.md").read_text()
    assert console.PATH in docs
    for words in ("Registered devices", "Home networks", "force=true", "Retry-After", "429"):
        assert words in docs
