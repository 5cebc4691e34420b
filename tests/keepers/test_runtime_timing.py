"""The manual timer tests drive the runtime with."""

from __future__ import annotations

import asyncio

import pytest

from keepers.runtime.timing import ManualTimer, SystemTimer, wait_event_or_timeout


@pytest.mark.asyncio
async def test_sleepers_wake_in_deadline_order_when_time_passes() -> None:
    timer = ManualTimer(start=10.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await timer.sleep(seconds)
        woke.append((name, timer.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2.0), ("a", 1.0), ("c", 5.0))]
    await timer.advance(0)
    assert timer.sleeping == 3
    await timer.advance(1.5)
    assert woke == [("a", 11.0)]
    await timer.advance(3.5)
    assert woke == [("a", 11.0), ("b", 12.0), ("c", 15.0)]
    assert timer.monotonic() == 15.0
    await asyncio.gather(*tasks)
    with pytest.raises(ValueError, match="back"):
        await timer.advance(-1)


@pytest.mark.asyncio
async def test_wait_event_or_timeout() -> None:
    timer = ManualTimer()
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_event_or_timeout(event, 3.0, timer))
    await timer.advance(2.9)
    assert not waiting.done()
    await timer.advance(0.1)
    assert waiting.done()
    assert waiting.result() is False
    assert timer.sleeping == 0
    woken = asyncio.create_task(wait_event_or_timeout(event, 3.0, timer))
    await timer.advance(0)
    event.set()
    await timer.advance(0)
    assert woken.result() is True
    assert timer.sleeping == 0  # the sleeper was cancelled, not left behind


@pytest.mark.asyncio
async def test_wait_event_or_timeout_on_the_loops_clock() -> None:
    timer = SystemTimer()
    event = asyncio.Event()
    assert await wait_event_or_timeout(event, 0.01, timer) is False
    waiting = asyncio.create_task(wait_event_or_timeout(event, 30.0, timer))
    await asyncio.sleep(0)
    event.set()
    await asyncio.sleep(0)  # one turn of the loop: no helper tasks in between
    assert waiting.result() is True
    assert await wait_event_or_timeout(event, 0.0, timer) is True  # already set
