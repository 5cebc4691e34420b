"""The slot clock: slot-derived timestamps, manual advances, and real-time ticks driven by an
injected monotonic clock and sleep (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from keepers.clock import SlotClock, timestamp_at
from protocol.clock import Clock

ANCHOR = Clock(1_000, 1_700_000_000)


def test_timestamps_come_from_slots() -> None:
    # 400 ms slots: 2 slots = 0.8 s -> +0; 3 slots = 1.2 s -> +1; 10 slots = 4 s
    assert timestamp_at(1_002, ANCHOR, 400) == 1_700_000_000
    assert timestamp_at(1_003, ANCHOR, 400) == 1_700_000_001
    assert timestamp_at(1_010, ANCHOR, 400) == 1_700_000_004
    with pytest.raises(ValueError, match="before the anchor"):
        timestamp_at(999, ANCHOR, 400)


def test_advance_moves_and_notifies_in_order() -> None:
    clock = SlotClock(ANCHOR, slot_ms=400)
    seen: list[Clock] = []
    clock.add_listener(seen.append)
    assert (clock.now, clock.ticks) == (ANCHOR, 0)
    assert clock.advance() == Clock(1_001, 1_700_000_000)
    assert clock.advance(9) == Clock(1_010, 1_700_000_004)
    assert seen == [Clock(1_001, 1_700_000_000), Clock(1_010, 1_700_000_004)]
    assert clock.ticks == 2
    with pytest.raises(ValueError, match="at least 1"):
        clock.advance(0)


class FakeTime:
    """A monotonic clock that each sleep moves forward by what it asked for, plus a stall for
    chosen sleeps (by call number: the loop held up)."""

    def __init__(self, stalls: dict[int, float]) -> None:
        self.now = 50.0
        self.stalls = stalls
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.stalls.get(len(self.sleeps), 0.0)
        self.sleeps.append(round(seconds, 6))
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_run_ticks_every_period_and_skips_slots_after_a_stall() -> None:
    fake = FakeTime(stalls={2: 1.0})  # the third sleep overruns by 2.5 periods
    clock = SlotClock(ANCHOR, slot_ms=400, monotonic=fake.monotonic, sleep=fake.sleep)
    slots: list[int] = []
    clock.add_listener(lambda c: slots.append(c.slot))
    task = asyncio.create_task(clock.run())
    async with asyncio.timeout(5):
        await clock.wait_for_slot(1_006)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # ticks at 50.4 and 50.8 s; the third sleep ends at 51.2 + 1.0 = 52.2 s, 5.5 periods after
    # the start: one tick straight to 1,005; the next deadline is 52.4 s (a 0.2 s sleep): 1,006
    assert slots == [1_001, 1_002, 1_005, 1_006]
    assert fake.sleeps[:4] == [0.4, 0.4, 0.4, 0.2]


@pytest.mark.asyncio
async def test_wait_for_slot_returns_at_once_when_reached() -> None:
    clock = SlotClock(ANCHOR)
    async with asyncio.timeout(1):
        assert await clock.wait_for_slot(1_000) == ANCHOR
    waiter = asyncio.create_task(clock.wait_for_slot(1_002))
    await asyncio.sleep(0)
    clock.advance()
    assert not waiter.done()
    clock.advance()
    async with asyncio.timeout(1):
        assert await waiter == Clock(1_002, 1_700_000_000)


def test_slot_ms_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slot_ms"):
        SlotClock(ANCHOR, slot_ms=0)
