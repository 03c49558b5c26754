"""The in-flight gate shared by the store's calls and the autopipeline's batches."""

from __future__ import annotations

import asyncio

import pytest

from srm.gate import InFlightGate


async def test_a_call_waits_its_turn_then_gives_up() -> None:
    gate = InFlightGate(1, wait=0.05)
    async with gate:
        with pytest.raises(TimeoutError):
            async with gate:
                pytest.fail("two calls held the gate of one")
    async with gate:  # the turn was given back, also by the call that gave up
        pass


async def test_a_waiting_call_gets_the_turn_a_finished_call_gives_back() -> None:
    gate = InFlightGate(1, wait=30)
    order: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        async with gate:
            order.append("first")
            await release.wait()

    async def second() -> None:
        async with gate:
            order.append("second")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await asyncio.sleep(0)
    assert order == ["first"]
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "second"]


async def test_a_failing_call_gives_its_turn_back() -> None:
    gate = InFlightGate(1, wait=0.05)
    with pytest.raises(RuntimeError):
        async with gate:
            raise RuntimeError("boom")
    async with gate:
        pass


async def test_a_limit_of_zero_lets_every_call_through() -> None:
    gate = InFlightGate(0, wait=0.05)
    inside = 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal inside
        async with gate:
            inside += 1
            await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(100)]
    await asyncio.sleep(0)  # every call ran up to its wait inside the gate
    assert inside == 100
    release.set()
    await asyncio.gather(*tasks)  # and none gave up (NoTurn)
