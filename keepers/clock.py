"""The node's slot clock: a slot every ``slot_ms`` of real time, or whenever a test says so.

:class:`SlotClock` holds the current :class:`~protocol.clock.Clock` (``slot``, ``unix_timestamp``)
every transaction executes at. It moves in two ways:

* :meth:`SlotClock.run` (a task): the next slot at each ``slot_ms`` deadline of the injected
  ``monotonic`` clock, slept for with the injected ``sleep``. Deadlines are ``start + n *
  slot_ms``, so the period does not drift with the loop's latency. When the loop was held up
  past one or more deadlines, the clock jumps straight to the slot the elapsed time calls for
  (one tick, slots skipped), as a validator's leader schedule skips slots, rather than
  replaying a burst of stale ticks.
* :meth:`SlotClock.advance` (tests, replays): ``n`` slots now, no waiting.

Timestamps come from slots, not from a wall clock: ``unix_timestamp = anchor_ts + (slot -
anchor_slot) * slot_ms // 1000`` from an anchor (genesis, or the last journaled entry on a
restart). So the same journal and slot count always give the same times (a replay or a seeded
demo is reproducible) and time never goes backwards across a restart; while the node is down,
protocol time stands still. ``slot_ms`` is a whole number of milliseconds.

Listeners (:meth:`SlotClock.add_listener`) are called synchronously with the new clock after
each move, in registration order; a listener must not block (the node's publishes the retained
slot message and nothing else).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from protocol.clock import Clock

__all__ = ["DEFAULT_SLOT_MS", "SlotClock", "SlotListener", "timestamp_at"]

DEFAULT_SLOT_MS: Final = 400
EARLY_TOLERANCE: Final = 0.000_5  # seconds

SlotListener = Callable[[Clock], None]


def timestamp_at(slot: int, anchor: Clock, slot_ms: int) -> int:
    """Unix seconds at ``slot`` on a clock anchored at ``anchor`` (``slot >= anchor.slot``)."""
    if slot < anchor.slot:
        raise ValueError(f"slot {slot} is before the anchor slot {anchor.slot}")
    return anchor.unix_timestamp + (slot - anchor.slot) * slot_ms // 1000


class SlotClock:
    """See the module docstring. Use from one event loop."""

    def __init__(
        self,
        anchor: Clock,
        *,
        slot_ms: int = DEFAULT_SLOT_MS,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if slot_ms < 1:
            raise ValueError(f"slot_ms must be at least 1, got {slot_ms}")
        self._anchor = anchor
        self._slot_ms = slot_ms
        self._monotonic = monotonic
        self._sleep = sleep
        self._now = anchor
        self._ticks = 0
        self._listeners: list[SlotListener] = []
        self._waiters: list[tuple[int, asyncio.Future[Clock]]] = []

    @property
    def now(self) -> Clock:
        return self._now

    @property
    def slot(self) -> int:
        return self._now.slot

    @property
    def slot_ms(self) -> int:
        return self._slot_ms

    @property
    def ticks(self) -> int:
        """How many times the clock moved (``0``: not yet, the node is not ready)."""
        return self._ticks

    def add_listener(self, listener: SlotListener) -> None:
        self._listeners.append(listener)

    def advance(self, slots: int = 1) -> Clock:
        """Move ``slots`` (>= 1) slots forward now; returns the new clock."""
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        slot = self._now.slot + slots
        self._now = Clock(slot, timestamp_at(slot, self._anchor, self._slot_ms))
        self._ticks += 1
        for listener in list(self._listeners):
            listener(self._now)
        if self._waiters:
            ready = [(s, f) for s, f in self._waiters if s <= slot]
            self._waiters = [(s, f) for s, f in self._waiters if s > slot]
            for _, future in ready:
                if not future.done():
                    future.set_result(self._now)
        return self._now

    async def wait_for_slot(self, slot: int) -> Clock:
        """Until the clock reaches ``slot`` (bound it with ``asyncio.timeout``)."""
        if self._now.slot >= slot:
            return self._now
        future: asyncio.Future[Clock] = asyncio.get_running_loop().create_future()
        self._waiters.append((slot, future))
        return await future

    async def run(self) -> None:
        """Tick every ``slot_ms`` until cancelled (the first tick one period from now)."""
        period = self._slot_ms / 1000
        started = self._monotonic()
        done = 0  # periods elapsed as of the last tick
        while True:
            await self._sleep(max(0.0, started + (done + 1) * period - self._monotonic()))
            # A timer may fire up to the loop's clock resolution early, and float division
            # can land a hair under a whole period: up to EARLY_TOLERANCE early counts.
            elapsed = int((self._monotonic() - started + EARLY_TOLERANCE) / period)
            if elapsed <= done:
                continue
            self.advance(elapsed - done)
            done = elapsed
