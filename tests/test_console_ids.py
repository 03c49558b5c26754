"""Browser tests of the console's addresses: every id a player can have is sent as exactly one
percent-encoded path segment, and an id no path can carry ("." and "..", which browsers
collapse even when percent-encoded) is refused before anything is sent: ending device ".."
must never become DELETE .../sessions, the end-all path."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio

from srm import keys as k
from srm.model import NewSession, Policy
from srm.store import SessionStore
from tests import test_console
from tests.redis_servers import RedisProcess
from tests.test_console import Console

# the browser fixtures of test_console
chrome = test_console.chrome
live = test_console.live
page = test_console.page

REFUSED = "cannot be put in a web address"
HOSTILE = [
    "a/b",
    "%2F",
    "?x",
    "#",
    "..%2F",
    "'!()*",
    "tv-é-電視-📺",
    "x" * 255 + "📺",  # 256 characters, 257 UTF-16 code units
]


def _encoded(value: str) -> str:
    """What the console must put in a path or query for *value*: RFC 3986's strict form."""
    return quote(value, safe="-_.~")


def _stored_session(redis_server: RedisProcess, account: str, device: str) -> str:
    """A session written by the store itself, not set up with a token: ids such as ".." may
    exist from before the service refused them in tokens, and must stay harmless."""

    async def create() -> str:
        client = redis.asyncio.Redis.from_url(
            redis_server.url, decode_responses=True, encoding_errors="surrogateescape"
        )
        try:
            store = SessionStore(
                client,
                k.Keys(shards=16),  # the live server's SRM_REDIS_SHARDS
                Policy(timeout_ms=120_000, max_sessions=3, retention_ms=60_000, evict=False),
            )
            sid = str(uuid.uuid4())
            await store.setup(NewSession(sid, account, device, "100001V3D", "COD"))
            return sid
        finally:
            await client.aclose()

    return asyncio.run(create())


def _look_up(page: Console, account: str) -> None:
    """Type-free lookup (chromedriver cannot type every character): the field set by script."""
    field = page.visible("account-input")
    page.driver.execute_script("arguments[0].value = arguments[1]", field, account)
    page.find("account-search").click()


def _end_device(page: Console, session_id: str) -> None:
    page.click_in_row(session_id, "end-device")


def _api_requests(page: Console) -> list[dict[str, Any]]:
    return [r for r in page.requests() if "/srm/" in r["url"] and r["method"] != "OPTIONS"]


@pytest.mark.slow
@pytest.mark.parametrize("device", ["..", "."])
def test_a_device_no_path_can_name_is_refused_and_nothing_is_sent(
    page: Console, redis_server: RedisProcess, device: str
) -> None:
    account = f"acct-dots-{len(device)}"
    dots = _stored_session(redis_server, account, device)
    keep = [page.session(account, f"dev-{n}") for n in range(2)]
    page.signed_in()
    page.look_up(account)
    page.wait_rows(lambda r: len(r) == 3)
    page.requests()  # drop what was sent so far

    _end_device(page, dots)
    text = page.wait_message(REFUSED)
    assert f'device id "{device}"' in text
    page.next_refresh()
    rows = page.wait_rows(lambda r: len(r) == 3)
    assert {s: v["state"] for s, v in rows.items()} == dict.fromkeys([dots, *keep], "ACTIVE")
    sent = _api_requests(page)
    assert sent, "the table was refreshed meanwhile"
    assert {r["method"] for r in sent} == {"GET"}, "a DELETE was sent"
    assert page.row(dots).find_element("css selector", '[data-testid="end-device"]').is_enabled()
    page.screenshot(f"device-{len(device)}-dots-refused")

    # the other devices' buttons still work, and end their device only
    _end_device(page, keep[0])
    rows = page.wait_rows(lambda r: r[keep[0]]["state"] == "ENDED")
    assert rows[dots]["state"] == rows[keep[1]]["state"] == "ACTIVE"
    assert page.errors() == []


@pytest.mark.slow
def test_an_account_no_path_can_name_is_refused_and_nothing_is_sent(page: Console) -> None:
    page.signed_in()
    page.session("acct-listed", "dev-1")
    for account in ("..", "."):
        page.requests()
        _look_up(page, account)
        text = page.wait_message(REFUSED)
        assert f'account id "{account}"' in text
        assert not page.driver.find_element("id", "account-view").is_displayed()
        assert _api_requests(page) == []
    # from an address too, as a bookmark or a denials link would give it
    page.driver.get(page.srm.base + test_console.console.PATH + "?refresh=1#account=..")
    page.wait_message(REFUSED, 'account id ".."')
    assert not any("/sessions" in r["url"] for r in _api_requests(page))
    # and a good account still opens
    page.look_up("acct-listed")
    page.wait_rows(lambda r: len(r) == 1)
    assert page.errors() == []


@pytest.mark.slow
def test_hostile_ids_are_addressed_as_one_segment_each(page: Console) -> None:
    page.signed_in()
    for n, hostile in enumerate(HOSTILE):
        account = hostile if n % 2 else f"acct-{hostile}"  # as the whole id and inside one
        mine = page.session(account, hostile)
        other = page.session(account, f"other-{n}")
        page.requests()
        _look_up(page, account)
        page.wait_rows(lambda r, want={mine, other}: set(r) == want)
        assert page.driver.find_element("id", "account-name").text == account

        _end_device(page, mine)
        rows = page.wait_rows(lambda r, s=mine: r[s]["state"] == "ENDED")
        assert rows[other]["state"] == "ACTIVE", f"ending device {hostile!r} ended another"
        assert "Ended 1 session of device" in page.wait_message("Ended 1")

        sent = _api_requests(page)
        base = f"{page.srm.base}/srm/v1/accounts/{_encoded(account)}"
        deletes = [r["url"] for r in sent if r["method"] == "DELETE"]
        assert deletes == [f"{base}/devices/{_encoded(hostile)}/sessions"]
        # (a refresh of the previous account may still have been on its way)
        assert any(r["url"].startswith(f"{base}/sessions?limit=") for r in sent)
    assert page.errors() == []
