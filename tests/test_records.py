"""The account hash as written by the scripts (srm/lua/_account.lua) and as read by
srm/records.py: the two must agree on every record and usage day."""

from __future__ import annotations

import uuid

import pytest

from srm import records
from srm.model import EndReason, NewSession, State
from srm.store import SessionStore
from tests.helpers import Clock

IDS = ["dev-1", "1:x;2:y", "ü📺" * 30, "9" * 256, ";", ":", "a,b|c", " "]


@pytest.mark.parametrize("device", IDS)
async def test_any_ids_read_back_as_written(store: SessionStore, clock: Clock, device: str) -> None:
    content = device[::-1]
    s = NewSession(
        str(uuid.uuid4()), "acct-1", device, content, "LIVE", device_type="tv", quality="UHD"
    )
    await store.setup(s)
    ak = store.keys.account("acct-1")
    record = records.parse(await store.redis.hget(ak.state, s.session_id))
    assert record is not None
    assert (record.device_id, record.content_id, record.content_type) == (device, content, "LIVE")
    assert (record.device_type, record.quality, record.reason) == ("tv", "UHD", None)
    assert record.created == record.keep_alive == clock.now
    assert record.deadline == clock.now + 120_000
    clock.advance(5)
    await store.keep_alive("acct-1", s.session_id)
    clock.advance(5)
    replaced = NewSession(
        str(uuid.uuid4()), "acct-1", device + "2", "c", "COD", replaces=s.session_id
    )
    await store.setup(replaced)
    ended = records.parse(await store.redis.hget(ak.ended, s.session_id))
    assert ended is not None and ended.ended is not None
    assert (ended.reason, ended.ended_at, ended.by_device_id) == (
        EndReason.REPLACED,
        clock.now,
        device + "2",
    )
    assert (ended.keep_alive, ended.device_id, ended.content_id) == (
        clock.now - 5000,
        device,
        content,
    )
    got = await store.get("acct-1", s.session_id)
    assert (got.state, got.end_reason, got.device_id) == (State.ENDED, EndReason.REPLACED, device)


async def test_usage_days_read_back_as_written(store: SessionStore, clock: Clock) -> None:
    s = NewSession(str(uuid.uuid4()), "acct-1", "d", "c", "COD")
    await store.setup(s)
    clock.advance(30)
    await store.end("acct-1", s.session_id, EndReason.OPERATOR)
    ak = store.keys.account("acct-1")
    day = clock.now // 86_400_000
    assert await store.redis.hget(ak.state, str(day)) == "1,1,30000,0,0,0,1"
    usage = records.day_usage(day, "1,1,30000,0,0,0,1")
    assert (usage.started, usage.peak_active, usage.watched_ms, usage.denied) == (1, 1, 30000, 0)
    assert usage.ended == (0, 0, 1, 0, 0)
    assert records.day_usage(day, "") == records.day_usage(day, "0")


def test_damaged_values_read_as_no_session_or_what_they_hold() -> None:
    assert records.parse("T") is None
    assert records.parse("") is None
    assert records.parse("garbage;3:abc") is None
    cut = records.parse("1800000000000,0,120000;5:dev")
    assert cut is not None and (cut.device_id, cut.content_id, cut.groups) == ("dev", "", "")
    bad = records.parse("1800000000000,0,120000;-3:abc")
    assert bad is not None and bad.device_id == ""
